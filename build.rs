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
//! The version stamp (`skycanary version`, `skycanary_build_info`) is made by the runtime
//! crate's build script (`crates/runtime/build.rs`).

use std::io::Write;
use std::process::{Command, Stdio};

const FLAG: &str = "-Wl,-z,pack-relative-relocs";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
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
