//! `-o json|yaml|wide|name`, as kubectl prints: one object asked for prints that object, a
//! listing prints the list; the table is the default.

use std::io::Write;

use serde::Serialize;

/// `-o/--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// JSON: the object, or an array of them.
    Json,
    /// YAML: the object, or a sequence of them.
    Yaml,
    /// The table with every column, nothing cut.
    Wide,
    /// `KIND.GROUP/NAME` per object, for scripts (`xargs`).
    Name,
    /// Old spelling of the default table (`--output text`).
    #[value(hide = true)]
    Text,
}

/// Writes `value` as pretty JSON or YAML (the other formats are tables, printed by the caller).
pub fn write_structured(
    out: &mut dyn Write,
    format: OutputFormat,
    value: &impl Serialize,
) -> std::io::Result<bool> {
    let v = serde_json::to_value(value).map_err(std::io::Error::other)?;
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &v).map_err(std::io::Error::other)?;
            writeln!(out)?;
        }
        OutputFormat::Yaml => write!(out, "{}", crate::resources::crd::to_yaml(&v))?,
        OutputFormat::Wide | OutputFormat::Name | OutputFormat::Text => return Ok(false),
    }
    Ok(true)
}

/// The `-o` given, or the hidden legacy `--json` / `--output json` spelling.
pub fn pick(output: Option<OutputFormat>, legacy_json: bool) -> Option<OutputFormat> {
    output
        .or(legacy_json.then_some(OutputFormat::Json))
        .filter(|f| *f != OutputFormat::Text)
}
