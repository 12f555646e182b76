//! Self-contained HTML reports of canaries and analyses (`demo --report`, `analyze --report`).
//!
//! Pure: [`render`] turns plain data into one HTML document with inline CSS and inline SVG
//! charts — no script, no external resource — so the file can be mailed, archived or
//! attached to a ticket. Every text that comes from outside (names, messages, conditions) is
//! escaped; NaN and infinite values never reach the SVG.

mod data;
mod html;
pub mod svg;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};

use crate::analysis::CompareOp;

pub use data::{
    MetricInfo, metric_series, parse_values, run_section, summary_value, thresholds_of,
    verdicts_of_run,
};
pub use html::render;

/// Fails early (before anything is measured) when `path` cannot be a report file: its
/// directory is missing or it is a directory.
pub fn check_writable(path: &std::path::Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Err(std::io::Error::other("is a directory"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        return Err(std::io::Error::other(format!(
            "directory {} does not exist",
            dir.display()
        )));
    }
    Ok(())
}

/// Renders `report` and writes it to `path` (through a temporary file and a rename, so a
/// reader never sees half a report).
pub fn write(path: &std::path::Path, report: &Report) -> std::io::Result<()> {
    let html = render(report);
    let tmp = path.with_extension("html.tmp");
    std::fs::write(&tmp, html)?;
    std::fs::rename(&tmp, path)
}

/// A whole report: one section per canary (demo) or per analysis (analyze).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// Document title.
    pub title: String,
    /// One line under the title (what produced the report, when).
    pub subtitle: Option<String>,
    /// Sections, in order.
    pub sections: Vec<Section>,
}

/// How an outcome reads: drives the badge colour only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tone {
    /// The expected or a healthy outcome.
    Good,
    /// A rollback, a failure or an unexpected outcome.
    Bad,
    /// Neither (an inconclusive run, say): shown plain.
    #[default]
    Neutral,
}

/// One canary or one analysis.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Section {
    /// The section's heading: the canary or analysis it reports on.
    pub title: String,
    /// One-line outcome (`Promoted (v2 at 100 %)`).
    pub outcome: String,
    /// Colour of the outcome.
    pub tone: Tone,
    /// Free text under the heading (what the scenario shows).
    pub description: Option<String>,
    /// Traffic weight per version over time (empty: no weights chart).
    pub weights: Vec<WeightSeries>,
    /// Every measured metric.
    pub metrics: Vec<MetricSeries>,
    /// Every verdict, oldest first.
    pub verdicts: Vec<Verdict>,
    /// What happened, oldest first.
    pub events: Vec<Event>,
}

/// Weight of one version (0..100) over time; each point holds until the next.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WeightSeries {
    /// Version (subset or host).
    pub name: String,
    /// (time, weight) changes, oldest first.
    pub points: Vec<(DateTime<Utc>, f64)>,
}

/// A threshold line drawn on a metric chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// Value on the metric's scale.
    pub value: f64,
    /// Which condition it comes from.
    pub kind: ThresholdKind,
    /// Comparison operator, measured value on the left (`9900 <= min(result)` is `>=`).
    pub op: CompareOp,
}

/// Which condition a threshold belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdKind {
    /// From the metric's `successCondition`: the bound a passing measurement keeps.
    Success,
    /// From the metric's `failureCondition`: the bound a failing measurement crosses.
    Failure,
}

impl Threshold {
    /// True when values must stay above it (success `>=`/`>`, failure `<`/`<=`).
    pub fn is_lower_bound(&self) -> bool {
        match self.kind {
            ThresholdKind::Success => self.op.is_lower_bound(),
            ThresholdKind::Failure => matches!(self.op, CompareOp::Lt | CompareOp::Le),
        }
    }

    /// `success ≥ 9900`.
    pub fn label(&self) -> String {
        let kind = match self.kind {
            ThresholdKind::Success => "success",
            ThresholdKind::Failure => "failure",
        };
        let op = match self.op {
            CompareOp::Ge => "≥",
            CompareOp::Le => "≤",
            other => other.as_str(),
        };
        format!("{kind} {op} {}", crate::analysis::expr::fmt_num(self.value))
    }
}

/// One metric's measurements.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricSeries {
    /// Metric name (unique within its section, with the run name when several runs measure it).
    pub name: String,
    /// The conditions, as written.
    pub conditions: Vec<String>,
    /// Threshold lines.
    pub thresholds: Vec<Threshold>,
    /// Measurements, oldest first.
    pub points: Vec<MetricPoint>,
}

/// One measurement on a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// When it finished.
    pub at: DateTime<Utc>,
    /// The window's values (NaN = an empty bucket); may be empty (no data, error).
    pub values: Vec<f64>,
    /// The value the conditions judged (the minimum against a lower bound, the maximum
    /// against an upper bound, else the last); `None` without data.
    pub summary: Option<f64>,
    /// Verdict (`Successful`, `Failed`, `Inconclusive`, `Error`).
    pub phase: String,
    /// The judge's explanation.
    pub message: String,
}

/// A verdict with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// When it happened (the timelines are ordered by it).
    pub at: DateTime<Utc>,
    /// Analysis run.
    pub run: String,
    /// Metric (empty for a run's overall verdict).
    pub metric: String,
    /// The verdict (`Successful`, `Failed`, `Inconclusive`, `Error`).
    pub phase: String,
    /// Measured value(s).
    pub value: Option<String>,
    /// Condition and outcome, as the judge explained it.
    pub reason: String,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When it happened (the timelines are ordered by it).
    pub at: DateTime<Utc>,
    /// Short kind (`TrafficWeightUpdated`, `AlarmSent`, ...).
    pub kind: String,
    /// What happened, as the event's message says it.
    pub message: String,
    /// Shown as a warning.
    pub warning: bool,
}
