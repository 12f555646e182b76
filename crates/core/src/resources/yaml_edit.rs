//! Format-preserving edits of one YAML document, for manifests kept in Git: a weight change
//! must show in `git diff` as the weight lines only.
//!
//! The document is parsed once more with `saphyr-parser` (the same state machine as the bounded
//! loader in [`super::yaml`], so no recursion) into a tree of byte spans; the old and the new
//! value are compared along that tree, and only what differs is spliced:
//!
//! - a changed scalar is replaced in its span (plain stays plain, quotes keep their kind when the
//!   new text allows it);
//! - a key added to a mapping is inserted after the mapping's last entry at the same indentation
//!   (`, key: value` in a flow mapping); a removed key loses its lines (its text in a flow
//!   mapping);
//! - anything else (a sequence that grows or shrinks, a value that changes kind) re-renders that
//!   node alone, in the style of its position, comments inside it included.
//!
//! Everything outside the edited spans keeps its bytes. The result is parsed back within the
//! caller's limits and must be exactly the intended value; when it is not, or the document uses
//! what these edits do not handle (anchors, aliases, tags, block scalars that change), the
//! caller falls back to re-rendering the whole document.

use std::ops::Range;

use saphyr::{Scalar, ScalarStyle};
use saphyr_parser::{Event, Parser};
use serde_json::Value;

use super::yaml::{Limits, parse_documents_with};

/// Why a document could not be edited in place (the caller then re-renders it whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The old text does not parse.
    #[error("YAML syntax at line {line}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// Parser message.
        message: String,
    },
    /// A construct these edits leave alone.
    #[error("{0} cannot be edited in place")]
    Unsupported(&'static str),
    /// The spliced text does not read back as the intended value.
    #[error("the edited YAML does not read back as the intended object: {0}")]
    Mismatch(String),
}

/// One node of the document with the bytes it covers.
#[derive(Debug)]
struct Node {
    /// Byte range; for a block collection, from its first indicator or key to the end of its
    /// last value (trailing comments are not part of it).
    span: Range<usize>,
    /// Written in flow style (`[..]`, `{..}`) or inside a flow collection.
    flow: bool,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Scalar(ScalarStyle),
    Seq(Vec<Node>),
    /// Entries in document order: key text, key node, value node.
    Map(Vec<(String, Node, Node)>),
}

/// An open collection while the tree is built.
struct Open {
    start: usize,
    flow: bool,
    seq: bool,
    items: Vec<Node>,
    entries: Vec<(String, Node, Node)>,
    pending: Option<(String, Node)>,
}

/// Builds the span tree of the single document of `src`, iteratively, at most `max_depth`
/// collections deep.
fn span_tree(src: &str, max_depth: usize) -> Result<Node, EditError> {
    let bytes = CharToByte::new(src);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    for event in Parser::new_from_str(src) {
        let (event, span) = event.map_err(|e| EditError::Syntax {
            line: e.marker().line(),
            message: e.info().to_string(),
        })?;
        let start = bytes.at(span.start.index());
        let end = bytes.at(span.end.index());
        let in_flow = stack.last().is_some_and(|o| o.flow);
        let node = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(EditError::Unsupported("a stream of several documents"));
                }
                continue;
            }
            Event::Alias(_) => return Err(EditError::Unsupported("an alias")),
            Event::Scalar(_, _, anchor, tag) if anchor > 0 || tag.is_some() => {
                return Err(EditError::Unsupported("an anchored or tagged value"));
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag)
                if anchor > 0 || tag.is_some() =>
            {
                return Err(EditError::Unsupported("an anchored or tagged value"));
            }
            Event::Scalar(text, style, _, _) => {
                let end = match style {
                    // The parser's span runs into the next line's indentation.
                    ScalarStyle::Literal | ScalarStyle::Folded => {
                        let covered = &src[start..end.max(start)];
                        start + covered.rfind('\n').map_or(covered.len(), |i| i + 1)
                    }
                    _ => end,
                };
                let node = Node {
                    span: start..end,
                    flow: in_flow,
                    kind: Kind::Scalar(style),
                };
                if let Some(open) = stack.last_mut()
                    && !open.seq
                    && open.pending.is_none()
                {
                    open.pending = Some((text.into_owned(), node));
                    continue;
                }
                node
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= max_depth {
                    return Err(EditError::Unsupported("a document nested this deep"));
                }
                let seq = matches!(event, Event::SequenceStart(..));
                let flow = in_flow || src[start..].starts_with(['[', '{']);
                let start = if seq && !flow {
                    block_sequence_start(src, start)
                } else {
                    start
                };
                if !seq && stack.last().is_some_and(|o| !o.seq && o.pending.is_none()) {
                    return Err(EditError::Unsupported("a collection as a mapping key"));
                }
                stack.push(Open {
                    start,
                    flow,
                    seq,
                    items: Vec::new(),
                    entries: Vec::new(),
                    pending: None,
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(open) = stack.pop() else {
                    return Err(EditError::Unsupported("an unbalanced collection"));
                };
                let last_end = |fallback: usize| -> usize {
                    if open.seq {
                        open.items.last().map_or(fallback, |n| n.span.end)
                    } else {
                        open.entries.last().map_or(fallback, |(_, _, v)| v.span.end)
                    }
                };
                // A flow collection ends at its closing bracket, a block one with its last value.
                let end = if open.flow {
                    start + 1
                } else {
                    last_end(open.start)
                };
                if open.pending.is_some() {
                    return Err(EditError::Unsupported("a key without a value"));
                }
                Node {
                    span: open.start..end,
                    flow: open.flow,
                    kind: if open.seq {
                        Kind::Seq(open.items)
                    } else {
                        Kind::Map(open.entries)
                    },
                }
            }
            _ => continue,
        };
        match stack.last_mut() {
            None => {
                if root.is_some() {
                    return Err(EditError::Unsupported("a stream of several documents"));
                }
                root = Some(node);
            }
            Some(open) if open.seq => open.items.push(node),
            Some(open) => match open.pending.take() {
                Some((key, key_node)) => open.entries.push((key, key_node, node)),
                None => return Err(EditError::Unsupported("a collection as a mapping key")),
            },
        }
    }
    root.ok_or(EditError::Unsupported("an empty document"))
}

/// The parser may place a block sequence's start after its first `- `: the sequence starts at
/// that dash.
fn block_sequence_start(src: &str, at: usize) -> usize {
    if src[at..].starts_with('-') {
        return at;
    }
    let before = src[..at].trim_end_matches(' ');
    if before.ends_with('-') {
        before.len() - 1
    } else {
        at
    }
}

/// The parser reports character offsets; edits need byte offsets.
struct CharToByte(Option<Vec<usize>>);

impl CharToByte {
    fn new(src: &str) -> Self {
        if src.is_ascii() {
            CharToByte(None)
        } else {
            let mut v: Vec<usize> = src.char_indices().map(|(b, _)| b).collect();
            v.push(src.len());
            CharToByte(Some(v))
        }
    }

    fn at(&self, chars: usize) -> usize {
        match &self.0 {
            None => chars,
            Some(v) => v
                .get(chars)
                .copied()
                .unwrap_or_else(|| *v.last().unwrap_or(&0)),
        }
    }
}

/// Splices collected while comparing.
struct Edits<'a> {
    src: &'a str,
    newline: &'static str,
    splices: Vec<(Range<usize>, String)>,
}

/// Rewrites `src` (one YAML document whose content is `old`) so that it reads as `new`,
/// changing only the spans that differ. The result is verified by parsing it back within
/// `limits`.
pub fn edit_document(
    src: &str,
    old: &Value,
    new: &Value,
    limits: &Limits,
) -> Result<String, EditError> {
    let tree = span_tree(src, limits.max_depth)?;
    let mut edits = Edits {
        src,
        newline: if src.contains("\r\n") { "\r\n" } else { "\n" },
        splices: Vec::new(),
    };
    edits.diff(&tree, old, new)?;
    let out = edits.apply()?;
    let docs = parse_documents_with(&out, limits)
        .map_err(|e| EditError::Mismatch(format!("line {}: {}", e.line, e.message)))?;
    match docs.as_slice() {
        [doc] if doc.value == *new => Ok(out),
        [_] => Err(EditError::Mismatch("a different value".into())),
        _ => Err(EditError::Mismatch(format!("{} documents", docs.len()))),
    }
}

impl Edits<'_> {
    fn splice(&mut self, range: Range<usize>, text: String) {
        self.splices.push((range, text));
    }

    /// Compares `old` (the value `node` holds) with `new`, recording the splices that turn one
    /// into the other.
    fn diff(&mut self, node: &Node, old: &Value, new: &Value) -> Result<(), EditError> {
        if old == new {
            return Ok(());
        }
        match (&node.kind, old, new) {
            (Kind::Scalar(style), _, n) if !n.is_array() && !n.is_object() => {
                if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
                    return Err(EditError::Unsupported("a changed block scalar"));
                }
                let text = scalar_text(n, Some(*style), node.flow);
                self.splice(node.span.clone(), text);
                Ok(())
            }
            (Kind::Seq(items), Value::Array(o), Value::Array(n))
                if items.len() == o.len() && o.len() == n.len() =>
            {
                for ((item, o), n) in items.iter().zip(o).zip(n) {
                    self.diff(item, o, n)?;
                }
                Ok(())
            }
            (Kind::Seq(items), Value::Array(o), Value::Array(n))
                if items.len() == o.len() && !node.flow && !o.is_empty() && !n.is_empty() =>
            {
                if !self.resize_block_sequence(items, o, n)? {
                    return self.replace_node(node, new);
                }
                Ok(())
            }
            (Kind::Map(entries), Value::Object(o), Value::Object(n))
                if entries.len() == o.len() =>
            {
                self.diff_map(node, entries, o, n)
            }
            _ => self.replace_node(node, new),
        }
    }

    fn diff_map(
        &mut self,
        node: &Node,
        entries: &[(String, Node, Node)],
        old: &serde_json::Map<String, Value>,
        new: &serde_json::Map<String, Value>,
    ) -> Result<(), EditError> {
        let kept: Vec<usize> = (0..entries.len())
            .filter(|&i| new.contains_key(&entries[i].0))
            .collect();
        let Some(&last_kept) = kept.last() else {
            return self.replace_node(node, &Value::Object(new.clone()));
        };
        for (i, (key, key_node, value)) in entries.iter().enumerate() {
            match (old.get(key), new.get(key)) {
                (Some(o), Some(n)) => self.diff(value, o, n)?,
                (Some(_), None) => {
                    if !self.delete_entry(node, entries, i, key_node, value) {
                        return self.replace_node(node, &Value::Object(new.clone()));
                    }
                }
                (None, _) => return Err(EditError::Unsupported("a key read differently")),
            }
        }
        let added: Vec<(&String, &Value)> = new
            .iter()
            .filter(|(k, _)| !entries.iter().any(|(e, _, _)| e == *k))
            .collect();
        if added.is_empty() {
            return Ok(());
        }
        let (_, first_key, _) = &entries[0];
        let after = &entries[last_kept].2;
        if node.flow {
            let mut text = String::new();
            for (k, v) in added {
                text.push_str(", ");
                text.push_str(&key_text(k));
                text.push_str(": ");
                text.push_str(&flow_text(v, None, 0)?);
            }
            let at = after.span.end;
            self.splice(at..at, text);
        } else {
            let column = column_of(self.src, first_key.span.start);
            let (at, lead) = line_end_after(self.src, after.span.end);
            let mut text = if lead {
                self.newline.to_string()
            } else {
                String::new()
            };
            for (k, v) in added {
                text.push_str(&" ".repeat(column));
                text.push_str(&key_text(k));
                text.push(':');
                self.block_value(&mut text, v, None, column)?;
                text.push_str(self.newline);
            }
            self.splice(at..at, text);
        }
        Ok(())
    }

    /// A block sequence that gained or lost items at its start or end (managed routes go
    /// first, a canary destination is appended): the other items are compared in place, the
    /// new ones inserted as lines, the removed ones' lines cut. False when the items' lines
    /// cannot be cut cleanly (then the sequence is re-rendered).
    fn resize_block_sequence(
        &mut self,
        items: &[Node],
        old: &[Value],
        new: &[Value],
    ) -> Result<bool, EditError> {
        let dashes: Option<Vec<(usize, usize)>> = items
            .iter()
            .map(|item| self.own_line_dash(item.span.start))
            .collect();
        let Some(dashes) = dashes else {
            return Ok(false);
        };
        let column = column_of(self.src, dashes[0].1);
        let shorter = old.len().min(new.len());
        let d = old.len().max(new.len()) - shorter;
        // Kept items are at the start (offset 0) or the end (offset d) of the longer list.
        let (old_off, new_off) = {
            let mismatches = |off: usize| {
                (0..shorter)
                    .filter(|&i| {
                        let (a, b) = if old.len() > new.len() {
                            (&old[i + off], &new[i])
                        } else {
                            (&old[i], &new[i + off])
                        };
                        a != b
                    })
                    .count()
            };
            let off = if mismatches(d) < mismatches(0) { d } else { 0 };
            if old.len() > new.len() {
                (off, 0)
            } else {
                (0, off)
            }
        };
        for i in 0..shorter {
            self.diff(&items[i + old_off], &old[i + old_off], &new[i + new_off])?;
        }
        if old.len() > new.len() {
            let gone = (0..old.len()).filter(|i| *i < old_off || *i >= old_off + shorter);
            for i in gone {
                let (line_start, _) = dashes[i];
                let (end, _) = line_end_after(self.src, items[i].span.end);
                self.splice(line_start..end, String::new());
            }
            return Ok(true);
        }
        let added: Vec<usize> = (0..new.len())
            .filter(|i| *i < new_off || *i >= new_off + shorter)
            .collect();
        let (at, lead) = if new_off > 0 {
            (dashes[0].0, false)
        } else {
            line_end_after(self.src, items[items.len() - 1].span.end)
        };
        let mut text = if lead {
            self.newline.to_string()
        } else {
            String::new()
        };
        for i in added {
            // Styled after the nearest old item.
            let hint = if new_off > 0 {
                items.first()
            } else {
                items.last()
            };
            text.push_str(&" ".repeat(column));
            text.push_str("- ");
            if is_nonempty_collection(&new[i]) && !was_flow(hint) {
                self.block_collection(&mut text, &new[i], hint, column + 2)?;
            } else {
                text.push_str(&flow_text(&new[i], hint, 0)?);
            }
            text.push_str(self.newline);
        }
        self.splice(at..at, text);
        Ok(true)
    }

    /// For an item starting at `at`: the start of its line and the position of its `- `, when
    /// only indentation precedes the dash.
    fn own_line_dash(&self, at: usize) -> Option<(usize, usize)> {
        let before = self.src[..at].trim_end_matches(' ');
        let dash = before.strip_suffix('-').map(str::len).or_else(|| {
            // The item node itself may start at its dash.
            self.src[at..].starts_with('-').then_some(at)
        })?;
        let line_start = self.src[..dash].rfind('\n').map_or(0, |p| p + 1);
        self.src[line_start..dash]
            .chars()
            .all(|c| c == ' ')
            .then_some((line_start, dash))
    }

    /// Removes entry `i`; false when its text cannot be cut out cleanly (then the mapping is
    /// re-rendered).
    fn delete_entry(
        &mut self,
        node: &Node,
        entries: &[(String, Node, Node)],
        i: usize,
        key: &Node,
        value: &Node,
    ) -> bool {
        if node.flow {
            let range = if i > 0 {
                entries[i - 1].2.span.end..value.span.end
            } else if let Some((_, next, _)) = entries.get(1) {
                key.span.start..next.span.start
            } else {
                return false;
            };
            self.splice(range, String::new());
            return true;
        }
        let line_start = self.src[..key.span.start].rfind('\n').map_or(0, |p| p + 1);
        if !self.src[line_start..key.span.start]
            .chars()
            .all(|c| c == ' ')
        {
            return false;
        }
        let (end, _) = line_end_after(self.src, value.span.end);
        self.splice(line_start..end, String::new());
        true
    }

    /// Re-renders one node in the style its position allows.
    fn replace_node(&mut self, node: &Node, new: &Value) -> Result<(), EditError> {
        let start = node.span.start;
        let line_start = self.src[..start].rfind('\n').map_or(0, |p| p + 1);
        let prefix = &self.src[line_start..start];
        let block_ok = !node.flow
            && prefix.chars().all(|c| c == ' ' || c == '-')
            && is_nonempty_collection(new);
        let text = if block_ok {
            let mut text = String::new();
            self.block_collection(&mut text, new, Some(node), column_of(self.src, start))?;
            text
        } else if !node.flow && !prefix.is_empty() && prefix.chars().all(|c| c == ' ') {
            // A block sequence may sit at its key's indentation, a flow value may not.
            format!("  {}", flow_text(new, Some(node), 0)?)
        } else {
            flow_text(new, Some(node), 0)?
        };
        self.splice(node.span.clone(), text);
        Ok(())
    }

    /// Appends ` value` or a nested block (after a `key:`), children indented two more.
    fn block_value(
        &self,
        out: &mut String,
        v: &Value,
        hint: Option<&Node>,
        column: usize,
    ) -> Result<(), EditError> {
        if is_nonempty_collection(v) && !was_flow(hint) {
            out.push_str(self.newline);
            out.push_str(&" ".repeat(column + 2));
            self.block_collection(out, v, hint, column + 2)
        } else {
            out.push(' ');
            out.push_str(&flow_text(v, hint, 0)?);
            Ok(())
        }
    }

    /// A non-empty collection in block style; the first line is not indented (the caller is
    /// at `column` already), later ones are.
    fn block_collection(
        &self,
        out: &mut String,
        v: &Value,
        hint: Option<&Node>,
        column: usize,
    ) -> Result<(), EditError> {
        if column > 2 * 64 + 2 {
            return Err(EditError::Unsupported("a value nested this deep"));
        }
        let indent = " ".repeat(column);
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(self.newline);
                        out.push_str(&indent);
                    }
                    out.push_str("- ");
                    let h = item_hint(hint, i);
                    if is_nonempty_collection(item) && !was_flow(h) {
                        self.block_collection(out, item, h, column + 2)?;
                    } else {
                        out.push_str(&flow_text(item, h, 0)?);
                    }
                }
            }
            Value::Object(map) => {
                for (i, (k, val)) in ordered(map, hint).into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(self.newline);
                        out.push_str(&indent);
                    }
                    out.push_str(&key_text(k));
                    out.push(':');
                    let h = entry_hint(hint, k);
                    match val {
                        // A sequence under a key may sit at the key's own indentation; two
                        // more is the common style.
                        _ if is_nonempty_collection(val) && !was_flow(h) => {
                            self.block_value(out, val, h, column)?
                        }
                        _ => {
                            out.push(' ');
                            out.push_str(&flow_text(val, h, 0)?);
                        }
                    }
                }
            }
            other => out.push_str(&flow_text(other, hint, 0)?),
        }
        Ok(())
    }

    /// Applies the splices (non-overlapping) and returns the new text.
    fn apply(mut self) -> Result<String, EditError> {
        // Ascending by start; at one position a removal goes before an insertion, so the
        // inserted text lands where the removed text was.
        self.splices
            .sort_by(|a, b| (a.0.start, b.0.end).cmp(&(b.0.start, a.0.end)));
        let mut out = String::with_capacity(self.src.len() + 64);
        let mut at = 0;
        for (range, text) in &self.splices {
            if range.start < at || range.end < range.start || range.end > self.src.len() {
                return Err(EditError::Unsupported("overlapping edits"));
            }
            out.push_str(&self.src[at..range.start]);
            out.push_str(text);
            at = range.end;
        }
        out.push_str(&self.src[at..]);
        Ok(out)
    }
}

fn is_nonempty_collection(v: &Value) -> bool {
    match v {
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => false,
    }
}

/// The old node of sequence item `i` (a new item: the last old one), for style, key order
/// and quoting.
fn item_hint(hint: Option<&Node>, i: usize) -> Option<&Node> {
    match hint.map(|h| &h.kind) {
        Some(Kind::Seq(items)) => items.get(i).or(items.last()),
        _ => None,
    }
}

/// Whether a value at a hinted position is written in flow style, as the old node was.
fn was_flow(hint: Option<&Node>) -> bool {
    hint.is_some_and(|h| h.flow && !matches!(h.kind, Kind::Scalar(_)))
}

/// The old value node of `key`, for key order and quoting.
fn entry_hint<'n>(hint: Option<&'n Node>, key: &str) -> Option<&'n Node> {
    match hint.map(|h| &h.kind) {
        Some(Kind::Map(entries)) => entries.iter().find(|(k, _, _)| k == key).map(|(_, _, v)| v),
        _ => None,
    }
}

/// The entries of `map`: those the old node had first, in its order, then the new ones.
fn ordered<'m>(
    map: &'m serde_json::Map<String, Value>,
    hint: Option<&Node>,
) -> Vec<(&'m String, &'m Value)> {
    let mut out: Vec<(&String, &Value)> = Vec::with_capacity(map.len());
    if let Some(Kind::Map(entries)) = hint.map(|h| &h.kind) {
        for (k, _, _) in entries {
            if let Some((key, v)) = map.get_key_value(k) {
                out.push((key, v));
            }
        }
    }
    for (k, v) in map {
        if !out.iter().any(|(o, _)| *o == k) {
            out.push((k, v));
        }
    }
    out
}

/// Characters from the start of the line to `at` (spaces are all an indentation can be).
fn column_of(src: &str, at: usize) -> usize {
    let line_start = src[..at].rfind('\n').map_or(0, |p| p + 1);
    src[line_start..at].chars().count()
}

/// The position after the end of the line holding `at` (its trailing comment included), and
/// whether the text ends there without a line break (one must be written first).
fn line_end_after(src: &str, at: usize) -> (usize, bool) {
    if at > 0 && src[..at].ends_with('\n') {
        return (at, false);
    }
    match src[at..].find('\n') {
        Some(p) => (at + p + 1, false),
        None => (src.len(), true),
    }
}

/// A value in flow style (also valid in block context): scalars as [`scalar_text`],
/// collections as `[a, b]` and `{k: v}`.
fn flow_text(v: &Value, hint: Option<&Node>, depth: usize) -> Result<String, EditError> {
    if depth > 64 {
        return Err(EditError::Unsupported("a value nested this deep"));
    }
    let style = match hint.map(|h| &h.kind) {
        Some(Kind::Scalar(s)) => Some(*s),
        _ => None,
    };
    Ok(match v {
        Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                parts.push(flow_text(item, item_hint(hint, i), depth + 1)?);
            }
            format!("[{}]", parts.join(", "))
        }
        Value::Object(map) => {
            let mut parts = Vec::with_capacity(map.len());
            for (k, val) in ordered(map, hint) {
                parts.push(format!(
                    "{}: {}",
                    key_text(k),
                    flow_text(val, entry_hint(hint, k), depth + 1)?
                ));
            }
            format!("{{{}}}", parts.join(", "))
        }
        other => scalar_text(other, style, true),
    })
}

/// A mapping key: plain when that reads back as the same string, else double-quoted.
fn key_text(k: &str) -> String {
    scalar_text(&Value::String(k.to_string()), None, true)
}

/// A scalar's text. Strings keep the old style when the new text allows it: plain only when
/// it reads back as the same string (not a number, boolean or null), single quotes when it has
/// no line break; otherwise double quotes with JSON escapes (a subset of YAML's).
fn scalar_text(v: &Value, old: Option<ScalarStyle>, flow: bool) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => match old {
            Some(ScalarStyle::SingleQuoted) if !s.chars().any(char::is_control) => {
                format!("'{}'", s.replace('\'', "''"))
            }
            Some(ScalarStyle::Plain) | None if plain_safe(s, flow) => s.clone(),
            _ => Value::String(s.clone()).to_string(),
        },
        // Collections are never scalars; flow text keeps the output valid regardless.
        other => other.to_string(),
    }
}

/// Conservative: letters, digits and `_./-` only (plus `:` and spaces inside in block
/// context would need more care, so they are quoted), and the core schema reads it as a
/// string.
fn plain_safe(s: &str, _flow: bool) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphanumeric() || first == '_' || first == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && matches!(
            Scalar::parse_from_cow_and_metadata(
                std::borrow::Cow::Borrowed(s),
                ScalarStyle::Plain,
                None
            ),
            Some(Scalar::String(_))
        )
}

#[cfg(test)]
#[path = "yaml_edit_tests.rs"]
mod tests;
