//! The resources' serde types: AnalysisTemplate (and its cluster-scoped twin), Canary,
//! ScheduledAnalysis and their notification subscriptions, as the YAML, the CRDs and the
//! daemon read them. Plain data; loading, validation and compilation into runs are the
//! root package's (`skycanary::resources`), which re-exports these modules under their old
//! paths.

pub mod canary;
pub mod notifications;
pub mod scheduled;
pub mod template;
