//! A manifest's rollback text written ahead of the alarm, in an unnamed file (`O_TMPFILE`)
//! beside it, synced: when the rollback comes and the manifest still holds the text it was
//! prepared from, the write only has to give the file a name and rename it over the manifest
//! (two metadata operations, nothing to sync before the rename). Without it a rollback writes
//! and syncs a new temporary file after the alarm, the longest step of its path.
//!
//! An unnamed file leaves nothing behind: not in the directory while it waits (a GitOps
//! working tree shows nothing), and freed by the kernel if the process dies. Where the file
//! system or the kernel offers no `O_TMPFILE`, or `/proc` is not mounted for the link, the
//! rollback takes the ordinary path.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::file::KnownEdit;

/// A prepared rollback text for one manifest file. The texts are kept as SHA-256 digests: a
/// shared manifest may be megabytes, and hundreds may be prepared.
#[derive(Debug)]
pub struct Standby {
    /// The manifest (symlinks resolved).
    pub real: PathBuf,
    /// The text the manifest held when this was prepared, and the one prepared.
    old_text: [u8; 32],
    new_text: [u8; 32],
    /// The edit of the object's document that gives the prepared text, reused by the
    /// rollback's plan.
    pub edit: KnownEdit,
    file: File,
}

fn digest(text: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).into()
}

impl Standby {
    /// Writes `new_text` to an unnamed file in `real`'s directory with `real`'s permissions,
    /// synced. `old_text`: what `real` holds now.
    pub fn prepare(
        real: &Path,
        old_text: &str,
        new_text: &str,
        edit: KnownEdit,
    ) -> std::io::Result<Standby> {
        let dir = real.parent().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no parent directory")
        })?;
        let permissions = std::fs::metadata(real)?.permissions();
        let mut file = open_unnamed(dir)?;
        file.write_all(new_text.as_bytes())?;
        file.set_permissions(permissions)?;
        file.sync_all()?;
        Ok(Standby {
            real: real.to_path_buf(),
            old_text: digest(old_text),
            new_text: digest(new_text),
            edit,
            file,
        })
    }

    /// Whether this is the write from `old_text` to `new_text`.
    pub fn holds(&self, old_text: &str, new_text: &str) -> bool {
        self.old_text == digest(old_text) && self.new_text == digest(new_text)
    }

    /// Gives the prepared text the name `temp` (in the manifest's directory), ready to be
    /// renamed over the manifest.
    pub fn link(&self, temp: &Path) -> std::io::Result<()> {
        let fd = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        link_unnamed(&fd, temp)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn open_unnamed(dir: &Path) -> std::io::Result<File> {
    use rustix::fs::{CWD, Mode, OFlags};
    let fd = rustix::fs::openat(
        CWD,
        dir,
        OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(File::from(fd))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn link_unnamed(fd: &str, temp: &Path) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, CWD};
    Ok(rustix::fs::linkat(
        CWD,
        fd,
        CWD,
        temp,
        AtFlags::SYMLINK_FOLLOW,
    )?)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn open_unnamed(_: &Path) -> std::io::Result<File> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn link_unnamed(_: &str, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_prepared_text_is_invisible_until_linked_and_keeps_the_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("vs.yaml");
        std::fs::write(&real, "old\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let s = Standby::prepare(&real, "old\n", "new\n", KnownEdit::default()).unwrap();
        assert!(s.holds("old\n", "new\n"));
        assert!(!s.holds("old \n", "new\n") && !s.holds("old\n", "new"));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing named"
        );
        let temp = dir.path().join(".vs.yaml.tmp");
        s.link(&temp).unwrap();
        assert_eq!(std::fs::read_to_string(&temp).unwrap(), "new\n");
        assert_eq!(
            std::fs::metadata(&temp).unwrap().permissions().mode() & 0o777,
            0o640
        );
        std::fs::rename(&temp, &real).unwrap();
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new\n");
        drop(s);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
