//! `skycanary version` and `skycanary completion SHELL`.

use std::io::Write;

use serde::Serialize;

use super::output::OutputFormat;

/// What `version` prints; the stamps come from build.rs.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// The crate's semantic version.
    pub version: &'static str,
    /// The git commit built, `unknown` outside a checkout (a source tarball).
    pub git_commit: &'static str,
    /// The build date, UTC (`SOURCE_DATE_EPOCH` when set).
    pub build_date: &'static str,
    /// The target triple.
    pub target: &'static str,
}

/// This binary's version stamps.
pub const VERSION: VersionInfo = VersionInfo {
    version: crate::build_info::VERSION,
    git_commit: crate::build_info::GIT_COMMIT,
    build_date: crate::build_info::BUILD_DATE,
    target: crate::build_info::TARGET,
};

/// `--version` / `version` in one line: `0.1.0 (commit abc123, built 2026-12-02, x86_64-…)`.
pub const LONG_VERSION: &str = crate::build_info::LONG_VERSION;

/// Arguments of `version`.
#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// Output format (`json` or `yaml`; default: one line).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<OutputFormat>,
}

/// Prints the version; exit 0.
pub fn version(args: &VersionArgs, out: &mut dyn Write) -> std::io::Result<u8> {
    let structured = match args.output {
        Some(f) => super::output::write_structured(out, f, &VERSION)?,
        None => false,
    };
    if !structured {
        writeln!(out, "skycanary {LONG_VERSION}")?;
    }
    Ok(0)
}

/// Shells `completion` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// `source <(skycanary completion bash)`
    Bash,
    /// `skycanary completion zsh > "${fpath[1]}/_skycanary"`
    Zsh,
    /// `skycanary completion fish > ~/.config/fish/completions/skycanary.fish`
    Fish,
}

/// Arguments of `completion`.
#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Writes the completion script of `cmd` (named `bin`) for the shell; exit 0.
pub fn completion(
    args: &CompletionArgs,
    cmd: &mut clap::Command,
    bin: &str,
    out: &mut dyn Write,
) -> std::io::Result<u8> {
    use clap_complete::{generate, shells};
    let mut buf = Vec::new();
    match args.shell {
        Shell::Bash => generate(shells::Bash, cmd, bin, &mut buf),
        Shell::Zsh => generate(shells::Zsh, cmd, bin, &mut buf),
        Shell::Fish => generate(shells::Fish, cmd, bin, &mut buf),
    }
    out.write_all(&buf)?;
    Ok(0)
}
