//! The one bounded YAML entry point of the project: every file it reads (config, templates,
//! manifests) goes through [`read_file`] and [`parse_documents_with`].
//!
//! Documents are built straight from `saphyr-parser`'s event stream (the parser itself is a
//! state machine, so this never recurses) into `serde_json::Value` for typed deserialization,
//! and every node's line is kept in a [`LineIndex`] keyed by the same field path
//! `serde_path_to_error` reports, so each error can name file, line and field. Hostile input
//! is refused before it costs anything: nesting is capped (deeply nested values would overflow
//! the stack in every later recursive walk, drops included), and so are node count and the
//! bytes built, aliases and field paths counted at their expanded size (billion laughs).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use saphyr::{Scalar, ScalarStyle, Tag};
use saphyr_parser::{Event, Parser};
use serde_json::{Map, Number, Value};

/// Bounds on what one parse may read and build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of YAML text handed to one parse.
    pub max_source_bytes: usize,
    /// Nesting of sequences and mappings.
    pub max_depth: usize,
    /// Nodes built, aliases counted at their expanded size.
    pub max_nodes: usize,
    /// Bytes built (scalars, keys and field paths), aliases counted at their expanded size.
    pub max_expanded_bytes: usize,
    /// Whether aliases are expanded (within the bounds above) or refused.
    pub aliases: bool,
}

/// Resource files (`--config`, `validate`, `analyze`, `route`): aliases are refused, as they are
/// by the Kubernetes API server's JSON, so a file means the same thing in both modes.
pub const CONFIG_LIMITS: Limits = Limits {
    max_source_bytes: 4 << 20,
    max_depth: 64,
    max_nodes: 250_000,
    max_expanded_bytes: 16 << 20,
    aliases: false,
};

/// Istio documents under `--manifests`: written by other tools, so aliases are expanded, within
/// the same bounds.
pub const MANIFEST_LIMITS: Limits = Limits {
    aliases: true,
    ..CONFIG_LIMITS
};

/// Largest resource file read (`--config`, `validate`); past it the file is an error.
pub const MAX_CONFIG_FILE_BYTES: u64 = CONFIG_LIMITS.max_source_bytes as u64;

/// A file that could not be read within its size limit.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file is larger than the limit.
    #[error("file is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// Reading failed (missing, permissions, not UTF-8).
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads a UTF-8 file of at most `limit` bytes. The size is checked before reading and the read
/// itself is capped, so a file that grows meanwhile (or a device) cannot exhaust memory.
pub fn read_file(path: &Path, limit: u64) -> Result<String, ReadError> {
    let f = std::fs::File::open(path)?;
    if f.metadata()?.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    let mut text = String::new();
    f.take(limit.saturating_add(1)).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(text)
}

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

/// Parses every document of `src` within [`CONFIG_LIMITS`]. Empty documents (e.g. a trailing
/// `---`) are skipped.
pub fn parse_documents(src: &str) -> Result<Vec<Document>, YamlError> {
    parse_documents_with(src, &CONFIG_LIMITS)
}

/// Parses every document of `src` within `limits`. Empty documents are skipped.
pub fn parse_documents_with(src: &str, limits: &Limits) -> Result<Vec<Document>, YamlError> {
    if src.len() > limits.max_source_bytes {
        return Err(YamlError {
            line: 1,
            message: format!(
                "{} bytes of YAML, over the limit of {} bytes",
                src.len(),
                limits.max_source_bytes
            ),
        });
    }
    let mut b = Builder::new(limits);
    for event in Parser::new_from_str(src) {
        let (event, span) = event.map_err(|e| YamlError {
            line: e.marker().line(),
            message: e.info().to_string(),
        })?;
        b.event(event, span.start.line())?;
    }
    Ok(b.docs)
}

/// Size of a built subtree, for alias accounting.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    nodes: usize,
    bytes: usize,
    /// Levels of collections from the node down (0 for a scalar, 1 for a flat collection).
    height: usize,
}

impl Shape {
    fn add_child(&mut self, child: Shape) {
        self.nodes = self.nodes.saturating_add(child.nodes);
        self.bytes = self.bytes.saturating_add(child.bytes);
        self.height = self.height.max(child.height.saturating_add(1));
    }
}

enum Container {
    Seq(Vec<Value>),
    /// The pending key is set between a key and its value.
    Map(Map<String, Value>, Option<String>),
}

/// An open sequence or mapping.
struct Frame {
    container: Container,
    path: String,
    /// Where the collection starts.
    line: usize,
    anchor: usize,
    shape: Shape,
}

/// Turns parser events into documents, enforcing [`Limits`] as it goes.
struct Builder<'l> {
    limits: &'l Limits,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Value, Shape)>,
    lines: HashMap<String, usize>,
    root: Option<(Value, usize)>,
    nodes: usize,
    bytes: usize,
    docs: Vec<Document>,
}

impl<'l> Builder<'l> {
    fn new(limits: &'l Limits) -> Self {
        Builder {
            limits,
            stack: Vec::new(),
            anchors: HashMap::new(),
            lines: HashMap::new(),
            root: None,
            nodes: 0,
            bytes: 0,
            docs: Vec::new(),
        }
    }

    /// Counts `nodes` and `bytes` against the whole parse's budget.
    fn charge(&mut self, nodes: usize, bytes: usize, line: usize) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > self.limits.max_nodes {
            return Err(YamlError {
                line,
                message: format!(
                    "more than {} YAML nodes (aliases count expanded)",
                    self.limits.max_nodes
                ),
            });
        }
        if self.bytes > self.limits.max_expanded_bytes {
            return Err(YamlError {
                line,
                message: format!(
                    "the YAML expands to more than {} bytes (aliases count expanded)",
                    self.limits.max_expanded_bytes
                ),
            });
        }
        Ok(())
    }

    /// Path of the node that comes next; errors when a mapping key would be a collection.
    fn next_path(&self, line: usize, collection: bool) -> Result<String, YamlError> {
        Ok(match self.stack.last() {
            None => ".".to_string(),
            Some(f) => match &f.container {
                Container::Seq(items) => index_path(&f.path, items.len()),
                Container::Map(_, Some(key)) => child_path(&f.path, key),
                Container::Map(_, None) if collection => {
                    return Err(YamlError {
                        line,
                        message: "mapping keys must be plain scalars".into(),
                    });
                }
                Container::Map(_, None) => String::new(),
            },
        })
    }

    fn expecting_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                container: Container::Map(_, None),
                ..
            })
        )
    }

    fn too_deep(&self, line: usize) -> YamlError {
        YamlError {
            line,
            message: format!("YAML nested deeper than {} levels", self.limits.max_depth),
        }
    }

    fn event(&mut self, event: Event<'_>, line: usize) -> Result<(), YamlError> {
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
            Event::DocumentStart(_) => {
                self.stack.clear();
                self.anchors.clear();
                self.lines = HashMap::new();
                self.root = None;
            }
            Event::DocumentEnd => {
                if let Some((value, line)) = self.root.take()
                    && !value.is_null()
                {
                    self.docs.push(Document {
                        value,
                        line,
                        lines: LineIndex(std::mem::take(&mut self.lines)),
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                if self.expecting_key() {
                    return self.key(&text, style, tag.as_deref(), line);
                }
                let value = scalar_value(&text, style, tag.as_deref(), line)?;
                let path = self.next_path(line, false)?;
                self.charge(1, text.len().saturating_add(path.len()), line)?;
                self.lines.entry(path).or_insert(line);
                let shape = Shape {
                    nodes: 1,
                    bytes: text.len(),
                    height: 0,
                };
                self.finish(value, shape, anchor, line)?;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                let path = self.next_path(line, true)?;
                if self.stack.len() >= self.limits.max_depth {
                    return Err(self.too_deep(line));
                }
                self.charge(1, path.len(), line)?;
                self.lines.entry(path.clone()).or_insert(line);
                let container = if matches!(event, Event::SequenceStart(..)) {
                    Container::Seq(Vec::new())
                } else {
                    Container::Map(Map::new(), None)
                };
                self.stack.push(Frame {
                    container,
                    path,
                    line,
                    anchor,
                    shape: Shape {
                        nodes: 1,
                        bytes: 0,
                        height: 1,
                    },
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Err(YamlError {
                        line,
                        message: "unbalanced YAML collection".into(),
                    });
                };
                let value = match frame.container {
                    Container::Seq(items) => Value::Array(items),
                    Container::Map(obj, None) => Value::Object(obj),
                    Container::Map(_, Some(key)) => {
                        return Err(YamlError {
                            line,
                            message: format!("key {key:?} has no value"),
                        });
                    }
                };
                self.finish(value, frame.shape, frame.anchor, frame.line)?;
            }
            Event::Alias(id) => {
                if !self.limits.aliases {
                    return Err(YamlError {
                        line,
                        message: "YAML aliases are not supported".into(),
                    });
                }
                if self.expecting_key() {
                    return Err(YamlError {
                        line,
                        message: "mapping keys must be plain scalars".into(),
                    });
                }
                let Some((value, shape)) = self.anchors.get(&id).cloned() else {
                    return Err(YamlError {
                        line,
                        message: "alias of an unknown anchor".into(),
                    });
                };
                if self.stack.len().saturating_add(shape.height) > self.limits.max_depth {
                    return Err(self.too_deep(line));
                }
                let path = self.next_path(line, false)?;
                self.charge(shape.nodes, shape.bytes.saturating_add(path.len()), line)?;
                self.lines.entry(path).or_insert(line);
                self.finish(value, shape, 0, line)?;
            }
        }
        Ok(())
    }

    /// A scalar in key position: becomes the pending key of the open mapping.
    fn key(
        &mut self,
        text: &str,
        style: ScalarStyle,
        tag: Option<&Tag>,
        line: usize,
    ) -> Result<(), YamlError> {
        let key = match scalar_value(text, style, tag, line)? {
            Value::String(s) => s,
            other => other.to_string(),
        };
        let Some(frame) = self.stack.last() else {
            return Ok(());
        };
        if let Container::Map(obj, _) = &frame.container
            && obj.contains_key(&key)
        {
            return Err(YamlError {
                line,
                message: format!("duplicated key {key:?} in mapping"),
            });
        }
        let path = child_path(&frame.path, &key);
        self.charge(0, key.len().saturating_add(path.len()), line)?;
        // The key's line is where a reader looks for the field.
        self.lines.insert(path, line);
        if let Some(Frame {
            container: Container::Map(_, pending),
            shape,
            ..
        }) = self.stack.last_mut()
        {
            shape.bytes = shape.bytes.saturating_add(key.len());
            *pending = Some(key);
        }
        Ok(())
    }

    /// A complete node: remembered under its anchor, then added to its parent (or made the
    /// document's root).
    fn finish(
        &mut self,
        value: Value,
        shape: Shape,
        anchor: usize,
        line: usize,
    ) -> Result<(), YamlError> {
        if anchor > 0 && self.limits.aliases {
            // The copy kept for aliases costs as much as the node itself.
            self.charge(shape.nodes, shape.bytes, line)?;
            self.anchors.insert(anchor, (value.clone(), shape));
        }
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some((value, line));
            return Ok(());
        };
        parent.shape.add_child(shape);
        match &mut parent.container {
            Container::Seq(items) => items.push(value),
            Container::Map(obj, pending) => {
                if let Some(key) = pending.take() {
                    obj.insert(key, value);
                }
            }
        }
        Ok(())
    }
}

/// A scalar's value under the core schema; unknown tags are ignored, a value that does not
/// match its core tag (`!!int x`) is an error.
fn scalar_value(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    line: usize,
) -> Result<Value, YamlError> {
    let core_tag = tag.filter(|t| t.is_yaml_core_schema()).cloned();
    let parsed = Scalar::parse_from_cow_and_metadata(
        std::borrow::Cow::Borrowed(text),
        style,
        core_tag.map(std::borrow::Cow::Owned).as_ref(),
    );
    match parsed {
        Some(s) => Ok(scalar(&s)),
        None => Err(YamlError {
            line,
            message: "value does not match its tag".into(),
        }),
    }
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
    /// Runs `f` on a thread with tokio's default worker stack, where the daemon parses.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .expect("parse overflowed a 2 MiB stack")
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let block = format!(
            "apiVersion: skycanary.io/v1alpha1\nkind: AnalysisTemplate\nx:\n{}x\n",
            "- ".repeat(20_000)
        );
        let flow = format!("a: {}{}\n", "[".repeat(20_000), "]".repeat(20_000));
        let maps = format!("a: {}1{}\n", "{b: ".repeat(20_000), "}".repeat(20_000));
        let e = on_small_stack(move || parse_documents(&block)).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("nested deeper than 64"), "{e}");
        // flow collections: the scanner's own guard or ours, either way an error on line 1
        for src in [flow, maps] {
            let e = on_small_stack(move || parse_documents(&src)).unwrap_err();
            assert_eq!(e.line, 1, "{e}");
        }
        // the limit itself is fine
        let ok = format!("a: {}1{}\n", "[".repeat(63), "]".repeat(63));
        assert!(parse_documents(&ok).is_ok());
        let over = format!("a: {}1{}\n", "[".repeat(64), "]".repeat(64));
        assert!(parse_documents(&over).is_err());
    }

    #[test]
    fn aliases_are_refused_in_resources() {
        let e = parse_documents("a: &x 1\nb: *x\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("aliases are not supported"), "{e}");
    }

    #[test]
    fn aliases_expand_in_manifests_within_bounds() {
        let docs = parse_documents_with("a: &x {k: [1, 2]}\nb: *x\n", &MANIFEST_LIMITS).unwrap();
        assert_eq!(docs[0].value["b"], serde_json::json!({"k": [1, 2]}));
        assert_eq!(docs[0].lines.line_of("b.k"), Some(2));
    }

    #[test]
    fn alias_amplification_is_bounded_by_expanded_bytes() {
        // 100 KB referenced 3,000 times: 300 MB expanded from a 112 KB file
        let mut src = format!("big: &b \"{}\"\nrefs:\n", "x".repeat(100_000));
        src.push_str(&"- *b\n".repeat(3_000));
        let e = parse_documents_with(&src, &MANIFEST_LIMITS).unwrap_err();
        assert!(e.message.contains("expands to more than"), "{e}");
        // billion laughs by node count
        let mut lol = String::from("l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n");
        for i in 1..10 {
            let refs = vec![format!("*l{}", i - 1); 10].join(", ");
            lol.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
        }
        let e = parse_documents_with(&lol, &MANIFEST_LIMITS).unwrap_err();
        assert!(e.message.contains("YAML nodes"), "{e}");
    }

    #[test]
    fn an_alias_cannot_nest_past_the_depth_limit() {
        let src = format!(
            "a: &d {}1{}\nb: {}*d{}\n",
            "[".repeat(40),
            "]".repeat(40),
            "[".repeat(40),
            "]".repeat(40)
        );
        let e = parse_documents_with(&src, &MANIFEST_LIMITS).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("nested deeper"), "{e}");
    }

    #[test]
    fn long_keys_cannot_amplify_through_field_paths() {
        // every child's path repeats the 1 MB key: 20,000 of them would be 20 GB of paths
        let mut src = format!("? {}\n:\n", "k".repeat(1 << 20));
        src.push_str(&"  - 1\n".repeat(20_000));
        let e = parse_documents(&src).unwrap_err();
        assert!(e.message.contains("expands to more than"), "{e}");
    }

    #[test]
    fn oversized_source_and_files_are_refused() {
        let src = "#".repeat(CONFIG_LIMITS.max_source_bytes + 1);
        assert!(
            parse_documents(&src)
                .unwrap_err()
                .message
                .contains("over the limit")
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big.yaml");
        std::fs::write(&f, "a: 1\n").unwrap();
        assert_eq!(read_file(&f, 5).unwrap(), "a: 1\n");
        assert!(matches!(
            read_file(&f, 4),
            Err(ReadError::TooLarge { limit: 4 })
        ));
    }

    #[test]
    fn duplicate_keys_and_collection_keys_are_errors() {
        let e = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(parse_documents("? [a]\n: 1\n").is_err());
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let docs =
            parse_documents("a: 1\nb: \"1\"\nc: true\nd: ~\ne: 1.5\nf: !!str 2\ng: !custom 3\n")
                .unwrap();
        let v = &docs[0].value;
        assert_eq!(v["a"], 1);
        assert_eq!(v["b"], "1");
        assert_eq!(v["c"], true);
        assert!(v["d"].is_null());
        assert_eq!(v["e"], 1.5);
        assert_eq!(v["f"], "2");
        assert_eq!(v["g"], 3);
        assert_eq!(docs[0].line, 1);
        assert!(parse_documents("a: !!int x\n").is_err());
    }
}
