//! `skycanary validate PATH...`: every mistake in a set of resource files, before anything runs.

use std::io::Write;
use std::path::PathBuf;

use crate::resources::load_paths;

/// Arguments of `validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Files or directories (searched recursively for *.yaml / *.yml).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Exit code 0 when everything is valid, 1 otherwise; all errors are listed.
pub fn run(args: &ValidateArgs, out: &mut dyn Write) -> std::io::Result<u8> {
    let result = load_paths(&args.paths);
    for e in &result.errors {
        writeln!(out, "error: {e}")?;
    }
    for s in &result.skipped {
        writeln!(out, "skipped: {s}")?;
    }
    for n in &result.notes {
        writeln!(out, "note: {n}")?;
    }
    if result.errors.is_empty() {
        writeln!(
            out,
            "ok: {} file(s), {} template(s), {} canary(ies){} valid",
            result.files,
            result.templates.len(),
            result.canaries.len(),
            if result.scheduled.is_empty() {
                String::new()
            } else {
                format!(", {} scheduled analysis(es)", result.scheduled.len())
            }
        )?;
        Ok(0)
    } else {
        writeln!(
            out,
            "invalid: {} error(s) in {} file(s)",
            result.errors.len(),
            result.files
        )?;
        Ok(1)
    }
}
