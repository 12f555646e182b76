//! Loading and validating resource text: YAML documents to typed, validated resources.
//!
//! Every problem of a file is reported, each with file, line and field path: typed
//! deserialization is repeated after removing the offending node, and semantic checks
//! (durations, regexes, conditions, args, queries) run on whatever parsed. No file is read
//! here: the runtime's loader (`skycanary::resources::load_paths`) walks directories, reads
//! the files and checks `caFile`s, and feeds the text through [`load_str_into`] and
//! [`check_across_documents`].

use std::collections::BTreeMap;

use serde_json::Value;

pub use super::error::{ConfigError, ConfigErrors, Origin};
use super::template::*;
use super::yaml::{self, parent_path};

/// A parsed, validated analysis template.
#[derive(Debug, Clone)]
pub struct LoadedTemplate {
    /// The resource.
    pub doc: AnalysisTemplateDoc,
    /// Where it came from.
    pub origin: Origin,
}

impl LoadedTemplate {
    /// True for ClusterAnalysisTemplate.
    pub fn cluster_scoped(&self) -> bool {
        self.doc.kind == "ClusterAnalysisTemplate"
    }

    /// True when this template is the one `r` names for a Canary in `namespace`: a
    /// ClusterAnalysisTemplate for `clusterScope: true`, else an AnalysisTemplate of that
    /// namespace (`default` when a file sets none).
    pub fn answers(&self, r: &super::canary::TemplateRef, namespace: &str) -> bool {
        self.doc.metadata.name == r.template_name
            && if r.cluster_scope {
                self.cluster_scoped()
            } else {
                !self.cluster_scoped()
                    && self.doc.metadata.namespace.as_deref().unwrap_or("default") == namespace
            }
    }
}

/// A parsed, validated Canary.
#[derive(Debug, Clone)]
pub struct LoadedCanary {
    /// The resource.
    pub doc: super::canary::CanaryDoc,
    /// Where it came from.
    pub origin: Origin,
}

impl LoadedCanary {
    /// Namespace, `default` when unset (file mode).
    pub fn namespace(&self) -> &str {
        self.doc.metadata.namespace.as_deref().unwrap_or("default")
    }
}

/// A parsed, validated ScheduledAnalysis.
#[derive(Debug, Clone)]
pub struct LoadedScheduled {
    /// The resource.
    pub doc: super::scheduled::ScheduledAnalysisDoc,
    /// Where it came from.
    pub origin: Origin,
}

impl LoadedScheduled {
    /// Namespace, `default` when unset (file mode).
    pub fn namespace(&self) -> &str {
        self.doc.metadata.namespace.as_deref().unwrap_or("default")
    }
}

/// A Canary or ScheduledAnalysis that failed validation: enough to find its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidObject {
    /// `Canary` or `ScheduledAnalysis`.
    pub kind: &'static str,
    /// `metadata.namespace`, `default` when absent (as for valid objects).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Its problems, as `validate` prints them.
    pub errors: Vec<ConfigError>,
}

/// Records `errs` of a `kind` document as an [`InvalidObject`] when the document names itself.
fn note_invalid(result: &mut LoadResult, kind: &'static str, doc: &Value, errs: &[ConfigError]) {
    let meta = doc.get("metadata");
    let text = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    if let (false, Some(name)) = (errs.is_empty(), text("name").filter(|n| !n.is_empty())) {
        result.invalid.push(InvalidObject {
            kind,
            namespace: text("namespace").unwrap_or("default").to_string(),
            name: name.to_string(),
            errors: errs.to_vec(),
        });
    }
}

/// Everything loaded from a set of paths.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Valid templates.
    pub templates: Vec<LoadedTemplate>,
    /// Valid canaries.
    pub canaries: Vec<LoadedCanary>,
    /// Valid scheduled analyses.
    pub scheduled: Vec<LoadedScheduled>,
    /// Notes that are not errors (e.g. checks that could not run).
    pub notes: Vec<String>,
    /// Every problem found.
    pub errors: Vec<ConfigError>,
    /// Canaries and ScheduledAnalyses that failed validation but name themselves, so the
    /// daemon can mark them Invalid (their errors are in `errors` too).
    pub invalid: Vec<InvalidObject>,
    /// Documents of other API groups that were skipped (file, line, kind).
    pub skipped: Vec<String>,
    /// Number of files read.
    pub files: usize,
    /// Objects refused for their own errors (already in `errors`), as far as they parsed; with
    /// `true` when every field parsed (only semantic errors). They keep references to them
    /// from being reported as "not found" on top of their own errors, and the complete ones
    /// have their own references checked, so one `validate` lists every layer of mistakes.
    pub rejected: Rejected,
}

/// Objects refused for their own errors; see [`LoadResult::rejected`].
#[derive(Debug, Clone, Default)]
pub struct Rejected {
    /// Templates, with whether every field parsed.
    pub templates: Vec<(LoadedTemplate, bool)>,
    /// Canaries, with whether every field parsed.
    pub canaries: Vec<(LoadedCanary, bool)>,
    /// Scheduled analyses, with whether every field parsed.
    pub scheduled: Vec<(LoadedScheduled, bool)>,
}

/// Loads all documents of one file's text.
pub fn load_str(file: &str, src: &str) -> LoadResult {
    let mut result = LoadResult {
        files: 1,
        ..Default::default()
    };
    load_str_into(file, src, &mut result);
    check_across_documents(&mut result);
    result
}

/// Adds the documents of one file's text to `result`, each checked on its own; a loader of
/// several files calls it per file, then [`check_across_documents`] once.
pub fn load_str_into(file: &str, src: &str, result: &mut LoadResult) {
    let docs = match yaml::parse_documents(src) {
        Ok(d) => d,
        Err(e) => {
            result.errors.push(ConfigError {
                file: file.into(),
                line: Some(e.line),
                path: ".".into(),
                message: format!("YAML syntax error: {}", e.message),
            });
            return;
        }
    };
    for doc in docs {
        let origin = Origin {
            file: file.to_string(),
            lines: doc.lines.clone(),
        };
        let api_version = doc
            .value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = doc.value.get("kind").and_then(Value::as_str).unwrap_or("");
        if !doc.value.is_object() {
            result
                .errors
                .push(origin.error(".", "a document must be a mapping with apiVersion and kind"));
            continue;
        }
        match (api_version, kind) {
            (API_VERSION | ARGO_API_VERSION, "AnalysisTemplate" | "ClusterAnalysisTemplate") => {
                let (parsed, mut errs, removed) =
                    deserialize_partial::<AnalysisTemplateDoc>(&doc.value, &origin);
                if let Some(t) = parsed {
                    errs.extend(not_under(validate_template(&t, &origin), &removed));
                    let loaded = LoadedTemplate { doc: t, origin };
                    if errs.is_empty() {
                        result.templates.push(loaded);
                    } else {
                        result.rejected.templates.push((loaded, removed.is_empty()));
                    }
                }
                result.errors.extend(errs);
            }
            (API_VERSION, "Canary") => {
                let (parsed, mut errs, removed) =
                    deserialize_partial::<super::canary::CanaryDoc>(&doc.value, &origin);
                if let Some(c) = parsed {
                    let semantic = super::canary_validate::validate_canary(&c, &origin);
                    errs.extend(not_under(semantic, &removed));
                    let loaded = LoadedCanary { doc: c, origin };
                    if errs.is_empty() {
                        result.canaries.push(loaded);
                    } else {
                        result.rejected.canaries.push((loaded, removed.is_empty()));
                    }
                }
                note_invalid(result, "Canary", &doc.value, &errs);
                result.errors.extend(errs);
            }
            (API_VERSION, "ScheduledAnalysis") => {
                let (parsed, mut errs, removed) =
                    deserialize_partial::<super::scheduled::ScheduledAnalysisDoc>(&doc.value, &origin);
                if let Some(s) = parsed {
                    let semantic = super::scheduled_validate::validate_scheduled(&s, &origin);
                    errs.extend(not_under(semantic, &removed));
                    let loaded = LoadedScheduled { doc: s, origin };
                    if errs.is_empty() {
                        result.scheduled.push(loaded);
                    } else {
                        result.rejected.scheduled.push((loaded, removed.is_empty()));
                    }
                }
                note_invalid(result, "ScheduledAnalysis", &doc.value, &errs);
                result.errors.extend(errs);
            }
            (API_VERSION, other) => result.errors.push(origin.error(
                "kind",
                format!("unknown kind {other:?} in {API_VERSION} (expected AnalysisTemplate, ClusterAnalysisTemplate, Canary or ScheduledAnalysis)"),
            )),
            // Neither field: not a Kubernetes object at all (OAP's alarm-settings.yml, a
            // simulator scenario, a values file), so not ours to judge; one field without the
            // other is a broken object.
            ("", "") => result.skipped.push(format!(
                "{}:{}: not a Kubernetes object (no apiVersion, no kind)",
                file, doc.line
            )),
            ("", _) => result.errors.push(origin.error(".", "missing apiVersion")),
            (_, "") => result.errors.push(origin.error(".", "missing kind")),
            (ARGO_API_VERSION, other) => result.skipped.push(format!(
                "{}:{}: {ARGO_API_VERSION} {other} (only AnalysisTemplates are read)",
                file, doc.line
            )),
            (other_api, other) => result.skipped.push(format!("{}:{}: {other_api} {other}", file, doc.line)),
        }
    }
}

/// The checks that need every loaded document at once: duplicate names, two Canaries on one
/// route, template references and their args, rollback targets of ScheduledAnalyses.
pub fn check_across_documents(result: &mut LoadResult) {
    let mut canaries: BTreeMap<(String, String), String> = BTreeMap::new();
    for c in &result.canaries {
        let key = (c.namespace().to_string(), c.doc.metadata.name.clone());
        let here = format!(
            "{}:{}",
            c.origin.file,
            c.origin.lines.line_of(".").unwrap_or(1)
        );
        if let Some(first) = canaries.get(&key) {
            result.errors.push(c.origin.error(
                "metadata.name",
                format!(
                    "duplicate Canary {}/{} (first defined at {first})",
                    key.0, key.1
                ),
            ));
        } else {
            canaries.insert(key, here);
        }
    }
    let mut scheduled: BTreeMap<(String, String), String> = BTreeMap::new();
    for s in &result.scheduled {
        let key = (s.namespace().to_string(), s.doc.metadata.name.clone());
        let here = format!(
            "{}:{}",
            s.origin.file,
            s.origin.lines.line_of(".").unwrap_or(1)
        );
        if let Some(first) = scheduled.get(&key) {
            result.errors.push(s.origin.error(
                "metadata.name",
                format!(
                    "duplicate ScheduledAnalysis {}/{} (first defined at {first})",
                    key.0, key.1
                ),
            ));
        } else {
            scheduled.insert(key, here);
        }
    }
    check_shared_routes(result);
    check_template_references(result);
    check_rollback_references(result);
    let mut seen: BTreeMap<(String, String, String), String> = BTreeMap::new();
    for t in &result.templates {
        let key = (
            t.doc.kind.clone(),
            t.doc.metadata.namespace.clone().unwrap_or_default(),
            t.doc.metadata.name.clone(),
        );
        let here = format!(
            "{}:{}",
            t.origin.file,
            t.origin.lines.line_of(".").unwrap_or(1)
        );
        if let Some(first) = seen.get(&key) {
            result.errors.push(t.origin.error(
                "metadata.name",
                format!("duplicate {} {:?} (first defined at {first})", key.0, key.2),
            ));
        } else {
            seen.insert(key, here);
        }
    }
}

/// Two Canaries writing one route would overwrite each other's weights: the later one (in
/// load order) is refused, naming the first one's file and line.
fn check_shared_routes(result: &mut LoadResult) {
    use super::route_claims::{route_claims, shared_route};
    let claims: Vec<_> = result
        .canaries
        .iter()
        .map(|c| route_claims(&c.doc, c.namespace()))
        .collect();
    for (j, later) in result.canaries.iter().enumerate() {
        let clash = result.canaries[..j]
            .iter()
            .zip(&claims)
            .find_map(|(first, fc)| {
                let same = first.namespace() == later.namespace()
                    && first.doc.metadata.name == later.doc.metadata.name;
                (!same)
                    .then(|| shared_route(fc, &claims[j]))
                    .flatten()
                    .map(|route| (first, route))
            });
        if let Some((first, route)) = clash {
            result.errors.push(later.origin.error(
                "spec.trafficRouting",
                format!(
                    "Canary {}/{} manages the same route as Canary {}/{} ({}:{}): {route}; \
                     two Canaries on one route would overwrite each other's weights",
                    later.namespace(),
                    later.doc.metadata.name,
                    first.namespace(),
                    first.doc.metadata.name,
                    first.origin.file,
                    first.origin.lines.line_of(".").unwrap_or(1),
                ),
            ));
        }
    }
}

/// Every template a Canary names must be among the loaded ones, and every arg a template
/// requires must be supplied. Skipped (with a note) when no template was loaded at all, e.g.
/// when only Canary files are validated for a cluster that holds the templates.
fn check_template_references(result: &mut LoadResult) {
    use super::canary::{ArgValue, CanaryStep, TemplateRef};
    let complete = |ok: &bool| *ok;
    let rejected_canaries: Vec<&LoadedCanary> = result
        .rejected
        .canaries
        .iter()
        .filter(|(_, ok)| complete(ok))
        .map(|(c, _)| c)
        .collect();
    let rejected_scheduled: Vec<&LoadedScheduled> = result
        .rejected
        .scheduled
        .iter()
        .filter(|(_, ok)| complete(ok))
        .map(|(s, _)| s)
        .collect();
    if result.canaries.is_empty()
        && result.scheduled.is_empty()
        && rejected_canaries.is_empty()
        && rejected_scheduled.is_empty()
    {
        return;
    }
    if result.templates.is_empty() && result.rejected.templates.is_empty() {
        result.notes.push(
            "no AnalysisTemplate was loaded: template references of Canaries and ScheduledAnalyses were not checked"
                .into(),
        );
        return;
    }
    /// Where templates are referenced: (field path, references, args given there).
    type Group<'a> = (String, &'a [TemplateRef], Vec<&'a ArgValue>);
    let mut users: Vec<(&Origin, &str, Vec<Group<'_>>)> = Vec::new();
    for s in result.scheduled.iter().chain(rejected_scheduled) {
        let spec = &s.doc.spec;
        users.push((
            &s.origin,
            s.namespace(),
            vec![("spec".into(), &spec.templates, spec.args.iter().collect())],
        ));
    }
    for c in result.canaries.iter().chain(rejected_canaries) {
        let ns = c.namespace();
        let mut groups: Vec<(String, &[TemplateRef], Vec<&ArgValue>)> = Vec::new();
        let bg_args: Vec<&ArgValue> = c
            .doc
            .spec
            .analysis
            .iter()
            .flat_map(|a| a.args.iter())
            .collect();
        if let Some(bg) = &c.doc.spec.analysis {
            groups.push(("spec.analysis".into(), &bg.templates, bg_args.clone()));
        }
        for (i, s) in c.doc.spec.steps.iter().enumerate() {
            if let CanaryStep::Analysis(a) = s {
                groups.push((
                    format!("spec.steps[{i}].analysis"),
                    &a.templates,
                    a.args.iter().collect(),
                ));
            }
        }
        users.push((&c.origin, ns, groups));
    }
    let mut errors = Vec::new();
    for (origin, ns, groups) in users {
        for (path, refs, args) in groups {
            for (i, r) in refs.iter().enumerate() {
                let p = format!("{path}.templates[{i}].templateName");
                let found = result.templates.iter().find(|t| t.answers(r, ns));
                // A template refused for its own errors exists: those errors are listed, a
                // "not found" would send the reader looking for a missing file.
                let refused = || {
                    result
                        .rejected
                        .templates
                        .iter()
                        .find(|(t, _)| t.answers(r, ns))
                        .map(|(t, _)| t)
                };
                let found = found.or_else(refused);
                let Some(t) = found else {
                    let kind = if r.cluster_scope {
                        "ClusterAnalysisTemplate"
                    } else {
                        "AnalysisTemplate"
                    };
                    let scope = if r.cluster_scope {
                        String::new()
                    } else {
                        format!(" in namespace {ns}")
                    };
                    errors.push(
                        origin.error(&p, format!("{kind} {:?} not found{scope}", r.template_name)),
                    );
                    continue;
                };
                for a in &t.doc.spec.args {
                    let supplied = args.iter().any(|v| v.name == a.name);
                    if !supplied && a.value.is_none() && a.value_from.is_none() {
                        errors.push(origin.error(
                            &format!("{path}.args"),
                            format!(
                                "template {:?} requires arg {:?}, which is not supplied",
                                r.template_name, a.name
                            ),
                        ));
                    }
                }
            }
        }
    }
    result.errors.extend(errors);
}

/// Every canary a ScheduledAnalysis rolls back must be among the loaded ones. Skipped (with a
/// note) when no Canary was loaded at all (they may live in the cluster).
fn check_rollback_references(result: &mut LoadResult) {
    let mut errors = Vec::new();
    let mut unchecked = false;
    let complete_scheduled = result
        .rejected
        .scheduled
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(s, _)| s);
    // Canaries refused for their own errors still exist (their errors are listed).
    let canaries: Vec<&LoadedCanary> = result
        .canaries
        .iter()
        .chain(result.rejected.canaries.iter().map(|(c, _)| c))
        .collect();
    for s in result.scheduled.iter().chain(complete_scheduled) {
        let spec = &s.doc.spec;
        for (field, actions) in [
            ("spec.onFailure", &spec.on_failure),
            ("spec.onInconclusive", &spec.on_inconclusive),
            ("spec.onError", &spec.on_error),
        ] {
            let Some(r) = actions.as_ref().and_then(|a| a.rollback.as_ref()) else {
                continue;
            };
            if canaries.is_empty() {
                unchecked = true;
                continue;
            }
            let (ns, name) = super::scheduled::canary_ref(&r.canary, s.namespace());
            let found = canaries
                .iter()
                .any(|c| c.namespace() == ns && c.doc.metadata.name == name);
            if !found {
                errors.push(s.origin.error(
                    &format!("{field}.rollback.canary"),
                    format!("Canary {ns}/{name} not found"),
                ));
            }
        }
    }
    if unchecked {
        result.notes.push(
            "no Canary was loaded: rollback targets of ScheduledAnalyses were not checked".into(),
        );
    }
    result.errors.extend(errors);
}

/// Deserializes `value`, collecting as many errors as possible: after each error the offending
/// node is removed and deserialization is retried.
pub fn deserialize_all<T: serde::de::DeserializeOwned>(
    value: &Value,
    origin: &Origin,
) -> (Option<T>, Vec<ConfigError>) {
    let (parsed, errors, _) = deserialize_partial(value, origin);
    (parsed.filter(|_| errors.is_empty()), errors)
}

/// Like [`deserialize_all`], but also returns what parsed once the offending nodes were removed
/// (so its semantics can be checked in the same pass), and the paths removed.
pub fn deserialize_partial<T: serde::de::DeserializeOwned>(
    value: &Value,
    origin: &Origin,
) -> (Option<T>, Vec<ConfigError>, Vec<String>) {
    let mut v = value.clone();
    let mut errors = Vec::new();
    let mut removed = Vec::new();
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, T>(v.clone()) {
            Ok(t) => return (Some(t), errors, removed),
            Err(e) => {
                let mut path = e.path().to_string();
                let message = e.inner().to_string();
                if removed.contains(&path) {
                    // A sequence element replaced by null that its type cannot take (an enum):
                    // already reported; its sequence goes instead.
                    match parent_path(&path) {
                        Some(parent) if parent != "." => path = parent,
                        _ => return (None, errors, removed),
                    }
                } else {
                    errors.push(origin.error(&path, message.clone()));
                }
                let removable = !message.starts_with("missing field") && path != ".";
                if !(removable && remove_path(&mut v, &path)) {
                    return (None, errors, removed);
                }
                removed.push(path);
            }
        }
    }
    (None, errors, removed)
}

/// Semantic errors of a partly parsed object, without those about a node already reported and
/// removed (or its parent, which lost it): they would only repeat the schema error.
fn not_under(errors: Vec<ConfigError>, removed: &[String]) -> Vec<ConfigError> {
    let related = |e: &ConfigError| {
        removed.iter().any(|r| {
            let under = |a: &str, b: &str| {
                a == b
                    || b == "."
                    || (a.starts_with(b) && matches!(a.as_bytes().get(b.len()), Some(b'.' | b'[')))
            };
            under(&e.path, r) || under(r, &e.path)
        })
    };
    errors.into_iter().filter(|e| !related(e)).collect()
}

/// Removes the node at a `serde_path_to_error` path; false if it does not exist.
fn remove_path(v: &mut Value, path: &str) -> bool {
    let Some(parent) = parent_path(path) else {
        return false;
    };
    let last = &path[if parent == "." { 0 } else { parent.len() }..];
    let Some(target) = lookup_mut(v, &parent) else {
        return false;
    };
    if let Some(idx) = last.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        match (target, idx.parse::<usize>()) {
            (Value::Array(a), Ok(i)) if i < a.len() => {
                // Replace rather than shift, so later indices keep their lines.
                a[i] = Value::Null;
                true
            }
            _ => false,
        }
    } else {
        let key = last.strip_prefix('.').unwrap_or(last);
        target.as_object_mut().and_then(|o| o.remove(key)).is_some()
    }
}

fn lookup_mut<'a>(v: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    if path == "." {
        return Some(v);
    }
    let mut cur = v;
    for seg in split_path(path) {
        cur = match seg {
            Seg::Key(k) => cur.as_object_mut()?.get_mut(&k)?,
            Seg::Index(i) => cur.as_array_mut()?.get_mut(i)?,
        };
    }
    Some(cur)
}

enum Seg {
    Key(String),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key.to_string()));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

/// Semantic checks of a template; every problem is returned. The spec is compiled with its
/// args as run-time placeholders ([`super::compile::validate`]): the same pass a run plans
/// with, so what validates here plans there once the args have values.
pub fn validate_template(t: &AnalysisTemplateDoc, o: &Origin) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    use super::canary_validate::{OBJECT_NAME_MAX, check_name, check_namespace};
    check_name(&t.metadata.name, OBJECT_NAME_MAX, o, &mut errs);
    check_namespace(t.metadata.namespace.as_deref(), o, &mut errs);
    if t.kind == "ClusterAnalysisTemplate" && t.metadata.namespace.is_some() {
        errs.push(o.error(
            "metadata.namespace",
            "a ClusterAnalysisTemplate is cluster-scoped and has no namespace",
        ));
    }
    errs.extend(super::compile::validate(t, o));
    errs
}

/// Parses a raw GraphQL query and returns its top-level response keys (aliases or field names).
/// Only a single `query` operation is allowed.
pub fn raw_query_aliases(text: &str) -> Result<Vec<String>, String> {
    use async_graphql_parser::types::{DocumentOperations, OperationType, Selection};
    let doc = async_graphql_parser::parse_query(text)
        .map_err(|e| format!("GraphQL syntax error: {e}"))?;
    let op = match &doc.operations {
        DocumentOperations::Single(op) => op,
        DocumentOperations::Multiple(ops) => {
            if ops.len() != 1 {
                return Err("the query must contain exactly one operation".into());
            }
            match ops.values().next() {
                Some(op) => op,
                None => return Err("the query contains no operation".into()),
            }
        }
    };
    if op.node.ty != OperationType::Query {
        return Err("only query operations are allowed (no mutation or subscription)".into());
    }
    let mut keys = Vec::new();
    for sel in &op.node.selection_set.node.items {
        match &sel.node {
            Selection::Field(f) => {
                let key = f.node.alias.as_ref().unwrap_or(&f.node.name);
                keys.push(key.node.to_string());
            }
            _ => return Err("fragments at the top level of a raw query are not supported; select fields directly".into()),
        }
    }
    if keys.is_empty() {
        return Err("the query selects nothing".into());
    }
    Ok(keys)
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
