//! Hostile resource text: names that would escape paths, deep or aliased YAML, durations past
//! their bounds. Each is an error naming file, line and field, never a crash. (Symlink loops,
//! oversized files and Helm charts are the file loader's: the runtime's `load_paths_tests.rs`.)

use std::path::PathBuf;

use crate::resources::{LoadResult, load_str};

const TEMPLATE: &str = "apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: apdex}
spec:
  metrics:
  - name: apdex
    successCondition: \"min(result) >= 9900\"
    provider: {skywalking: {window: 5m, metric: service_apdex, entity: {serviceName: reviews}}}
";

fn errors_at(r: &LoadResult, path: &str) -> Vec<String> {
    r.errors
        .iter()
        .filter(|e| e.path == path)
        .map(|e| e.to_string())
        .collect()
}

/// A valid document of `kind` whose metadata is `meta` (block lines, indented two spaces).
fn doc(kind: &str, meta: &str) -> String {
    let spec = match kind {
        "Canary" => {
            "spec:\n  trafficRouting:\n    istio:\n      virtualService: {name: reviews, routes: [primary]}\n      destinationRule: {name: reviews, stableSubsetName: v1, canarySubsetName: v2}\n  steps: [{setWeight: 10}]\n"
        }
        "ScheduledAnalysis" => {
            "spec:\n  schedule: \"0 2 * * *\"\n  templates: [{templateName: apdex}]\n"
        }
        _ => TEMPLATE
            .split_once("spec:\n")
            .map(|(_, s)| s)
            .unwrap_or_default(),
    };
    let spec = if kind == "AnalysisTemplate" {
        format!("spec:\n{spec}")
    } else {
        spec.to_string()
    };
    format!("apiVersion: skycanary.io/v1alpha1\nkind: {kind}\nmetadata:\n{meta}{spec}")
}

#[test]
fn names_and_namespaces_are_validated_as_kubernetes_does() {
    let long = "a".repeat(300);
    for (kind, name) in [
        ("Canary", "a/b"),
        ("Canary", ".."),
        ("Canary", "../../../tmp/x"),
        ("Canary", "has space"),
        ("Canary", long.as_str()),
        ("Canary", &"a".repeat(64)),
        ("ScheduledAnalysis", ".."),
        ("ScheduledAnalysis", "a/b"),
        ("AnalysisTemplate", "../x"),
        ("AnalysisTemplate", long.as_str()),
    ] {
        let src = doc(kind, &format!("  name: {name:?}\n"));
        let r = load_str("n.yaml", &src);
        let e = errors_at(&r, "metadata.name");
        assert_eq!(e.len(), 1, "{kind} {name}: {:?}", r.errors);
        assert!(e[0].starts_with("n.yaml:4: metadata.name: "), "{}", e[0]);
        assert!(e[0].contains("not a valid name"), "{}", e[0]);
        assert!(e[0].len() < 400, "long names are clipped: {}", e[0]);
    }
    for (kind, ns) in [
        ("Canary", "../.."),
        ("ScheduledAnalysis", "a.b"),
        ("AnalysisTemplate", "A"),
        ("Canary", &"n".repeat(64)),
    ] {
        let src = doc(kind, &format!("  name: ok\n  namespace: {ns:?}\n"));
        let r = load_str("n.yaml", &src);
        let e = errors_at(&r, "metadata.namespace");
        assert_eq!(e.len(), 1, "{kind} {ns}: {:?}", r.errors);
        assert!(
            e[0].starts_with("n.yaml:5: metadata.namespace: "),
            "{}",
            e[0]
        );
    }
    // valid names still load
    for kind in ["Canary", "ScheduledAnalysis", "AnalysisTemplate"] {
        let r = load_str("ok.yaml", &doc(kind, "  name: a.b-1\n  namespace: x-1\n"));
        let located: Vec<_> = r
            .errors
            .iter()
            .filter(|e| e.path.starts_with("metadata"))
            .collect();
        assert!(located.is_empty(), "{kind}: {:?}", r.errors);
        assert!(
            r.errors.is_empty() || kind != "AnalysisTemplate",
            "{:?}",
            r.errors
        );
    }
}

#[test]
fn the_deep_document_of_the_issue_is_an_error_with_its_line() {
    let src = format!(
        "apiVersion: skycanary.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: b}}\nx:\n{}x\n",
        "- ".repeat(20_000)
    );
    let r = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || load_str("d.yaml", &src))
        .unwrap()
        .join()
        .expect("no stack overflow");
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_eq!(
        r.errors[0].to_string(),
        "d.yaml:5: YAML syntax error: YAML nested deeper than 64 levels"
    );
}

#[test]
fn aliases_are_refused_with_their_line() {
    let src = TEMPLATE
        .replace("window: 5m", "window: &w 5m")
        .replace("metric: service_apdex", "metric: *w");
    let r = load_str("a.yaml", &src);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(
        r.errors[0].to_string().starts_with("a.yaml:8: ")
            && r.errors[0].message.contains("aliases are not supported"),
        "{}",
        r.errors[0]
    );
}

#[test]
fn durations_past_the_bound_are_refused_as_integers_and_strings() {
    let src = TEMPLATE.replace(
        "  - name: apdex\n",
        "  - name: apdex\n    interval: \"9000000000000000\"\n",
    );
    let r = load_str("t.yaml", &src);
    let e = errors_at(&r, "spec.metrics[0].interval");
    assert_eq!(e.len(), 1, "{:?}", r.errors);
    assert!(
        e[0].starts_with("t.yaml:7: ") && e[0].contains("out of range"),
        "{}",
        e[0]
    );
    let canary = doc("Canary", "  name: c\n").replace(
        "steps: [{setWeight: 10}]",
        "steps: [{setWeight: 10}, {pause: {duration: 9000000000000000}}]",
    );
    let r = load_str("c.yaml", &canary);
    let e = errors_at(&r, "spec.steps[1].pause.duration");
    assert_eq!(e.len(), 1, "{:?}", r.errors);
    assert!(e[0].contains("out of range"), "{}", e[0]);
}

#[test]
fn a_starting_deadline_past_the_bound_is_refused() {
    let src = doc("ScheduledAnalysis", "  name: s\n").replace(
        "  templates:",
        "  startingDeadlineSeconds: 9223372036854775807\n  templates:",
    );
    let r = load_str("s.yaml", &src);
    let e = errors_at(&r, "spec.startingDeadlineSeconds");
    assert_eq!(e.len(), 1, "{:?}", r.errors);
    assert!(
        e[0].starts_with("s.yaml:7: ") && e[0].contains("out of range"),
        "{}",
        e[0]
    );
}

/// The fuzz seeds of the hostile shapes are errors, not crashes, on a tokio worker's stack, in
/// both flavours of the YAML entry point.
#[test]
fn hostile_fuzz_seeds_are_errors_on_a_small_stack() {
    use crate::resources::yaml::{MANIFEST_LIMITS, parse_documents_with};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/resources_load");
    for seed in [
        "seed-deep-block.yaml",
        "seed-deep-flow.yaml",
        "seed-deep-map.yaml",
        "seed-alias-laughs.yaml",
        "seed-alias-wide.yaml",
        "seed-alias-nested.yaml",
        "seed-hostile-names.yaml",
        "seed-huge-duration.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(seed)).unwrap();
        let (loaded, manifest) = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let loaded = load_str(seed, &text);
                (loaded, parse_documents_with(&text, &MANIFEST_LIMITS))
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert!(!loaded.errors.is_empty(), "{seed}");
        if seed.starts_with("seed-deep") || seed.starts_with("seed-alias") {
            assert!(manifest.is_err(), "{seed}");
        }
    }
}
