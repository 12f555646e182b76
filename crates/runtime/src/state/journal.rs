//! The state directory's rollback journal: a preallocated file of fixed slots, each holding at
//! most one checksummed record (a state file's path and its new bytes).
//!
//! Why: a rollback's routing write may become visible only once the status explaining it is
//! durable (DESIGN §5, §6). The atomic save of a JSON file (temporary file, `fsync`, rename,
//! `fsync` of the directory) costs two journal commits of the file system; one write into
//! blocks that already exist followed by `fdatasync` costs none (no metadata changes), so it
//! is the first durable copy of a rollback's status, and the atomic JSON save follows in the
//! background ([`super::file::FileStatusStore`]). A record stays valid until its JSON file is
//! saved and synced; at the next start every valid record is written to its JSON file before
//! anything is loaded.
//!
//! A record whose checksum does not match (a write torn by a crash) is ignored: its
//! `fdatasync` never returned, so nothing was made visible on its account. Records that name
//! a path outside the state directory are ignored too.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Slots in the journal: rollbacks whose JSON save may be in flight at once. A save finding
/// none free is saved the ordinary way (slower, just as safe).
pub const SLOTS: usize = 16;
/// Bytes per slot: a record larger than this (header included) is saved the ordinary way.
pub const SLOT_BYTES: usize = 64 * 1024;
/// The journal's file name, in the state directory's root.
pub const FILE_NAME: &str = ".rollback-journal";

const MAGIC: [u8; 4] = *b"SCJ1";
/// magic (4), crc32 (4), sequence (8), path length (2), body length (4).
const HEADER: usize = 22;

/// One valid record found at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Order of writing: a later record of the same path wins.
    pub seq: u64,
    /// The state file's path relative to the state directory.
    pub path: String,
    /// The file's new content.
    pub bytes: Vec<u8>,
}

/// The open journal.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    free: Mutex<Vec<usize>>,
    seq: AtomicU64,
    /// Set when a slot could be neither written nor cleared: no record is written any more
    /// (every save goes the ordinary way).
    broken: AtomicBool,
}

impl Journal {
    /// Opens (creating and preallocating) the journal in `root` and returns the valid records
    /// it holds, oldest first. The caller writes them to their files, then calls
    /// [`Journal::clear`].
    pub fn open(root: &Path) -> std::io::Result<(Journal, Vec<Record>)> {
        let path = root.join(FILE_NAME);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        // One writer per state directory: a second daemon would replay and clear the first's
        // records and write over its slots. A file system without locks (ENOLCK, some NFS
        // setups) is said once and not held against the directory.
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!("{e}: another skycanary process uses this state directory"),
                ));
            }
            Err(e) => tracing::warn!(
                file = %path.display(),
                "the state directory cannot be locked, so a second daemon on it would not be \
                 refused: {e}"
            ),
        }
        let size = (SLOTS * SLOT_BYTES) as u64;
        let mut content = Vec::new();
        (&mut file).take(size).read_to_end(&mut content)?;
        let mut records: Vec<Record> = content.chunks(SLOT_BYTES).filter_map(parse).collect();
        records.sort_by_key(|r| r.seq);
        // Records are put into their files before the journal is rewritten ([`Journal::clear`]).
        if records.is_empty() && !is_preallocated(&file)? {
            preallocate(&file, root)?;
        }
        let seq = records.iter().map(|r| r.seq).max().unwrap_or(0) + 1;
        let journal = Journal {
            file,
            path,
            free: Mutex::new((0..SLOTS).rev().collect()),
            seq: AtomicU64::new(seq),
            broken: AtomicBool::new(false),
        };
        Ok((journal, records))
    }

    /// Clears every slot (after the records found at open are in their files).
    pub fn clear(&self) -> std::io::Result<()> {
        if !is_preallocated(&self.file)? {
            let root = self.path.parent().unwrap_or(Path::new("."));
            return preallocate(&self.file, root);
        }
        for slot in 0..SLOTS {
            self.file
                .write_all_at(&[0u8; HEADER], (slot * SLOT_BYTES) as u64)?;
        }
        self.file.sync_data()
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record and makes it durable. `Ok(None)` when it does not fit a slot or none
    /// is free (the caller saves the ordinary way). On an error nothing of it stays valid,
    /// as far as the disk lets the slot be cleared.
    pub fn append(&self, rel_path: &str, bytes: &[u8]) -> std::io::Result<Option<usize>> {
        if self.broken.load(Ordering::Relaxed)
            || rel_path.len() > usize::from(u16::MAX)
            || HEADER + rel_path.len() + bytes.len() > SLOT_BYTES
        {
            return Ok(None);
        }
        let Some(slot) = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
            return Ok(None);
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let record = encode(seq, rel_path, bytes);
        let written = self
            .file
            .write_all_at(&record, (slot * SLOT_BYTES) as u64)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => Ok(Some(slot)),
            Err(e) => {
                if self.retire(slot).is_err() {
                    self.broken.store(true, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }

    /// Invalidates `slot`'s record (its file is saved and synced) and frees the slot. On an
    /// error the record may still be valid: the slot stays taken and the caller tries again.
    pub fn retire(&self, slot: usize) -> std::io::Result<()> {
        self.file
            .write_all_at(&[0u8; HEADER], (slot * SLOT_BYTES) as u64)?;
        self.file.sync_data()?;
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot);
        Ok(())
    }

    /// Slots free now (tests and diagnostics).
    pub fn free_slots(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Whether the journal has its full size in written blocks (not holes: a file of the right
/// length made by `set_len` alone has none allocated).
fn is_preallocated(file: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata()?;
    Ok(m.len() == (SLOTS * SLOT_BYTES) as u64 && m.blocks() * 512 >= m.len())
}

/// Rewrites the journal as zeros, written, not just allocated: overwriting unwritten extents
/// later would be a metadata change again (their conversion), costing the commit this file
/// exists to avoid.
fn preallocate(file: &File, root: &Path) -> std::io::Result<()> {
    file.set_len(0)?;
    let zeros = vec![0u8; SLOT_BYTES];
    for slot in 0..SLOTS {
        file.write_all_at(&zeros, (slot * SLOT_BYTES) as u64)?;
    }
    file.sync_all()?;
    File::open(root)?.sync_all()
}

fn encode(seq: u64, path: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + path.len() + bytes.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(path.len() as u16).to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(bytes);
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The record in one slot, if it holds a whole, valid one.
fn parse(slot: &[u8]) -> Option<Record> {
    if slot.len() < HEADER || slot[..4] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(slot[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(slot[8..16].try_into().ok()?);
    let path_len = usize::from(u16::from_le_bytes(slot[16..18].try_into().ok()?));
    let body_len = usize::try_from(u32::from_le_bytes(slot[18..22].try_into().ok()?)).ok()?;
    let end = HEADER.checked_add(path_len)?.checked_add(body_len)?;
    if end > slot.len() || crc32fast::hash(&slot[8..end]) != crc {
        return None;
    }
    let path = std::str::from_utf8(&slot[HEADER..HEADER + path_len]).ok()?;
    Some(Record {
        seq,
        path: path.to_string(),
        bytes: slot[HEADER + path_len..end].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen_until_cleared_and_torn_ones_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (j, found) = Journal::open(dir.path()).unwrap();
        assert!(found.is_empty());
        assert_eq!(
            std::fs::metadata(j.path()).unwrap().len(),
            (SLOTS * SLOT_BYTES) as u64
        );
        j.append("canary/ns/a.json", b"{\"a\":1}").unwrap().unwrap();
        let b = j.append("canary/ns/b.json", b"{\"b\":2}").unwrap().unwrap();
        let c = j.append("canary/ns/c.json", b"{\"c\":3}").unwrap().unwrap();
        assert_eq!(j.free_slots(), SLOTS - 3);
        j.retire(c).unwrap();
        assert_eq!(j.free_slots(), SLOTS - 2);
        drop(j);
        // A crash tore b's record: one byte of its body differs from what was checksummed.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        file.write_all_at(b"X", (b * SLOT_BYTES + HEADER + 17) as u64)
            .unwrap();
        let (j, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(
            found,
            vec![Record {
                seq: 1,
                path: "canary/ns/a.json".into(),
                bytes: b"{\"a\":1}".to_vec()
            }]
        );
        // Later records are numbered after the ones found.
        j.clear().unwrap();
        j.append("canary/ns/d.json", b"{}").unwrap().unwrap();
        drop(j);
        let (_, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "canary/ns/d.json");
        assert_eq!(found[0].seq, 2);
    }

    #[test]
    fn a_record_too_big_or_without_a_free_slot_is_left_to_the_ordinary_save() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        assert_eq!(j.append("p", &vec![b'x'; SLOT_BYTES]).unwrap(), None);
        let fits = SLOT_BYTES - HEADER - 1;
        assert!(j.append("p", &vec![b'x'; fits]).unwrap().is_some());
        for _ in 1..SLOTS {
            assert!(j.append("p", b"{}").unwrap().is_some());
        }
        assert_eq!(j.append("p", b"{}").unwrap(), None, "every slot taken");
        j.retire(3).unwrap();
        assert!(j.append("p", b"{}").unwrap().is_some());
    }

    /// A journal of the wrong size that holds a record (cut short by a copy, say) is rewritten
    /// only by `clear`, after the record is in its file: a failed replay loses nothing.
    #[test]
    fn a_short_journal_keeps_its_records_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, encode(3, "canary/ns/x.json", b"[1]")).unwrap();
        let (j, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        drop(j);
        let (j, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found.len(), 1, "still there: not cleared");
        j.clear().unwrap();
        assert!(is_preallocated(&j.file).unwrap());
        drop(j);
        let (_, found) = Journal::open(dir.path()).unwrap();
        assert!(found.is_empty());
    }

    #[test]
    fn a_short_or_sparse_journal_is_preallocated_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"SCJ1 garbage").unwrap();
        let (j, found) = Journal::open(dir.path()).unwrap();
        assert!(found.is_empty());
        assert!(is_preallocated(&j.file).unwrap());
        drop(j);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(0).unwrap();
        f.set_len((SLOTS * SLOT_BYTES) as u64).unwrap();
        assert!(!is_preallocated(&f).unwrap(), "a hole, not written blocks");
        let (j, _) = Journal::open(dir.path()).unwrap();
        assert!(is_preallocated(&j.file).unwrap());
    }

    #[test]
    fn a_second_process_on_the_same_directory_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = Journal::open(dir.path()).unwrap();
        let e = Journal::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("another skycanary process"), "{e}");
        drop(first);
        Journal::open(dir.path()).unwrap();
    }

    #[test]
    fn parse_never_reads_past_its_slot() {
        let mut slot = encode(7, "canary/ns/x.json", b"{}");
        assert!(parse(&slot).is_some());
        // Lengths claiming more than the slot holds.
        slot[18..22].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&slot), None);
        assert_eq!(parse(&slot[..10]), None);
        assert_eq!(parse(&[0u8; 64]), None);
    }
}
