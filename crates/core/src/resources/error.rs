//! The error every resource check reports: one problem with its file, line and field path
//! (`ConfigError`), a list of them (`ConfigErrors`, the error type of loading and compiling),
//! and where a document came from (`Origin`) so a later, semantic check can locate its
//! findings. Shared by the loader, the validators and the template compiler.

use std::fmt;

use super::yaml::LineIndex;

/// One configuration problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<arg>` / `<stdin>`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Field path inside the document (`spec.metrics[0].interval`), `.` for the document.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A problem of `file` as a whole, at no line or field: it cannot be read, listed, or
    /// holds the wrong number of documents.
    pub fn whole_file(file: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.into(),
            line: None,
            path: ".".into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: ", self.file, l)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if self.path == "." || self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A list of problems; the error type of loading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Where a document came from; used to locate later (semantic) errors.
#[derive(Debug, Clone)]
pub struct Origin {
    /// File name as given.
    pub file: String,
    /// Lines of the document's nodes.
    pub lines: LineIndex,
}

impl Origin {
    /// An error at `path` of this document.
    pub fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.lines.line_of(path),
            path: path.to_string(),
            message: message.into(),
        }
    }
}
