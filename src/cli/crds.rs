//! `skycanary crds`: the CustomResourceDefinitions generated from the Rust types.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::resources::crd::{
    GeneratedCrd, KUSTOMIZATION_FILE, generate, kustomization, render_all,
};

/// Arguments of `crds`.
#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Write one file per CRD into DIR (`deploy/crds`) instead of printing them.
    #[arg(long, value_name = "DIR", conflicts_with = "check")]
    pub write: Option<PathBuf>,
    /// Compare the files in DIR with the generated CRDs; exit 1 when they differ.
    #[arg(long, value_name = "DIR")]
    pub check: Option<PathBuf>,
}

/// Prints all CRDs as one multi-document YAML stream (exit 0), writes them (`--write`), or
/// checks a directory (`--check`: exit 0 up to date, 1 stale).
pub fn run(args: &CrdsArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    let crds = generate()?;
    if let Some(dir) = &args.write {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for c in &crds {
            let path = dir.join(&c.file_name);
            std::fs::write(&path, &c.yaml)
                .with_context(|| format!("writing {}", path.display()))?;
            writeln!(out, "wrote {}", path.display())?;
        }
        let path = dir.join(KUSTOMIZATION_FILE);
        std::fs::write(&path, kustomization(&crds))
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "wrote {}", path.display())?;
        return Ok(0);
    }
    if let Some(dir) = &args.check {
        let stale = stale_files(dir, &crds);
        for f in &stale {
            writeln!(out, "out of date: {f}")?;
        }
        if stale.is_empty() {
            writeln!(out, "{} CRDs up to date in {}", crds.len(), dir.display())?;
            return Ok(0);
        }
        writeln!(out, "run `skycanary crds --write {}`", dir.display())?;
        return Ok(1);
    }
    out.write_all(render_all(&crds).as_bytes())?;
    Ok(0)
}

/// Files in `dir` (the CRDs and their kustomization) that are missing or differ from the
/// generated text.
pub fn stale_files(dir: &Path, crds: &[GeneratedCrd]) -> Vec<String> {
    let expected = crds
        .iter()
        .map(|c| (c.file_name.clone(), c.yaml.clone()))
        .chain([(KUSTOMIZATION_FILE.to_string(), kustomization(crds))]);
    expected
        .filter(|(file, text)| {
            std::fs::read_to_string(dir.join(file)).ok().as_deref() != Some(text.as_str())
        })
        .map(|(file, _)| dir.join(file).display().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_check_then_print() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut out = Vec::new();
        let args = CrdsArgs {
            write: Some(dir.path().to_path_buf()),
            check: None,
        };
        assert_eq!(run(&args, &mut out).ok(), Some(0));
        let args = CrdsArgs {
            write: None,
            check: Some(dir.path().to_path_buf()),
        };
        assert_eq!(run(&args, &mut Vec::new()).ok(), Some(0));
        let listed =
            std::fs::read_to_string(dir.path().join(KUSTOMIZATION_FILE)).unwrap_or_default();
        assert!(
            listed.contains("- skycanary.io_canaries.yaml\n"),
            "{listed}"
        );
        std::fs::write(dir.path().join(KUSTOMIZATION_FILE), "resources: []\n").expect("overwrite");
        let mut report = Vec::new();
        assert_eq!(run(&args, &mut report).ok(), Some(1));
        assert!(String::from_utf8_lossy(&report).contains(KUSTOMIZATION_FILE));
        std::fs::write(dir.path().join(KUSTOMIZATION_FILE), listed).expect("restore");

        let first = std::fs::read_dir(dir.path())
            .ok()
            .and_then(|mut rd| rd.next())
            .and_then(Result::ok)
            .map(|e| e.path());
        if let Some(p) = first {
            std::fs::write(&p, "---\n").expect("overwrite");
        }
        let mut report = Vec::new();
        assert_eq!(run(&args, &mut report).ok(), Some(1));
        assert!(String::from_utf8_lossy(&report).contains("out of date"));

        let mut printed = Vec::new();
        let args = CrdsArgs {
            write: None,
            check: None,
        };
        assert_eq!(run(&args, &mut printed).ok(), Some(0));
        let text = String::from_utf8_lossy(&printed);
        assert_eq!(text.matches("kind: CustomResourceDefinition").count(), 4);
    }
}
