//! Files saved in place, for the state on the rollback path (a status, a VirtualService's
//! sidecar): two slots, each a text header line (generation, length, checksum) and the JSON,
//! padded to a power of two of at least a page. A save overwrites the older slot and
//! `fdatasync`s it: one synced write, no rename and no directory `fsync` (the file's size and
//! name never change, so no metadata has to reach the disk), while a crash mid-write leaves a
//! slot whose checksum fails, so a read falls back to the other one, the previous content (old
//! or new, never half). Creating the file, converting a plain-JSON file an older version wrote,
//! or outgrowing a slot replaces the whole file, which the caller does (temporary file,
//! `fsync`, rename, `fsync` of the directory) while the save holds the file's lock.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Smallest slot: one page, so the two slots never share a page and writing one never rewrites
/// a byte of the other.
pub(crate) const MIN_SLOT_BYTES: usize = 4096;

/// What every slot header starts with (and what tells a slot file from older plain JSON).
pub(crate) const SLOT_MAGIC: &str = "skycanary-slot v1";

/// `<magic> gen <20 digits> len <10 digits> sha256 <32 hex>\n`.
pub(crate) const HEADER_BYTES: usize = SLOT_MAGIC.len() + 5 + 20 + 5 + 10 + 8 + 32 + 1;

/// Largest JSON a slot file holds: bounds its slots, so what is read is bounded too. A
/// Canary's status or a sidecar is a few KB; the cluster-mode status subresource is bounded
/// near 1.5 MB by etcd, so more than this is a runaway, refused with a clear error rather than
/// slowing every save.
pub const MAX_JSON_BYTES: usize = 1 << 20;

/// Largest slot, sized for [`MAX_JSON_BYTES`]; a file is two slots.
const MAX_SLOT_BYTES: usize = slot_capacity(MAX_JSON_BYTES);

/// Slot size for JSON of `len` bytes: a power of two with room to grow to twice its size
/// before a save has to replace the file with larger slots.
const fn slot_capacity(len: usize) -> usize {
    let need = (HEADER_BYTES + len + 1) * 2;
    let cap = need.next_power_of_two();
    if cap < MIN_SLOT_BYTES {
        MIN_SLOT_BYTES
    } else {
        cap
    }
}

/// The checksum of a slot: SHA-256, truncated to 128 bits, over its header's fields (magic,
/// generation, length) and its JSON, as 32 hex digits.
fn checksum(fields: &[u8], json: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(fields)
        .chain_update(json)
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// One slot of `cap` bytes: its header line, the JSON, spaces up to a final newline.
pub(crate) fn encode_slot(generation: u64, json: &[u8], cap: usize) -> Vec<u8> {
    let fields = format!("{SLOT_MAGIC} gen {generation:020} len {:010}", json.len());
    let mut slot = Vec::with_capacity(cap);
    slot.extend_from_slice(fields.as_bytes());
    slot.extend_from_slice(b" sha256 ");
    slot.extend_from_slice(checksum(fields.as_bytes(), json).as_bytes());
    slot.push(b'\n');
    debug_assert_eq!(slot.len(), HEADER_BYTES);
    slot.extend_from_slice(json);
    slot.resize(cap - 1, b' ');
    slot.push(b'\n');
    slot
}

/// A whole new file: `json` in the first slot, the second one blank (no valid header) until
/// the next save writes it.
fn encode_file(generation: u64, json: &[u8]) -> Vec<u8> {
    let cap = slot_capacity(json.len());
    let mut file = encode_slot(generation, json, cap);
    file.resize(2 * cap - 1, b' ');
    file.push(b'\n');
    file
}

/// A valid slot: its generation and where its JSON is in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    generation: u64,
    json: (usize, usize),
}

/// The slot at `slot` (whole slot bytes), or why it is not valid (torn, blank, damaged).
pub(crate) fn decode_slot(slot: &[u8]) -> Result<(u64, usize), String> {
    let header = slot
        .get(..HEADER_BYTES)
        .ok_or_else(|| "shorter than a slot header".to_string())?;
    let text = std::str::from_utf8(header).map_err(|_| "no slot header".to_string())?;
    let rest = text
        .strip_prefix(SLOT_MAGIC)
        .and_then(|t| t.strip_suffix('\n'))
        .ok_or_else(|| "no slot header".to_string())?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [_, "gen", generation, "len", len, "sha256", sum] = parts[..] else {
        return Err("malformed slot header".into());
    };
    let generation: u64 = generation
        .parse()
        .map_err(|_| "malformed generation".to_string())?;
    let len: usize = len.parse().map_err(|_| "malformed length".to_string())?;
    let json = slot
        .get(HEADER_BYTES..HEADER_BYTES.saturating_add(len))
        .filter(|_| HEADER_BYTES + len < slot.len())
        .ok_or_else(|| format!("length {len} past the slot's end"))?;
    let fields = &header[..header.len() - " sha256 ".len() - 32 - 1];
    if checksum(fields, json) != sum {
        return Err(format!(
            "generation {generation}: checksum mismatch (torn write)"
        ));
    }
    Ok((generation, len))
}

/// A status file's layout as read.
#[derive(Debug)]
pub(crate) enum Layout {
    /// Plain JSON, as daemons before the slot format wrote it.
    Legacy,
    /// Two slots of `cap` bytes, and the newest valid one (its index and place).
    Slots { cap: usize, newest: (usize, Slot) },
}

/// Parses a slot file (either slot's header starts with the magic line) or plain JSON
/// (anything else, as older versions wrote it); of two slots the valid one of the highest
/// generation wins. Neither slot valid is an error: never a silent reset.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Layout, &[u8]), String> {
    let cap = bytes.len() / 2;
    let sized = bytes.len().is_multiple_of(2)
        && (MIN_SLOT_BYTES..=MAX_SLOT_BYTES).contains(&cap)
        && cap.is_power_of_two();
    let magic = SLOT_MAGIC.as_bytes();
    if !(bytes.starts_with(magic) || sized && bytes[cap..].starts_with(magic)) {
        if bytes.len() > MAX_JSON_BYTES {
            return Err(format!("{} bytes, more than {MAX_JSON_BYTES}", bytes.len()));
        }
        return Ok((Layout::Legacy, bytes));
    }
    if !sized {
        return Err(format!(
            "{} bytes is not the size of two slots (damaged or cut short)",
            bytes.len()
        ));
    }
    let mut newest: Option<(usize, Slot)> = None;
    let mut why = Vec::new();
    for i in 0..2 {
        let base = i * cap;
        match decode_slot(&bytes[base..base + cap]) {
            Ok((generation, len)) => {
                let slot = Slot {
                    generation,
                    json: (base + HEADER_BYTES, base + HEADER_BYTES + len),
                };
                if newest.is_none_or(|(_, n)| generation > n.generation) {
                    newest = Some((i, slot));
                }
            }
            Err(e) => why.push(format!("slot {}: {e}", i + 1)),
        }
    }
    match newest {
        Some((i, slot)) => Ok((
            Layout::Slots {
                cap,
                newest: (i, slot),
            },
            &bytes[slot.json.0..slot.json.1],
        )),
        None => Err(format!("no valid slot ({})", why.join("; "))),
    }
}

/// Reads at most a largest file's worth (and one byte more, to tell a larger one).
pub(crate) fn read_bounded(mut f: impl Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    f.by_ref()
        .take(2 * MAX_SLOT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads a slot file or plain JSON (bounded); what [`decode`] takes.
pub(crate) fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    File::open(path).and_then(read_bounded)
}

/// Saves `json` at `path`: into the older slot of the existing slot file, `fdatasync`ed, or,
/// when there is no usable slot (no file, plain JSON, no valid slot, outgrown, generation
/// at its maximum), through `replace` given the whole new file. Saves of one file are
/// serialized by an exclusive `flock` held to the end, whole-file replaces included; a
/// save that waited for a file another save has since replaced writes to the new one.
/// The caller checks the size ([`MAX_JSON_BYTES`]).
pub(crate) fn save<E>(
    path: &Path,
    json: &[u8],
    io: impl Fn(std::io::Error) -> E,
    replace: impl FnOnce(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    debug_assert!(json.len() <= MAX_JSON_BYTES);
    loop {
        let f = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return replace(&encode_file(1, json));
            }
            Err(e) => return Err(io(e)),
        };
        f.lock().map_err(&io)?;
        let opened = f.metadata().map_err(&io)?;
        match std::fs::metadata(path) {
            Ok(m) if m.ino() == opened.ino() && m.dev() == opened.dev() => {}
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        }
        let current = read_bounded(&f).map_err(&io)?;
        let newest = match decode(&current) {
            Ok((Layout::Slots { cap, newest }, _)) => Some((cap, newest)),
            // Plain JSON (converted now) or no valid slot: replaced.
            _ => None,
        };
        return match newest {
            Some((cap, (i, slot))) if HEADER_BYTES + json.len() < cap => {
                match slot.generation.checked_add(1) {
                    Some(generation) => {
                        let offset = ((1 - i) * cap) as u64;
                        f.write_all_at(&encode_slot(generation, json, cap), offset)
                            .map_err(&io)?;
                        f.sync_data().map_err(io)
                    }
                    // A wrapped generation starts over at 1 in a whole new file.
                    None => replace(&encode_file(1, json)),
                }
            }
            // Outgrown: larger slots, the generation going on.
            Some((_, (_, slot))) => replace(&encode_file(
                slot.generation.checked_add(1).unwrap_or(1),
                json,
            )),
            None => replace(&encode_file(1, json)),
        };
    }
}
