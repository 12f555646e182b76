//! The file loader ([`super::load_paths`]): directory walks (symlink loops, Helm charts),
//! the size bound of a file, `caFile` checks and the checks across files. What one file's
//! text means is tested in `skycanary-core` (`resources::load_tests`, `hostile_tests`).

use std::path::PathBuf;

use super::*;

const TEMPLATE: &str = "apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: apdex}
spec:
  metrics:
  - name: apdex
    successCondition: \"min(result) >= 9900\"
    provider: {skywalking: {window: 5m, metric: service_apdex, entity: {serviceName: reviews}}}
";

/// Issue 15 item 10: a second Canary on a route another one manages is refused, naming
/// both files and lines; the same route named `name` and `name.namespace` is recognised.
#[test]
fn two_canaries_on_one_route_are_refused_with_both_locations() {
    let canary = |name: &str, ns: &str, vs: &str| {
        format!(
            "apiVersion: skycanary.io/v1alpha1\nkind: Canary\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  trafficRouting:\n    istio:\n      virtualService: {{name: {vs}, routes: [primary]}}\n      stableService: reviews-stable\n      canaryService: reviews-canary\n  steps:\n  - setWeight: 10\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    std::fs::write(&a, canary("first", "bookinfo", "reviews")).unwrap();
    // b.yaml: an unrelated Canary first, then the clashing one (its trafficRouting at line 17).
    let b_text = format!(
        "{}---\n{}",
        canary("other", "bookinfo", "ratings"),
        canary("second", "shop", "reviews.bookinfo")
    );
    std::fs::write(&b, b_text).unwrap();
    let r = load_paths(&[dir.path().to_path_buf()]);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    let e = r.errors[0].to_string();
    assert!(
        e.starts_with(&format!("{}:17: spec.trafficRouting: Canary shop/second manages the same route as Canary bookinfo/first ({}:1): VirtualService bookinfo/reviews: http route \"primary\"", b.display(), a.display())),
        "{e}"
    );
    // Routes of one VirtualService that differ are fine.
    std::fs::write(
        &b,
        canary("second", "shop", "reviews.bookinfo").replace("[primary]", "[secondary]"),
    )
    .unwrap();
    let r = load_paths(&[dir.path().to_path_buf()]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[test]
fn an_unreadable_or_empty_ca_file_is_refused_when_the_files_are_loaded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.pem");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here").expect("written");
    let template = |name: &str, ca: &std::path::Path| {
        format!(
            "apiVersion: skycanary.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: {name}}}\nspec:\n  metrics:\n  - name: m\n    provider:\n      skywalking:\n        address: https://oap:12800\n        metric: service_apdex\n        entity: {{serviceName: s}}\n        caFile: {}\n",
            ca.display()
        )
    };
    std::fs::write(dir.path().join("a.yaml"), template("a", &missing)).expect("written");
    std::fs::write(dir.path().join("b.yaml"), template("b", &empty)).expect("written");
    let r = load_paths(&[dir.path().to_path_buf()]);
    assert!(r.templates.is_empty(), "refused: {:?}", r.templates);
    assert_eq!(r.rejected.templates.len(), 2);
    let e: Vec<&ConfigError> = r.errors.iter().collect();
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0].path, "spec.metrics[0].provider.skywalking.caFile");
    assert_eq!(e[0].line, Some(12));
    assert!(
        e[0].message
            .starts_with(&format!("cannot read CA file {}: ", missing.display())),
        "{e:?}"
    );
    assert_eq!(
        e[1].message,
        format!("CA file {} holds no certificate", empty.display())
    );
}

#[cfg(unix)]
#[test]
fn symlink_loops_are_named_not_followed_and_links_read_once() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.yaml"), TEMPLATE).unwrap();
    symlink(".", dir.path().join("a")).unwrap();
    symlink(".", dir.path().join("b")).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    symlink("../sub", dir.path().join("sub-link")).unwrap();
    std::fs::write(
        dir.path().join("sub/u.yaml"),
        TEMPLATE.replace("{name: apdex}", "{name: other}"),
    )
    .unwrap();
    symlink("t.yaml", dir.path().join("t-link.yaml")).unwrap();
    let r = load_paths(&[dir.path().to_path_buf()]);
    let messages: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    for (m, link) in messages.iter().zip(["a", "b"]) {
        let at: PathBuf = dir.path().join(link);
        assert!(
            m.starts_with(&format!("{}: symlink loop: leads back to ", at.display())),
            "{m}"
        );
    }
    assert_eq!(r.templates.len(), 2, "each file read once: {messages:?}");
    assert_eq!(r.files, 2);
}

#[test]
fn oversized_config_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.yaml");
    let file = std::fs::File::create(&f).unwrap();
    file.set_len(yaml::MAX_CONFIG_FILE_BYTES + 1).unwrap();
    let r = load_paths(std::slice::from_ref(&f));
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_eq!(
        r.errors[0].to_string(),
        format!(
            "{}: file is larger than the limit of {} bytes",
            f.display(),
            yaml::MAX_CONFIG_FILE_BYTES
        )
    );
}

/// A Helm chart's directory is left out (its templates are Go templates) and said so; the
/// manifests beside it are read.
#[test]
fn helm_charts_are_skipped_not_parsed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.yaml"), TEMPLATE).unwrap();
    let chart = dir.path().join("chart");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: x\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/service.yaml"),
        "metadata:\n  namespace: {{ .Release.Namespace }}\n",
    )
    .unwrap();
    let r = load_paths(&[dir.path().to_path_buf()]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.templates.len(), 1);
    assert_eq!(
        r.skipped,
        vec![format!(
            "{}: a Helm chart (its templates are not manifests until rendered)",
            chart.display()
        )]
    );
}
