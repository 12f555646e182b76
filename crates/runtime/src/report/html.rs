//! The HTML document: inline CSS, no script, no external resource.

use std::fmt::Write as _;

use super::svg::{Span, metric_chart, weights_chart};
use super::{Report, Section, Tone};

/// Escapes text for HTML content and double- or single-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters have no business in a report (and some are invalid HTML).
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `[a-z0-9-]` only: safe in ids whatever the section or metric is called.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#1f2933;background:#fff;padding:0 16px}
h1{font-size:26px;margin-bottom:4px}h2{font-size:20px;margin:0 0 6px}h3{font-size:15px;margin:18px 0 6px}
.subtitle{color:#52606d;margin-top:0}
section.canary{border:1px solid #d9dee5;border-radius:8px;padding:16px 20px;margin:22px 0}
.badge{display:inline-block;border-radius:12px;padding:2px 10px;font-weight:600;font-size:13px}
.tone-good{background:#e3f4e5;color:#1b5e20}.tone-bad{background:#fde7e7;color:#8e1b1b}.tone-neutral{background:#eceff3;color:#334}
table{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e6e9ee;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f5f7fa}
td.reason{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;word-break:break-word}
.phase-successful{color:#1b5e20;font-weight:600}.phase-failed{color:#b71c1c;font-weight:600}
.phase-inconclusive{color:#e65100;font-weight:600}.phase-error{color:#6a1b9a;font-weight:600}
ul.events{font-size:13px;padding-left:18px}li.warning{color:#9a3412}
.conditions{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;color:#3e4c59}
svg.chart{display:block;max-width:100%;height:auto;margin:4px 0 10px}
.empty{color:#7b8794;font-style:italic}
";

/// Renders the whole report.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(out, "<title>{}</title>", esc(&report.title));
    let _ = write!(out, "<style>{STYLE}</style></head><body>");
    let _ = write!(out, "<h1>{}</h1>", esc(&report.title));
    if let Some(s) = &report.subtitle {
        let _ = write!(out, "<p class=\"subtitle\">{}</p>", esc(s));
    }
    if report.sections.is_empty() {
        out.push_str("<p class=\"empty\">Nothing to report.</p>");
    } else {
        out.push_str("<table class=\"summary\"><tr><th>section</th><th>outcome</th></tr>");
        for (i, s) in report.sections.iter().enumerate() {
            let _ = write!(
                out,
                "<tr><td><a href=\"#{}\">{}</a></td><td><span class=\"badge {}\">{}</span></td></tr>",
                section_id(i, s),
                esc(&s.title),
                tone_class(s.tone),
                esc(&s.outcome)
            );
        }
        out.push_str("</table>");
    }
    for (i, s) in report.sections.iter().enumerate() {
        section(&mut out, i, s);
    }
    out.push_str("</body></html>\n");
    out
}

fn tone_class(t: Tone) -> &'static str {
    match t {
        Tone::Good => "tone-good",
        Tone::Bad => "tone-bad",
        Tone::Neutral => "tone-neutral",
    }
}

fn section_id(i: usize, s: &Section) -> String {
    let slug = slug(&s.title);
    if slug.is_empty() {
        format!("s{i}")
    } else {
        format!("s{i}-{slug}")
    }
}

fn section(out: &mut String, i: usize, s: &Section) {
    let id = section_id(i, s);
    let _ = write!(
        out,
        "<section class=\"canary\" id=\"{id}\"><h2>{} <span class=\"badge {}\">{}</span></h2>",
        esc(&s.title),
        tone_class(s.tone),
        esc(&s.outcome)
    );
    if let Some(d) = &s.description {
        let _ = write!(out, "<p>{}</p>", esc(d));
    }
    let times = s
        .weights
        .iter()
        .flat_map(|w| w.points.iter().map(|p| p.0))
        .chain(s.metrics.iter().flat_map(|m| m.points.iter().map(|p| p.at)))
        .chain(s.events.iter().map(|e| e.at));
    let span = Span::covering(times);
    if !s.weights.is_empty() {
        out.push_str("<h3>Traffic weights</h3>");
        match &span {
            Some(span) => out.push_str(&weights_chart(&format!("{id}-weights"), &s.weights, span)),
            None => out.push_str("<p class=\"empty\">no weights recorded</p>"),
        }
    }
    out.push_str("<h3>Metrics</h3>");
    if s.metrics.is_empty() {
        out.push_str("<p class=\"empty\">no metric was measured</p>");
    }
    for (j, m) in s.metrics.iter().enumerate() {
        let _ = write!(out, "<h4>{}</h4>", esc(&m.name));
        if !m.conditions.is_empty() {
            let _ = write!(
                out,
                "<div class=\"conditions\">{}</div>",
                m.conditions
                    .iter()
                    .map(|c| esc(c))
                    .collect::<Vec<_>>()
                    .join("<br>")
            );
        }
        let chart_id = format!("{id}-metric-{j}-{}", slug(&m.name));
        match &span {
            Some(span) => out.push_str(&metric_chart(&chart_id, m, span)),
            None => out.push_str("<p class=\"empty\">no measurements</p>"),
        }
    }
    out.push_str("<h3>Verdicts</h3>");
    if s.verdicts.is_empty() {
        out.push_str("<p class=\"empty\">no verdicts</p>");
    } else {
        out.push_str("<table class=\"verdicts\"><tr><th>time</th><th>run</th><th>metric</th><th>verdict</th><th>value</th><th>reason</th></tr>");
        for v in &s.verdicts {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"phase-{}\">{}</td><td>{}</td><td class=\"reason\">{}</td></tr>",
                v.at.format("%H:%M:%S"),
                esc(&v.run),
                esc(if v.metric.is_empty() {
                    "(run)"
                } else {
                    &v.metric
                }),
                slug(&v.phase),
                esc(&v.phase),
                esc(v.value.as_deref().unwrap_or("")),
                esc(&v.reason)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("<h3>Events</h3>");
    if s.events.is_empty() {
        out.push_str("<p class=\"empty\">no events</p>");
    } else {
        out.push_str("<ul class=\"events\">");
        for e in &s.events {
            let _ = write!(
                out,
                "<li class=\"{}\"><code>{}</code> <b>{}</b> {}</li>",
                if e.warning { "warning" } else { "normal" },
                e.at.format("%H:%M:%S"),
                esc(&e.kind),
                esc(&e.message)
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>");
}
