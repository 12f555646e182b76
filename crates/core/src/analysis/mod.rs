//! The analysis engine: conditions, verdicts and the run state machine (pure; no I/O, no clock).
//!
//! Flow for a driver: [`start_run`] at start; each tick, [`due_metrics`] names the metrics
//! to measure; the provider turns each into an [`Observation`]; [`measure`] (or [`judge`])
//! turns that into a [`Measurement`] (with its typed [`MeasurementEvidence`]); [`record_batch`] stores every measurement taken at that
//! moment, then reassesses once; sleep until [`next_due`]. [`terminate`] stops a run from
//! outside.

pub mod argo_expr;
pub mod evidence;
pub mod expr;
mod judge;
mod run;
mod spec;

pub use evidence::{CompareOp, Comparison, ConditionEvidence, ConditionKind, MeasurementEvidence};
pub use expr::{
    Bindings, Condition, ConditionLanguage, ExprError, ResultValue, fmt_num, normalize_arg_name,
};
pub use judge::{Judgement, Observation, judge};
pub use run::{
    Measurement, MeasurementMetadata, MetricResult, RecordError, RunState, due_metrics, fail_run,
    measure, next_due, next_due_held, record, record_batch, start_run, terminate,
};
pub use spec::{
    DEFAULT_CONSECUTIVE_ERROR_LIMIT, DEFAULT_ERROR_RETRY_INTERVAL, DEFAULT_RETENTION_LIMIT,
    MetricSpec, NoDataPolicy, Phase, RunSpec, validate_metric, validate_run,
};
