//! Loading resource files: walking directories (symlink loops named, Helm charts left out),
//! reading the files within their size bound and checking that every `caFile` holds a
//! certificate. What the text means — parsing, validation, the checks across documents — is
//! pure and lives in `skycanary-core` (`skycanary_core::resources::load`), re-exported here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use skycanary_core::resources::load::*;

use super::yaml::{self, child_path, index_path};

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
            Err(e) => result
                .errors
                .push(ConfigError::whole_file(name, e.to_string())),
        }
    }
    check_ca_files(&mut result);
    check_across_documents(&mut result);
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
        let file_err = |m: String| ConfigError::whole_file(p.display().to_string(), m);
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

#[cfg(test)]
#[path = "load_paths_tests.rs"]
mod tests;
