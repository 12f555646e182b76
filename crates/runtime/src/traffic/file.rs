//! A [`ManifestStore`] over a directory of YAML manifests (GitOps repos, `demo`, end-to-end
//! tests). The version of an object is a hash of its document's text, so an edit of that
//! document by any other tool is a conflict; a replace edits only that document and renames a
//! temp file over the original, so readers never see a half-written file and other documents
//! keep their exact bytes, comments included (a rollback whose file changed elsewhere meanwhile
//! puts its document onto the new text: `FileManifestStore::rebase`).
//!
//! Within the document only what changed is rewritten ([`edit_document`]): a weight change
//! replaces the weight scalars, an added or removed key inserts or cuts its lines, a route or
//! destination added or removed at either end of a list inserts or cuts that item's lines; a
//! structural change that is none of these re-renders that node alone. skycanary's own
//! bookkeeping (the original routes, the rollback marker:
//! [`STATE_ANNOTATIONS`](super::istio::STATE_ANNOTATIONS)) never
//! enters the manifest: it is kept in a sidecar state file ([`sidecar`]) and merged into the
//! objects read, so a `git diff` of a weight change shows the weight lines, nothing else. Only
//! a document these edits cannot handle (anchors, aliases, tags, a changed block scalar)
//! is re-rendered whole: then comments *inside* its body are lost (its leading comments and
//! `---` line are kept) and keys keep their original order, new keys after.
//!
//! Lookups cost the same however many manifests there are: objects are indexed by file, and a
//! lookup checks only the directories walked (one `stat` each: a file added, removed or renamed
//! changes its directory) and the one file defining the object (re-read only when its size,
//! mtime, ctime or inode changed). The directory is walked again only when a lookup misses,
//! finds a duplicate, or a directory changed, and on every call of the watchers' methods
//! ([`FileManifestStore::change_tokens`], [`FileManifestStore::problems`], [`FileManifestStore::keys`]); the drift poll
//! calls one every 0.5 s, which also bounds how long a file added in the same clock tick as
//! one of our writes (its directory's stamp then looks unchanged) goes unseen. A file
//! modified less than [`SETTLE`] before it was read is read again each time it is needed,
//! since a second edit within the file system's timestamp granularity could keep its metadata.
//!
//! A changed file is parsed again only in the documents whose text changed (the others are
//! taken from its last reading, shifted), so a write to one of many objects sharing a file
//! parses one document.
//!
//! Objects are indexed per document: a file or document that cannot be read or parsed (another
//! team's typo) is logged and skipped, so it never blocks a write to an object found elsewhere
//! (a rollback must land). It is an error only for a lookup that does not find its object and
//! that the broken document may define (it mentions the name, or could not be read at all).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::future::Future;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use saphyr::{LoadableYamlNode, Mapping, Scalar, Yaml, YamlEmitter};
use serde_json::Value;

use super::gate::CommitGate;
use super::sidecar;
use super::standby::Standby;
use super::store::{ManifestStore, ManifestStoreError, ObjectKey, ObjectKind, Versioned};
use crate::resources::yaml::{MANIFEST_LIMITS, ReadError, parse_documents_with, read_file};
use crate::resources::yaml_edit::edit_document;

/// Largest manifest file read: a changed file is re-read on the next routing operation, so a
/// bigger file is refused (naming it) rather than costing seconds and its size in memory each
/// time. Each Istio document in it is also bounded by [`MANIFEST_LIMITS`].
pub const MAX_MANIFEST_FILE_BYTES: u64 = 8 << 20;

/// Serializes replaces within this process (different stores may share a directory).
static WRITE_LOCK: Mutex<()> = Mutex::new(());
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Istio objects in a directory of YAML files.
#[derive(Debug, Clone)]
pub struct FileManifestStore {
    root: PathBuf,
    /// Problems already logged, so a broken file is logged once, not on every scan.
    logged: Arc<Mutex<BTreeSet<String>>>,
    /// The last reading of each file and where each object is, reused while metadata is
    /// unchanged.
    index: Arc<Mutex<Index>>,
    /// Files read from disk so far (the cost the cache saves).
    files_read: Arc<AtomicU64>,
    /// Files parsed so far (a read whose text had not changed is not parsed).
    files_parsed: Arc<AtomicU64>,
    /// Istio documents parsed so far (those unchanged since the file's last reading are not).
    documents_parsed: Arc<AtomicU64>,
    /// Directory `fsync`s and sidecar writes of gated writes already answered, still running.
    pending: Arc<PendingSyncs>,
    /// Per manifest file, held while a gated write that lost its rename to another writer
    /// puts its document onto the file's new text ([`FileManifestStore::rebase`]).
    rebasing: Arc<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>>,
    /// Rollback texts prepared ahead ([`ManifestStore::stand_by`]), by object.
    standbys: Arc<Mutex<HashMap<ObjectKey, Standby>>>,
    /// Gated writes that found their text prepared (tests and diagnostics).
    standbys_used: Arc<AtomicU64>,
    /// Gated writes answered before their file's new reading was indexed
    /// ([`FileManifestStore::record_later`]).
    unrecorded: Arc<Mutex<Vec<Unrecorded>>>,
}

/// A file a gated write renamed, with its stamps right after the rename, to be indexed later.
#[derive(Debug)]
struct Unrecorded {
    path: PathBuf,
    text: String,
    stamp: Stamp,
    dir: Option<(PathBuf, Stamp)>,
}

/// Rollback texts kept prepared at once (one open file descriptor each, under the process's
/// limit); past it, objects not yet prepared roll back the ordinary way.
pub const MAX_STANDBYS: usize = 256;

/// What a gated write leaves running after its rename (see
/// [`FileManifestStore::stage_gated`]): the directory's `fsync` and, when the
/// status explaining a rollback is already saved, its sidecar write. Each runs on its own
/// thread, and [`ManifestStore::sync_written`] waits for all of them. One that failed is
/// retried by the next wait, never forgotten; the last clone of the store waits for them when
/// dropped, so a command that exits after writing leaves nothing unsynced.
#[derive(Debug, Default)]
struct PendingSyncs {
    running: Mutex<Vec<(PathBuf, std::thread::JoinHandle<std::io::Result<()>>)>>,
    /// Directories whose `fsync` failed: synced again by the next wait.
    failed: Mutex<BTreeSet<PathBuf>>,
    /// Sidecars written after their manifest's rename.
    sidecars: sidecar::Owed,
}

impl PendingSyncs {
    /// Starts the `fsync` of `dir`; a thread that cannot start syncs it here instead.
    fn start(&self, dir: PathBuf) {
        let for_thread = dir.clone();
        match std::thread::Builder::new()
            .name("skycanary-dirsync".into())
            .spawn(move || sync_dir(&for_thread))
        {
            Ok(handle) => self
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((dir, handle)),
            Err(_) => {
                if sync_dir(&dir).is_err() {
                    self.failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(dir);
                }
            }
        }
    }

    /// Nothing running or failed: the common case, answered without a blocking thread.
    fn is_empty(&self) -> bool {
        self.sidecars.is_empty()
            && self
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            && self
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// Waits for every running sidecar write and `fsync` and retries the failed ones; those
    /// still failing stay for the next call and are named in the error.
    fn wait(&self) -> Result<(), ManifestStoreError> {
        let mut errors: Vec<String> = self
            .sidecars
            .settle_all()
            .iter()
            .map(ToString::to_string)
            .collect();
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()));
        let mut failed =
            std::mem::take(&mut *self.failed.lock().unwrap_or_else(|e| e.into_inner()));
        for (dir, handle) in running {
            let synced = handle.join().unwrap_or_else(|_| {
                Err(std::io::Error::other("the directory sync thread panicked"))
            });
            if synced.is_err() {
                failed.insert(dir);
            }
        }
        failed.retain(|dir| match sync_dir(dir) {
            Ok(()) => false,
            Err(e) => {
                errors.push(format!("{}: {e}", dir.display()));
                true
            }
        });
        if errors.is_empty() {
            return Ok(());
        }
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(&mut failed);
        Err(ManifestStoreError::Backend(format!(
            "a written manifest or its state is not on disk yet: {}",
            errors.join("; ")
        )))
    }
}

impl Drop for PendingSyncs {
    fn drop(&mut self) {
        if let Err(e) = self.wait() {
            tracing::warn!("{e}");
        }
    }
}

/// `fsync` of a directory: makes the renames in it durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all())
}

/// How long after its last modification a file's metadata is trusted to reflect its content
/// (above the timestamp granularity of common file systems, FAT's 2 s included).
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    /// ctime and inode on Unix: a rename over the file or an edit that restores mtime shows.
    #[cfg(unix)]
    unix: (i64, i64, u64, u64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        Stamp {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            unix: (m.ctime(), m.ctime_nsec(), m.ino(), m.dev()),
        }
    }
}

/// What the last full scan found, kept current file by file.
#[derive(Debug, Default)]
struct Index {
    /// Every manifest file, as last read.
    files: HashMap<PathBuf, Arc<Indexed>>,
    /// The files defining each object (more than one: a duplicate, reported by a full scan).
    by_key: HashMap<ObjectKey, Vec<PathBuf>>,
    /// Each directory walked and its stamp then: a file added, removed or renamed changes it.
    dirs: Vec<(PathBuf, Stamp)>,
    /// Whether a full scan has filled the index.
    complete: bool,
}

impl Index {
    /// Points the keys of `path` at its new reading.
    fn put(&mut self, path: &Path, indexed: Arc<Indexed>) {
        if let Some(old) = self.files.get(path) {
            for e in &old.entries {
                if let Some(paths) = self.by_key.get_mut(&e.key) {
                    paths.retain(|p| p != path);
                    if paths.is_empty() {
                        self.by_key.remove(&e.key);
                    }
                }
            }
        }
        for e in &indexed.entries {
            let paths = self.by_key.entry(e.key.clone()).or_default();
            if !paths.iter().any(|p| p == path) {
                paths.push(path.to_path_buf());
            }
        }
        self.files.insert(path.to_path_buf(), indexed);
    }
}

/// One object found: its entry and the text of its file.
struct Found {
    entry: Entry,
    file: Arc<Indexed>,
}

/// One file as read and indexed.
#[derive(Debug)]
struct Indexed {
    stamp: Stamp,
    /// Whether the stamp may stand for the content next time (see [`SETTLE`]).
    settled: bool,
    text: String,
    entries: Vec<Entry>,
    problems: Vec<Problem>,
}

/// A file, directory or document under the root that could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path of the file or directory.
    pub file: PathBuf,
    /// Line of the error (1-based); `None` when the whole file could not be read.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// The broken document's text, to tell whether it may define a wanted object; `None` when
    /// the file could not be read (then it may define anything).
    text: Option<String>,
}

impl Problem {
    /// Whether the unreadable content may define `key`: it mentions the name as a whole
    /// word, or its text is unknown.
    fn may_define(&self, key: &ObjectKey) -> bool {
        self.text
            .as_deref()
            .is_none_or(|text| mentions_word(text, &key.name))
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// `word` occurs in `text` not as part of a longer DNS-style name.
fn mentions_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let part = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(part)
    })
}

/// One indexed Istio document.
#[derive(Debug, Clone)]
struct Entry {
    key: ObjectKey,
    file: PathBuf,
    /// Byte range of the document's text (from its `---` line to the next one).
    chunk: Range<usize>,
    /// Line where the document's content starts.
    line: usize,
    value: Value,
}

struct Scan {
    files: Vec<Arc<Indexed>>,
    problems: Vec<Problem>,
}

impl Scan {
    fn entries(&self) -> impl Iterator<Item = (&Entry, &str)> {
        self.files
            .iter()
            .flat_map(|f| f.entries.iter().map(|e| (e, f.text.as_str())))
    }

    /// The object's entry and the text of its file.
    fn find(&self, key: &ObjectKey) -> Result<(&Entry, &str), ManifestStoreError> {
        let found: Vec<(&Entry, &str)> = self.entries().filter(|(e, _)| &e.key == key).collect();
        match found.as_slice() {
            [] => {
                let suspects: Vec<String> = self
                    .problems
                    .iter()
                    .filter(|p| p.may_define(key))
                    .map(ToString::to_string)
                    .collect();
                if suspects.is_empty() {
                    Err(ManifestStoreError::NotFound(key.clone()))
                } else {
                    Err(ManifestStoreError::Unreadable {
                        key: key.clone(),
                        problems: suspects.join("; "),
                    })
                }
            }
            [one] => Ok(*one),
            many => Err(ManifestStoreError::Duplicate {
                key: key.clone(),
                locations: many
                    .iter()
                    .map(|(e, _)| format!("{}:{}", e.file.display(), e.line))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

impl FileManifestStore {
    /// Opens a directory and scans it once, so a broken manifest is reported at start.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ManifestStoreError> {
        let root = dir.into();
        if !root.is_dir() {
            return Err(ManifestStoreError::Backend(format!(
                "{}: not a directory",
                root.display()
            )));
        }
        let store = FileManifestStore {
            root,
            logged: Arc::default(),
            index: Arc::default(),
            files_read: Arc::default(),
            files_parsed: Arc::default(),
            documents_parsed: Arc::default(),
            pending: Arc::default(),
            rebasing: Arc::default(),
            standbys: Arc::default(),
            standbys_used: Arc::default(),
            unrecorded: Arc::default(),
        };
        store.scan()?;
        store.remove_stale_temps();
        Ok(store)
    }

    /// Removes the temporary files of writers that were killed between writing and renaming
    /// (`.NAME.skycanary-PID-N.tmp` beside a manifest) in every directory the scan walked,
    /// when PID no longer runs. A running PID (this process, a concurrent `route set-weight`,
    /// or a reused PID) keeps its files: nothing in flight is ever removed.
    fn remove_stale_temps(&self) {
        let dirs: Vec<PathBuf> = {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            index.dirs.iter().map(|(d, _)| d.clone()).collect()
        };
        for dir in dirs {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = temp_owner(&name.to_string_lossy()) else {
                    continue;
                };
                if process_runs(pid) || !entry.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                let path = entry.path();
                match fs::remove_file(&path) {
                    Ok(()) => tracing::info!(
                        file = %path.display(),
                        "removed the temporary file of a write interrupted by process {pid}"
                    ),
                    Err(e) => tracing::warn!(file = %path.display(), "{e}"),
                }
            }
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every VirtualService/DestinationRule key defined in the directory (duplicates once).
    pub fn keys(&self) -> Result<Vec<ObjectKey>, ManifestStoreError> {
        let mut keys: Vec<ObjectKey> = self.scan()?.entries().map(|(e, _)| e.key.clone()).collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Every VirtualService/DestinationRule key with a token that changes whenever its
    /// document's text changes or its file is written again (even back to earlier text, which
    /// a content hash alone would miss), from one scan; a key defined twice gets both, in file
    /// order. Lets a poll tell which objects changed without a scan per object.
    pub fn change_tokens(&self) -> Result<Vec<(ObjectKey, String)>, ManifestStoreError> {
        let scan = self.scan()?;
        let mut out = Vec::new();
        for file in &scan.files {
            for e in &file.entries {
                let hash = fnv1a_hex(&file.text[e.chunk.clone()]);
                out.push((e.key.clone(), format!("{hash} {:?}", file.stamp)));
            }
        }
        Ok(out)
    }

    /// Files, directories and documents under the root that cannot be read or parsed now.
    pub fn problems(&self) -> Result<Vec<Problem>, ManifestStoreError> {
        Ok(self.scan()?.problems)
    }

    /// Reads and indexes every manifest. Only an unreadable root fails the scan; any other
    /// failure is a [`Problem`] of its file, logged once.
    fn scan(&self) -> Result<Scan, ManifestStoreError> {
        let mut scan = Scan {
            files: Vec::new(),
            problems: Vec::new(),
        };
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        let root_io = |e: std::io::Error| {
            ManifestStoreError::Backend(format!("{}: {e}", self.root.display()))
        };
        // Stamped before listing: a change after the stamp is a change next time.
        let root_stamp = fs::metadata(&self.root).map_err(root_io)?;
        dirs.push((self.root.clone(), Stamp::of(&root_stamp)));
        let top = read_dir_sorted(&self.root).map_err(root_io)?;
        collect_files(top, &mut files, &mut dirs, &mut scan.problems);
        // Cloned (Arcs), not taken: concurrent scans all reuse it.
        let previous = self
            .index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .files
            .clone();
        let mut index = Index {
            dirs,
            complete: true,
            ..Index::default()
        };
        for file in files {
            match self.read_indexed(&file, previous.get(&file)) {
                Ok(indexed) => {
                    scan.problems.extend(indexed.problems.iter().cloned());
                    scan.files.push(indexed.clone());
                    index.put(&file, indexed);
                }
                Err(problem) => scan.problems.push(problem),
            }
        }
        *self.index.lock().unwrap_or_else(|e| e.into_inner()) = index;
        self.log_new_problems(&scan.problems);
        Ok(scan)
    }

    /// One file's reading: the previous one while its stamp stands for its content, else the
    /// file read again (and parsed again only when its text changed).
    fn read_indexed(
        &self,
        file: &Path,
        previous: Option<&Arc<Indexed>>,
    ) -> Result<Arc<Indexed>, Problem> {
        let unreadable = |message: String| Problem {
            file: file.to_path_buf(),
            line: None,
            message,
            text: None,
        };
        let stamp = Stamp::of(&fs::metadata(file).map_err(|e| unreadable(e.to_string()))?);
        if let Some(known) = previous
            && known.settled
            && known.stamp == stamp
        {
            return Ok(known.clone());
        }
        let started = std::time::SystemTime::now();
        self.files_read.fetch_add(1, Ordering::Relaxed);
        let text = read_file(file, MAX_MANIFEST_FILE_BYTES).map_err(|e| {
            unreadable(match e {
                ReadError::TooLarge { limit } => {
                    format!("manifest file is larger than the limit of {limit} bytes")
                }
                ReadError::Io(e) => e.to_string(),
            })
        })?;
        // Read from a file last modified well before the read began: a later edit gets a
        // later timestamp, so an unchanged stamp means unchanged content.
        let settled = stamp
            .modified
            .and_then(|m| m.checked_add(SETTLE))
            .is_some_and(|m| m <= started);
        // A recently written file is read again each time it is needed, but parsed again only
        // when its text changed: a file just written by a rollback costs a read, not a parse.
        let (entries, problems) = match previous {
            Some(known) if known.text == text => (known.entries.clone(), known.problems.clone()),
            _ => {
                self.files_parsed.fetch_add(1, Ordering::Relaxed);
                let (mut entries, mut problems) = (Vec::new(), Vec::new());
                let parsed = index_file_reusing(
                    file,
                    &text,
                    previous.map(|p| &**p),
                    &mut entries,
                    &mut problems,
                );
                self.documents_parsed.fetch_add(parsed, Ordering::Relaxed);
                (entries, problems)
            }
        };
        Ok(Arc::new(Indexed {
            stamp,
            settled,
            text,
            entries,
            problems,
        }))
    }

    /// Finds one object. From the index when it can: no directory walked has changed (one
    /// `stat` per directory), the object is defined in exactly one file, and that file, checked
    /// by its stamp (read again only when changed or recent), still defines it once. Anything
    /// else (a miss, a duplicate, a changed directory, an unreadable file) falls back to a full
    /// scan, which is also what reports the problem. So the cost of a lookup does not grow
    /// with the number of manifests.
    fn lookup(&self, key: &ObjectKey) -> Result<Found, ManifestStoreError> {
        if let Some(found) = self.lookup_indexed(key) {
            return Ok(found);
        }
        let scan = self.scan()?;
        let (entry, _) = scan.find(key)?;
        let entry = entry.clone();
        let file = scan
            .files
            .iter()
            .find(|f| {
                f.entries
                    .iter()
                    .any(|e| e.key == *key && e.file == entry.file)
            })
            .cloned()
            .ok_or_else(|| ManifestStoreError::Backend(format!("{key}: lost from the index")))?;
        Ok(Found { entry, file })
    }

    fn lookup_indexed(&self, key: &ObjectKey) -> Option<Found> {
        let (dirs, path, known) = {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            if !index.complete {
                return None;
            }
            let [path] = index.by_key.get(key)?.as_slice() else {
                return None;
            };
            let known = index.files.get(path)?.clone();
            (index.dirs.clone(), path.clone(), known)
        };
        for (dir, stamp) in &dirs {
            if fs::metadata(dir).map(|m| Stamp::of(&m)).ok().as_ref() != Some(stamp) {
                return None;
            }
        }
        let indexed = self.read_indexed(&path, Some(&known)).ok()?;
        let mut found = indexed.entries.iter().filter(|e| e.key == *key);
        let entry = found.next()?.clone();
        if found.next().is_some() {
            return None;
        }
        if !Arc::ptr_eq(&indexed, &known) {
            let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            if index.complete {
                index.put(&path, indexed.clone());
            }
        }
        Some(Found {
            entry,
            file: indexed,
        })
    }

    /// Records a file this store just wrote: its new text (no need to read it back) and the
    /// new stamp of its directory, which the rename changed.
    fn record_write(&self, path: &Path, text: String) {
        let (stamp, dir_stamp) = stamps_of(path);
        self.record_read(path, text, stamp, dir_stamp);
    }

    /// [`FileManifestStore::record_write`] left for later: the stamps are taken now (right
    /// after the rename, under the write lock), the parse of the new text waits for the next
    /// [`ManifestStore::sync_written`], after the write is answered. A lookup meanwhile finds
    /// the file's stamp changed and reads it itself, as for any file changed elsewhere.
    fn record_later(&self, path: &Path, text: String) {
        let (stamp, dir) = stamps_of(path);
        let Ok(stamp) = stamp else {
            self.index
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .complete = false;
            return;
        };
        let dir = dir.and_then(|(d, s)| Some((d, s.ok()?)));
        self.unrecorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Unrecorded {
                path: path.to_path_buf(),
                text,
                stamp,
                dir,
            });
    }

    /// Indexes the writes [`FileManifestStore::record_later`] left, each only while its file
    /// and directory still carry the stamps taken after its rename (else a lookup reads them).
    fn record_pending(&self) {
        let pending =
            std::mem::take(&mut *self.unrecorded.lock().unwrap_or_else(|e| e.into_inner()));
        for u in pending {
            let (stamp, dir) = stamps_of(&u.path);
            if stamp.as_ref().ok() != Some(&u.stamp) {
                continue;
            }
            let known = self
                .index
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .files
                .get(&u.path)
                .is_some_and(|f| f.stamp == u.stamp);
            if known {
                continue;
            }
            let dir = match (dir, u.dir) {
                (Some((d, Ok(now))), Some((_, then))) if now == then => Some((d, Ok(now))),
                _ => None,
            };
            self.record_read(&u.path, u.text, Ok(u.stamp), dir);
        }
    }

    /// Indexes `text` as `path`'s reading at `stamp`, and `dir_stamp` as its directory's.
    fn record_read(
        &self,
        path: &Path,
        text: String,
        stamp: std::io::Result<Stamp>,
        dir_stamp: Option<(PathBuf, std::io::Result<Stamp>)>,
    ) {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(stamp) = stamp else {
            index.complete = false;
            return;
        };
        let (mut entries, mut problems) = (Vec::new(), Vec::new());
        self.files_parsed.fetch_add(1, Ordering::Relaxed);
        let previous = index.files.get(path).cloned();
        let parsed = index_file_reusing(
            path,
            &text,
            previous.as_deref(),
            &mut entries,
            &mut problems,
        );
        self.documents_parsed.fetch_add(parsed, Ordering::Relaxed);
        index.put(
            path,
            Arc::new(Indexed {
                stamp,
                // Just written: another tool's edit in the same clock tick would keep it.
                settled: false,
                text,
                entries,
                problems,
            }),
        );
        if let Some((dir, Ok(new))) = dir_stamp
            && let Some(known) = index.dirs.iter_mut().find(|(d, _)| *d == dir)
        {
            known.1 = new;
        }
    }

    /// Warns once per distinct problem; a fixed problem is forgotten, so breaking the file
    /// again warns again.
    fn log_new_problems(&self, problems: &[Problem]) {
        let now: BTreeSet<String> = problems.iter().map(ToString::to_string).collect();
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        for p in now.difference(&logged) {
            tracing::warn!(
                manifests = %self.root.display(),
                problem = %p,
                "skipping a manifest that cannot be read; objects it defines are unavailable"
            );
        }
        *logged = now;
    }

    fn get_blocking(&self, key: &ObjectKey) -> Result<Versioned, ManifestStoreError> {
        let found = self.lookup(key)?;
        let chunk = &found.file.text[found.entry.chunk.clone()];
        let (sidecar, kept) = self.read_sidecar(key)?;
        Ok(Versioned {
            object: sidecar::merge(&found.entry.value, &kept),
            version: version_of(chunk, sidecar.as_deref()),
        })
    }

    /// The sidecar's text and annotations of `key` (see [`sidecar`]).
    fn read_sidecar(
        &self,
        key: &ObjectKey,
    ) -> Result<(Option<String>, serde_json::Map<String, Value>), ManifestStoreError> {
        let path = sidecar::path_of(&self.root, key)?;
        let text = match self.pending.sidecars.text(&path) {
            Some(owed) => owed,
            None => sidecar::read(&path, key)?,
        };
        let kept = match &text {
            Some(t) => sidecar::parse(t, &path, key)?,
            None => serde_json::Map::new(),
        };
        Ok((text, kept))
    }

    /// What replacing `key` with `object` writes: the file's text before and after, and the
    /// sidecar's. A version that no longer matches is a conflict. `known`: an edit planned
    /// before (a prepared rollback's), reused when it is the edit of this very document into
    /// this very content, so the document is not edited again.
    fn plan_replace(
        &self,
        key: &ObjectKey,
        object: &Value,
        expected_version: &str,
        known: Option<&KnownEdit>,
    ) -> Result<PlannedWrite, ManifestStoreError> {
        let found = self.lookup(key)?;
        let (entry, text) = (&found.entry, found.file.text.as_str());
        let old_chunk = &text[entry.chunk.clone()];
        let (old_sidecar, _) = self.read_sidecar(key)?;
        if version_of(old_chunk, old_sidecar.as_deref()) != expected_version {
            return Err(ManifestStoreError::Conflict(key.clone()));
        }
        // skycanary's annotations go to the sidecar, the rest to the manifest.
        let (document, kept) = sidecar::split(object, &entry.value);
        let new_sidecar = sidecar::render(&kept);
        let new_chunk = if document == entry.value {
            old_chunk.to_string()
        } else if let Some(k) = known.filter(|k| k.old_chunk == old_chunk && k.document == document)
        {
            k.new_chunk.clone()
        } else {
            match edit_document(old_chunk, &entry.value, &document, &MANIFEST_LIMITS) {
                Ok(edited) => edited,
                Err(why) => {
                    tracing::debug!(object = %key, file = %entry.file.display(), "re-rendering the whole document: {why}");
                    render_chunk(key, old_chunk, &document)?
                }
            }
        };
        let new_text = format!(
            "{}{}{}",
            &text[..entry.chunk.start],
            new_chunk,
            &text[entry.chunk.end..]
        );
        if split_documents(&new_text).len() != split_documents(text).len() {
            return Err(ManifestStoreError::Invalid {
                key: key.clone(),
                message: "the rendered document would change the file's document structure".into(),
            });
        }
        Ok(PlannedWrite {
            file: entry.file.clone(),
            version: version_of(&new_chunk, new_sidecar.as_deref()),
            old_text: found.file.text.clone(),
            new_text,
            old_chunk: old_chunk.to_string(),
            new_chunk,
            document,
            sidecar_path: sidecar::path_of(&self.root, key)?,
            old_sidecar,
            new_sidecar,
        })
    }

    fn replace_blocking(
        &self,
        key: &ObjectKey,
        object: &Value,
        expected_version: &str,
    ) -> Result<String, ManifestStoreError> {
        check_identity(key, object)?;
        self.pending
            .sidecars
            .settle(&sidecar::path_of(&self.root, key)?)?;
        drop(self.take_standby(key));
        let _guard = WRITE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let w = self.plan_replace(key, object, expected_version, None)?;
        // The sidecar first: a crash between the two writes leaves the original routes and
        // the rollback marker recorded over routes not yet changed, never changed routes
        // with nothing recorded.
        if w.sidecar_changed() {
            sidecar::write(&w.sidecar_path, w.new_sidecar.as_deref())?;
        }
        if w.file_changed() {
            let committed =
                prepare_atomically(&w.file, &w.new_text).and_then(|p| p.commit(&w.old_text, key));
            if let Err(e) = committed {
                w.undo_sidecar(key);
                return Err(e);
            }
            self.record_write(&w.file, w.new_text);
        }
        Ok(w.version)
    }

    /// [`FileManifestStore::replace_blocking`] whose manifest rename waits for `gate`. Before it, in
    /// parallel: the sidecar is written (on its own thread) and the new manifest text goes to
    /// a synced temporary file, invisible until renamed. Only the rename is left after the
    /// gate, under the lock; a file changed meanwhile in another document gets this document
    /// put onto its new text ([`FileManifestStore::rebase`]), a change of this document is a
    /// conflict, retried by the router. The lock is not held while waiting, so a slow save
    /// never holds another canary's write.
    ///
    /// What must be on disk before the rename is one record of the decision a restart would
    /// honour. When the gate opens on a saved status ([`CommitGate::saved`]), that status is
    /// the record: the rename goes ahead at once and the sidecar (the rollback marker) finishes
    /// in the background, owed until [`ManifestStore::sync_written`]; readers meanwhile see
    /// the text it will hold. When the save failed, the marker is the record: the rename waits
    /// for it. The directory's `fsync` starts right after the rename and is not waited for
    /// either: the write is answered once visible, and `sync_written` (called before any
    /// status recording it is saved) waits for both. Until then the status saved before the
    /// gate opened (the write pending) is what a restart finds, so a power loss that undoes
    /// the rename has it sent again.
    ///
    /// Two halves: [`FileManifestStore::stage_gated`] before the gate,
    /// [`FileManifestStore::commit_gated`] after.
    fn stage_gated(
        &self,
        key: &ObjectKey,
        object: &Value,
        expected_version: &str,
        gate: &CommitGate,
    ) -> Result<Staged, ManifestStoreError> {
        check_identity(key, object)?;
        self.pending
            .sidecars
            .settle(&sidecar::path_of(&self.root, key)?)?;
        let standby = self.take_standby(key);
        let w = {
            let _guard = WRITE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            self.plan_replace(
                key,
                object,
                expected_version,
                standby.as_ref().map(|s| &s.edit),
            )?
        };
        // The marker starts now only while the status is not saved yet: it is then the
        // record a restart would honour. Once saved, it follows the rename (below), so its
        // syncs do not hold the rename's journal handle.
        let sidecar = (w.sidecar_changed() && !gate.saved())
            .then(|| sidecar::Started::start(w.sidecar_path.clone(), w.new_sidecar.clone()));
        let prepared = match w
            .file_changed()
            .then(|| self.prepare_gated(&w, standby))
            .transpose()
        {
            Ok(p) => p,
            Err(e) => {
                if sidecar.is_some_and(|s| s.finish().is_ok()) {
                    w.undo_sidecar(key);
                }
                return Err(e);
            }
        };
        Ok(Staged {
            key: key.clone(),
            w,
            sidecar,
            prepared,
        })
    }

    /// The second half of a gated write, once `gate` is open: the marker (when it is the
    /// record), the rename, and what follows it.
    fn commit_gated(
        &self,
        staged: Staged,
        gate: &CommitGate,
    ) -> Result<String, ManifestStoreError> {
        let Staged {
            key,
            w,
            sidecar,
            prepared,
        } = staged;
        let key = &key;
        let Some(prepared) = prepared else {
            // Only the sidecar changes: nothing to rename, so nothing to answer early.
            match sidecar {
                Some(s) => s.finish()?,
                None if w.sidecar_changed() => {
                    sidecar::write(&w.sidecar_path, w.new_sidecar.as_deref())?;
                }
                None => {}
            }
            return Ok(w.version);
        };
        let saved = gate.saved();
        let late = match sidecar {
            Some(s) if saved => Some(s),
            Some(s) => {
                // The temporary file goes with `prepared`; a failed sidecar write left the old.
                s.finish()?;
                None
            }
            None => None,
        };
        // Not started because the status was saved before the write was prepared.
        let marker_after_rename = saved && w.sidecar_changed() && late.is_none();
        let guard = WRITE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let renamed = match prepared.rename(&w.old_text, key) {
            Ok(dir) => Ok((dir, w.new_text.clone(), guard)),
            Err(ManifestStoreError::Conflict(_)) => {
                drop(guard);
                self.rebase(key, &w)
            }
            Err(e) => Err(e),
        };
        let (dir, text, _guard) = match renamed {
            Ok(renamed) => renamed,
            Err(e) => {
                let written = match late {
                    Some(s) => s.finish().is_ok(),
                    None => w.sidecar_changed() && !marker_after_rename,
                };
                if written {
                    w.undo_sidecar(key);
                }
                return Err(e);
            }
        };
        match late {
            Some(s) => self.pending.sidecars.owe(s),
            None if marker_after_rename => self.pending.sidecars.owe(sidecar::Started::start(
                w.sidecar_path.clone(),
                w.new_sidecar.clone(),
            )),
            None => {}
        }
        self.pending.start(dir);
        self.record_later(&w.file, text);
        Ok(w.version)
    }

    fn take_standby(&self, key: &ObjectKey) -> Option<Standby> {
        self.standbys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
    }

    /// The gated write's temporary file: `standby`'s, named now, when it holds exactly this
    /// write (same file, planned from the same text to the same text); else written and
    /// synced now.
    fn prepare_gated(
        &self,
        w: &PlannedWrite,
        standby: Option<Standby>,
    ) -> Result<Prepared, ManifestStoreError> {
        if let Some(s) = standby
            && s.holds(&w.old_text, &w.new_text)
            && fs::canonicalize(&w.file).is_ok_and(|real| real == s.real)
        {
            let (dir, temp) = temp_beside(&s.real)?;
            match s.link(&temp) {
                Ok(()) => {
                    self.standbys_used.fetch_add(1, Ordering::Relaxed);
                    return Ok(Prepared {
                        temp,
                        real: s.real.clone(),
                        dir,
                        committed: false,
                    });
                }
                Err(e) => {
                    tracing::debug!(file = %s.real.display(), "the prepared rollback text could not be named, writing it again: {e}")
                }
            }
        }
        prepare_atomically(&w.file, &w.new_text)
    }

    /// [`ManifestStore::stand_by`], on a blocking thread.
    fn stand_by_blocking(
        &self,
        key: &ObjectKey,
        object: &Value,
        expected_version: &str,
    ) -> Result<bool, ManifestStoreError> {
        check_identity(key, object)?;
        let w = {
            let _guard = WRITE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            self.plan_replace(key, object, expected_version, None)?
        };
        drop(self.take_standby(key));
        if !w.file_changed() {
            return Ok(false);
        }
        if self
            .standbys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
            >= MAX_STANDBYS
        {
            return Ok(false);
        }
        let real = fs::canonicalize(&w.file).map_err(|e| backend(&w.file, e))?;
        let edit = KnownEdit {
            old_chunk: w.old_chunk.clone(),
            document: w.document.clone(),
            new_chunk: w.new_chunk.clone(),
        };
        let standby = Standby::prepare(&real, &w.old_text, &w.new_text, edit)
            .map_err(|e| backend(&real, e))?;
        self.standbys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), standby);
        Ok(true)
    }

    /// Gated writes that found their text prepared so far.
    pub fn standbys_used(&self) -> u64 {
        self.standbys_used.load(Ordering::Relaxed)
    }

    /// A gated write whose rename found the file changed since it was planned: when its own
    /// document is still the one it planned from (another document of the file changed:
    /// another canary's rollback in the same file, typically), the new document goes onto the
    /// file's current text, written and renamed again. The object's version depends on its
    /// document only, so this is the write the caller asked for; without it, every canary
    /// rolled back at once in one shared file would conflict with all the others and wait out
    /// the router's backoff. Writers that get here take the file's lock in turn, so they
    /// never conflict with each other again; a changed document is a conflict, as before.
    /// Returns the directory to sync, the text written, and the write lock, still held.
    fn rebase(
        &self,
        key: &ObjectKey,
        w: &PlannedWrite,
    ) -> Result<(PathBuf, String, std::sync::MutexGuard<'static, ()>), ManifestStoreError> {
        let file_lock = self
            .rebasing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(w.file.clone())
            .or_default()
            .clone();
        let _turn = file_lock.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..REBASE_ATTEMPTS {
            let current = read_file(&w.file, MAX_MANIFEST_FILE_BYTES)
                .map_err(|e| ManifestStoreError::Backend(format!("{}: {e}", w.file.display())))?;
            let new_text = splice_document(&current, &w.old_chunk, &w.new_chunk)
                .ok_or_else(|| ManifestStoreError::Conflict(key.clone()))?;
            let prepared = prepare_atomically(&w.file, &new_text)?;
            let guard = WRITE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            match prepared.rename(&current, key) {
                Ok(dir) => return Ok((dir, new_text, guard)),
                Err(ManifestStoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ManifestStoreError::Conflict(key.clone()))
    }
}

/// A gated write between its halves ([`FileManifestStore::stage_gated`]): planned, its
/// marker started unless the status was already saved, its new text in a temporary file
/// (`None`: only the sidecar changes).
struct Staged {
    key: ObjectKey,
    w: PlannedWrite,
    sidecar: Option<sidecar::Started>,
    prepared: Option<Prepared>,
}

/// Renames a rebased write tries before giving up as a conflict: each failed one means another
/// writer's rename landed in between.
const REBASE_ATTEMPTS: usize = 64;

/// `text` with the one document whose text is exactly `old` replaced by `new`; `None` when no
/// document or more than one is `old` (the object changed, or is defined twice).
fn splice_document(text: &str, old: &str, new: &str) -> Option<String> {
    let mut found = split_documents(text)
        .into_iter()
        .map(|(range, _)| range)
        .filter(|range| &text[range.clone()] == old);
    let range = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let spliced = format!("{}{new}{}", &text[..range.start], &text[range.end..]);
    (split_documents(&spliced).len() == split_documents(text).len()).then_some(spliced)
}

/// A document's edit planned before: from `old_chunk` to `new_chunk`, giving it `document`'s
/// content (its skycanary annotations split off).
#[derive(Debug, Clone, Default)]
pub struct KnownEdit {
    old_chunk: String,
    document: Value,
    new_chunk: String,
}

/// One planned replace (see [`FileManifestStore::plan_replace`]).
struct PlannedWrite {
    file: PathBuf,
    /// The object's version once written.
    version: String,
    old_text: String,
    new_text: String,
    /// The object's document before and after, within those texts.
    old_chunk: String,
    new_chunk: String,
    /// The object's document as written (its skycanary annotations split off).
    document: Value,
    sidecar_path: PathBuf,
    old_sidecar: Option<String>,
    new_sidecar: Option<String>,
}

impl PlannedWrite {
    fn sidecar_changed(&self) -> bool {
        self.new_sidecar != self.old_sidecar
    }

    fn file_changed(&self) -> bool {
        self.new_text != self.old_text
    }

    /// Puts the sidecar back after the manifest write failed.
    fn undo_sidecar(&self, key: &ObjectKey) {
        if self.sidecar_changed()
            && let Err(undo) = sidecar::write(&self.sidecar_path, self.old_sidecar.as_deref())
        {
            tracing::warn!(object = %key, "could not put the state file back after a failed write: {undo}");
        }
    }
}

/// An object's version: its document's text and, when it has one, its sidecar's.
fn version_of(chunk: &str, sidecar: Option<&str>) -> String {
    match sidecar {
        None => fnv1a_hex(chunk),
        Some(s) => format!("{}+{}", fnv1a_hex(chunk), fnv1a_hex(s)),
    }
}

impl ManifestStore for FileManifestStore {
    fn describe(&self) -> String {
        format!("manifests {}", self.root.display())
    }

    fn get(
        &self,
        key: &ObjectKey,
    ) -> impl Future<Output = Result<Versioned, ManifestStoreError>> + Send {
        let this = self.clone();
        let key = key.clone();
        async move { run_blocking(move || this.get_blocking(&key)).await? }
    }

    fn replace(
        &self,
        key: &ObjectKey,
        object: &Value,
        expected_version: &str,
    ) -> impl Future<Output = Result<String, ManifestStoreError>> + Send {
        let this = self.clone();
        let (key, object, expected) = (key.clone(), object.clone(), expected_version.to_string());
        async move {
            tokio::task::spawn_blocking(move || this.replace_blocking(&key, &object, &expected))
                .await
                .map_err(|e| ManifestStoreError::Backend(format!("file store task failed: {e}")))?
        }
    }

    fn replace_after(
        &self,
        key: &ObjectKey,
        object: &Value,
        expected_version: &str,
        gate: &CommitGate,
    ) -> impl Future<Output = Result<String, ManifestStoreError>> + Send {
        let this = self.clone();
        let (key, object, expected) = (key.clone(), object.clone(), expected_version.to_string());
        let gate = gate.clone();
        async move {
            // A gate opened by a saved status still takes the gated path: the status is the
            // record a restart honours, so the marker may follow the rename.
            if gate.is_open() && !gate.saved() {
                return this.replace(&key, &object, &expected).await;
            }
            // One thread for both halves and the wait between them: measured faster than
            // waiting on the task between two hand-overs.
            tokio::task::spawn_blocking(move || {
                let staged = this.stage_gated(&key, &object, &expected, &gate)?;
                gate.wait_blocking();
                this.commit_gated(staged, &gate)
            })
            .await
            .map_err(|e| ManifestStoreError::Backend(format!("file store task failed: {e}")))?
        }
    }

    fn stand_by(
        &self,
        key: &ObjectKey,
        object: &Value,
        expected_version: &str,
    ) -> impl Future<Output = ()> + Send {
        let this = self.clone();
        let (key, object, expected) = (key.clone(), object.clone(), expected_version.to_string());
        async move {
            let prepared = tokio::task::spawn_blocking(move || {
                this.stand_by_blocking(&key, &object, &expected)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(e) = prepared {
                tracing::debug!("no rollback text prepared ahead: {e}");
            }
        }
    }

    fn prepares_ahead(&self) -> bool {
        true
    }

    /// A replace writes the object's document and sidecar, which read back as the object.
    fn reads_back_as_written(&self) -> bool {
        true
    }

    fn sync_written(&self) -> impl Future<Output = Result<(), ManifestStoreError>> + Send {
        let this = self.clone();
        async move {
            let unrecorded = !this
                .unrecorded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty();
            if this.pending.is_empty() && !unrecorded {
                return Ok(());
            }
            tokio::task::spawn_blocking(move || {
                this.record_pending();
                this.pending.wait()
            })
            .await
            .map_err(|e| ManifestStoreError::Backend(format!("file store task failed: {e}")))?
        }
    }
}

/// The writer's PID of a temporary file this store names `.NAME.skycanary-PID-N.tmp`
/// (see `prepare_atomically`); `None` for any other name.
fn temp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, tail) = rest.rsplit_once(".skycanary-")?;
    let (pid, n) = tail.split_once('-')?;
    let digits = |t: &str| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(n) {
        return None;
    }
    pid.parse().ok().filter(|_| digits(pid))
}

/// Whether process `pid` runs. Where this cannot be told (no `/proc`), it is assumed to run,
/// so nothing is removed.
fn process_runs(pid: u32) -> bool {
    if pid == std::process::id() || !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new("/proc").join(pid.to_string()).exists()
}

/// The entries of a directory, sorted by name.
fn read_dir_sorted(dir: &Path) -> std::io::Result<Vec<fs::DirEntry>> {
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// `*.yaml`/`*.yml` among `entries`, recursively, sorted, skipping hidden entries. Symlinked
/// directories are not followed (no loops). An unreadable subdirectory is a problem, not a
/// failure of the whole scan.
fn collect_files(
    entries: Vec<fs::DirEntry>,
    out: &mut Vec<PathBuf>,
    dirs: &mut Vec<(PathBuf, Stamp)>,
    problems: &mut Vec<Problem>,
) {
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let problem = |path: PathBuf, e: std::io::Error| Problem {
            file: path,
            line: None,
            message: e.to_string(),
            text: None,
        };
        match entry.file_type() {
            Ok(t) if t.is_dir() => {
                match fs::metadata(&path).and_then(|m| Ok((m, read_dir_sorted(&path)?))) {
                    Ok((meta, inner)) => {
                        dirs.push((path, Stamp::of(&meta)));
                        collect_files(inner, out, dirs, problems)
                    }
                    Err(e) => problems.push(problem(path, e)),
                }
            }
            Ok(_) => {
                if (name.ends_with(".yaml") || name.ends_with(".yml")) && path.is_file() {
                    out.push(path);
                }
            }
            Err(e) => problems.push(problem(path, e)),
        }
    }
}

/// Byte ranges of the documents of a YAML stream, with their first line (1-based). A document
/// starts at a `---` line and ends after a `...` line; both markers are forbidden inside
/// scalars at column 0 (YAML 1.2), so this split is exact without parsing.
fn split_documents(text: &str) -> Vec<(Range<usize>, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        if is_marker(line, "---") && offset > start {
            out.push((start..offset, start_line));
            start = offset;
            start_line = line_no;
        }
        offset += line.len();
        if is_marker(line, "...") {
            out.push((start..offset, start_line));
            start = offset;
            start_line = line_no + 1;
        }
    }
    if offset > start {
        out.push((start..offset, start_line));
    }
    out
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// Indexes the Istio documents of one file; a document that does not parse becomes a
/// [`Problem`] and the others are still indexed.
/// [`index_file`] that takes each document whose text is the same as in `previous` (the
/// file's last reading), at the same position among the documents, from that reading instead
/// of parsing it again: a write changes one document, and a file holding many then costs one
/// parse, not one per document. Returns how many documents were parsed.
fn index_file_reusing(
    file: &Path,
    text: &str,
    previous: Option<&Indexed>,
    out: &mut Vec<Entry>,
    problems: &mut Vec<Problem>,
) -> u64 {
    let new = split_documents(text);
    let old = previous.map(|p| (p, split_documents(&p.text)));
    let Some((previous, old)) = old.filter(|(_, old)| old.len() == new.len()) else {
        return index_file(file, text, out, problems);
    };
    let mut parsed = 0;
    for ((chunk, first_line), (old_chunk, old_line)) in new.into_iter().zip(old) {
        if text[chunk.clone()] != previous.text[old_chunk.clone()] {
            parsed += index_documents(file, text, [(chunk, first_line)], out, problems);
            continue;
        }
        let shift = |line: usize| (line + first_line).saturating_sub(old_line);
        for e in previous.entries.iter().filter(|e| e.chunk == old_chunk) {
            out.push(Entry {
                chunk: chunk.clone(),
                line: shift(e.line),
                ..e.clone()
            });
        }
        // The document's problem: its text, at one of its lines.
        let src = &previous.text[old_chunk.clone()];
        let lines = old_line..=old_line + src.matches('\n').count();
        for p in previous.problems.iter().filter(|p| {
            p.text.as_deref() == Some(src) && p.line.is_some_and(|l| lines.contains(&l))
        }) {
            problems.push(Problem {
                line: p.line.map(shift),
                file: file.to_path_buf(),
                ..p.clone()
            });
        }
    }
    parsed
}

/// Indexes every document of `text`; returns how many Istio documents were parsed.
fn index_file(file: &Path, text: &str, out: &mut Vec<Entry>, problems: &mut Vec<Problem>) -> u64 {
    index_documents(file, text, split_documents(text), out, problems)
}

/// Indexes the documents of `text` at `chunks` (ranges and first lines).
fn index_documents(
    file: &Path,
    text: &str,
    chunks: impl IntoIterator<Item = (Range<usize>, usize)>,
    out: &mut Vec<Entry>,
    problems: &mut Vec<Problem>,
) -> u64 {
    let mut parsed = 0;
    for (chunk, first_line) in chunks {
        let src = &text[chunk.clone()];
        // Only Istio documents are parsed: other kinds never hold what the router needs.
        if !src.contains("networking.istio.io") {
            continue;
        }
        let problem = |line: usize, message: String| Problem {
            file: file.to_path_buf(),
            line: Some(line),
            message,
            text: Some(src.to_string()),
        };
        parsed += 1;
        let docs = match parse_documents_with(src, &MANIFEST_LIMITS) {
            Ok(docs) => docs,
            Err(e) => {
                problems.push(problem(
                    first_line.saturating_add(e.line.saturating_sub(1)),
                    e.message,
                ));
                continue;
            }
        };
        let doc = match docs.as_slice() {
            [] => continue,
            [doc] => doc,
            _ => {
                problems.push(problem(
                    first_line,
                    "cannot delimit the YAML documents".into(),
                ));
                continue;
            }
        };
        let Some(key) = istio_key(&doc.value) else {
            continue;
        };
        out.push(Entry {
            key,
            file: file.to_path_buf(),
            chunk,
            line: first_line + doc.line.saturating_sub(1),
            value: doc.value.clone(),
        });
    }
    parsed
}

/// The key of a VirtualService/DestinationRule of `networking.istio.io/*`; `None` otherwise.
fn istio_key(v: &Value) -> Option<ObjectKey> {
    let api = v.get("apiVersion")?.as_str()?;
    if !api.starts_with("networking.istio.io/") {
        return None;
    }
    let kind = match v.get("kind")?.as_str()? {
        "VirtualService" => ObjectKind::VirtualService,
        "DestinationRule" => ObjectKind::DestinationRule,
        _ => return None,
    };
    let meta = v.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    let namespace = meta
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    Some(ObjectKey {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// The new content must still be the same object, or the write would move or duplicate it.
fn check_identity(key: &ObjectKey, object: &Value) -> Result<(), ManifestStoreError> {
    if istio_key(object).as_ref() == Some(key) {
        Ok(())
    } else {
        Err(ManifestStoreError::Invalid {
            key: key.clone(),
            message: "the new content must keep apiVersion networking.istio.io/*, kind, \
                      metadata.name and metadata.namespace"
                .into(),
        })
    }
}

/// The replacement text of one document: its `---` line and leading comments, the new body,
/// then its trailing comments and `...` line. Verified by parsing it back.
fn render_chunk(key: &ObjectKey, old: &str, object: &Value) -> Result<String, ManifestStoreError> {
    let invalid = |message: String| ManifestStoreError::Invalid {
        key: key.clone(),
        message,
    };
    let lines: Vec<&str> = old.split_inclusive('\n').collect();
    let mut head = 0;
    let mut header = String::new();
    if let Some(first) = lines.first()
        && is_marker(first, "---")
    {
        let rest = first[3..].trim();
        if rest.is_empty() || rest.starts_with('#') {
            header.push_str(first);
        } else {
            header.push_str("---\n");
        }
        head = 1;
    }
    while head < lines.len() && is_comment_or_blank(lines[head]) {
        header.push_str(lines[head]);
        head += 1;
    }
    let mut tail = lines.len();
    while tail > head && (is_comment_or_blank(lines[tail - 1]) || is_marker(lines[tail - 1], "..."))
    {
        tail -= 1;
    }
    let trailer: String = lines[tail..].concat();

    let hint = Yaml::load_from_str(old)
        .ok()
        .and_then(|docs| docs.into_iter().find(|d| !d.is_null()));
    let yaml = to_yaml(object, hint.as_ref()).map_err(invalid)?;
    let mut emitted = String::new();
    let mut emitter = YamlEmitter::new(&mut emitted);
    emitter.multiline(true);
    emitter
        .dump(&yaml)
        .map_err(|e| invalid(format!("cannot emit YAML: {e}")))?;
    let body = emitted.strip_prefix("---\n").unwrap_or(&emitted);
    let mut body = body.to_string();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    if old.contains("\r\n") {
        body = body.replace('\n', "\r\n");
    }
    let chunk = format!("{header}{body}{trailer}");

    let parsed = parse_documents_with(&chunk, &MANIFEST_LIMITS)
        .map_err(|e| invalid(format!("rendered YAML: {e}")))?;
    match parsed.as_slice() {
        [doc] if doc.value == *object => Ok(chunk),
        _ => Err(invalid(
            "the rendered YAML does not read back as the same object".into(),
        )),
    }
}

fn is_comment_or_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || line.starts_with('#')
}

/// JSON → YAML, keeping the key order of `hint` (the old document); new keys follow, sorted.
fn to_yaml(v: &Value, hint: Option<&Yaml<'_>>) -> Result<Yaml<'static>, String> {
    Ok(match v {
        Value::Null => Yaml::Value(Scalar::Null),
        Value::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Yaml::Value(Scalar::Integer(i)),
            (None, Some(_)) if n.is_u64() => {
                return Err(format!("integer {n} is too large for YAML output"));
            }
            (None, Some(f)) => Yaml::Value(Scalar::FloatingPoint(f.into())),
            (None, None) => return Err(format!("number {n} cannot be written")),
        },
        Value::String(s) => Yaml::Value(Scalar::String(Cow::Owned(s.clone()))),
        Value::Array(items) => {
            let hints = hint.and_then(|h| h.as_vec());
            let mut seq = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                seq.push(to_yaml(item, hints.and_then(|h| h.get(i)))?);
            }
            Yaml::Sequence(seq)
        }
        Value::Object(map) => {
            let hinted: Vec<(String, &Yaml<'_>)> = hint
                .and_then(|h| h.as_mapping())
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| yaml_key(k).map(|k| (k, v)))
                        .collect()
                })
                .unwrap_or_default();
            let mut out = Mapping::new();
            let mut push = |k: &str, hint: Option<&Yaml<'_>>| -> Result<(), String> {
                if let Some(value) = map.get(k) {
                    out.insert(
                        Yaml::Value(Scalar::String(Cow::Owned(k.to_string()))),
                        to_yaml(value, hint)?,
                    );
                }
                Ok(())
            };
            for (k, h) in &hinted {
                push(k, Some(h))?;
            }
            for k in map.keys() {
                if !hinted.iter().any(|(hk, _)| hk == k) {
                    push(k, None)?;
                }
            }
            Yaml::Mapping(out)
        }
    })
}

/// A mapping key as the JSON conversion spells it.
fn yaml_key(k: &Yaml<'_>) -> Option<String> {
    match k {
        Yaml::Value(Scalar::String(s)) => Some(s.to_string()),
        Yaml::Value(Scalar::Integer(i)) => Some(i.to_string()),
        Yaml::Value(Scalar::Boolean(b)) => Some(b.to_string()),
        _ => None,
    }
}

/// Runs blocking file work for an async caller: in place on a multi-threaded runtime (the
/// task keeps its thread; the runtime hands its other tasks to another worker), which spares
/// the two thread hand-overs of `spawn_blocking` (tens of microseconds each on a busy host,
/// on a rollback's path); on another thread elsewhere. Never for work that waits on
/// something the calling task itself must do.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ManifestStoreError> {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi {
        return Ok(tokio::task::block_in_place(work));
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ManifestStoreError::Backend(format!("file store task failed: {e}")))
}

/// The stamps of `path` and of its directory, now.
#[allow(clippy::type_complexity)]
fn stamps_of(
    path: &Path,
) -> (
    std::io::Result<Stamp>,
    Option<(PathBuf, std::io::Result<Stamp>)>,
) {
    let stamp = fs::metadata(path).map(|m| Stamp::of(&m));
    let dir = path
        .parent()
        .map(|d| (d.to_path_buf(), fs::metadata(d).map(|m| Stamp::of(&m))));
    (stamp, dir)
}

/// A manifest's new text in a synced temporary file beside it (symlinks resolved, so the link
/// itself survives the rename), not yet renamed over it. Removed when dropped uncommitted.
struct Prepared {
    temp: PathBuf,
    real: PathBuf,
    dir: PathBuf,
    committed: bool,
}

/// `real`'s directory and a fresh temporary name in it (`.NAME.skycanary-PID-N.tmp`).
fn temp_beside(real: &Path) -> Result<(PathBuf, PathBuf), ManifestStoreError> {
    let dir = real
        .parent()
        .ok_or_else(|| {
            ManifestStoreError::Backend(format!("{}: no parent directory", real.display()))
        })?
        .to_path_buf();
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{name}.skycanary-{}-{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    Ok((dir, temp))
}

/// Temp file in the same directory with the original's permissions, written and fsynced:
/// everything of an atomic write that stays invisible.
fn prepare_atomically(file: &Path, new_text: &str) -> Result<Prepared, ManifestStoreError> {
    let real = fs::canonicalize(file).map_err(|e| backend(file, e))?;
    let (dir, temp) = temp_beside(&real)?;
    let permissions = fs::metadata(&real)
        .map_err(|e| backend(&real, e))?
        .permissions();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| backend(&temp, e))?;
    let prepared = Prepared {
        temp,
        real,
        dir,
        committed: false,
    };
    f.write_all(new_text.as_bytes())
        .map_err(|e| backend(&prepared.temp, e))?;
    f.sync_all().map_err(|e| backend(&prepared.temp, e))?;
    drop(f);
    fs::set_permissions(&prepared.temp, permissions).map_err(|e| backend(&prepared.temp, e))?;
    Ok(prepared)
}

impl Prepared {
    /// Re-checks nobody changed the original since `old_text` was read, renames over it and
    /// fsyncs the directory.
    fn commit(self, old_text: &str, key: &ObjectKey) -> Result<(), ManifestStoreError> {
        let dir = self.rename(old_text, key)?;
        sync_dir(&dir).map_err(|e| backend(&dir, e))
    }

    /// [`Prepared::commit`] without the directory's `fsync`: the caller makes the rename
    /// durable (returns the directory to sync).
    fn rename(mut self, old_text: &str, key: &ObjectKey) -> Result<PathBuf, ManifestStoreError> {
        // Narrow the window for another tool's edit to the rename itself.
        let now = fs::read_to_string(&self.real).map_err(|e| backend(&self.real, e))?;
        if now != old_text {
            return Err(ManifestStoreError::Conflict(key.clone()));
        }
        fs::rename(&self.temp, &self.real).map_err(|e| backend(&self.real, e))?;
        self.committed = true;
        Ok(std::mem::take(&mut self.dir))
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

fn backend(path: &Path, e: std::io::Error) -> ManifestStoreError {
    ManifestStoreError::Backend(format!("{}: {e}", path.display()))
}

/// FNV-1a 64 of the text, hex: cheap, stable across runs and platforms.
fn fnv1a_hex(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut s = String::with_capacity(16);
    let _ = write!(s, "{h:016x}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::istio;
    use serde_json::json;

    const MULTI: &str = "\
# Bookinfo routing. Top comment stays.
apiVersion: v1
kind: Service
metadata: {name: reviews}   # flow style stays too
spec:
  ports: [{port: 9080}]
---
# The VirtualService we manage.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts: [reviews]   # comment inside: may be lost
  http:
  - name: primary
    route:
    - destination: {host: reviews-stable}
      weight: 100
    - destination: {host: reviews-canary}
      weight: 0
  gateways: [mesh]
  exportTo: [\".\"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}   # untouched
  subsets: [{name: v1, labels: {version: \"9900\"}}]
...
# trailing comment of the file
";

    fn vs_key() -> ObjectKey {
        ObjectKey::virtual_service("bookinfo", "reviews")
    }

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        dir
    }

    fn set_canary(object: &mut Value, weight: i64) {
        object["spec"]["http"][0]["route"][0]["weight"] = json!(100 - weight);
        object["spec"]["http"][0]["route"][1]["weight"] = json!(weight);
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn replaces_only_its_document() {
        let dir = dir_with(&[("app.yaml", MULTI)]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let got = store.get(&vs_key()).await.unwrap();
        assert_eq!(got.object["spec"]["hosts"], json!(["reviews"]));
        let mut object = got.object.clone();
        set_canary(&mut object, 20);
        let version = store
            .replace(&vs_key(), &object, &got.version)
            .await
            .unwrap();

        let after = fs::read_to_string(dir.path().join("app.yaml")).unwrap();
        let vs_start = MULTI.find("---\n# The VirtualService").unwrap();
        let vs_end = MULTI
            .find("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule")
            .unwrap();
        assert!(after.starts_with(&MULTI[..vs_start]));
        assert!(after.ends_with(&MULTI[vs_end..]), "{after}");
        let new_doc = &after[vs_start..after.len() - (MULTI.len() - vs_end)];
        assert!(
            new_doc.starts_with("---\n# The VirtualService we manage.\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n"),
            "{new_doc}"
        );
        // Original key order: hosts, http, gateways, exportTo.
        let pos = |k: &str| new_doc.find(k).unwrap();
        assert!(pos("hosts:") < pos("http:") && pos("http:") < pos("gateways:"));
        assert!(pos("gateways:") < pos("exportTo:"), "{new_doc}");

        let again = store.get(&vs_key()).await.unwrap();
        assert_eq!(again.object, object);
        assert_eq!(again.version, version);
        let dr = store
            .get(&ObjectKey::destination_rule("bookinfo", "reviews"))
            .await
            .unwrap();
        assert_eq!(
            dr.object["spec"]["subsets"][0]["labels"]["version"],
            json!("9900")
        );
        assert_eq!(listing(dir.path()), vec!["app.yaml"]);
    }

    #[tokio::test]
    async fn no_temp_files_left_and_other_files_untouched() {
        let other = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings}\nspec: {hosts: [ratings]}\n";
        let dir = dir_with(&[("app.yaml", MULTI), ("sub/other.yml", other)]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        for w in [10, 20, 30] {
            let got = store.get(&vs_key()).await.unwrap();
            let mut o = got.object;
            set_canary(&mut o, w);
            store.replace(&vs_key(), &o, &got.version).await.unwrap();
        }
        assert_eq!(listing(dir.path()), vec!["app.yaml", "sub"]);
        assert_eq!(listing(&dir.path().join("sub")), vec!["other.yml"]);
        assert_eq!(
            fs::read_to_string(dir.path().join("sub/other.yml")).unwrap(),
            other
        );
        let got = store.get(&vs_key()).await.unwrap();
        assert_eq!(
            got.object["spec"]["http"][0]["route"][1]["weight"],
            json!(30)
        );
    }

    #[tokio::test]
    async fn namespace_defaults_and_recursive_scan_skips_hidden() {
        let doc = "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: ratings\nspec: {}\n";
        let dir = dir_with(&[
            ("a/b/ratings.yml", doc),
            (".hidden/dup.yaml", doc),
            ("a/.dup.yaml", doc),
            ("notes.txt", doc),
        ]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let key = ObjectKey::virtual_service("default", "ratings");
        let got = store.get(&key).await.unwrap();
        assert_eq!(got.object["metadata"]["name"], json!("ratings"));
        assert_eq!(store.keys().unwrap(), vec![key.clone()]);
        // Writing keeps the namespace absent.
        let mut o = got.object.clone();
        o["spec"]["hosts"] = json!(["ratings"]);
        store.replace(&key, &o, &got.version).await.unwrap();
        let text = fs::read_to_string(dir.path().join("a/b/ratings.yml")).unwrap();
        assert!(!text.contains("namespace"), "{text}");
        assert_eq!(store.get(&key).await.unwrap().object, o);
    }

    #[tokio::test]
    async fn duplicate_names_both_locations() {
        let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: bookinfo}\nspec: {}\n";
        let dir = dir_with(&[("one.yaml", MULTI), ("two.yaml", doc)]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let e = store.get(&vs_key()).await.unwrap_err();
        match e {
            ManifestStoreError::Duplicate { key, locations } => {
                assert_eq!(key, vs_key());
                assert!(locations.contains("one.yaml:9"), "{locations}");
                assert!(locations.contains("two.yaml:1"), "{locations}");
            }
            other => panic!("unexpected {other:?}"),
        }
        // Other objects still work.
        assert!(
            store
                .get(&ObjectKey::destination_rule("bookinfo", "reviews"))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn missing_is_not_found() {
        let dir = dir_with(&[("app.yaml", MULTI)]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let key = ObjectKey::virtual_service("other", "reviews");
        assert_eq!(
            store.get(&key).await,
            Err(ManifestStoreError::NotFound(key.clone()))
        );
        let o = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                       "metadata": {"name": "reviews", "namespace": "other"}});
        assert_eq!(
            store.replace(&key, &o, "0").await,
            Err(ManifestStoreError::NotFound(key))
        );
    }

    #[tokio::test]
    async fn concurrent_edit_of_the_document_is_a_conflict() {
        let dir = dir_with(&[("app.yaml", MULTI)]);
        let path = dir.path().join("app.yaml");
        let store = FileManifestStore::open(dir.path()).unwrap();
        let got = store.get(&vs_key()).await.unwrap();
        let edited = MULTI.replace("weight: 0", "weight: 5");
        fs::write(&path, &edited).unwrap();
        let mut o = got.object.clone();
        set_canary(&mut o, 50);
        assert_eq!(
            store.replace(&vs_key(), &o, &got.version).await,
            Err(ManifestStoreError::Conflict(vs_key()))
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), edited);
    }

    #[tokio::test]
    async fn edit_of_another_document_is_kept() {
        let dir = dir_with(&[("app.yaml", MULTI)]);
        let path = dir.path().join("app.yaml");
        let store = FileManifestStore::open(dir.path()).unwrap();
        let got = store.get(&vs_key()).await.unwrap();
        fs::write(&path, MULTI.replace("ROUND_ROBIN", "LEAST_REQUEST")).unwrap();
        let mut o = got.object.clone();
        set_canary(&mut o, 50);
        store.replace(&vs_key(), &o, &got.version).await.unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}   # untouched")
        );
        assert_eq!(store.get(&vs_key()).await.unwrap().object, o);
    }

    #[tokio::test]
    async fn identity_change_is_refused() {
        let dir = dir_with(&[("app.yaml", MULTI)]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let got = store.get(&vs_key()).await.unwrap();
        let mut o = got.object.clone();
        o["metadata"]["name"] = json!("renamed");
        assert!(matches!(
            store.replace(&vs_key(), &o, &got.version).await,
            Err(ManifestStoreError::Invalid { .. })
        ));
        assert_eq!(
            fs::read_to_string(dir.path().join("app.yaml")).unwrap(),
            MULTI
        );
    }

    #[tokio::test]
    async fn tricky_values_round_trip() {
        let dir = dir_with(&[("app.yaml", MULTI)]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let got = store.get(&vs_key()).await.unwrap();
        let mut o = got.object.clone();
        o["metadata"]["annotations"] = json!({
            "skycanary.io/original-routes": "{\"http\":[{\"name\":\"primary\"}]}",
            "multi": "line one\nline two\n",
            "numeric": "9900", "boolish": "true", "empty": "", "marker": "--- x",
        });
        o["spec"]["ratio"] = json!(0.25);
        o["spec"]["nothing"] = Value::Null;
        store.replace(&vs_key(), &o, &got.version).await.unwrap();
        assert_eq!(store.get(&vs_key()).await.unwrap().object, o);
    }

    /// Another team's typo in an Istio file (issue 15 item 8) blocks neither reads nor writes
    /// of objects defined elsewhere; the store reports it instead of failing the scan.
    #[tokio::test]
    async fn broken_unrelated_istio_manifest_does_not_block_a_write() {
        let broken = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings}\nspec:\n  hosts: [ratings\n";
        let dir = dir_with(&[
            ("app.yaml", MULTI),
            ("junk.yaml", "a: [1\n"),
            ("other.yaml", broken),
        ]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let got = store.get(&vs_key()).await.unwrap();
        let mut o = got.object.clone();
        set_canary(&mut o, 0);
        store.replace(&vs_key(), &o, &got.version).await.unwrap();
        assert_eq!(store.get(&vs_key()).await.unwrap().object, o);
        assert_eq!(
            fs::read_to_string(dir.path().join("other.yaml")).unwrap(),
            broken
        );
        let problems = store.problems().unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0]
                .to_string()
                .starts_with(&format!("{}:7: ", dir.path().join("other.yaml").display())),
            "{}",
            problems[0]
        );
        // The broken document's own object is an error naming file and line, not "not found".
        let ratings = ObjectKey::virtual_service("default", "ratings");
        let e = store.get(&ratings).await.unwrap_err();
        assert!(matches!(e, ManifestStoreError::Unreadable { .. }), "{e:?}");
        assert!(e.to_string().contains("other.yaml:7: "), "{e}");
        // A name the broken document does not mention stays a plain "not found".
        let absent = ObjectKey::virtual_service("default", "rating");
        assert_eq!(
            store.get(&absent).await,
            Err(ManifestStoreError::NotFound(absent))
        );
    }

    /// A broken document next to the needed one in the same file: the needed one is written,
    /// the broken one keeps its bytes.
    #[tokio::test]
    async fn broken_document_in_the_same_file_does_not_block_a_write() {
        let broken = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: x}\nspec: {host: [\n";
        let text = format!("{MULTI}{broken}");
        let dir = dir_with(&[("app.yaml", &text)]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let got = store.get(&vs_key()).await.unwrap();
        let mut o = got.object.clone();
        set_canary(&mut o, 0);
        store.replace(&vs_key(), &o, &got.version).await.unwrap();
        let after = fs::read_to_string(dir.path().join("app.yaml")).unwrap();
        assert!(after.ends_with(broken), "{after}");
        assert_eq!(store.get(&vs_key()).await.unwrap().object, o);
    }

    /// A broken file is logged once, not on every scan; broken again after a fix, it is
    /// logged again.
    #[test]
    fn a_broken_file_is_logged_once() {
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let broken = "apiVersion: networking.istio.io/v1\nkind: [\n";
        let dir = dir_with(&[("app.yaml", MULTI), ("other.yaml", broken)]);
        let logged = || {
            let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
            text.matches("skipping a manifest that cannot be read")
                .count()
        };
        tracing::subscriber::with_default(subscriber, || {
            let store = FileManifestStore::open(dir.path()).unwrap();
            store.get_blocking(&vs_key()).unwrap();
            store.get_blocking(&vs_key()).unwrap();
            assert_eq!(logged(), 1);
            store.problems().unwrap();
            assert_eq!(logged(), 1);
            // Lookups no longer walk the directory; the watchers' walks (the drift poll's
            // every 0.5 s) see the file fixed, then broken again.
            fs::write(dir.path().join("other.yaml"), "apiVersion: v1\n").unwrap();
            store.problems().unwrap();
            fs::write(dir.path().join("other.yaml"), broken).unwrap();
            store.problems().unwrap();
            assert_eq!(logged(), 2);
        });
        assert!(
            String::from_utf8(capture.0.lock().unwrap().clone())
                .unwrap()
                .contains("other.yaml:"),
        );
    }

    /// Sets a file's mtime an hour back, as for a manifest not edited lately.
    fn age(path: &Path) {
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(past)
            .unwrap();
    }

    fn reads(store: &FileManifestStore) -> u64 {
        store.files_read.load(Ordering::Relaxed)
    }

    /// Issue 15 item 11: a routing operation re-reads only what changed, not every file.
    #[tokio::test]
    async fn unchanged_files_are_not_read_again() {
        let mut files = vec![("app.yaml".to_string(), MULTI.to_string())];
        for i in 0..30 {
            files.push((
                format!("team/vs-{i}.yaml"),
                format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{i}}}\nspec: {{hosts: [vs-{i}]}}\n"),
            ));
        }
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let dir = dir_with(&refs);
        for (name, _) in &files {
            age(&dir.path().join(name));
        }
        let store = FileManifestStore::open(dir.path()).unwrap();
        assert_eq!(reads(&store), 31);
        let got = store.get(&vs_key()).await.unwrap();
        assert_eq!(reads(&store), 31);
        let mut o = got.object.clone();
        set_canary(&mut o, 10);
        store.replace(&vs_key(), &o, &got.version).await.unwrap();
        assert_eq!(reads(&store), 31);
        // The file just written is too recent to trust its metadata: it alone is read again.
        assert_eq!(store.get(&vs_key()).await.unwrap().object, o);
        assert_eq!(store.get(&vs_key()).await.unwrap().object, o);
        assert_eq!(reads(&store), 33);
        // A new file, and a removed one, are seen.
        let extra = ObjectKey::virtual_service("default", "vs-extra");
        fs::write(
            dir.path().join("team/vs-extra.yaml"),
            files[1].1.replace("vs-0", "vs-extra"),
        )
        .unwrap();
        fs::remove_file(dir.path().join("team/vs-0.yaml")).unwrap();
        assert!(store.get(&extra).await.is_ok());
        let gone = ObjectKey::virtual_service("default", "vs-0");
        assert_eq!(
            store.get(&gone).await,
            Err(ManifestStoreError::NotFound(gone))
        );
    }

    fn parses(store: &FileManifestStore) -> u64 {
        store.files_parsed.load(Ordering::Relaxed)
    }

    /// Issue 15 item 11: files written moments ago (every canary just moved) cannot be trusted
    /// by their metadata, so they are read on each operation, but parsed only when their text
    /// changed: a rollback no longer parses every recently written file.
    #[tokio::test]
    async fn recently_written_files_are_read_but_not_parsed_again() {
        let mut files = vec![("app.yaml".to_string(), MULTI.to_string())];
        for i in 0..30 {
            files.push((
                format!("vs-{i}.yaml"),
                format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{i}}}\nspec: {{hosts: [vs-{i}]}}\n"),
            ));
        }
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let dir = dir_with(&refs);
        let store = FileManifestStore::open(dir.path()).unwrap();
        assert_eq!((reads(&store), parses(&store)), (31, 31));
        // A lookup reads the one file defining the object, not the 30 other recent ones.
        let got = store.get(&vs_key()).await.unwrap();
        assert_eq!((reads(&store), parses(&store)), (32, 31));
        let mut o = got.object.clone();
        set_canary(&mut o, 10);
        store.replace(&vs_key(), &o, &got.version).await.unwrap();
        assert_eq!(reads(&store), 33);
        // The written file alone is parsed again, once (when written), and read per lookup.
        assert_eq!(store.get(&vs_key()).await.unwrap().object, o);
        assert_eq!(store.get(&vs_key()).await.unwrap().object, o);
        assert_eq!((reads(&store), parses(&store)), (35, 32));
    }

    /// Issue 15 item 11: the cost of a rollback does not grow with the directory. With 30 or
    /// 120 other manifests, a read-and-write of one object reads the same files.
    #[tokio::test]
    async fn a_write_costs_the_same_whatever_the_number_of_manifests() {
        let mut costs = Vec::new();
        for others in [30, 120] {
            let mut files = vec![("app.yaml".to_string(), MULTI.to_string())];
            for i in 0..others {
                files.push((
                    format!("vs-{i}.yaml"),
                    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{i}}}\nspec: {{hosts: [vs-{i}]}}\n"),
                ));
            }
            let refs: Vec<(&str, &str)> = files
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            let dir = dir_with(&refs);
            let store = FileManifestStore::open(dir.path()).unwrap();
            let before = (reads(&store), parses(&store));
            for w in [10, 0, 10] {
                let got = store.get(&vs_key()).await.unwrap();
                let mut o = got.object;
                set_canary(&mut o, w);
                store.replace(&vs_key(), &o, &got.version).await.unwrap();
            }
            costs.push((reads(&store) - before.0, parses(&store) - before.1));
        }
        assert_eq!(costs[0], costs[1], "{costs:?}");
        assert!(costs[0].0 <= 6, "{costs:?}");
    }

    /// The same property inside one file: a write to one of many VirtualServices sharing a
    /// file parses the written document only, whatever the number of the others; the index
    /// then finds every object where it is.
    #[tokio::test]
    async fn a_write_parses_only_its_document_whatever_the_number_in_the_file() {
        for others in [30, 120] {
            let mut text = MULTI.to_string();
            for i in 0..others {
                text += &format!(
                    "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
                     metadata: {{name: vs-{i}, namespace: bookinfo}}\nspec: {{hosts: [vs-{i}]}}\n"
                );
            }
            let dir = dir_with(&[("all.yaml", &text)]);
            let store = FileManifestStore::open(dir.path()).unwrap();
            let before = store.documents_parsed.load(Ordering::Relaxed);
            assert!(before >= others, "the first reading parses everything");
            for w in [10, 0, 10] {
                let got = store.get(&vs_key()).await.unwrap();
                let mut o = got.object;
                set_canary(&mut o, w);
                store.replace(&vs_key(), &o, &got.version).await.unwrap();
            }
            assert_eq!(
                store.documents_parsed.load(Ordering::Relaxed) - before,
                3,
                "one document per write with {others} others"
            );
            let last = ObjectKey::virtual_service("bookinfo", format!("vs-{}", others - 1));
            assert_eq!(
                store.get(&last).await.unwrap().object["spec"]["hosts"][0],
                json!(format!("vs-{}", others - 1))
            );
        }
    }

    /// Reusing the previous reading's documents gives what parsing everything gives: the
    /// entries (ranges and lines shifted) and the problems, for edits that change a weight,
    /// add lines before other documents, break or repair a document, or add a document.
    #[test]
    fn an_index_reusing_unchanged_documents_equals_a_full_one() {
        let broken =
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad\n";
        let base = format!("{MULTI}{broken}");
        let edits: Vec<String> = vec![
            base.replace("weight: 100", "weight: 90")
                .replace("weight: 0", "weight: 10"),
            base.replace(
                "# Bookinfo routing.",
                "# Bookinfo routing.\n# two\n# more lines",
            ),
            base.replace("{name: bad\n", "{name: bad}\n"),
            base.replace("weight: 0", "weight: 5")
                .replace("{name: bad\n", "{name: bad, namespace: x\n"),
            format!(
                "{base}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: extra}}\n"
            ),
        ];
        let file = Path::new("/m/app.yaml");
        let view = |entries: &[Entry], problems: &[Problem]| {
            let e: Vec<_> = entries
                .iter()
                .map(|e| (e.key.clone(), e.chunk.clone(), e.line, e.value.clone()))
                .collect();
            (e, problems.to_vec())
        };
        let (mut entries, mut problems) = (Vec::new(), Vec::new());
        index_file(file, &base, &mut entries, &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let previous = Indexed {
            stamp: Stamp::of(&fs::metadata("/").unwrap()),
            settled: true,
            text: base.clone(),
            entries,
            problems,
        };
        for (i, text) in edits.iter().enumerate() {
            let (mut full_e, mut full_p) = (Vec::new(), Vec::new());
            let all = index_file(file, text, &mut full_e, &mut full_p);
            let (mut e, mut p) = (Vec::new(), Vec::new());
            let parsed = index_file_reusing(file, text, Some(&previous), &mut e, &mut p);
            assert_eq!(view(&e, &p), view(&full_e, &full_p), "edit {i}");
            assert!(parsed < all || i == 4, "edit {i}: parsed {parsed} of {all}");
        }
    }

    /// Sets a directory's mtime an hour back, so that adding a file visibly changes it.
    fn age_dir(path: &Path) {
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::open(path).unwrap().set_modified(past).unwrap();
    }

    /// A file added since the last walk changes its directory's stamp: the next lookup walks
    /// the directory again and sees the duplicate it brings.
    #[tokio::test]
    async fn a_new_file_is_seen_by_the_next_lookup_through_its_directory() {
        let dir = dir_with(&[("app.yaml", MULTI)]);
        age_dir(dir.path());
        let store = FileManifestStore::open(dir.path()).unwrap();
        assert!(store.get(&vs_key()).await.is_ok());
        fs::write(
            dir.path().join("copy.yaml"),
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: bookinfo}\nspec: {}\n",
        )
        .unwrap();
        assert!(matches!(
            store.get(&vs_key()).await,
            Err(ManifestStoreError::Duplicate { .. })
        ));
    }

    /// Issue 15 acceptance: skycanary's annotations never enter the manifest. They are kept in
    /// the sidecar, read back with the object, and gone (file and all) when removed.
    #[tokio::test]
    async fn state_annotations_live_in_the_sidecar_not_in_the_manifest() {
        let dir = dir_with(&[("app.yaml", MULTI)]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let got = store.get(&vs_key()).await.unwrap();
        let mut o = got.object.clone();
        set_canary(&mut o, 10);
        o["metadata"]["annotations"] = json!({
            istio::ORIGINAL_ROUTES_ANNOTATION: "{\"routes\":{}}",
            istio::ROLLED_BACK_ANNOTATION: "r@t; rolled back t2",
        });
        let version = store.replace(&vs_key(), &o, &got.version).await.unwrap();
        let text = fs::read_to_string(dir.path().join("app.yaml")).unwrap();
        assert!(!text.contains("skycanary.io"), "{text}");
        assert!(!text.contains("annotations"), "{text}");
        assert_eq!(
            text,
            MULTI
                .replacen("      weight: 100\n", "      weight: 90\n", 1)
                .replacen("      weight: 0\n", "      weight: 10\n", 1)
        );
        let again = store.get(&vs_key()).await.unwrap();
        assert_eq!(
            (again.object.clone(), again.version.clone()),
            (o.clone(), version)
        );
        let state = dir
            .path()
            .join(".skycanary/virtualservice_bookinfo_reviews.state");
        assert!(state.is_file());
        // The sidecar is part of the version: another writer's change of it is a conflict.
        fs::write(&state, "{\"annotations\":{}}\n").unwrap();
        assert_eq!(
            store.replace(&vs_key(), &o, &again.version).await,
            Err(ManifestStoreError::Conflict(vs_key()))
        );
        // Removing our annotations removes the file; the manifest keeps its bytes.
        let now = store.get(&vs_key()).await.unwrap();
        let mut plain = o.clone();
        plain["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
        store
            .replace(&vs_key(), &plain, &now.version)
            .await
            .unwrap();
        assert!(!state.exists());
        assert_eq!(
            fs::read_to_string(dir.path().join("app.yaml")).unwrap(),
            text
        );
        assert_eq!(store.get(&vs_key()).await.unwrap().object, plain);
        // The sidecar directory is never read as manifests.
        assert_eq!(store.problems().unwrap(), vec![]);
    }

    #[test]
    fn temp_names_tell_their_writer_and_nothing_else() {
        assert_eq!(temp_owner(".vs.yaml.skycanary-4242-7.tmp"), Some(4242));
        assert_eq!(temp_owner(".a.skycanary-b.yaml.skycanary-1-0.tmp"), Some(1));
        for other in [
            "vs.yaml.skycanary-4242-7.tmp",
            ".vs.yaml.skycanary-4242-7.tmp.bak",
            ".vs.yaml.skycanary--7.tmp",
            ".vs.yaml.skycanary-42x-7.tmp",
            ".vs.yaml.skycanary-4242-.tmp",
            ".vs.yaml.skycanary-99999999999999999999-1.tmp",
            ".vs.yaml.tmp",
        ] {
            assert_eq!(temp_owner(other), None, "{other}");
        }
    }

    /// A write killed between its synced temporary file and the rename leaves the file behind;
    /// the next store opened on the directory removes it once its writer is gone, and keeps a
    /// running writer's and anything else hidden.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_dead_writers_temporary_files_are_removed_at_open() {
        let dir = dir_with(&[("vs.yaml", MULTI)]);
        fs::create_dir(dir.path().join("team")).unwrap();
        // No process has a PID above the kernel's limit (at most 2^22).
        let dead = [
            dir.path().join(".vs.yaml.skycanary-4194305-0.tmp"),
            dir.path().join("team/.x.yaml.skycanary-4194306-3.tmp"),
        ];
        let alive = dir
            .path()
            .join(format!(".vs.yaml.skycanary-{}-9.tmp", std::process::id()));
        let foreign = dir.path().join(".vs.yaml.swp.tmp");
        for f in dead.iter().chain([&alive, &foreign]) {
            fs::write(f, "partial").unwrap();
        }
        let store = FileManifestStore::open(dir.path()).unwrap();
        for f in &dead {
            assert!(!f.exists(), "{}", f.display());
        }
        assert!(alive.exists() && foreign.exists());
        assert!(dir.path().join("vs.yaml").exists());
        assert_eq!(store.problems().unwrap(), vec![]);
    }

    /// An edit that keeps the size and restores the mtime is still seen (ctime and inode).
    #[cfg(unix)]
    fn temp_files(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".tmp"))
            .collect()
    }

    /// The rollback path's order (issue 15 item 11): a write behind a closed gate (the status
    /// being saved) writes its sidecar and a synced temporary file at once, but the manifest
    /// changes only after the gate opens; another object's write is not held meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gated_write_is_prepared_at_once_and_renamed_only_once_the_gate_opens() {
        let other = MULTI.replace(
            "name: reviews\n  namespace: bookinfo",
            "name: ratings\n  namespace: bookinfo",
        );
        let dir = dir_with(&[("app.yaml", MULTI), ("other.yaml", &other)]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let got = store.get(&vs_key()).await.unwrap();
        let mut o = got.object.clone();
        set_canary(&mut o, 0);
        o["spec"]["http"][0]["route"][0]["weight"] = json!(100);
        o["metadata"]["annotations"] =
            json!({istio::ROLLED_BACK_ANNOTATION: "r@t; rolled back t2"});
        // From 30 % so the manifest changes.
        let mut exposed = got.object.clone();
        set_canary(&mut exposed, 30);
        let v30 = store
            .replace(&vs_key(), &exposed, &got.version)
            .await
            .unwrap();
        let at30 = fs::read_to_string(dir.path().join("app.yaml")).unwrap();

        let (opener, gate) = CommitGate::closed();
        let (s2, o2, v2) = (store.clone(), o.clone(), v30.clone());
        let mut write =
            tokio::spawn(async move { s2.replace_after(&vs_key(), &o2, &v2, &gate).await });
        let sidecar = dir
            .path()
            .join(".skycanary/virtualservice_bookinfo_reviews.state");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let marked = fs::read_to_string(&sidecar).is_ok_and(|t| t.contains("rolled back t2"));
            let temps = temp_files(dir.path());
            if marked
                && temps.len() == 1
                && fs::read_to_string(&temps[0])
                    .unwrap()
                    .contains("weight: 100")
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never prepared: {temps:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Another canary's object is written while this one waits.
        let r = store
            .get(&ObjectKey::virtual_service("bookinfo", "ratings"))
            .await
            .unwrap();
        let mut r2 = r.object.clone();
        set_canary(&mut r2, 10);
        store
            .replace(
                &ObjectKey::virtual_service("bookinfo", "ratings"),
                &r2,
                &r.version,
            )
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(
            fs::read_to_string(dir.path().join("app.yaml")).unwrap(),
            at30,
            "the manifest changed before the gate opened"
        );
        assert!(
            !write.is_finished(),
            "the write ended before the gate opened"
        );

        opener.open();
        let version = (&mut write).await.unwrap().unwrap();
        assert!(
            store.pending.sidecars.is_empty(),
            "the save did not land: the marker must be on disk before the rename, not owed"
        );
        let now = store.get(&vs_key()).await.unwrap();
        assert_eq!((now.object, now.version), (o.clone(), version));
        assert!(temp_files(dir.path()).is_empty());
        // Answered once renamed; the directory's fsync is the store's to finish, and
        // `sync_written` leaves nothing pending.
        store.sync_written().await.unwrap();
        assert!(store.pending.is_empty());

        // A file another tool changed while the write waited: a conflict, nothing left
        // behind, the sidecar put back.
        let got = store.get(&vs_key()).await.unwrap();
        let before_sidecar = fs::read_to_string(&sidecar).unwrap();
        let mut o3 = got.object.clone();
        set_canary(&mut o3, 0);
        o3["metadata"]["annotations"] =
            json!({istio::ROLLED_BACK_ANNOTATION: "r@t; rolled back t3"});
        o3["spec"]["http"][0]["route"][0]["timeout"] = json!("3s");
        let (opener, gate) = CommitGate::closed();
        let (s3, v3) = (store.clone(), got.version.clone());
        let write = tokio::spawn(async move { s3.replace_after(&vs_key(), &o3, &v3, &gate).await });
        loop {
            if fs::read_to_string(&sidecar).is_ok_and(|t| t.contains("rolled back t3"))
                && temp_files(dir.path()).len() == 1
            {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never prepared");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // The edit is in the document being written: a conflict (an edit elsewhere in the file
        // is kept instead: `gated_writes_to_one_file_keep_each_other_and_never_conflict`).
        let edited = fs::read_to_string(dir.path().join("app.yaml"))
            .unwrap()
            .replace(
                "# The VirtualService we manage.",
                "# The VirtualService we manage (edited).",
            );
        fs::write(dir.path().join("app.yaml"), &edited).unwrap();
        opener.open();
        assert_eq!(
            write.await.unwrap(),
            Err(ManifestStoreError::Conflict(vs_key()))
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("app.yaml")).unwrap(),
            edited
        );
        assert_eq!(fs::read_to_string(&sidecar).unwrap(), before_sidecar);
        assert!(temp_files(dir.path()).is_empty());
    }

    /// A rollback whose status is already saved (`GateOpener::saved`) takes the gated path
    /// even when the gate opened before the write began: answered once renamed, with the
    /// directory's `fsync` and the marker's sidecar left to finish. Readers see the marker at
    /// once, and after `sync_written` it is on disk and nothing is owed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rollback_behind_a_saved_status_owes_its_marker_until_synced() {
        let dir = dir_with(&[("app.yaml", MULTI)]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let got = store.get(&vs_key()).await.unwrap();
        let mut exposed = got.object.clone();
        set_canary(&mut exposed, 30);
        let v30 = store
            .replace(&vs_key(), &exposed, &got.version)
            .await
            .unwrap();
        assert!(
            store.pending.is_empty(),
            "an ungated write is durable when answered"
        );
        let mut o = got.object.clone();
        set_canary(&mut o, 0);
        o["spec"]["http"][0]["route"][0]["weight"] = json!(100);
        o["metadata"]["annotations"] =
            json!({istio::ROLLED_BACK_ANNOTATION: "r@t; rolled back t2"});

        let (opener, gate) = CommitGate::closed();
        opener.saved();
        let version = store
            .replace_after(&vs_key(), &o, &v30, &gate)
            .await
            .unwrap();
        assert!(
            !store.pending.is_empty(),
            "took the ungated path: everything synced before answering"
        );
        assert!(
            !store.pending.sidecars.is_empty(),
            "the marker was waited for although the status is saved"
        );
        let now = store.get(&vs_key()).await.unwrap();
        assert_eq!((now.object, now.version), (o.clone(), version.clone()));

        store.sync_written().await.unwrap();
        assert!(store.pending.is_empty());

        let sidecar = dir
            .path()
            .join(".skycanary/virtualservice_bookinfo_reviews.state");
        assert!(
            fs::read_to_string(&sidecar)
                .unwrap()
                .contains("rolled back t2")
        );
        // What a restarted daemon reads.
        let again = FileManifestStore::open(dir.path())
            .unwrap()
            .get(&vs_key())
            .await
            .unwrap();
        assert_eq!((again.object, again.version), (o, version));
    }

    /// The rollback's text is prepared ahead (`stand_by`, after each exposing write): the gated
    /// write that comes with the same text over the same file only names and renames it, and
    /// writes what the ordinary path writes. A file changed meanwhile (another document here)
    /// makes the prepared text stale: it is not used, and the write keeps the other change.
    #[tokio::test]
    async fn a_rollback_prepared_ahead_is_only_renamed_while_its_file_is_unchanged() {
        let rollback = |got: &Versioned| {
            let mut o = got.object.clone();
            set_canary(&mut o, 0);
            o["spec"]["http"][0]["route"][0]["weight"] = json!(100);
            o["metadata"]["annotations"] =
                json!({istio::ROLLED_BACK_ANNOTATION: "r@t; rolled back t2"});
            o
        };
        // At 30 %, as after an exposing step.
        async fn exposed(store: &FileManifestStore) -> Versioned {
            let got = store.get(&vs_key()).await.unwrap();
            let mut o = got.object.clone();
            set_canary(&mut o, 30);
            o["spec"]["http"][0]["route"][0]["weight"] = json!(70);
            store.replace(&vs_key(), &o, &got.version).await.unwrap();
            store.get(&vs_key()).await.unwrap()
        }
        let saved_gate = || {
            let (opener, gate) = CommitGate::closed();
            opener.saved();
            gate
        };
        // What the ordinary path writes, for comparison.
        let plain = dir_with(&[("app.yaml", MULTI)]);
        let plain_store = FileManifestStore::open(plain.path()).unwrap();
        let got = exposed(&plain_store).await;
        plain_store
            .replace_after(&vs_key(), &rollback(&got), &got.version, &saved_gate())
            .await
            .unwrap();
        plain_store.sync_written().await.unwrap();
        assert_eq!(plain_store.standbys_used(), 0);

        let dir = dir_with(&[("app.yaml", MULTI)]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let got = exposed(&store).await;
        // The marker (sidecar) differs from the one planned ahead; the manifest text does not.
        let mut ahead = rollback(&got);
        ahead["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
        assert!(
            store
                .stand_by_blocking(&vs_key(), &ahead, &got.version)
                .unwrap()
        );
        assert_eq!(
            listing(dir.path()),
            ["app.yaml"],
            "nothing named while prepared"
        );
        store
            .replace_after(&vs_key(), &rollback(&got), &got.version, &saved_gate())
            .await
            .unwrap();
        assert_eq!(
            store.unrecorded.lock().unwrap().len(),
            1,
            "indexed before the answer"
        );
        store.sync_written().await.unwrap();
        assert_eq!(store.standbys_used(), 1);
        // The written text was indexed by the sync: the next read parses nothing.
        assert!(store.unrecorded.lock().unwrap().is_empty());
        let parsed = parses(&store);
        store.get(&vs_key()).await.unwrap();
        assert_eq!(parses(&store), parsed);
        assert_eq!(
            fs::read_to_string(dir.path().join("app.yaml")).unwrap(),
            fs::read_to_string(plain.path().join("app.yaml")).unwrap()
        );
        assert_eq!(listing(dir.path()), [".skycanary", "app.yaml"]);

        // Stale: another document of the file changed after the text was prepared.
        let dir = dir_with(&[("app.yaml", MULTI)]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let got = exposed(&store).await;
        store
            .stand_by(&vs_key(), &rollback(&got), &got.version)
            .await;
        let file = dir.path().join("app.yaml");
        let edited = fs::read_to_string(&file)
            .unwrap()
            .replace("Top comment stays.", "Top comment edited.");
        fs::write(&file, &edited).unwrap();
        store
            .replace_after(&vs_key(), &rollback(&got), &got.version, &saved_gate())
            .await
            .unwrap();
        store.sync_written().await.unwrap();
        assert_eq!(store.standbys_used(), 0, "a stale text was renamed");
        let now = fs::read_to_string(&file).unwrap();
        assert!(now.contains("Top comment edited."));
        assert_eq!(
            now.replace("Top comment edited.", "Top comment stays."),
            fs::read_to_string(plain.path().join("app.yaml")).unwrap()
        );

        // An ordinary write drops what was prepared: it would be stale.
        let got = exposed(&store).await;
        store
            .stand_by(&vs_key(), &rollback(&got), &got.version)
            .await;
        assert_eq!(store.standbys.lock().unwrap().len(), 1);
        exposed(&store).await;
        assert!(store.standbys.lock().unwrap().is_empty());
    }

    /// Many canaries rolled back at once whose VirtualServices share one file (a GitOps repo
    /// with all routes in one manifest): each gated write that loses its rename to another
    /// puts its document onto the file's new text instead of conflicting, so none waits out
    /// the router's backoff or runs out of attempts, and every write keeps the others'. An
    /// edit by another tool elsewhere in the file is kept the same way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gated_writes_to_one_file_keep_each_other_and_never_conflict() {
        use crate::traffic::router::{Planner, Router};
        struct ToStable;
        impl Planner for ToStable {
            fn plan_virtual_service(&self, _: usize, current: &Value) -> Result<Value, String> {
                let mut o = current.clone();
                set_canary(&mut o, 0);
                Ok(o)
            }
            fn check_destination_rule(&self, _: &Value) -> Result<(), String> {
                Ok(())
            }
        }
        let n = 24;
        let mut text = String::from("# every route of the team, one file\n");
        for i in 0..n {
            text += &format!(
                "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  \
                 name: vs-{i}\n  namespace: ns\nspec:\n  hosts: [h{i}]\n  http:\n  - route:\n    \
                 - destination: {{host: s{i}}}\n      weight: 70\n    - destination: {{host: c{i}}}\n      \
                 weight: 30   # canary {i}\n"
            );
        }
        let dir = dir_with(&[("all.yaml", &text)]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let key = |i: usize| ObjectKey::virtual_service("ns", format!("vs-{i}"));
        // Another tool's edit of another document, made while the writes are prepared.
        let (opener, gate) = CommitGate::closed();
        let mut tasks = Vec::new();
        for i in 0..n {
            let (store, gate) = (store.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                Router::new(store)
                    .with_jitter_seed(i as u64)
                    .apply_each_after(&[key(i)], None, &ToStable, &gate)
                    .await
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let path = dir.path().join("all.yaml");
        let theirs = fs::read_to_string(&path).unwrap().replace(
            "# every route of the team",
            "# every route of the team (reviewed)",
        );
        fs::write(&path, &theirs).unwrap();
        opener.saved();
        for (i, t) in tasks.into_iter().enumerate() {
            let report = t.await.unwrap().unwrap_or_else(|e| panic!("vs-{i}: {e}"));
            assert_eq!(report.changed, vec![key(i)]);
            assert_eq!(report.conflicts_retried, 0, "vs-{i} waited out a backoff");
        }
        store.sync_written().await.unwrap();
        let now = fs::read_to_string(&path).unwrap();
        assert!(
            now.starts_with("# every route of the team (reviewed), one file\n"),
            "{now}"
        );
        let fresh = FileManifestStore::open(dir.path()).unwrap();
        for i in 0..n {
            let o = fresh.get(&key(i)).await.unwrap().object;
            assert_eq!(
                o["spec"]["http"][0]["route"][1]["weight"],
                json!(0),
                "vs-{i}"
            );
            assert_eq!(
                o["spec"]["http"][0]["route"][0]["weight"],
                json!(100),
                "vs-{i}"
            );
        }
        // Only the weight scalars changed; comments stay.
        assert_eq!(now.matches("   # canary ").count(), n);
        assert!(temp_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn an_edit_hiding_its_mtime_is_seen() {
        let dir = dir_with(&[("app.yaml", MULTI)]);
        let path = dir.path().join("app.yaml");
        age(&path);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let before = store.get(&vs_key()).await.unwrap();
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        let edited = MULTI
            .replace("weight: 100\n", "weight: 90\n")
            .replace("weight: 0\n", "weight: 10\n");
        assert_eq!(edited.len(), MULTI.len());
        fs::write(&path, &edited).unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let after = store.get(&vs_key()).await.unwrap();
        assert_ne!(after.version, before.version);
        assert_eq!(
            after.object["spec"]["http"][0]["route"][1]["weight"],
            json!(10)
        );
    }

    #[test]
    fn mentions_whole_names_only() {
        for (text, word, want) in [
            ("metadata: {name: reviews}", "reviews", true),
            ("name: reviews\n", "reviews", true),
            ("name: \"reviews\"", "reviews", true),
            ("name: reviews-v2", "reviews", false),
            ("name: myreviews", "reviews", false),
            ("host: reviews.bookinfo.svc", "reviews", true),
            ("anything", "", false),
        ] {
            assert_eq!(mentions_word(text, word), want, "{text:?} {word:?}");
        }
    }

    /// A hostile VirtualService (6,000 levels deep, or aliases expanding past the bounds) is an
    /// error naming its file and line, not a crash of the routing read.
    #[tokio::test]
    async fn deep_or_amplified_istio_manifest_is_an_error_not_a_crash() {
        let deep = format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: other}}\nspec:\n  x:\n    {}x\n",
            "- ".repeat(6_000)
        );
        let dir = dir_with(&[("app.yaml", MULTI), ("deep.yaml", &deep)]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        assert!(store.get(&vs_key()).await.is_ok());
        let other = ObjectKey::virtual_service("default", "other");
        let e = store.get(&other).await.unwrap_err();
        assert!(
            e.to_string().contains("deep.yaml:7: YAML nested deeper"),
            "{e}"
        );
        let mut bomb = format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: other}}\nspec:\n  big: &b \"{}\"\n  refs:\n",
            "x".repeat(100_000)
        );
        bomb.push_str(&"  - *b\n".repeat(3_000));
        fs::write(dir.path().join("deep.yaml"), bomb).unwrap();
        let e = store.get(&other).await.unwrap_err();
        assert!(e.to_string().contains("expands to more than"), "{e}");
        // aliases within bounds are fine in manifests written by other tools
        fs::write(
            dir.path().join("deep.yaml"),
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: other}\nspec: {a: &a [1], b: *a}\n",
        )
        .unwrap();
        assert!(store.get(&other).await.is_ok());
    }

    /// Symlinked directories under `--manifests` are not followed: a link loop neither hangs
    /// the scan nor duplicates the objects.
    #[cfg(unix)]
    #[tokio::test]
    async fn symlink_loops_in_manifests_are_not_followed() {
        let dir = dir_with(&[("app.yaml", MULTI)]);
        std::os::unix::fs::symlink(".", dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink(".", dir.path().join("b")).unwrap();
        let store = FileManifestStore::open(dir.path()).unwrap();
        assert!(store.get(&vs_key()).await.is_ok());
    }

    #[tokio::test]
    async fn oversized_manifest_file_is_refused_by_name() {
        let dir = dir_with(&[("app.yaml", MULTI)]);
        let store = FileManifestStore::open(dir.path()).unwrap();
        let f = fs::File::create(dir.path().join("huge.yaml")).unwrap();
        f.set_len(MAX_MANIFEST_FILE_BYTES + 1).unwrap();
        // It cannot be read, so it blocks nothing found elsewhere ...
        assert!(store.get(&vs_key()).await.is_ok());
        // ... and is named for anything not found, as it might define it.
        let absent = ObjectKey::virtual_service("bookinfo", "absent");
        let e = store.get(&absent).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("huge.yaml: manifest file is larger than the limit"),
            "{e}"
        );
    }

    /// The router over files: conflicts from another tool are re-planned, not lost.
    #[tokio::test]
    async fn router_over_files() {
        use crate::traffic::router::{Planner, Router};
        struct Canary(i64);
        impl Planner for Canary {
            fn plan_virtual_service(&self, _: usize, current: &Value) -> Result<Value, String> {
                let mut o = current.clone();
                set_canary(&mut o, self.0);
                Ok(o)
            }
            fn check_destination_rule(&self, current: &Value) -> Result<(), String> {
                current["spec"]["subsets"]
                    .as_array()
                    .map(|_| ())
                    .ok_or_else(|| "no subsets".to_string())
            }
        }
        let dir = dir_with(&[("app.yaml", MULTI)]);
        let router = Router::new(FileManifestStore::open(dir.path()).unwrap()).with_jitter_seed(1);
        let dr = ObjectKey::destination_rule("bookinfo", "reviews");
        let report = router
            .apply(&[vs_key()], Some(&dr), &Canary(40))
            .await
            .unwrap();
        assert_eq!(report.changed, vec![vs_key()]);
        let report = router
            .apply(&[vs_key()], Some(&dr), &Canary(40))
            .await
            .unwrap();
        assert_eq!(report.unchanged, vec![vs_key()]);
        let got = router.read(&[vs_key()]).await.unwrap();
        assert_eq!(
            got[0].object["spec"]["http"][0]["route"][1]["weight"],
            json!(40)
        );
    }

    #[test]
    fn a_document_is_spliced_only_where_it_is_unchanged_and_unique() {
        let text = "# head\n---\nkind: A\nw: 1\n---\nkind: B\nw: 2\n";
        let (old, new) = ("---\nkind: B\nw: 2\n", "---\nkind: B\nw: 0\n");
        assert_eq!(
            splice_document(text, old, new).as_deref(),
            Some("# head\n---\nkind: A\nw: 1\n---\nkind: B\nw: 0\n")
        );
        // Changed since planned, defined twice, or a new text that would split differently.
        assert_eq!(
            splice_document(&text.replace("w: 2", "w: 3"), old, new),
            None
        );
        assert_eq!(splice_document(&format!("{text}{old}"), old, new), None);
        assert_eq!(
            splice_document(text, old, "---\nkind: B\n---\nkind: C\n"),
            None
        );
    }

    #[test]
    fn splits_documents_on_markers_only() {
        let text = "a: 1\n---\nb: |\n  --- not a marker\n...\n# c\n--- # x\nd: 2";
        let docs: Vec<&str> = split_documents(text)
            .into_iter()
            .map(|(r, _)| &text[r])
            .collect();
        assert_eq!(
            docs,
            vec![
                "a: 1\n",
                "---\nb: |\n  --- not a marker\n...\n",
                "# c\n",
                "--- # x\nd: 2"
            ]
        );
        assert_eq!(split_documents(text)[3].1, 7);
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a_hex(""), "cbf29ce484222325");
        assert_eq!(fnv1a_hex("a"), "af63dc4c8601ec8c");
    }

    /// A directory `fsync` that fails (here: the directory is gone) is never forgotten: every
    /// wait retries it and names it until it succeeds, so a status waiting on it stays unsaved.
    #[test]
    fn a_failed_directory_sync_is_retried_by_every_wait_until_it_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("manifests");
        let pending = PendingSyncs::default();
        pending.start(gone.clone());
        pending.start(dir.path().to_path_buf());
        let first = pending.wait().unwrap_err().to_string();
        assert!(
            first.contains("manifests") && first.contains("not on disk"),
            "{first}"
        );
        assert!(!pending.is_empty());
        assert!(pending.wait().is_err(), "retried and failing again");
        fs::create_dir(&gone).unwrap();
        pending.wait().unwrap();
        assert!(pending.is_empty());
    }
}
