//! The build's stamp, made by this crate's build script: one source for `skycanary version`
//! and the `skycanary_build_info` metric.

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit (12 hex digits), or `unknown` outside the project's own checkout.
pub const GIT_COMMIT: &str = env!("SKYCANARY_GIT_COMMIT");
/// The build date, `YYYY-MM-DD` (UTC; `SOURCE_DATE_EPOCH` wins).
pub const BUILD_DATE: &str = env!("SKYCANARY_BUILD_DATE");
/// The target triple.
pub const TARGET: &str = env!("SKYCANARY_TARGET");
/// All of it in one line: `0.1.0 (commit abc123, built 2026-12-02, x86_64-…)`.
pub const LONG_VERSION: &str = env!("SKYCANARY_LONG_VERSION");
