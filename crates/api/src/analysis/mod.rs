//! An analysis run as status holds it: the phase, each metric's result with its measurements
//! and their typed evidence. Plain data; the engine that schedules, judges and assesses runs
//! is `skycanary_core::analysis`, which re-exports these types under its own paths.

pub mod evidence;
mod language;
mod metadata;
mod phase;
mod run;

pub use evidence::{CompareOp, Comparison, ConditionEvidence, ConditionKind, MeasurementEvidence};
pub use language::ConditionLanguage;
pub use metadata::MeasurementMetadata;
pub use phase::Phase;
pub use run::{Measurement, MetricResult, RunState};
