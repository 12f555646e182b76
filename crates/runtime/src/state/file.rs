//! One JSON file per object (`<kind>/<namespace>/<name>.json`), written through a temporary
//! file, fsync and rename, so a crash leaves either the old or the new state, never half.

use std::io::Write;
use std::path::{Path, PathBuf};

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
    /// Uses (and creates) `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StateError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| StateError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(FileStatusStore { root })
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
        match std::fs::read(&path) {
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
            std::fs::rename(&tmp, &path).map_err(io(&path))
        })();
        if written.is_err() {
            // A failed write (ENOSPC, EIO, ...) leaves no temporary file behind.
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Deletes a state (missing is fine).
    pub fn remove(&self, kind: &str, namespace: &str, name: &str) -> Result<(), StateError> {
        let path = self.path(kind, namespace, name)?;
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
