//! Inline SVG charts: traffic weights as step lines, metric values against their thresholds.
//! Every coordinate is finite by construction; text is escaped by the caller's `esc`.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::html::esc;
use super::{MetricSeries, WeightSeries};

const W: f64 = 760.0;
const H: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 32.0;

/// Colours of the versions' lines, in series order.
const PALETTE: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
];

/// The time span a section's charts share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl Span {
    /// The span covering `times` (at least one minute; `None` without times).
    pub fn covering(times: impl IntoIterator<Item = DateTime<Utc>>) -> Option<Span> {
        let mut it = times.into_iter();
        let first = it.next()?;
        let (start, end) = it.fold((first, first), |(a, b), t| (a.min(t), b.max(t)));
        let end = end.max(start + chrono::Duration::minutes(1));
        // A little room after the last change, so a final state (a rollback) is visible.
        let end = end + (end - start) / 20;
        Some(Span { start, end })
    }

    fn x(&self, t: DateTime<Utc>) -> f64 {
        let total = (self.end - self.start).num_milliseconds().max(1) as f64;
        let off = (t - self.start).num_milliseconds() as f64;
        LEFT + (off / total).clamp(0.0, 1.0) * (W - LEFT - RIGHT)
    }
}

/// A finite coordinate with one decimal.
fn n(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "0".to_string()
    }
}

fn y_of(v: f64, lo: f64, hi: f64) -> f64 {
    let span = if hi > lo { hi - lo } else { 1.0 };
    let frac = ((v - lo) / span).clamp(0.0, 1.0);
    TOP + (1.0 - frac) * (H - TOP - BOTTOM)
}

fn open(out: &mut String, id: &str, class: &str, label: &str) {
    let _ = write!(
        out,
        r#"<svg id="{}" class="chart {class}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}"><title>{}</title>"#,
        esc(id),
        esc(label),
        esc(label)
    );
    let _ = write!(
        out,
        r##"<rect class="plot" x="{}" y="{}" width="{}" height="{}" fill="#fbfbfd" stroke="#d0d4dc"/>"##,
        n(LEFT),
        n(TOP),
        n(W - LEFT - RIGHT),
        n(H - TOP - BOTTOM)
    );
}

fn time_axis(out: &mut String, span: &Span) {
    let total = span.end - span.start;
    for i in 0..=4 {
        let t = span.start + total * i / 4;
        let _ = write!(
            out,
            r##"<text class="tick x" x="{}" y="{}" text-anchor="middle" font-size="11" fill="#555">{}</text>"##,
            n(span.x(t)),
            n(H - BOTTOM + 16.0),
            t.format("%H:%M:%S")
        );
    }
}

fn y_tick(out: &mut String, y: f64, label: &str) {
    let _ = write!(
        out,
        r##"<line class="grid" x1="{}" y1="{}" x2="{}" y2="{}" stroke="#e3e6eb"/><text class="tick y" x="{}" y="{}" text-anchor="end" font-size="11" fill="#555">{}</text>"##,
        n(LEFT),
        n(y),
        n(W - RIGHT),
        n(y),
        n(LEFT - 6.0),
        n(y + 4.0),
        esc(label)
    );
}

/// Weights (0..100) of every version as step lines.
pub fn weights_chart(id: &str, series: &[WeightSeries], span: &Span) -> String {
    let mut out = String::new();
    open(&mut out, id, "weights", "Traffic weight per version (%)");
    for w in [0.0, 25.0, 50.0, 75.0, 100.0] {
        y_tick(&mut out, y_of(w, 0.0, 100.0), &format!("{w} %"));
    }
    time_axis(&mut out, span);
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<_> = s
            .points
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(t, v)| (span.x(*t), y_of(v.clamp(0.0, 100.0), 0.0, 100.0), *v))
            .collect();
        if let Some(((x0, y0, _), rest)) = points.split_first() {
            let mut d = format!("M{} {}", n(*x0), n(*y0));
            for (x, y, _) in rest {
                let _ = write!(d, " H{} V{}", n(*x), n(*y));
            }
            let _ = write!(d, " H{}", n(W - RIGHT));
            let _ = write!(
                out,
                r#"<path class="series weight" data-version="{}" d="{d}" fill="none" stroke="{color}" stroke-width="2.5"/>"#,
                esc(&s.name)
            );
        }
        let last = points.last().map_or(0.0, |p| p.2);
        let _ = write!(
            out,
            r#"<text class="legend" x="{}" y="{}" font-size="12" fill="{color}">{} · {} %</text>"#,
            n(W - RIGHT + 10.0),
            n(TOP + 14.0 + 16.0 * i as f64),
            esc(&s.name),
            crate::analysis::fmt_num(last)
        );
    }
    out.push_str("</svg>");
    out
}

/// Vertical range of a metric chart: every finite value and threshold, padded.
fn y_range(s: &MetricSeries) -> Option<(f64, f64)> {
    let vals = s
        .points
        .iter()
        .flat_map(|p| p.values.iter().copied().chain(p.summary))
        .chain(s.thresholds.iter().map(|t| t.value))
        .filter(|v| v.is_finite());
    let (lo, hi) = vals.fold(None, |acc: Option<(f64, f64)>, v| match acc {
        None => Some((v, v)),
        Some((a, b)) => Some((a.min(v), b.max(v))),
    })?;
    let pad = if hi > lo {
        (hi - lo) * 0.08
    } else {
        lo.abs().max(1.0) * 0.05
    };
    Some((lo - pad, hi + pad))
}

fn phase_class(phase: &str) -> String {
    phase
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// A metric's measured values, the judged value per measurement, verdict markers and the
/// threshold lines.
pub fn metric_chart(id: &str, s: &MetricSeries, span: &Span) -> String {
    let mut out = String::new();
    open(
        &mut out,
        id,
        "metric",
        &format!("{}: measured values and thresholds", s.name),
    );
    time_axis(&mut out, span);
    let Some((lo, hi)) = y_range(s) else {
        let _ = write!(
            out,
            r##"<text class="no-data" x="{}" y="{}" text-anchor="middle" font-size="14" fill="#888">no data</text>"##,
            n((LEFT + W - RIGHT) / 2.0),
            n(H / 2.0)
        );
        // Verdicts without values (no data, errors) still show when they happened.
        markers(&mut out, s, span, None);
        out.push_str("</svg>");
        return out;
    };
    for i in 0..=3 {
        let v = lo + (hi - lo) * f64::from(i) / 3.0;
        y_tick(
            &mut out,
            y_of(v, lo, hi),
            &crate::analysis::fmt_num(v.round()),
        );
    }
    for (i, t) in s.thresholds.iter().enumerate() {
        let y = y_of(t.value, lo, hi);
        let class = match t.kind {
            super::ThresholdKind::Success => "success",
            super::ThresholdKind::Failure => "failure",
        };
        let _ = write!(
            out,
            r##"<line class="threshold {class}" x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="1.5" stroke-dasharray="6 4"/><text class="threshold-label" x="{}" y="{}" font-size="11" fill="#444">{}</text>"##,
            n(LEFT),
            n(y),
            n(W - RIGHT),
            n(y),
            if class == "success" {
                "#2e7d32"
            } else {
                "#c62828"
            },
            n(W - RIGHT + 8.0),
            n(y + 4.0 + 12.0 * i as f64),
            esc(&t.label())
        );
    }
    // Every value of each measurement's window, faint.
    for p in &s.points {
        let x = span.x(p.at);
        for v in p.values.iter().filter(|v| v.is_finite()) {
            let _ = write!(
                out,
                r##"<circle class="value" cx="{}" cy="{}" r="2" fill="#9aa5b1"/>"##,
                n(x),
                n(y_of(*v, lo, hi))
            );
        }
    }
    // The judged value per measurement, as a line broken where there was none.
    let mut d = String::new();
    let mut pen_down = false;
    for p in &s.points {
        match p.summary.filter(|v| v.is_finite()) {
            Some(v) => {
                let cmd = if pen_down { 'L' } else { 'M' };
                let _ = write!(d, "{cmd}{} {} ", n(span.x(p.at)), n(y_of(v, lo, hi)));
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    if !d.is_empty() {
        let _ = write!(
            out,
            r##"<path class="series metric" d="{}" fill="none" stroke="#4e79a7" stroke-width="2"/>"##,
            d.trim_end()
        );
    }
    markers(&mut out, s, span, Some((lo, hi)));
    out.push_str("</svg>");
    out
}

fn markers(out: &mut String, s: &MetricSeries, span: &Span, range: Option<(f64, f64)>) {
    for p in &s.points {
        let y = match (p.summary.filter(|v| v.is_finite()), range) {
            (Some(v), Some((lo, hi))) => y_of(v, lo, hi),
            _ => H - BOTTOM - 6.0,
        };
        let class = phase_class(&p.phase);
        let color = match class.as_str() {
            "successful" => "#2e7d32",
            "failed" => "#c62828",
            "error" => "#6a1b9a",
            _ => "#ef6c00",
        };
        let _ = write!(
            out,
            r#"<circle class="verdict {class}" cx="{}" cy="{}" r="4.5" fill="{color}"><title>{} {}: {}</title></circle>"#,
            n(span.x(p.at)),
            n(y),
            p.at.format("%H:%M:%S"),
            esc(&p.phase),
            esc(&p.message)
        );
    }
}
