//! Loading and validating resource files.
//!
//! Every problem of a file is reported, each with file, line and field path: typed
//! deserialization is repeated after removing the offending node, and semantic checks
//! (durations, regexes, conditions, args, queries) run on whatever parsed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::template::*;
use super::yaml::{self, LineIndex, child_path, index_path, parent_path};

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

/// Loads every `.yaml`/`.yml` file under `paths` (recursively for directories).
pub fn load_paths(paths: &[PathBuf]) -> LoadResult {
    let mut result = LoadResult::default();
    let (files, charts) = walk_config(paths, &mut result.errors);
    for chart in charts {
        result.skipped.push(format!(
            "{}: a Helm chart (its templates are not manifests until rendered)",
            chart.display()
        ));
    }
    for f in files {
        let name = f.display().to_string();
        match yaml::read_file(&f, yaml::MAX_CONFIG_FILE_BYTES) {
            Ok(src) => {
                result.files += 1;
                load_str_into(&name, &src, &mut result);
            }
            Err(e) => result.errors.push(ConfigError {
                file: name,
                line: None,
                path: ".".into(),
                message: e.to_string(),
            }),
        }
    }
    check_ca_files(&mut result);
    check_duplicates(&mut result);
    result
}

/// Every `caFile` of the loaded templates must be a readable PEM file with a certificate.
/// Clients read it again when they are built (so a rotated file is picked up); this read
/// refuses a wrong path when the files are loaded (`validate`, `run`, a reload), not at the
/// first measurement. [`load_str`] reads no file: it leaves this to the client.
fn check_ca_files(result: &mut LoadResult) {
    use crate::provider::skywalking::{ProviderError, read_ca_file};
    let mut checked: BTreeMap<String, Result<(), String>> = BTreeMap::new();
    let mut kept = Vec::with_capacity(result.templates.len());
    for t in std::mem::take(&mut result.templates) {
        let mut errs = Vec::new();
        for (i, m) in t.doc.spec.metrics.iter().enumerate() {
            let Some(path) = m
                .provider
                .skywalking
                .as_ref()
                .and_then(|s| s.ca_file.as_ref())
            else {
                continue;
            };
            let outcome = checked.entry(path.clone()).or_insert_with(|| {
                read_ca_file(Path::new(path))
                    .map(drop)
                    .map_err(|e| match e {
                        ProviderError::Config(m) => m,
                        other => other.to_string(),
                    })
            });
            if let Err(why) = outcome {
                let field =
                    child_path(&index_path("spec.metrics", i), "provider.skywalking.caFile");
                errs.push(t.origin.error(&field, why.clone()));
            }
        }
        if errs.is_empty() {
            kept.push(t);
        } else {
            result.errors.extend(errs);
            result.rejected.templates.push((t, true));
        }
    }
    result.templates = kept;
}

/// The files [`load_paths`] reads under `paths`, sorted: `.yaml`/`.yml` files of directories,
/// recursively, hidden entries skipped (a ConfigMap volume's `..data` is reached through its
/// visible links), symlinks followed. A directory or file reached twice (through a link) is
/// read once, and a link back to one of its own ancestors is an error naming the loop, so a
/// symlink loop can neither hang the walk nor duplicate every resource.
/// Helm chart directories (holding a `Chart.yaml`) are not entered: their templates are Go
/// templates, not manifests (deploy/helm/ is one).
pub fn config_files(paths: &[PathBuf], errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    walk_config(paths, errors).0
}

/// [`config_files`], and the Helm chart directories left out.
fn walk_config(paths: &[PathBuf], errors: &mut Vec<ConfigError>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut walk = Walk::default();
    // Depth first with an explicit stack: a deep tree cannot overflow the thread's stack.
    let mut todo: Vec<Step> = paths.iter().rev().cloned().map(Step::Visit).collect();
    while let Some(step) = todo.pop() {
        match step {
            Step::Leave => {
                walk.ancestors.pop();
            }
            Step::Visit(p) => {
                if let Some(children) = walk.visit(&p, errors) {
                    todo.push(Step::Leave);
                    todo.extend(children.into_iter().rev().map(Step::Visit));
                }
            }
        }
    }
    let mut files = walk.files;
    files.sort();
    files.dedup();
    (files, walk.charts)
}

/// Identity of a file or directory (device, inode).
#[cfg(unix)]
fn file_id(m: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

enum Step {
    Visit(PathBuf),
    /// The walk is done with the innermost directory.
    Leave,
}

#[derive(Default)]
struct Walk {
    files: Vec<PathBuf>,
    seen: BTreeSet<(u64, u64)>,
    /// Directories being walked, outermost first.
    ancestors: Vec<(Option<(u64, u64)>, PathBuf)>,
    /// Helm charts left out.
    charts: Vec<PathBuf>,
}

impl Walk {
    /// Takes `p` as a file, or enters it as a directory and returns the children to visit.
    fn visit(&mut self, p: &Path, errors: &mut Vec<ConfigError>) -> Option<Vec<PathBuf>> {
        let file_err = |m: String| ConfigError {
            file: p.display().to_string(),
            line: None,
            path: ".".into(),
            message: m,
        };
        let meta = match std::fs::metadata(p) {
            Ok(m) => m,
            Err(e) => {
                errors.push(file_err(format!("cannot read: {e}")));
                return None;
            }
        };
        let id = file_id(&meta);
        if let Some(id) = id {
            if let Some((_, ancestor)) = self.ancestors.iter().find(|(a, _)| *a == Some(id)) {
                errors.push(file_err(format!(
                    "symlink loop: leads back to {}, not followed",
                    ancestor.display()
                )));
                return None;
            }
            if !self.seen.insert(id) {
                // Already read under another name.
                return None;
            }
        }
        if !meta.is_dir() {
            self.files.push(p.to_path_buf());
            return None;
        }
        if p.join("Chart.yaml").is_file() {
            self.charts.push(p.to_path_buf());
            return None;
        }
        let entries = match std::fs::read_dir(p) {
            Ok(entries) => entries,
            Err(e) => {
                errors.push(file_err(format!("cannot list directory: {e}")));
                return None;
            }
        };
        let mut children: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|c| {
                let hidden = c
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'));
                let yaml = matches!(c.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
                !hidden && (yaml || c.is_dir())
            })
            .collect();
        children.sort();
        self.ancestors.push((id, p.to_path_buf()));
        Some(children)
    }
}

/// Loads all documents of one file's text.
pub fn load_str(file: &str, src: &str) -> LoadResult {
    let mut result = LoadResult {
        files: 1,
        ..Default::default()
    };
    load_str_into(file, src, &mut result);
    check_duplicates(&mut result);
    result
}

fn load_str_into(file: &str, src: &str, result: &mut LoadResult) {
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

fn check_duplicates(result: &mut LoadResult) {
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
