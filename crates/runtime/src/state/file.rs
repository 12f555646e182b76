//! One status file per object (`<kind>/<namespace>/<name>.json`) holding two slots, each a
//! text header line (generation, length, checksum) and the status' JSON ([`slots`]). A save
//! overwrites the older slot in place and `fdatasync`s it: one synced write, no rename and no
//! directory `fsync` on the rollback path, while a crash mid-write leaves a slot whose checksum
//! fails, so a load falls back to the other one, the previous status (old or new, never half).
//! Creating the file, converting a plain-JSON file an older daemon wrote, or outgrowing a slot
//! replaces the whole file through a temporary file, `fsync`, rename and `fsync` of the
//! directory.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Serialize, de::DeserializeOwned};

use super::slots;

/// Largest status (its JSON) a file holds ([`slots::MAX_JSON_BYTES`]).
pub const MAX_STATUS_BYTES: usize = slots::MAX_JSON_BYTES;

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
    /// A status too large to save ([`MAX_STATUS_BYTES`]); the saved one is left as it was.
    #[error(
        "state file {path}: the status is {bytes} bytes, more than the {limit} a state file holds"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Size of the status' JSON.
        bytes: usize,
        /// [`MAX_STATUS_BYTES`].
        limit: usize,
    },
    /// A name that would escape the state directory.
    #[error("invalid object name {0:?}")]
    InvalidName(String),
}

/// A directory of status files.
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

/// The JSON a status file holds, in either format (the newest valid slot, or the whole file
/// of an older daemon): what anything outside the store that inspects a state file reads.
pub fn read_status_json(path: &Path) -> Result<Vec<u8>, StateError> {
    let bytes = slots::read(path).map_err(|source| StateError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    slots::decode(&bytes)
        .map(|(_, json)| json.to_vec())
        .map_err(|message| StateError::Corrupt {
            path: path.to_path_buf(),
            message,
        })
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
        let json = match read_status_json(&path) {
            Ok(json) => json,
            Err(StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&json)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path,
                message: e.to_string(),
            })
    }

    /// Writes a state durably ([`FileStatusStore::save_bytes`]).
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

    /// Writes already serialized state so that a crash leaves the old or the new one: into
    /// the older slot of the existing file, `fdatasync`ed (the file's size never changes, so
    /// no metadata has to reach the disk), else by replacing the whole file (blocking; async
    /// callers run it on a blocking thread). Saves of one object are serialized by an
    /// exclusive `flock` on its file.
    pub fn save_bytes(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), StateError> {
        let path = self.path(kind, namespace, name)?;
        if bytes.len() > MAX_STATUS_BYTES {
            return Err(StateError::TooLarge {
                path,
                bytes: bytes.len(),
                limit: MAX_STATUS_BYTES,
            });
        }
        slots::save(
            &path,
            bytes,
            |source| StateError::Io {
                path: path.clone(),
                source,
            },
            |contents| self.replace(&path, name, contents),
        )
    }

    /// Replaces the whole file: temp file, fsync, rename, fsync of the directory.
    fn replace(&self, path: &Path, name: &str, contents: &[u8]) -> Result<(), StateError> {
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
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(contents).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
            drop(f);
            std::fs::rename(&tmp, path).map_err(io(path))
        })();
        if written.is_err() {
            // A failed write (ENOSPC, EIO, ...) leaves no temporary file behind.
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        if let Ok(d) = File::open(&dir) {
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
    use crate::state::slots::{HEADER_BYTES, MIN_SLOT_BYTES, SLOT_MAGIC, decode_slot, encode_slot};

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

    fn slots_file(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("canary/ns/x.json")
    }

    fn load(s: &FileStatusStore) -> Result<Option<Vec<u32>>, StateError> {
        s.load::<Vec<u32>>("canary", "ns", "x")
    }

    /// The generations of the two slots as read (None: not valid).
    fn generations(bytes: &[u8]) -> [Option<u64>; 2] {
        let cap = bytes.len() / 2;
        [0, 1].map(|i| {
            decode_slot(&bytes[i * cap..(i + 1) * cap])
                .ok()
                .map(|(g, _)| g)
        })
    }

    /// After the file exists a save overwrites the older slot in place: same inode, same size
    /// (so `fdatasync` has no metadata to flush), generations going up, slots alternating,
    /// and the file stays readable text: a header line, then the JSON.
    #[test]
    fn saves_alternate_slots_in_place_with_growing_generations() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let s = FileStatusStore::open(dir.path()).unwrap();
        s.save("canary", "ns", "x", &vec![1u32]).unwrap();
        let path = slots_file(&dir);
        let first = std::fs::metadata(&path).unwrap();
        assert_eq!(first.len(), 2 * MIN_SLOT_BYTES as u64);
        assert_eq!(generations(&std::fs::read(&path).unwrap()), [Some(1), None]);
        for (n, expect) in [
            (2u32, [Some(1), Some(2)]),
            (3, [Some(3), Some(2)]),
            (4, [Some(3), Some(4)]),
        ] {
            s.save("canary", "ns", "x", &vec![n]).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(generations(&bytes), expect);
            assert_eq!(load(&s).unwrap(), Some(vec![n]));
            let m = std::fs::metadata(&path).unwrap();
            assert_eq!((m.ino(), m.len()), (first.ino(), first.len()));
        }
        let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        let first_line = text.lines().next().unwrap();
        assert!(
            first_line.starts_with("skycanary-slot v1 gen 00000000000000000003 len "),
            "{first_line}"
        );
        assert_eq!(text.lines().nth(1), Some("["));
    }

    /// A save interrupted anywhere in its slot (a crash mid-write, a torn sector) leaves the
    /// previous status readable, never half of the new one; a whole write gives the new one.
    #[test]
    fn a_torn_slot_falls_back_to_the_previous_status() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStatusStore::open(dir.path()).unwrap();
        s.save("canary", "ns", "x", &vec![1u32]).unwrap();
        s.save("canary", "ns", "x", &vec![2u32]).unwrap();
        let path = slots_file(&dir);
        let saved = std::fs::read(&path).unwrap();
        let cap = saved.len() / 2;
        // The next save goes to slot 1 (generation 3).
        let json = serde_json::to_vec_pretty(&vec![3u32; 3]).unwrap();
        let next = encode_slot(3, &json, cap);
        // Cut anywhere before the JSON's last byte (past it only padding is left to write).
        let end = HEADER_BYTES + json.len();
        for cut in [
            1,
            30,
            HEADER_BYTES - 1,
            HEADER_BYTES,
            HEADER_BYTES + 3,
            end - 1,
        ] {
            let mut torn = saved.clone();
            torn[..cut].copy_from_slice(&next[..cut]);
            std::fs::write(&path, &torn).unwrap();
            assert_eq!(load(&s).unwrap(), Some(vec![2]), "cut at {cut}");
        }
        // A flipped byte in the newer slot's JSON: the checksum catches it.
        let mut flipped = saved.clone();
        let at = cap + HEADER_BYTES + 2;
        flipped[at] ^= 0x01;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(load(&s).unwrap(), Some(vec![1]));
        // The torn file's next save writes over the damaged slot and is read back.
        s.save("canary", "ns", "x", &vec![5u32]).unwrap();
        assert_eq!(load(&s).unwrap(), Some(vec![5]));
        let mut whole = saved;
        whole[..cap].copy_from_slice(&next);
        std::fs::write(&path, &whole).unwrap();
        assert_eq!(load(&s).unwrap(), Some(vec![3, 3, 3]));
    }

    /// Neither slot valid is the store's Corrupt error (the object is left alone), not a reset.
    #[test]
    fn both_slots_invalid_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStatusStore::open(dir.path()).unwrap();
        s.save("canary", "ns", "x", &vec![1u32]).unwrap();
        s.save("canary", "ns", "x", &vec![2u32]).unwrap();
        let path = slots_file(&dir);
        let mut bytes = std::fs::read(&path).unwrap();
        let cap = bytes.len() / 2;
        bytes[HEADER_BYTES + 1] ^= 0x01;
        bytes[cap + 10] = b'#';
        std::fs::write(&path, &bytes).unwrap();
        match load(&s) {
            Err(StateError::Corrupt { message, .. }) => {
                assert!(message.contains("no valid slot"), "{message}");
                assert!(message.contains("checksum mismatch"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Neither plain JSON nor two slots.
        std::fs::write(&path, b"skycanary").unwrap();
        assert!(matches!(load(&s), Err(StateError::Corrupt { .. })));
    }

    /// A status file an older daemon wrote (plain JSON) loads; the first save converts it to
    /// slots (by a whole-file replace), after which saves go in place.
    #[test]
    fn a_plain_json_file_loads_and_the_first_save_converts_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStatusStore::open(dir.path()).unwrap();
        let path = slots_file(&dir);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"[\n  7,\n  8\n]").unwrap();
        assert_eq!(load(&s).unwrap(), Some(vec![7, 8]));
        s.save("canary", "ns", "x", &vec![9u32]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(SLOT_MAGIC.as_bytes()));
        assert_eq!(generations(&bytes), [Some(1), None]);
        assert_eq!(load(&s).unwrap(), Some(vec![9]));
        assert_eq!(read_status_json(&path).unwrap(), b"[\n  9\n]");
    }

    /// A status past [`MAX_STATUS_BYTES`] is refused with the sizes, the saved one kept; one
    /// outgrowing its slot (but under the limit) replaces the file with larger slots, the
    /// generation going on.
    #[test]
    fn an_oversized_status_is_refused_and_a_grown_one_gets_larger_slots() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStatusStore::open(dir.path()).unwrap();
        s.save("canary", "ns", "x", &vec![1u32]).unwrap();
        s.save("canary", "ns", "x", &vec![2u32]).unwrap();
        let huge = vec![u32::MAX; MAX_STATUS_BYTES / 8];
        match s.save("canary", "ns", "x", &huge) {
            Err(e @ StateError::TooLarge { .. }) => {
                assert!(
                    e.to_string()
                        .contains(&format!("more than the {MAX_STATUS_BYTES}")),
                    "{e}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(load(&s).unwrap(), Some(vec![2]));
        let grown: Vec<u32> = (0..2_000).collect();
        s.save("canary", "ns", "x", &grown).unwrap();
        let bytes = std::fs::read(slots_file(&dir)).unwrap();
        assert!(bytes.len() > 2 * MIN_SLOT_BYTES);
        assert_eq!(generations(&bytes), [Some(3), None]);
        assert_eq!(load(&s).unwrap(), Some(grown));
    }

    /// A generation at `u64::MAX` (never reached: one save per nanosecond for 584 years) does
    /// not wrap into an older-looking slot: the file is replaced whole, starting over at 1.
    #[test]
    fn a_generation_at_its_maximum_starts_over_in_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStatusStore::open(dir.path()).unwrap();
        let path = slots_file(&dir);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut bytes = encode_slot(u64::MAX, b"[1]", MIN_SLOT_BYTES);
        bytes.extend(encode_slot(u64::MAX - 1, b"[0]", MIN_SLOT_BYTES));
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(load(&s).unwrap(), Some(vec![1]));
        s.save("canary", "ns", "x", &vec![2u32]).unwrap();
        assert_eq!(generations(&std::fs::read(&path).unwrap()), [Some(1), None]);
        assert_eq!(load(&s).unwrap(), Some(vec![2]));
        s.save("canary", "ns", "x", &vec![3u32]).unwrap();
        assert_eq!(
            generations(&std::fs::read(&path).unwrap()),
            [Some(1), Some(2)]
        );
        assert_eq!(load(&s).unwrap(), Some(vec![3]));
    }

    /// Saves of one object from several threads (a task and its successor) are serialized by
    /// the file lock: every one lands whole and the last one wins, never a torn or lost file.
    #[test]
    fn concurrent_saves_of_one_object_never_tear_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStatusStore::open(dir.path()).unwrap();
        // Created once first: a task creates its object's file before any successor runs.
        s.save("canary", "ns", "x", &vec![0u32]).unwrap();
        std::thread::scope(|scope| {
            for t in 0..4u32 {
                let s = &s;
                scope.spawn(move || {
                    for i in 0..40u32 {
                        // Some saves outgrow the slot, so whole-file replaces race in-place ones.
                        let len = if i % 13 == 0 { 1_500 } else { 2 };
                        s.save("canary", "ns", "x", &vec![t * 1000 + i; len])
                            .unwrap();
                        let read = load(s).unwrap().unwrap();
                        assert!(!read.is_empty() && read.iter().all(|v| *v == read[0]));
                    }
                });
            }
        });
        let last = load(&s).unwrap().unwrap();
        assert_eq!(last[0] % 1000, 39, "{:?}", &last[..1]);
    }

    /// Set (to a state directory) in the child process of the kill test: [`slot_writer`] then
    /// saves there until killed.
    const WRITER_ENV: &str = "SKYCANARY_TEST_SLOT_WRITER";

    /// Saves `vec![i; ~1,500]` (12 KB of JSON: slots of four pages, so a kill can stop a write
    /// between pages) for `i` from one past the stored value on, calling `ack(i)` after each.
    fn write_until(root: &Path, count: u32, mut ack: impl FnMut(u32)) {
        let s = FileStatusStore::open(root).unwrap();
        let from = load(&s).unwrap().map_or(1, |v| v[0] + 1);
        for i in from..from + count {
            let len = 1_500 + (i % 7) as usize * 10;
            s.save("canary", "ns", "x", &vec![i; len]).unwrap();
            ack(i);
        }
    }

    /// The kill test's writer: with [`WRITER_ENV`] set it saves and prints each acknowledged
    /// value until killed; run as an ordinary test it saves 60 values and reads the last back.
    #[test]
    fn slot_writer() {
        if let Some(root) = std::env::var_os(WRITER_ENV) {
            let mut out = std::io::stdout().lock();
            write_until(Path::new(&root), u32::MAX / 4, |i| {
                writeln!(out, "{i}").unwrap();
                out.flush().unwrap();
            });
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut last = 0;
        write_until(dir.path(), 60, |i| last = i);
        let s = FileStatusStore::open(dir.path()).unwrap();
        let read = s.load::<Vec<u32>>("canary", "ns", "x").unwrap().unwrap();
        assert_eq!((last, read[0], read.len()), (60, 60, 1_500 + 4 * 10));
    }

    /// kill -9 of a process in the middle of its saves, 12 times at varied moments: the file
    /// always loads (never Corrupt), holding the last acknowledged status or the one being
    /// saved, never an older one and never a mix.
    #[test]
    fn a_kill_9_during_saves_leaves_the_last_acknowledged_status_or_the_next() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let s = FileStatusStore::open(dir.path()).unwrap();
        for round in 0..12u64 {
            let mut child = std::process::Command::new(&exe)
                .args(["--exact", "state::file::tests::slot_writer", "--nocapture"])
                .env(WRITER_ENV, dir.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
            let mut last = None;
            let wanted = 3 + round * 2;
            let mut seen = 0;
            while seen < wanted {
                let line = lines.next().expect("the writer ended early").unwrap();
                if let Ok(i) = line.trim().parse::<u32>() {
                    last = Some(i);
                    seen += 1;
                }
            }
            std::thread::sleep(std::time::Duration::from_micros((round * 397) % 2_000));
            child.kill().unwrap();
            child.wait().unwrap();
            // Values acknowledged before the kill landed but not read yet count too.
            for line in lines.map_while(Result::ok) {
                if let Ok(i) = line.trim().parse::<u32>() {
                    last = Some(i);
                }
            }
            let last = last.unwrap();
            let read = load(&s)
                .unwrap_or_else(|e| panic!("round {round}: {e}"))
                .unwrap();
            assert!(
                read[0] == last || read[0] == last + 1,
                "round {round}: read {} after acknowledging {last}",
                read[0]
            );
            assert!(read.iter().all(|v| *v == read[0]), "round {round}: mixed");
        }
    }
}
