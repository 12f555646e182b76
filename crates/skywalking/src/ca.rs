//! Extra trusted roots from a PEM file (a template's `caFile`): read and checked when a client
//! is built, with the same PEM parser the client then loads them with.

use std::path::Path;

use crate::{ClientOptions, ProviderError};

/// Largest CA file read: a bundle of every public root is about 200 KiB.
pub const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// Reads and checks a PEM file of trusted roots: it must be readable, at most
/// [`MAX_CA_FILE_BYTES`], and hold at least one certificate.
pub fn read_ca_file(path: &Path) -> Result<Vec<u8>, ProviderError> {
    use std::io::Read as _;
    let shown = path.display();
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut pem))
        .map_err(|e| ProviderError::Config(format!("cannot read CA file {shown}: {e}")))?;
    if pem.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(ProviderError::Config(format!(
            "cannot read CA file {shown}: larger than {MAX_CA_FILE_BYTES} bytes"
        )));
    }
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| ProviderError::Config(format!("CA file {shown} is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ProviderError::Config(format!(
            "CA file {shown} holds no certificate"
        )));
    }
    Ok(pem)
}

/// [`ClientOptions`] is core's plain data; reading its `ca_file` needs this crate's file and
/// PEM checks, so the method lives here as an extension.
pub trait ReadCaFile: Sized {
    /// These options with `ca_file` read into `ca_pem` (after any PEM already there): what
    /// a client is built from, and what tells two clients apart once the file changed.
    fn read_ca_file(self) -> Result<Self, ProviderError>;
}

impl ReadCaFile for ClientOptions {
    fn read_ca_file(self) -> Result<Self, ProviderError> {
        self.with_ca_file(read_ca_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_message(r: Result<Vec<u8>, ProviderError>) -> String {
        match r {
            Err(ProviderError::Config(m)) => m,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_empty_or_oversized_file_is_a_configuration_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.pem");
        assert!(config_message(read_ca_file(&missing)).starts_with("cannot read CA file"));

        let text = dir.path().join("notes.pem");
        std::fs::write(&text, "no certificate here\n").expect("written");
        assert!(config_message(read_ca_file(&text)).ends_with("holds no certificate"));

        let big = dir.path().join("big.pem");
        let size = usize::try_from(MAX_CA_FILE_BYTES).expect("fits") + 1;
        std::fs::write(&big, vec![b'#'; size]).expect("written");
        assert!(config_message(read_ca_file(&big)).contains("larger than"));
    }

    #[test]
    fn options_without_a_ca_file_are_returned_unchanged() {
        let mut o = ClientOptions::new("https://oap:12800");
        o.ca_pem = Some(b"PEM".to_vec());
        let o = o.read_ca_file().expect("nothing to read");
        assert_eq!(o.ca_pem.as_deref(), Some(&b"PEM"[..]));

        let mut o = ClientOptions::new("https://oap:12800");
        o.ca_file = Some("/nonexistent/skycanary-ca.pem".into());
        assert!(o.read_ca_file().is_err(), "the file is read, not skipped");
    }
}
