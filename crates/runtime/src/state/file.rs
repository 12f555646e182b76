//! One JSON file per object (`<kind>/<namespace>/<name>.json`), written through a temporary
//! file, fsync and rename, so a crash leaves either the old or the new state, never half.
//!
//! A rollback's status ([`FileStatusStore::save_journaled`]) is first made durable as one
//! record of the directory's [journal](super::journal), and its JSON file saved the same
//! atomic way right after, in the background: until then it is *owed* (read from memory, and
//! saved before any other save or removal of that file); a restart writes the journal's
//! records to their files before anything is read.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use super::journal::Journal;

use serde::{Serialize, de::DeserializeOwned};

/// State persistence failures.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file exists but does not hold valid state.
    #[error("state file {path} is not valid: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What does not parse, with its field path.
        message: String,
    },
    /// A name that would escape the state directory.
    #[error("invalid object name {0:?}")]
    InvalidName(String),
}

/// A directory of JSON state files.
#[derive(Debug, Clone)]
pub struct FileStatusStore {
    root: PathBuf,
    journal: Arc<Journal>,
    /// JSON files whose newest content is in the journal, their atomic save under way or
    /// failed (then tried again by the next save of that file).
    owed: Arc<Mutex<HashMap<PathBuf, Arc<OwedSave>>>>,
}

/// A state file saved to the journal whose JSON save is not known to have landed.
#[derive(Debug)]
struct OwedSave {
    bytes: Vec<u8>,
    slot: usize,
    stage: Mutex<Stage>,
    done: Condvar,
}

/// Where an owed JSON save stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Not started: released ([`FileStatusStore::release`]) or made by the next save.
    Waiting,
    Running,
    Landed,
    Failed,
}

impl OwedSave {
    fn set(&self, landed: bool) {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) =
            if landed { Stage::Landed } else { Stage::Failed };
        self.done.notify_all();
    }

    /// Takes the save over when nobody runs it and it has not landed (true: the caller makes
    /// it); waits for one running first when `wait`.
    fn claim(&self, wait: bool) -> bool {
        let mut stage = self.stage.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match *stage {
                Stage::Running if wait => {
                    stage = self.done.wait(stage).unwrap_or_else(|e| e.into_inner());
                }
                Stage::Running | Stage::Landed => return false,
                Stage::Waiting | Stage::Failed => {
                    *stage = Stage::Running;
                    return true;
                }
            }
        }
    }

    /// Waits while the save runs; where it stands then.
    #[cfg(test)]
    fn wait(&self) -> Stage {
        let mut stage = self.stage.lock().unwrap_or_else(|e| e.into_inner());
        while *stage == Stage::Running {
            stage = self.done.wait(stage).unwrap_or_else(|e| e.into_inner());
        }
        *stage
    }
}

fn check_name(s: &str) -> Result<&str, StateError> {
    let ok = !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(s)
    } else {
        Err(StateError::InvalidName(s.to_string()))
    }
}

impl FileStatusStore {
    /// Uses (and creates) `root`. Records left in its journal by a daemon that stopped before
    /// their JSON files were saved are saved to them now, before anything is read: the caller
    /// must be the directory's only writer (the daemon, at start).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StateError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| StateError::Io {
            path: root.clone(),
            source,
        })?;
        let journal_error = |source| StateError::Io {
            path: root.join(super::journal::FILE_NAME),
            source,
        };
        let (journal, records) = Journal::open(&root).map_err(journal_error)?;
        let store = FileStatusStore {
            root: root.clone(),
            journal: Arc::new(journal),
            owed: Arc::default(),
        };
        for record in &records {
            match store.journaled_path(&record.path) {
                Some(path) => {
                    tracing::info!(file = %path.display(), "saving a status recorded in the journal before the last stop");
                    store.write_file(&path, &record.bytes)?;
                }
                None => tracing::warn!(
                    path = %record.path,
                    "ignoring a journal record that names no state file"
                ),
            }
        }
        if !records.is_empty() {
            store.journal.clear().map_err(journal_error)?;
        }
        Ok(store)
    }

    /// The state file a journal record names, when it is one (`<kind>/<namespace>/<name>.json`,
    /// each part a valid name): a damaged or hostile record never writes elsewhere.
    fn journaled_path(&self, rel: &str) -> Option<PathBuf> {
        let mut parts = rel.split('/');
        let (kind, namespace, file) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        self.path(kind, namespace, file.strip_suffix(".json")?).ok()
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, kind: &str, namespace: &str, name: &str) -> Result<PathBuf, StateError> {
        Ok(self
            .root
            .join(check_name(kind)?)
            .join(check_name(namespace)?)
            .join(format!("{}.json", check_name(name)?)))
    }

    /// Reads a state; `None` when there is none yet.
    pub fn load<T: DeserializeOwned>(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<T>, StateError> {
        let path = self.path(kind, namespace, name)?;
        let owed = self.owed_save(&path);
        let read = match &owed {
            Some(o) => Ok(o.bytes.clone()),
            None => std::fs::read(&path),
        };
        match read {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StateError::Corrupt {
                        path,
                        message: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Writes a state atomically.
    pub fn save<T: Serialize>(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        value: &T,
    ) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Corrupt {
            path: self.path(kind, namespace, name).unwrap_or_default(),
            message: e.to_string(),
        })?;
        self.save_bytes(kind, namespace, name, &bytes)
    }

    /// Writes already serialized state atomically: temp file, fsync, rename, fsync of the
    /// directory (blocking; async callers run it on a blocking thread).
    pub fn save_bytes(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), StateError> {
        let path = self.path(kind, namespace, name)?;
        self.settle(&path)?;
        self.write_file(&path, bytes)
    }

    /// [`save_bytes`](Self::save_bytes) that returns once the state is durable in the journal
    /// (one write and `fdatasync` into preallocated blocks: no metadata to commit). The JSON
    /// file is owed until saved: reads get the journaled content, and it is saved atomically
    /// on another thread once [`release`](Self::release)d (after the rollback's own write, so
    /// its syncs do not compete with it), or by the next save or removal of that file, which
    /// also makes it again if it failed. For the status a rollback waits on. Saved the
    /// ordinary way when the journal has no room.
    pub fn save_journaled(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), StateError> {
        let path = self.path(kind, namespace, name)?;
        self.settle(&path)?;
        let rel = format!("{kind}/{namespace}/{name}.json");
        let slot = match self.journal.append(&rel, bytes) {
            Ok(Some(slot)) => slot,
            Ok(None) => return self.write_file(&path, bytes),
            Err(e) => {
                tracing::warn!(file = %path.display(), "the rollback journal could not be written, saving the ordinary way: {e}");
                return self.write_file(&path, bytes);
            }
        };
        let owed = Arc::new(OwedSave {
            bytes: bytes.to_vec(),
            slot,
            stage: Mutex::new(Stage::Waiting),
            done: Condvar::new(),
        });
        self.owed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path, owed);
        Ok(())
    }

    /// Starts the owed JSON save of an object saved with [`save_journaled`](Self::save_journaled)
    /// on another thread, if nobody has yet. Returns at once.
    pub fn release(&self, kind: &str, namespace: &str, name: &str) {
        let Ok(path) = self.path(kind, namespace, name) else {
            return;
        };
        let Some(owed) = self.owed_save(&path) else {
            return;
        };
        if !owed.claim(false) {
            return;
        }
        let store = self.clone();
        let finish = move || {
            let landed = match store.finish(&path, &owed) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(
                        "a status saved in the journal is not in its file yet (tried again by its next save): {e}"
                    );
                    false
                }
            };
            owed.set(landed);
            if landed {
                store.forget(&path, &owed);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(finish)),
            Err(_) => drop(std::thread::spawn(finish)),
        }
    }

    /// The owed save of `path`, if any.
    fn owed_save(&self, path: &Path) -> Option<Arc<OwedSave>> {
        self.owed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned()
    }

    fn forget(&self, path: &Path, owed: &Arc<OwedSave>) {
        let mut map = self.owed.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(path).is_some_and(|o| Arc::ptr_eq(o, owed)) {
            map.remove(path);
        }
    }

    /// Saves `owed` to its file and retires its journal record.
    fn finish(&self, path: &Path, owed: &OwedSave) -> Result<(), StateError> {
        self.write_file(path, &owed.bytes)?;
        self.journal
            .retire(owed.slot)
            .map_err(|source| StateError::Io {
                path: self.journal.path().to_path_buf(),
                source,
            })
    }

    /// Lands the owed save of `path`: waits for it if it runs, makes it if it has not started
    /// or failed. The journal record must be retired before the file gets newer content, or a
    /// restart would put the older back.
    fn settle(&self, path: &Path) -> Result<(), StateError> {
        let Some(owed) = self.owed_save(path) else {
            return Ok(());
        };
        if owed.claim(true) {
            let result = self.finish(path, &owed);
            owed.set(result.is_ok());
            result?;
        }
        self.forget(path, &owed);
        Ok(())
    }

    /// The atomic save itself.
    fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<(), StateError> {
        let name = path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let tmp = dir.join(format!(".{}.tmp-{}", name, std::process::id()));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
            drop(f);
            std::fs::rename(&tmp, path).map_err(io(path))
        })();
        if written.is_err() {
            // A failed write (ENOSPC, EIO, ...) leaves no temporary file behind.
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        // The rename is durable only with its directory; a journal record is retired on this.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))
    }

    /// Deletes a state (missing is fine).
    pub fn remove(&self, kind: &str, namespace: &str, name: &str) -> Result<(), StateError> {
        let path = self.path(kind, namespace, name)?;
        self.settle(&path)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStatusStore::open(dir.path().join("state")).unwrap();
        assert_eq!(
            s.load::<Vec<u32>>("canary", "bookinfo", "reviews").unwrap(),
            None
        );
        s.save("canary", "bookinfo", "reviews", &vec![1u32, 2])
            .unwrap();
        assert_eq!(
            s.load::<Vec<u32>>("canary", "bookinfo", "reviews").unwrap(),
            Some(vec![1, 2])
        );
        s.save("canary", "bookinfo", "reviews", &vec![3u32])
            .unwrap();
        assert_eq!(
            s.load::<Vec<u32>>("canary", "bookinfo", "reviews").unwrap(),
            Some(vec![3])
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("state/canary/bookinfo"))
            .unwrap()
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left behind");
        s.remove("canary", "bookinfo", "reviews").unwrap();
        s.remove("canary", "bookinfo", "reviews").unwrap();
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStatusStore::open(dir.path()).unwrap();
        for bad in ["..", "a/b", "", "x\\y"] {
            assert!(
                matches!(
                    s.save("canary", bad, "n", &1),
                    Err(StateError::InvalidName(_))
                ),
                "{bad}"
            );
        }
    }

    /// A write that fails after the temporary file exists (here the rename, over a directory;
    /// ENOSPC fails the write the same way) leaves nothing behind.
    #[test]
    fn a_failed_save_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStatusStore::open(dir.path()).unwrap();
        let ns = dir.path().join("canary/ns");
        std::fs::create_dir_all(ns.join("x.json/blocker")).unwrap();
        assert!(matches!(
            s.save("canary", "ns", "x", &vec![1u32]),
            Err(StateError::Io { .. })
        ));
        let names: Vec<String> = std::fs::read_dir(&ns)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["x.json"]);
    }

    /// Nothing is left in `dir`'s journal for the next start to put back.
    fn assert_journal_empty(dir: &Path) {
        let (_, records) = Journal::open(dir).unwrap();
        assert!(records.is_empty(), "{records:?}");
    }

    fn json_path(dir: &Path) -> PathBuf {
        dir.join("canary/ns/x.json")
    }

    /// Makes the atomic save of `canary/ns/x` fail (a rename over a non-empty directory fails
    /// as ENOSPC or EIO would) until [`unblock`] .
    fn block(dir: &Path) {
        std::fs::create_dir_all(json_path(dir).join("blocker")).unwrap();
    }

    fn unblock(dir: &Path) {
        std::fs::remove_dir_all(json_path(dir)).unwrap();
    }

    #[test]
    fn a_journaled_save_is_read_at_once_and_lands_in_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStatusStore::open(dir.path()).unwrap();
        s.save("canary", "ns", "x", &vec![1u32]).unwrap();
        s.save_journaled("canary", "ns", "x", b"[2]").unwrap();
        assert_eq!(
            s.load::<Vec<u32>>("canary", "ns", "x").unwrap(),
            Some(vec![2])
        );
        assert_eq!(std::fs::read(json_path(dir.path())).unwrap(), b"[\n  1\n]");
        let owed = s.owed_save(&json_path(dir.path())).expect("owed");
        s.release("canary", "ns", "x");
        assert_eq!(owed.wait(), Stage::Landed);
        assert_eq!(std::fs::read(json_path(dir.path())).unwrap(), b"[2]");
        s.settle(&json_path(dir.path())).unwrap();
        assert_eq!(s.journal.free_slots(), super::super::journal::SLOTS);
        assert!(s.owed.lock().unwrap().is_empty());
        // Nothing is left to put back at the next start.
        drop(s);
        assert_journal_empty(dir.path());
    }

    /// The process stops (here: the store is dropped) after the journal write and before the
    /// JSON file could be saved: the next open saves it before anything reads it.
    #[test]
    fn a_status_only_in_the_journal_is_in_its_file_after_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStatusStore::open(dir.path()).unwrap();
        s.save("canary", "ns", "x", &vec![1u32]).unwrap();
        std::fs::remove_file(json_path(dir.path())).unwrap();
        block(dir.path());
        s.save_journaled("canary", "ns", "x", b"[2]").unwrap();
        let owed = s.owed_save(&json_path(dir.path())).expect("owed");
        assert_eq!(owed.wait(), Stage::Waiting, "not started before released");
        s.release("canary", "ns", "x");
        assert_eq!(owed.wait(), Stage::Failed, "the JSON save cannot land");
        assert_eq!(
            s.load::<Vec<u32>>("canary", "ns", "x").unwrap(),
            Some(vec![2])
        );
        drop((s, owed));
        unblock(dir.path());
        let s = FileStatusStore::open(dir.path()).unwrap();
        assert_eq!(std::fs::read(json_path(dir.path())).unwrap(), b"[2]");
        assert_eq!(
            s.load::<Vec<u32>>("canary", "ns", "x").unwrap(),
            Some(vec![2])
        );
        drop(s);
        assert_journal_empty(dir.path());
    }

    /// A newer save of a file whose journaled save has not landed saves the journaled one
    /// first (or fails): the journal never holds content older than the file, so a restart
    /// never puts an older status back.
    #[test]
    fn a_newer_save_first_lands_the_owed_one_and_a_restart_keeps_the_newer() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStatusStore::open(dir.path()).unwrap();
        block(dir.path());
        s.save_journaled("canary", "ns", "x", b"[2]").unwrap();
        assert!(matches!(
            s.save_bytes("canary", "ns", "x", b"[3]"),
            Err(StateError::Io { .. })
        ));
        assert_eq!(
            s.load::<Vec<u32>>("canary", "ns", "x").unwrap(),
            Some(vec![2]),
            "still the journaled one"
        );
        unblock(dir.path());
        s.save_bytes("canary", "ns", "x", b"[3]").unwrap();
        assert_eq!(
            s.load::<Vec<u32>>("canary", "ns", "x").unwrap(),
            Some(vec![3])
        );
        assert_eq!(s.journal.free_slots(), super::super::journal::SLOTS);
        drop(s);
        let s = FileStatusStore::open(dir.path()).unwrap();
        assert_eq!(
            s.load::<Vec<u32>>("canary", "ns", "x").unwrap(),
            Some(vec![3])
        );
        // A removal waits for the owed save too (else it would come back).
        s.save_journaled("canary", "ns", "x", b"[4]").unwrap();
        s.remove("canary", "ns", "x").unwrap();
        assert_eq!(s.load::<Vec<u32>>("canary", "ns", "x").unwrap(), None);
        drop(s);
        let s = FileStatusStore::open(dir.path()).unwrap();
        assert_eq!(s.load::<Vec<u32>>("canary", "ns", "x").unwrap(), None);
    }

    #[test]
    fn a_journal_record_naming_no_state_file_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        for rel in [
            "../escape.json",
            "canary/ns/x",
            "canary/../x.json",
            "a/b/c/d.json",
            "/etc/x.json",
        ] {
            j.append(rel, b"[1]").unwrap().unwrap();
        }
        drop(j);
        let s = FileStatusStore::open(dir.path()).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [super::super::journal::FILE_NAME]);
        assert!(!dir.path().parent().unwrap().join("escape.json").exists());
        drop(s);
        assert_journal_empty(dir.path());
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStatusStore::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("canary/ns")).unwrap();
        std::fs::write(dir.path().join("canary/ns/x.json"), "{not json").unwrap();
        assert!(matches!(
            s.load::<Vec<u32>>("canary", "ns", "x"),
            Err(StateError::Corrupt { .. })
        ));
    }
}
