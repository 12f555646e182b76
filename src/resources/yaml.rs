//! YAML loading with line numbers.
//!
//! Documents are parsed with `saphyr` (a maintained YAML 1.2 parser that keeps source spans),
//! converted to `serde_json::Value` for typed deserialization, and every node's line is kept in a
//! [`LineIndex`] keyed by the same field path `serde_path_to_error` reports, so each error can
//! name file, line and field.

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

/// One YAML document of a file, as JSON plus the line of every node.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document's content.
    pub value: Value,
    /// Line (1-based) of every node, keyed by field path (`spec.metrics[0].name`).
    pub lines: LineIndex,
    /// Line where the document starts.
    pub line: usize,
}

/// Lines of nodes keyed by field path; the root path is `.`.
#[derive(Debug, Clone, Default)]
pub struct LineIndex(HashMap<String, usize>);

impl LineIndex {
    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path.to_string();
        loop {
            if let Some(l) = self.0.get(&p) {
                return Some(*l);
            }
            match parent_path(&p) {
                Some(parent) => p = parent,
                None => return self.0.get(".").copied(),
            }
        }
    }
}

/// `a.b[0].c` → `a.b[0]` → `a.b` → `a` → `.`.
pub fn parent_path(path: &str) -> Option<String> {
    if path == "." || path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']);
    match cut {
        Some(0) | None => Some(".".to_string()),
        Some(i) => Some(path[..i].to_string()),
    }
}

/// Joins a field name onto a path the way `serde_path_to_error` prints paths.
pub fn child_path(parent: &str, key: &str) -> String {
    if parent == "." {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Joins a sequence index onto a path.
pub fn index_path(parent: &str, i: usize) -> String {
    if parent == "." {
        format!("[{i}]")
    } else {
        format!("{parent}[{i}]")
    }
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct YamlError {
    /// 1-based line.
    pub line: usize,
    /// Parser message.
    pub message: String,
}

/// Parses every document of `src`. Empty documents (e.g. a trailing `---`) are skipped.
pub fn parse_documents(src: &str) -> Result<Vec<Document>, YamlError> {
    let docs = MarkedYaml::load_from_str(src).map_err(|e| YamlError {
        line: e.marker().line(),
        message: e.info().to_string(),
    })?;
    let mut out = Vec::new();
    for doc in docs {
        let mut lines = HashMap::new();
        let value = convert(&doc, ".", &mut lines)?;
        if value.is_null() {
            continue;
        }
        out.push(Document {
            value,
            line: doc.span.start.line(),
            lines: LineIndex(lines),
        });
    }
    Ok(out)
}

fn convert(
    node: &MarkedYaml<'_>,
    path: &str,
    lines: &mut HashMap<String, usize>,
) -> Result<Value, YamlError> {
    let line = node.span.start.line();
    lines.entry(path.to_string()).or_insert(line);
    Ok(match &node.data {
        YamlData::Value(s) => scalar(s),
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Sequence(items) => {
            let mut arr = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                arr.push(convert(item, &index_path(path, i), lines)?);
            }
            Value::Array(arr)
        }
        YamlData::Mapping(map) => {
            let mut obj = Map::new();
            for (k, v) in map {
                let key = match &k.data {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    YamlData::Value(s) => match scalar(s) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    },
                    YamlData::Representation(text, _, _) => text.to_string(),
                    _ => {
                        return Err(YamlError {
                            line: k.span.start.line(),
                            message: "mapping keys must be plain scalars".into(),
                        });
                    }
                };
                let p = child_path(path, &key);
                lines.insert(p.clone(), k.span.start.line());
                let value = convert(v, &p, lines)?;
                // The key's line is where a reader looks for the field.
                lines.insert(p, k.span.start.line());
                obj.insert(key, value);
            }
            Value::Object(obj)
        }
        YamlData::Tagged(_, inner) => convert(inner, path, lines)?,
        YamlData::Alias(_) => {
            return Err(YamlError {
                line,
                message: "YAML aliases are not supported".into(),
            });
        }
        YamlData::BadValue => {
            return Err(YamlError {
                line,
                message: "value does not match its tag".into(),
            });
        }
    })
}

fn scalar(s: &Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => Number::from_f64(f.into_inner())
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.into_inner().to_string())),
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_lines_of_keys_and_items() {
        let docs = parse_documents("a: 1\nb:\n  - x: \"9900\"\n    y: 2\n---\nc: true\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].lines.line_of("b[0].y"), Some(4));
        assert_eq!(docs[0].lines.line_of("b[0].x"), Some(3));
        assert_eq!(docs[0].value["b"][0]["x"], Value::String("9900".into()));
        assert_eq!(docs[1].lines.line_of("c"), Some(6));
        // unknown paths fall back to the nearest ancestor
        assert_eq!(docs[0].lines.line_of("b[0].nope"), Some(3));
    }

    #[test]
    fn syntax_error_has_line() {
        let e = parse_documents("a: [1\nb: 2\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn empty_documents_are_skipped() {
        assert_eq!(parse_documents("---\n---\na: 1\n").unwrap().len(), 1);
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent_path("a.b[0].c").as_deref(), Some("a.b[0]"));
        assert_eq!(parent_path("a.b[0]").as_deref(), Some("a.b"));
        assert_eq!(parent_path("a").as_deref(), Some("."));
        assert_eq!(parent_path("."), None);
    }
}
