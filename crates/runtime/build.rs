//! Stamps the build for `skycanary version` and the `skycanary_build_info` metric: the git
//! commit (`unknown` when built from a source tarball without git), the build date (UTC,
//! `SOURCE_DATE_EPOCH` wins for reproducible builds) and the target triple. The stamp is
//! exported as `skycanary_runtime::build_info`, so the binary and the metrics report one build.

use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    stamp_version();
}

/// `SKYCANARY_GIT_COMMIT`, `SKYCANARY_BUILD_DATE`, `SKYCANARY_TARGET` for `skycanary version`.
fn stamp_version() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // Only this workspace's own repository (this crate sits at `crates/runtime` of it): a
    // tarball unpacked inside another checkout must not report that checkout's commit.
    let own_repo = git(&["rev-parse", "--show-toplevel"]).is_some_and(|top| {
        let here = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        let workspace = std::path::Path::new(&here).join("../..");
        std::fs::canonicalize(top).ok() == std::fs::canonicalize(workspace).ok()
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
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=SKYCANARY_TARGET={target}");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!(
        "cargo:rustc-env=SKYCANARY_LONG_VERSION={version} (commit {commit}, built {y:04}-{m:02}-{d:02}, {target})"
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
