//! Links the `skycanary` binary with packed relative relocations (`DT_RELR`) where the
//! toolchain supports them.
//!
//! A position-independent binary carries one 24-byte relocation record per pointer in its
//! read-only data (~1.2 MiB here), and the dynamic loader reads all of them at start, so they
//! stay resident; packed, they take a few KiB. This keeps the idle RSS down without giving up
//! PIE (address-space randomisation of the binary). It needs GNU ld ≥ 2.38 or lld, and glibc ≥
//! 2.36 at run time; the probe below links a real program with the same linker and C library,
//! so an older toolchain simply builds without it.
//!
//! It also stamps `skycanary version`: the git commit (`unknown` when built from a source
//! tarball without git), the build date (UTC, `SOURCE_DATE_EPOCH` wins for reproducible builds)
//! and the target triple.

use std::io::Write;
use std::process::{Command, Stdio};

const FLAG: &str = "-Wl,-z,pack-relative-relocs";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    stamp_version();
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    let target = std::env::var("TARGET").unwrap_or_default();
    // Only a native glibc build: the probe must use the linker and C library the binary gets.
    if target_os != "linux" || target_env != "gnu" || host != target {
        return;
    }
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".into());
    if links_with_packed_relocations(&linker) {
        println!("cargo:rustc-link-arg-bins={FLAG}");
    }
}

/// Whether `linker` links a trivial C program with [`FLAG`] without a word of complaint.
fn links_with_packed_relocations(linker: &str) -> bool {
    let Ok(out_dir) = std::env::var("OUT_DIR") else {
        return false;
    };
    let exe = std::path::Path::new(&out_dir).join("relr-probe");
    let child = Command::new(linker)
        .args(["-x", "c", "-", "-pie", "-fPIE", FLAG, "-o"])
        .arg(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"int main(void) { return 0; }\n");
    }
    let ok = child
        .wait_with_output()
        .is_ok_and(|o| o.status.success() && o.stderr.is_empty());
    let _ = std::fs::remove_file(&exe);
    ok
}

/// `SKYCANARY_GIT_COMMIT`, `SKYCANARY_BUILD_DATE`, `SKYCANARY_TARGET` for `skycanary version`.
fn stamp_version() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // Only this package's own repository: a tarball unpacked inside another checkout must not
    // report that checkout's commit.
    let own_repo = git(&["rev-parse", "--show-toplevel"]).is_some_and(|top| {
        let here = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        std::fs::canonicalize(top).ok() == std::fs::canonicalize(here).ok()
    });
    let commit = own_repo
        .then(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .flatten()
        .unwrap_or_else(|| "unknown".into());
    // Rebuild the stamp when HEAD moves (a commit, a checkout); paths exist only in a checkout.
    if own_repo {
        let mut watched = vec!["HEAD".to_string()];
        watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
        for r in watched {
            if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &r])
                && std::path::Path::new(&path).exists()
            {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    println!("cargo:rustc-env=SKYCANARY_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=SKYCANARY_BUILD_DATE={y:04}-{m:02}-{d:02}");
    println!(
        "cargo:rustc-env=SKYCANARY_TARGET={}",
        std::env::var("TARGET").unwrap_or_else(|_| "unknown".into())
    );
}

/// Output of a git command run in the package directory; `None` without git or a repository.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
