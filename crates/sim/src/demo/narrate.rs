//! Live narration: one line per happening (time, what, measured value, condition, verdict)
//! and, on a terminal, a progress bar per version showing its traffic weight.
//! Without a terminal (or with `--no-color`) the output is plain text without escapes.

use std::collections::BTreeMap;
use std::io::Write;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::observe::Happening;
use crate::sim::blend::Weights;
use skycanary_runtime::analysis::Phase;
use skycanary_runtime::canary::CanaryPhase;
use skycanary_runtime::report::MetricInfo;

/// ANSI styling, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Emit colour escapes.
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    /// `t` in green: a healthy outcome.
    pub fn good(self, t: &str) -> String {
        self.paint("32", t)
    }
    /// `t` in red: a rollback or a failure.
    pub fn bad(self, t: &str) -> String {
        self.paint("31", t)
    }
    /// `t` in yellow: something to watch.
    pub fn warn(self, t: &str) -> String {
        self.paint("33", t)
    }
    /// `t` in bold: headings.
    pub fn bold(self, t: &str) -> String {
        self.paint("1", t)
    }
    /// `t` dimmed: details.
    pub fn dim(self, t: &str) -> String {
        self.paint("2", t)
    }
}

/// `v1 70 % · v3 30 %` (versions without weight left out, unless all are zero).
pub fn weights_text(w: &Weights) -> String {
    let shown: Vec<String> = w
        .iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(k, v)| format!("{k} {} %", skycanary_runtime::analysis::fmt_num(*v)))
        .collect();
    if shown.is_empty() {
        "no traffic".to_string()
    } else {
        shown.join(" · ")
    }
}

fn phase_text(style: Style, p: Phase) -> String {
    let t = format!("{p:?}");
    match p {
        Phase::Successful => style.good(&t),
        Phase::Failed | Phase::Error => style.bad(&t),
        _ => style.warn(&t),
    }
}

/// The condition with the args it reads: `min(result) >= args.min_apdex (min_apdex = 9900)`.
pub fn condition_text(info: Option<&MetricInfo>) -> String {
    let Some(i) = info else {
        return String::new();
    };
    let mut parts = Vec::new();
    for (label, c) in [("", &i.success), ("fails if ", &i.failure)] {
        let Some(c) = c else { continue };
        let used: Vec<String> = i
            .args
            .iter()
            .filter(|(k, _)| {
                c.contains(&skycanary_runtime::analysis::normalize_arg_name(k)) || c.contains(*k)
            })
            .map(|(k, v)| {
                format!(
                    "{} = {v}",
                    skycanary_runtime::analysis::normalize_arg_name(k)
                )
            })
            .collect();
        if used.is_empty() {
            parts.push(format!("{label}{c}"));
        } else {
            parts.push(format!("{label}{c} ({})", used.join(", ")));
        }
    }
    parts.join("; ")
}

/// One line for a happening (without the time prefix).
pub fn describe(h: &Happening, info: &BTreeMap<String, MetricInfo>, style: Style) -> String {
    match h {
        Happening::Weights(w) => format!("weights      {}", weights_text(w)),
        Happening::Step { index, total, what } => {
            format!("step {}/{total}   {}", index + 1, style.bold(what))
        }
        Happening::Measurement {
            metric,
            number,
            phase,
            value,
            message,
            ..
        } => {
            let cond = condition_text(info.get(metric));
            let value = value.as_deref().unwrap_or("no value");
            if cond.is_empty() {
                format!(
                    "measure      {metric} #{number}  value {value}  → {}  ({message})",
                    phase_text(style, *phase)
                )
            } else {
                format!(
                    "measure      {metric} #{number}  value {value}  condition {cond}  → {}",
                    phase_text(style, *phase)
                )
            }
        }
        Happening::RunDone {
            run,
            phase,
            message,
        } => format!(
            "analysis     {run} {}{}",
            phase_text(style, *phase),
            message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
        Happening::Phase { phase, detail } => {
            let p = format!("{phase:?}");
            let p = match phase {
                CanaryPhase::Promoted => style.good(&p),
                CanaryPhase::Aborted | CanaryPhase::RolledBack | CanaryPhase::Degraded => {
                    style.bad(&p)
                }
                _ => p,
            };
            if detail.is_empty() {
                format!("canary       {p}")
            } else {
                format!("canary       {p}: {detail}")
            }
        }
        Happening::AlarmSent { rule, value, below } => format!(
            "OAP alarm    {} fired: service SLA {} < {} → POST /webhooks/skywalking",
            style.warn(rule),
            skycanary_runtime::analysis::fmt_num(*value),
            skycanary_runtime::analysis::fmt_num(*below)
        ),
        Happening::AlarmAnswered { answer, latency } => format!(
            "webhook      answered after the rollback was written ({} ms): {answer}",
            latency.as_millis()
        ),
        Happening::ScheduledRun {
            schedule,
            phase,
            values,
            message,
            actions,
            ..
        } => {
            let mut line = format!("scheduled    {schedule}");
            for (metric, value) in values {
                line.push_str(&format!(
                    "  {metric} {}",
                    value.as_deref().unwrap_or("no value")
                ));
                // Why it did not pass, against which condition.
                let cond = condition_text(info.get(metric));
                if *phase != Phase::Successful && !cond.is_empty() {
                    line.push_str(&format!("  condition {cond}"));
                }
            }
            line.push_str(&format!("  → {}", phase_text(style, *phase)));
            if values.is_empty()
                && let Some(m) = message
            {
                line.push_str(&format!(" ({m})"));
            }
            for a in actions {
                line.push_str(&format!("  ⇒ {}", style.warn(a)));
            }
            line
        }
    }
}

/// Where narration goes.
pub struct Narrator {
    out: Box<dyn Write + Send>,
    style: Style,
    bars: Option<Bars>,
    fancy: bool,
}

struct Bars {
    multi: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
}

impl Narrator {
    /// Progress bars on a terminal (`fancy`), plain lines otherwise.
    pub fn new(out: Box<dyn Write + Send>, style: Style, fancy: bool) -> Self {
        Narrator {
            out,
            style,
            bars: None,
            fancy,
        }
    }

    /// The styling in use.
    pub fn style(&self) -> Style {
        self.style
    }

    /// Prints a line (above the bars, when there are bars).
    pub fn line(&mut self, text: &str) {
        match &self.bars {
            Some(b) => {
                let _ = b.multi.println(text);
            }
            None => {
                let _ = writeln!(self.out, "{text}");
                let _ = self.out.flush();
            }
        }
    }

    /// Starts the bars of a scenario's versions.
    pub fn start_bars(&mut self, versions: &[String]) {
        if !self.fancy {
            return;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template("  {prefix:>4} [{bar:40.cyan/blue}] {pos:>3} %")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█▉▊▋▌▍▎▏ ");
        let bars = versions
            .iter()
            .map(|v| {
                let b = multi.add(ProgressBar::new(100));
                b.set_style(style.clone());
                b.set_prefix(v.clone());
                (v.clone(), b)
            })
            .collect();
        self.bars = Some(Bars { multi, bars });
    }

    /// Moves the bars to `w`.
    pub fn set_weights(&mut self, w: &Weights) {
        if let Some(b) = &self.bars {
            for (name, bar) in &b.bars {
                let v = w.get(name).copied().unwrap_or(0.0);
                bar.set_position(v.clamp(0.0, 100.0).round() as u64);
            }
        }
    }

    /// Leaves the bars on screen as they are and stops drawing them.
    pub fn finish_bars(&mut self) {
        if let Some(b) = self.bars.take() {
            for bar in b.bars.values() {
                bar.abandon();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> BTreeMap<String, MetricInfo> {
        BTreeMap::from([(
            "apdex".to_string(),
            MetricInfo {
                success: Some("min(result) >= args.min_apdex".into()),
                failure: None,
                args: BTreeMap::from([
                    ("min-apdex".to_string(), "9900".to_string()),
                    ("service".to_string(), "reviews.bookinfo".to_string()),
                ]),
            },
        )])
    }

    #[test]
    fn a_measurement_line_has_value_condition_and_verdict() {
        let h = Happening::Measurement {
            run: "r".into(),
            metric: "apdex".into(),
            number: 2,
            phase: Phase::Failed,
            value: Some("[9950, 9120]".into()),
            message: "…".into(),
        };
        let plain = describe(&h, &info(), Style { color: false });
        assert_eq!(
            plain,
            "measure      apdex #2  value [9950, 9120]  condition min(result) >= args.min_apdex (min_apdex = 9900)  → Failed"
        );
        let colored = describe(&h, &info(), Style { color: true });
        assert!(colored.contains("\x1b[31mFailed\x1b[0m"));
        // Unknown metric: the judge's message stands in for the condition.
        let other = describe(&h, &BTreeMap::new(), Style { color: false });
        assert!(other.ends_with("→ Failed  (…)"), "{other}");
    }

    #[test]
    fn a_scheduled_run_line_has_values_verdict_and_actions() {
        let mut h = Happening::ScheduledRun {
            schedule: "production-apdex".into(),
            run: "production-apdex-1740823230".into(),
            phase: Phase::Successful,
            values: vec![("apdex".into(), Some("[9951, 9949, 9950]".into()))],
            message: None,
            actions: vec![],
        };
        assert_eq!(
            describe(&h, &info(), Style { color: false }),
            "scheduled    production-apdex  apdex [9951, 9949, 9950]  → Successful"
        );
        if let Happening::ScheduledRun {
            phase,
            values,
            actions,
            ..
        } = &mut h
        {
            *phase = Phase::Failed;
            values[0].1 = Some("[9950, 9949, 8120]".into());
            actions.push("rollback bookinfo/reviews: canary is RolledBack".into());
        }
        assert_eq!(
            describe(&h, &info(), Style { color: false }),
            "scheduled    production-apdex  apdex [9950, 9949, 8120]  condition min(result) >= args.min_apdex (min_apdex = 9900)  → Failed  ⇒ rollback bookinfo/reviews: canary is RolledBack"
        );
        // A run that measured nothing says why.
        let h = Happening::ScheduledRun {
            schedule: "p".into(),
            run: "p-1".into(),
            phase: Phase::Error,
            values: vec![],
            message: Some("analysis template \"x\" not found".into()),
            actions: vec![],
        };
        assert!(
            describe(&h, &info(), Style { color: false })
                .ends_with("→ Error (analysis template \"x\" not found)")
        );
    }

    #[test]
    fn weights_lines() {
        let w = Weights::from([("v1".into(), 70.0), ("v2".into(), 0.0), ("v3".into(), 30.0)]);
        assert_eq!(weights_text(&w), "v1 70 % · v3 30 %");
        assert_eq!(weights_text(&Weights::new()), "no traffic");
    }

    #[test]
    fn plain_narration_has_no_escapes() {
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let style = Style { color: false };
        let mut n = Narrator::new(Box::new(Buf(shared.clone())), style, false);
        n.start_bars(&["v1".into(), "v2".into()]);
        n.set_weights(&Weights::from([("v1".into(), 90.0), ("v2".into(), 10.0)]));
        let h = Happening::Phase {
            phase: CanaryPhase::Promoted,
            detail: String::new(),
        };
        n.line(&describe(&h, &info(), style));
        n.finish_bars();
        let text = String::from_utf8(shared.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "canary       Promoted\n");
    }
}
