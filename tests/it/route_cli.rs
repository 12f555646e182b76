//! `skycanary route` against the file backend: weights move, everything else stays.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use skycanary::testkit::vs_schema::assert_valid_virtual_services_in;

fn skycanary(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skycanary"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run skycanary")
}

fn example(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/examples/bookinfo")
        .join(rel)
}

/// A copy of the example Istio manifests in a temp dir.
fn manifests() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        example("istio/reviews.yaml"),
        dir.path().join("reviews.yaml"),
    )
    .unwrap();
    dir
}

/// The documents of a manifest file, after checking that its VirtualServices are valid
/// against Istio's CRD schema.
fn docs(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    assert_valid_virtual_services_in(&text);
    text.split("\n---\n").map(str::to_string).collect()
}

fn canary() -> String {
    example("canary.yaml").display().to_string()
}

#[test]
fn set_weight_moves_only_weights() {
    let dir = manifests();
    let d = dir.path().display().to_string();
    let before = docs(&dir.path().join("reviews.yaml"));
    let out = skycanary(&[
        "route",
        "set-weight",
        "--canary",
        &canary(),
        "20",
        "--manifests",
        &d,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("VirtualService bookinfo/reviews: canary weight set to 20"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("primary") && l.contains("80") && l.contains("20")),
        "{stdout}"
    );
    let after = docs(&dir.path().join("reviews.yaml"));
    // The DestinationRule document is byte-for-byte untouched.
    assert_eq!(before[1], after[1]);
    let vs: serde_json::Value = skycanary::resources::yaml::parse_documents(&after[0]).unwrap()[0]
        .value
        .clone();
    let route = &vs["spec"]["http"][0];
    assert_eq!(route["route"][0]["weight"], 80);
    assert_eq!(route["route"][1]["weight"], 20);
    assert_eq!(route["retries"]["attempts"], 3, "unknown fields survive");
    // The original routes are recorded beside the manifests, not in them (file mode).
    assert!(vs["metadata"].get("annotations").is_none(), "{vs}");
    let state = dir
        .path()
        .join(".skycanary/virtualservice_bookinfo_reviews.state");
    assert!(
        std::fs::read_to_string(state)
            .unwrap()
            .contains("skycanary.io/original-routes")
    );
}

#[test]
fn same_weight_twice_writes_nothing() {
    let dir = manifests();
    let d = dir.path().display().to_string();
    assert_eq!(
        skycanary(&[
            "route",
            "set-weight",
            "--canary",
            &canary(),
            "30",
            "--manifests",
            &d
        ])
        .status
        .code(),
        Some(0)
    );
    let first = std::fs::read_to_string(dir.path().join("reviews.yaml")).unwrap();
    assert_valid_virtual_services_in(&first);
    let mtime = std::fs::metadata(dir.path().join("reviews.yaml"))
        .unwrap()
        .modified()
        .unwrap();
    let out = skycanary(&[
        "route",
        "set-weight",
        "--canary",
        &canary(),
        "30",
        "--manifests",
        &d,
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not written"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("reviews.yaml")).unwrap(),
        first
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("reviews.yaml"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
}

#[test]
fn set_weight_zero_restores_stable_and_show_prints_json() {
    let dir = manifests();
    let d = dir.path().display().to_string();
    assert_eq!(
        skycanary(&[
            "route",
            "set-weight",
            "--canary",
            &canary(),
            "60",
            "--manifests",
            &d
        ])
        .status
        .code(),
        Some(0)
    );
    assert_eq!(
        skycanary(&[
            "route",
            "set-weight",
            "--canary",
            &canary(),
            "0",
            "--manifests",
            &d
        ])
        .status
        .code(),
        Some(0)
    );
    let out = skycanary(&[
        "route",
        "show",
        "--canary",
        &canary(),
        "--manifests",
        &d,
        "--output",
        "json",
    ]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows[0]["stable"], 100);
    assert_eq!(rows[0]["canary"], 0);
    assert_eq!(rows[0]["virtualService"], "reviews");
}

#[test]
fn out_of_range_weight_is_invalid_input() {
    let dir = manifests();
    let d = dir.path().display().to_string();
    let before = std::fs::read_to_string(dir.path().join("reviews.yaml")).unwrap();
    let out = skycanary(&[
        "route",
        "set-weight",
        "--canary",
        &canary(),
        "101",
        "--manifests",
        &d,
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("reviews.yaml")).unwrap(),
        before
    );
}

#[test]
fn missing_subset_is_refused_before_any_write() {
    let dir = manifests();
    let p = dir.path().join("reviews.yaml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("  - name: v2\n    labels: {version: v2}\n", "");
    std::fs::write(&p, &text).unwrap();
    let d = dir.path().display().to_string();
    let out = skycanary(&[
        "route",
        "set-weight",
        "--canary",
        &canary(),
        "10",
        "--manifests",
        &d,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("v2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
}

#[test]
fn multi_virtual_service_change_is_all_or_nothing() {
    let dir = manifests();
    // A second VirtualService whose route has an unknown weighted destination: planning fails.
    std::fs::write(
        dir.path().join("edge.yaml"),
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-edge, namespace: bookinfo}
spec:
  hosts: [reviews.example.com]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v2}
      weight: 0
    - destination: {host: legacy}
      weight: 50
"#,
    )
    .unwrap();
    let canary_text = std::fs::read_to_string(example("canary.yaml"))
        .unwrap()
        .replace("      virtualService:\n        name: reviews\n        routes: [primary]\n", "      virtualServices:\n      - {name: reviews, routes: [primary]}\n      - {name: reviews-edge}\n");
    let cdir = tempfile::tempdir().unwrap();
    let cpath = cdir.path().join("canary.yaml");
    std::fs::write(&cpath, canary_text).unwrap();
    let before = std::fs::read_to_string(dir.path().join("reviews.yaml")).unwrap();
    let d = dir.path().display().to_string();
    let out = skycanary(&[
        "route",
        "set-weight",
        "--canary",
        &cpath.display().to_string(),
        "10",
        "--manifests",
        &d,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("legacy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("reviews.yaml")).unwrap(),
        before,
        "first VS untouched"
    );
}

/// A Canary whose header route is in the manifest with several match entries (one per
/// matcher, as `setHeaderRoute` writes them).
fn header_route_setup() -> (tempfile::TempDir, String) {
    let dir = manifests();
    let p = dir.path().join("reviews.yaml");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "  http:\n  - name: primary\n",
        "  http:\n  - name: canary-header\n    match:\n    - headers:\n        end-user: {exact: jason}\n    - headers:\n        x-beta: {prefix: \"yes\"}\n    route:\n    - destination: {host: reviews, subset: v2}\n      weight: 100\n  - name: primary\n",
    );
    std::fs::write(&p, &text).unwrap();
    assert_valid_virtual_services_in(&text);
    (dir, canary())
}

#[test]
fn set_weight_keeps_every_match_entry_of_a_managed_header_route() {
    let (dir, canary) = header_route_setup();
    let d = dir.path().display().to_string();
    let vs_of = |dir: &tempfile::TempDir| -> serde_json::Value {
        let text = docs(&dir.path().join("reviews.yaml")).join("\n---\n");
        skycanary::resources::yaml::parse_documents(&text).unwrap()[0]
            .value
            .clone()
    };
    let before = vs_of(&dir);
    let out = skycanary(&[
        "route",
        "set-weight",
        "--canary",
        &canary,
        "20",
        "--manifests",
        &d,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = vs_of(&dir);
    assert_eq!(
        after["spec"]["http"][0], before["spec"]["http"][0],
        "header route kept whole"
    );
    assert_eq!(
        after["spec"]["http"][0]["match"].as_array().unwrap().len(),
        2
    );
    assert_eq!(after["spec"]["http"][1]["route"][0]["weight"], 80);
    assert_eq!(after["spec"]["http"][1]["route"][1]["weight"], 20);
    // Weight 0 removes the managed route: nothing reaches the canary.
    let out = skycanary(&[
        "route",
        "set-weight",
        "--canary",
        &canary,
        "0",
        "--manifests",
        &d,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let after = vs_of(&dir);
    assert_eq!(after["spec"]["http"].as_array().unwrap().len(), 1);
    assert_eq!(after["spec"]["http"][0]["name"], "primary");
}

/// A manifest as kept in Git: comments, a foreign document, flow and block styles, quoting
/// and indentation of its own (issue 15 item 12).
const HAND_FORMATTED: &str = "\
# Reviews routing, kept in Git by team-books.
# skycanary writes the weights below; everything else is ours.
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  ports: [{port: 9080, name: http}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo   # same as the app
spec:
  hosts:
    - reviews           # short name
  gateways: [\"mesh\"]
  http:
    - name: primary
      retries: {attempts: 3, perTryTimeout: '2s'}
      route:
        # stable first
        - destination:
            host: reviews
            subset: v1
          weight: 100
        - destination: {host: reviews, subset: v2}
          weight: 0   # canary
---
# DestinationRule, untouched
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: bookinfo
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels:
      version: v2
";

fn set_weight(dir: &Path, weight: &str) {
    let out = skycanary(&[
        "route",
        "set-weight",
        "--canary",
        &canary(),
        weight,
        "--manifests",
        &dir.display().to_string(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 15 acceptance: `set-weight 10` (the first: the original routes are recorded), `20`,
/// then `0` on a hand-formatted, commented manifest change the weight lines and nothing else,
/// byte for byte: skycanary's record of the original routes lives in the sidecar state file
/// `.skycanary/` (ignored by Git through its own `.gitignore`), not in the manifest; after `0`
/// the file is byte-for-byte what it was and the state file is gone.
#[test]
fn set_weight_diffs_are_the_weight_lines_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reviews.yaml");
    std::fs::write(&file, HAND_FORMATTED).unwrap();
    let state = dir
        .path()
        .join(".skycanary/virtualservice_bookinfo_reviews.state");

    set_weight(dir.path(), "10");
    let after10 = std::fs::read_to_string(&file).unwrap();
    let want10 = HAND_FORMATTED
        .replace("          weight: 100\n", "          weight: 90\n")
        .replace(
            "          weight: 0   # canary\n",
            "          weight: 10   # canary\n",
        );
    assert_eq!(after10, want10);
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let recorded: serde_json::Value = serde_json::from_str(
        kept["annotations"]["skycanary.io/original-routes"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(recorded["routes"]["http"][0]["route"][0]["weight"], 100);
    let ignore = std::fs::read_to_string(dir.path().join(".skycanary/.gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "*"), "{ignore}");

    set_weight(dir.path(), "20");
    let after20 = std::fs::read_to_string(&file).unwrap();
    let want20 = after10
        .replace("          weight: 90\n", "          weight: 80\n")
        .replace(
            "          weight: 10   # canary\n",
            "          weight: 20   # canary\n",
        );
    assert_eq!(after20, want20);

    set_weight(dir.path(), "0");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), HAND_FORMATTED);
    assert!(!state.exists(), "nothing left to remember");
}
