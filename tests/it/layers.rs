//! The workspace's layering (README "Development", issue 17): `skycanary-api` (the data) at the
//! bottom, depending on no other skycanary crate; `skycanary-core` (the logic) over it; the
//! pure crates build without the runtime's stack. `cargo tree` lists what each links (normal
//! dependencies, as a release build would); none of tokio, kube, reqwest, hyper or axum (nor
//! their `-*` companions) may appear. The provider crate `skycanary-skywalking` sits on core,
//! never under it; the Kubernetes adapters (`skycanary-kube`) on the interfaces they implement
//! (`skycanary-ports`, which links no kube or HTTP stack) and core, never on the runtime; the
//! simulator crate `skycanary-sim` sits on the runtime, never under it, and only the root's
//! `demo` feature links it (the container image's build has neither it nor the GraphQL
//! server). Skipped, with a message, only when no `cargo` runs.

use std::path::Path;
use std::process::Command;

/// Crates the pure layers must not link: the async runtime, the Kubernetes client, the HTTP
/// client and server stacks.
const FORBIDDEN: [&str; 5] = ["tokio", "kube", "reqwest", "hyper", "axum"];

/// The forbidden crates named in a `cargo tree --prefix none` listing, sorted, de-duplicated.
fn forbidden_in(tree: &str) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| {
            FORBIDDEN.iter().any(|f| {
                *name == *f
                    || name
                        .strip_prefix(f)
                        .is_some_and(|rest| rest.starts_with('-'))
            })
        })
        .map(str::to_string)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// `cargo tree` of one package's normal dependencies; None when cargo cannot be started.
fn tree(package: &str) -> Option<String> {
    tree_with(package, &[])
}

/// [`tree`] with more `cargo tree` arguments (`--no-default-features`).
fn tree_with(package: &str, extra: &[&str]) -> Option<String> {
    // Cargo names itself to the tests it runs; else the one on PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = match Command::new(&cargo)
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
        ])
        .arg(package)
        .args(extra)
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run {}: {e}", Path::new(&cargo).display()),
    };
    assert!(
        out.status.success(),
        "cargo tree -p {package} {extra:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("cargo tree prints UTF-8"))
}

/// The crate names of a `cargo tree --prefix none` listing, in order (the root first).
fn names(tree: &str) -> Vec<&str> {
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// The skycanary crates named in a `cargo tree --prefix none` listing other than its root.
fn skycanary_crates_below(tree: &str) -> Vec<&str> {
    let mut found: Vec<&str> = names(tree)
        .into_iter()
        .skip(1)
        .filter(|name| *name == "skycanary" || name.starts_with("skycanary-"))
        .collect();
    found.sort();
    found.dedup();
    found
}

#[test]
fn the_provider_crate_sits_on_core_and_never_under_it() {
    let Some(sw) = tree("skycanary-skywalking") else {
        eprintln!(
            "skipped: `cargo` is not on PATH, the layering of skycanary-skywalking is unchecked"
        );
        return;
    };
    let listed = names(&sw);
    assert_eq!(
        listed.first(),
        Some(&"skycanary-skywalking"),
        "cargo tree listed another root:\n{sw}"
    );
    // The edge the split exists for: the client builds core's query model, not its own.
    assert!(
        listed.contains(&"skycanary-core"),
        "skycanary-skywalking does not depend on skycanary-core:\n{sw}"
    );
    assert!(
        listed.contains(&"reqwest"),
        "skycanary-skywalking does not list its HTTP client (a wrong listing?):\n{sw}"
    );
    // Core cannot list it while the edge above holds (cargo refuses a cycle); api can.
    for package in ["skycanary-core", "skycanary-api"] {
        let text = tree(package).expect("cargo ran a moment ago");
        assert!(
            !names(&text).contains(&"skycanary-skywalking"),
            "{package} depends on skycanary-skywalking; the pure layers sit under it:\n{text}"
        );
    }
}

#[test]
fn core_and_api_link_no_runtime_kube_or_http_stack() {
    // Each layer with a crate it must list, so an empty or wrong listing cannot pass, and the
    // skycanary crates it may link: api none, core only api.
    for (package, expected, below) in [
        ("skycanary-core", "evalexpr", &["skycanary-api"][..]),
        ("skycanary-api", "schemars", &[][..]),
    ] {
        let Some(text) = tree(package) else {
            eprintln!("skipped: `cargo` is not on PATH, the layering of {package} is unchecked");
            return;
        };
        let listed = names(&text);
        assert_eq!(
            listed.first(),
            Some(&package),
            "cargo tree listed another root:\n{text}"
        );
        assert!(
            listed.contains(&expected),
            "{package} does not list {expected}:\n{text}"
        );
        assert_eq!(
            skycanary_crates_below(&text),
            below,
            "{package} links other skycanary crates than the layers below it:\n{text}"
        );
        let found = forbidden_in(&text);
        assert!(
            found.is_empty(),
            "{package} links {found:?}, which the pure layers must not:\n{text}"
        );
    }
}

/// The crates only the simulator and the demo need: the GraphQL server and the narration.
const SIMULATOR_ONLY: [&str; 3] = ["skycanary-sim", "async-graphql", "indicatif"];

/// The names of `listing` that are in `SIMULATOR_ONLY`.
fn simulator_only_in<'a>(listing: &[&'a str]) -> Vec<&'a str> {
    let mut found: Vec<&str> = listing
        .iter()
        .copied()
        .filter(|n| SIMULATOR_ONLY.contains(n))
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

#[test]
fn the_simulator_crate_sits_on_the_runtime_and_never_under_it() {
    let Some(sim) = tree("skycanary-sim") else {
        eprintln!("skipped: `cargo` is not on PATH, the layering of skycanary-sim is unchecked");
        return;
    };
    let listed = names(&sim);
    assert_eq!(
        listed.first(),
        Some(&"skycanary-sim"),
        "cargo tree listed another root:\n{sim}"
    );
    // The demo drives the daemon: the edge that puts the simulator over the runtime.
    for expected in ["skycanary-runtime", "async-graphql", "indicatif"] {
        assert!(
            listed.contains(&expected),
            "skycanary-sim does not list {expected}:\n{sim}"
        );
    }
    // The runtime cannot list it while the edge above holds (cargo refuses a cycle), and must
    // not link the simulator's own stack either (the daemon takes the simulator injected).
    let runtime = tree("skycanary-runtime").expect("cargo ran a moment ago");
    let listed = names(&runtime);
    assert!(
        listed.contains(&"tokio"),
        "skycanary-runtime does not list tokio (a wrong listing?):\n{runtime}"
    );
    assert_eq!(
        simulator_only_in(&listed),
        Vec::<&str>::new(),
        "skycanary-runtime links what only the simulator and the demo need:\n{runtime}"
    );
}

#[test]
fn only_the_demo_feature_links_the_simulator_and_the_graphql_server() {
    // The container image's build (`--no-default-features`, the Dockerfile's) links neither;
    // the default build links all of them, so an empty or wrong listing cannot pass.
    let Some(image) = tree_with("skycanary", &["--no-default-features"]) else {
        eprintln!("skipped: `cargo` is not on PATH, the `demo` feature's crates are unchecked");
        return;
    };
    let listed = names(&image);
    assert!(
        listed.contains(&"skycanary-runtime"),
        "skycanary does not list the runtime (a wrong listing?):\n{image}"
    );
    assert_eq!(
        simulator_only_in(&listed),
        Vec::<&str>::new(),
        "a build without the `demo` feature links the simulator's crates:\n{image}"
    );
    let default = tree("skycanary").expect("cargo ran a moment ago");
    assert_eq!(
        simulator_only_in(&names(&default)),
        ["async-graphql", "indicatif", "skycanary-sim"],
        "the default build does not link the simulator's crates:\n{default}"
    );
}

#[test]
fn the_kubernetes_adapters_sit_on_ports_and_core_never_on_the_runtime() {
    let Some(text) = tree("skycanary-kube") else {
        eprintln!("skipped: `cargo` is not on PATH, the layering of skycanary-kube is unchecked");
        return;
    };
    let listed = names(&text);
    assert_eq!(
        listed.first(),
        Some(&"skycanary-kube"),
        "cargo tree listed another root:\n{text}"
    );
    assert!(
        listed.contains(&"kube-runtime"),
        "skycanary-kube does not list kube-runtime (a wrong listing?):\n{text}"
    );
    // The interfaces it implements are below it; the runtime, the provider and the fake API
    // server (a dev-dependency) are not.
    assert_eq!(
        skycanary_crates_below(&text),
        ["skycanary-api", "skycanary-core", "skycanary-ports"],
        "skycanary-kube links other skycanary crates than the layers below it:\n{text}"
    );
    let runtime = tree("skycanary-runtime").expect("cargo ran a moment ago");
    assert!(
        names(&runtime).contains(&"skycanary-kube"),
        "skycanary-runtime does not depend on skycanary-kube:\n{runtime}"
    );
}

#[test]
fn the_ports_link_no_kube_or_http_stack() {
    let Some(text) = tree("skycanary-ports") else {
        eprintln!("skipped: `cargo` is not on PATH, the layering of skycanary-ports is unchecked");
        return;
    };
    let listed = names(&text);
    assert_eq!(
        listed.first(),
        Some(&"skycanary-ports"),
        "cargo tree listed another root:\n{text}"
    );
    assert_eq!(
        skycanary_crates_below(&text),
        ["skycanary-api", "skycanary-core"],
        "skycanary-ports links other skycanary crates than core and api:\n{text}"
    );
    // tokio for the gate's waiters and the clocks' sleeps; nothing that does I/O.
    let found: Vec<String> = forbidden_in(&text)
        .into_iter()
        .filter(|name| name != "tokio")
        .collect();
    assert!(
        found.is_empty(),
        "skycanary-ports links {found:?}, which an interface crate must not:\n{text}"
    );
}

#[test]
fn the_template_compiler_in_core_takes_the_graphql_parser_not_the_server() {
    let Some(text) = tree("skycanary-core") else {
        eprintln!("skipped: `cargo` is not on PATH, the layering of skycanary-core is unchecked");
        return;
    };
    let listed = names(&text);
    // Raw queries of templates are parsed where they are validated (core): the parser crate,
    // never the simulator's GraphQL server, whose executor stays in the simulator crate.
    assert!(
        listed.contains(&"async-graphql-parser"),
        "skycanary-core does not list the GraphQL parser its compiler uses:\n{text}"
    );
    assert!(
        !listed.contains(&"async-graphql"),
        "skycanary-core links the GraphQL server:\n{text}"
    );
}

#[test]
fn the_check_names_the_forbidden_crates_and_their_companions() {
    let tree = "skycanary-core v0.1.0 (/x)\nchrono v0.4.42\ntokio v1.48.0\ntokio-util v0.7.0\n\
                hyper-util v0.1.0\nkube-client v5.0.0\nkubectl-like v1.0.0\nreqwest v0.13.0 (*)\n\
                axum v0.8.0\nhyperlocal v0.9.0\ntokio v1.48.0 (*)";
    assert_eq!(
        forbidden_in(tree),
        [
            "axum",
            "hyper-util",
            "kube-client",
            "reqwest",
            "tokio",
            "tokio-util"
        ]
    );
    assert!(forbidden_in("skycanary-core v0.1.0 (/x)\nchrono v0.4.42\nserde v1.0.0").is_empty());
}

#[test]
fn the_check_names_the_skycanary_crates_below_the_root() {
    let tree = "skycanary-core v0.1.0 (/x)\nskycanary-api v0.1.0 (/y)\nchrono v0.4.42\n\
                skycanary v0.1.0 (/z)\nskycanary-api v0.1.0 (/y) (*)\nskycanaryish v1.0.0";
    assert_eq!(skycanary_crates_below(tree), ["skycanary", "skycanary-api"]);
    assert!(skycanary_crates_below("skycanary-api v0.1.0 (/y)\nchrono v0.4.42").is_empty());
}
