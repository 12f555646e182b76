//! What skycanary must remember about a VirtualService in file mode, kept out of the manifest.
//!
//! In a cluster, skycanary's bookkeeping (the original routes, the rollback marker) rides on the
//! object as annotations ([`STATE_ANNOTATIONS`]), written in the same request as the
//! routes. In a directory of manifests kept in Git those annotation lines would show in every
//! `git diff` of a weight change, so the file store keeps them in a *sidecar*: one small JSON
//! file per object under `<manifests>/.skycanary/`, merged into the object it reads and split
//! off the object it writes. The pure transforms see the same object in both modes.
//!
//! Why next to the manifests and not in the daemon's state directory: every tool that writes
//! the manifests (the daemon, `skycanary route`, the demo) is given the manifest directory and
//! nothing else, and all of them must see the same original routes and marker. The directory is
//! hidden (the store and `kubectl apply -R` skip it; its files end in `.state`, not `.yaml` or
//! `.json`, so no manifest tool reads them) and carries its own `.gitignore` (`*`), so `git
//! status` stays clean.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

use super::istio::STATE_ANNOTATIONS;
use super::store::{ManifestStoreError, ObjectKey};
use crate::resources::yaml::{ReadError, read_file};

/// The sidecar directory under the manifest root.
pub const SIDECAR_DIR: &str = ".skycanary";

/// Largest sidecar file read: it holds two annotation values (the original routes are bounded
/// by the manifest limits), so anything bigger is not ours.
pub const MAX_SIDECAR_BYTES: u64 = 1 << 20;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The sidecar file of `key` under `root`. Names and namespaces are DNS names in Kubernetes;
/// anything else could climb out of the directory, so it is refused.
pub fn path_of(root: &Path, key: &ObjectKey) -> Result<PathBuf, ManifestStoreError> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    if !ok(&key.namespace) || !ok(&key.name) {
        return Err(ManifestStoreError::Invalid {
            key: key.clone(),
            message: "namespace and name must be DNS names (lower-case letters, digits, '-', \
                      '.') for skycanary to keep its state of the object"
                .into(),
        });
    }
    Ok(root.join(SIDECAR_DIR).join(format!(
        "{}_{}_{}.state",
        key.kind.as_str().to_ascii_lowercase(),
        key.namespace,
        key.name
    )))
}

/// The sidecar's text, `None` when there is none.
pub fn read(path: &Path, key: &ObjectKey) -> Result<Option<String>, ManifestStoreError> {
    match read_file(path, MAX_SIDECAR_BYTES) {
        Ok(text) => Ok(Some(text)),
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(ReadError::TooLarge { limit }) => Err(ManifestStoreError::Invalid {
            key: key.clone(),
            message: format!("{}: larger than the limit of {limit} bytes", path.display()),
        }),
        Err(ReadError::Io(e)) => Err(ManifestStoreError::Backend(format!(
            "{}: {e}",
            path.display()
        ))),
    }
}

/// The annotations a sidecar text holds. Only [`STATE_ANNOTATIONS`] with string values are
/// accepted: anything else means the file is not ours or was damaged, and is named.
pub fn parse(
    text: &str,
    path: &Path,
    key: &ObjectKey,
) -> Result<Map<String, Value>, ManifestStoreError> {
    let bad = |why: String| ManifestStoreError::Invalid {
        key: key.clone(),
        message: format!("{}: {why}", path.display()),
    };
    let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let annotations = v
        .get("annotations")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no \"annotations\" object".into()))?;
    for (k, v) in annotations {
        if !STATE_ANNOTATIONS.contains(&k.as_str()) {
            return Err(bad(format!("unexpected annotation {k:?}")));
        }
        if !v.is_string() {
            return Err(bad(format!("annotation {k:?} is not a string")));
        }
    }
    Ok(annotations.clone())
}

/// The sidecar text for `annotations`; `None` when there is nothing to keep (no file).
pub fn render(annotations: &Map<String, Value>) -> Option<String> {
    if annotations.is_empty() {
        return None;
    }
    let mut o = Map::new();
    o.insert("annotations".into(), Value::Object(annotations.clone()));
    Some(format!("{}\n", Value::Object(o)))
}

/// The object as the pure code sees it: the manifest's document with the sidecar's
/// annotations merged in (they win over a copy left in the manifest by an older version).
pub fn merge(manifest: &Value, kept: &Map<String, Value>) -> Value {
    let mut out = manifest.clone();
    if kept.is_empty() {
        return out;
    }
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        if !matches!(meta.get("annotations"), Some(Value::Object(_))) {
            meta.insert("annotations".into(), Value::Object(Map::new()));
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            for (k, v) in kept {
                a.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// Splits an object to write into the manifest's document and the sidecar's annotations.
/// When taking ours off leaves no annotation, the map is put back as the manifest has it now
/// (absent, `null` or `{}`), so the first and last write add and remove no line.
pub fn split(object: &Value, manifest_now: &Value) -> (Value, Map<String, Value>) {
    let mut doc = object.clone();
    let mut kept = Map::new();
    let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) else {
        return (doc, kept);
    };
    let now_empty = match meta.get_mut("annotations").and_then(Value::as_object_mut) {
        Some(a) => {
            for k in STATE_ANNOTATIONS {
                if let Some(v) = a.remove(k) {
                    kept.insert(k.to_string(), v);
                }
            }
            a.is_empty()
        }
        None => false,
    };
    if now_empty {
        match manifest_now
            .get("metadata")
            .and_then(|m| m.get("annotations"))
        {
            None => {
                meta.remove("annotations");
            }
            Some(Value::Null) => {
                meta.insert("annotations".into(), Value::Null);
            }
            // A map holding only our annotations (an older version wrote them there) goes.
            Some(Value::Object(m))
                if !m.is_empty() && m.keys().all(|k| STATE_ANNOTATIONS.contains(&k.as_str())) =>
            {
                meta.remove("annotations");
            }
            Some(_) => {}
        }
    }
    (doc, kept)
}

/// Writes (temp file, fsync, rename, fsync of the directory) or, for `None`, removes the
/// sidecar. Creates the directory, with a `.gitignore` ignoring everything, on first use.
pub fn write(path: &Path, text: Option<&str>) -> Result<(), ManifestStoreError> {
    let io =
        |p: &Path, e: std::io::Error| ManifestStoreError::Backend(format!("{}: {e}", p.display()));
    let dir = path.parent().ok_or_else(|| {
        ManifestStoreError::Backend(format!("{}: no parent directory", path.display()))
    })?;
    let Some(text) = text else {
        return match fs::remove_file(path) {
            Ok(()) => sync_dir(dir).map_err(|e| io(dir, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(path, e)),
        };
    };
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let ignore = dir.join(".gitignore");
        fs::write(
            &ignore,
            "# skycanary's state of the manifests; not a manifest, not for Git\n*\n",
        )
        .map_err(|e| io(&ignore, e))?;
        if let Some(root) = dir.parent() {
            sync_dir(root).map_err(|e| io(root, e))?;
        }
    }
    let temp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| io(&temp, e))?;
        f.write_all(text.as_bytes()).map_err(|e| io(&temp, e))?;
        f.sync_all().map_err(|e| io(&temp, e))?;
        drop(f);
        fs::rename(&temp, path).map_err(|e| io(path, e))?;
        sync_dir(dir).map_err(|e| io(dir, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all())
}

/// A sidecar [`write`](write()) running on its own thread, so its caller goes on meanwhile.
#[derive(Debug)]
pub struct Started {
    path: PathBuf,
    text: Option<String>,
    run: Run,
}

#[derive(Debug)]
enum Run {
    Thread(std::thread::JoinHandle<Result<(), ManifestStoreError>>),
    /// Written on the caller's thread (no thread could start), or failed and owed.
    Done(Result<(), ManifestStoreError>),
}

impl Run {
    fn join(self, path: &Path) -> Result<(), ManifestStoreError> {
        match self {
            Run::Done(result) => result,
            Run::Thread(handle) => handle.join().unwrap_or_else(|_| {
                Err(ManifestStoreError::Backend(format!(
                    "{}: the state file write panicked",
                    path.display()
                )))
            }),
        }
    }
}

impl Started {
    /// Starts writing `text` (`None`: removing the file) to `path`.
    pub fn start(path: PathBuf, text: Option<String>) -> Self {
        let (p, t) = (path.clone(), text.clone());
        let run = match std::thread::Builder::new()
            .name("skycanary-sidecar".into())
            .spawn(move || write(&p, t.as_deref()))
        {
            Ok(handle) => Run::Thread(handle),
            Err(_) => Run::Done(write(&path, text.as_deref())),
        };
        Started { path, text, run }
    }

    /// Waits for the write: `Ok` once the file holds the text, durably.
    pub fn finish(self) -> Result<(), ManifestStoreError> {
        self.run.join(&self.path)
    }
}

/// Sidecar writes finishing after the manifest write they belong to was answered (a
/// rollback's marker, once the status explaining the rollback is on disk). Until one is
/// settled, readers get the text it leaves; one that failed is written again by the next
/// [`Owed::settle`]; none is forgotten.
#[derive(Debug, Default)]
pub struct Owed {
    writes: Mutex<BTreeMap<PathBuf, OwedWrite>>,
    /// One settle at a time, so a write is never joined twice.
    settling: Mutex<()>,
}

/// What a file will hold (`None`: removed), and the write that puts it there (taken out while
/// being settled).
type OwedWrite = (Option<String>, Option<Run>);

impl Owed {
    /// Takes over `started`, replacing what was owed for its file (the caller settled that
    /// first: see [`Owed::settle`]).
    pub fn owe(&self, started: Started) {
        lock(&self.writes).insert(started.path, (started.text, Some(started.run)));
    }

    /// What `path` will hold once its owed write lands: `Some(None)` for a removal, `None`
    /// when nothing is owed (the file on disk is current).
    pub fn text(&self, path: &Path) -> Option<Option<String>> {
        lock(&self.writes).get(path).map(|(text, _)| text.clone())
    }

    /// Nothing owed.
    pub fn is_empty(&self) -> bool {
        lock(&self.writes).is_empty()
    }

    /// Waits until the write owed for `path`, if any, has landed, writing it again once when
    /// it failed. Still failing: it stays owed and the error is returned.
    pub fn settle(&self, path: &Path) -> Result<(), ManifestStoreError> {
        // The common case (nothing owed) does not queue behind another file's settle.
        if !lock(&self.writes).contains_key(path) {
            return Ok(());
        }
        let _one = lock(&self.settling);
        let (text, run) = match lock(&self.writes).get_mut(path) {
            None => return Ok(()),
            Some((text, run)) => (text.clone(), run.take()),
        };
        let result = run
            .map_or(Ok(()), |r| r.join(path))
            .or_else(|_| write(path, text.as_deref()));
        let mut writes = lock(&self.writes);
        match result {
            Ok(()) => {
                writes.remove(path);
                Ok(())
            }
            Err(e) => {
                if let Some((_, run)) = writes.get_mut(path) {
                    *run = Some(Run::Done(Err(e.clone())));
                }
                Err(e)
            }
        }
    }

    /// [`Owed::settle`] for every file owed; the errors of those still failing.
    pub fn settle_all(&self) -> Vec<ManifestStoreError> {
        let paths: Vec<PathBuf> = lock(&self.writes).keys().cloned().collect();
        paths.iter().filter_map(|p| self.settle(p).err()).collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::istio::{ORIGINAL_ROUTES_ANNOTATION, ROLLED_BACK_ANNOTATION};
    use serde_json::json;

    fn key() -> ObjectKey {
        ObjectKey::virtual_service("bookinfo", "reviews")
    }

    #[test]
    fn paths_are_per_object_and_refuse_names_that_climb_out() {
        let root = Path::new("/m");
        assert_eq!(
            path_of(root, &key()).unwrap(),
            Path::new("/m/.skycanary/virtualservice_bookinfo_reviews.state")
        );
        for (ns, name) in [
            ("bookinfo", "../x"),
            ("..", "x"),
            ("a/b", "x"),
            ("", "x"),
            ("ok", "Upper"),
        ] {
            let k = ObjectKey::virtual_service(ns, name);
            assert!(
                matches!(path_of(root, &k), Err(ManifestStoreError::Invalid { .. })),
                "{ns}/{name}"
            );
        }
    }

    #[test]
    fn split_then_merge_gives_the_object_back_and_the_manifest_its_annotations() {
        let manifest = json!({"metadata": {"name": "reviews"}, "spec": {}});
        let object = json!({"metadata": {"name": "reviews", "annotations": {
            ORIGINAL_ROUTES_ANNOTATION: "{}", ROLLED_BACK_ANNOTATION: "r@t"}}, "spec": {"x": 1}});
        let (doc, kept) = split(&object, &manifest);
        assert_eq!(
            doc,
            json!({"metadata": {"name": "reviews"}, "spec": {"x": 1}})
        );
        assert_eq!(kept.len(), 2);
        assert_eq!(merge(&doc, &kept), object);
        let text = render(&kept).unwrap();
        assert_eq!(parse(&text, Path::new("f"), &key()).unwrap(), kept);
        assert_eq!(render(&Map::new()), None);
    }

    #[test]
    fn split_keeps_the_users_annotations_and_the_shape_of_an_empty_map() {
        let theirs =
            json!({"metadata": {"annotations": {"team": "a", ORIGINAL_ROUTES_ANNOTATION: "{}"}}});
        let (doc, kept) = split(
            &theirs,
            &json!({"metadata": {"annotations": {"team": "a"}}}),
        );
        assert_eq!(doc, json!({"metadata": {"annotations": {"team": "a"}}}));
        assert_eq!(kept.len(), 1);
        let ours = json!({"metadata": {"annotations": {ORIGINAL_ROUTES_ANNOTATION: "{}"}}});
        for (now, want) in [
            (
                json!({"metadata": {"annotations": null}}),
                json!({"metadata": {"annotations": null}}),
            ),
            (
                json!({"metadata": {"annotations": {}}}),
                json!({"metadata": {"annotations": {}}}),
            ),
            (json!({"metadata": {}}), json!({"metadata": {}})),
            // An older version's annotation in the manifest moves out.
            (ours.clone(), json!({"metadata": {}})),
        ] {
            assert_eq!(split(&ours, &now).0, want, "{now}");
        }
    }

    #[test]
    fn damaged_or_foreign_sidecars_are_named_errors() {
        for text in [
            "not json",
            "{}",
            "{\"annotations\": {\"other\": \"x\"}}",
            "{\"annotations\": {\"skycanary.io/rolled-back\": 1}}",
        ] {
            let e = parse(text, Path::new("/m/.skycanary/f.state"), &key()).unwrap_err();
            assert!(e.to_string().contains("/m/.skycanary/f.state"), "{e}");
        }
    }

    /// A write owed after its manifest's rename: readers get its text at once; one that
    /// fails stays owed and is written again by each settle until it lands.
    #[test]
    fn an_owed_write_is_read_at_once_and_a_failed_one_is_written_again_by_settle() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("blocker");
        fs::write(&blocker, "a file where the sidecar directory goes").unwrap();
        let path = blocker.join("virtualservice_bookinfo_reviews.state");
        let text = "{\"annotations\":{\"skycanary.io/rolled-back\":\"r@t\"}}\n";
        let owed = Owed::default();
        assert_eq!(owed.text(&path), None);
        assert_eq!(owed.settle(&path), Ok(()), "nothing owed");
        owed.owe(Started::start(path.clone(), Some(text.into())));
        assert_eq!(owed.text(&path), Some(Some(text.to_string())));
        for _ in 0..2 {
            let e = owed.settle(&path).unwrap_err();
            assert!(e.to_string().contains("blocker"), "{e}");
            assert_eq!(owed.text(&path), Some(Some(text.to_string())), "forgotten");
        }
        assert_eq!(owed.settle_all().len(), 1);
        assert!(!owed.is_empty());

        fs::remove_file(&blocker).unwrap();
        assert_eq!(owed.settle_all(), Vec::new());
        assert!(owed.is_empty());
        assert_eq!(owed.text(&path), None);
        assert_eq!(read(&path, &key()).unwrap().as_deref(), Some(text));

        // A removal is owed the same way.
        owed.owe(Started::start(path.clone(), None));
        assert_eq!(owed.text(&path), Some(None));
        owed.settle(&path).unwrap();
        assert_eq!(read(&path, &key()).unwrap(), None);
    }

    #[test]
    fn write_creates_an_ignored_directory_and_removes_the_file_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_of(dir.path(), &key()).unwrap();
        assert_eq!(read(&path, &key()).unwrap(), None);
        write(&path, Some("{\"annotations\":{}}\n")).unwrap();
        assert_eq!(
            read(&path, &key()).unwrap().as_deref(),
            Some("{\"annotations\":{}}\n")
        );
        let ignore = fs::read_to_string(dir.path().join(".skycanary/.gitignore")).unwrap();
        assert!(ignore.lines().any(|l| l == "*"), "{ignore}");
        write(&path, None).unwrap();
        assert_eq!(read(&path, &key()).unwrap(), None);
        write(&path, None).unwrap();
        let left: Vec<_> = fs::read_dir(dir.path().join(".skycanary"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(".gitignore")]);
    }
}
