//! The `/metrics` of a running daemon, after a canary went through its measurements to
//! Promoted: `promtool check metrics` accepts it (skipped without promtool unless
//! SKYCANARY_REQUIRE_PROMTOOL=1, as in CI), the Grafana dashboard queries only metrics it
//! exports, and docs/operations.md lists exactly the families it exports.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::daemon::{canary, http, phase, setup, sim_with_apdex, start, wait_for};

/// Exported only where the process has such a limit (`process_max_fds` is absent when the
/// open-files limit is unlimited).
const OPTIONAL: [&str; 1] = ["process_max_fds"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Families of a classic-format exposition: name → type, from its `# TYPE` lines.
fn families(classic: &str) -> BTreeMap<String, String> {
    classic
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

/// Whether a sample or PromQL name belongs to an exported family (histograms by their
/// `_bucket`, `_sum` and `_count` series).
fn is_exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    families.contains_key(name)
        || ["_bucket", "_sum", "_count"].iter().any(|s| {
            name.strip_suffix(s)
                .is_some_and(|f| families.get(f).map(String::as_str) == Some("histogram"))
        })
}

/// The metric names a PromQL expression selects: identifiers outside strings, label
/// matchers `{…}`, ranges `[…]` and `by (…)`/`without (…)` lists, not called as functions,
/// not keywords or numbers.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    // Aggregations may take `by (…)` before their parenthesis, so they are named here.
    const KEYWORDS: [&str; 24] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
    ];
    // Blank out strings (escapes included), matchers and ranges; strings may sit in matchers.
    let mut plain = String::with_capacity(expr.len());
    let (mut in_string, mut escaped, mut closer) = (false, false, None::<char>);
    for c in expr.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if closer == Some(c) {
            closer = None;
        } else if closer.is_none() {
            closer = match c {
                '{' => Some('}'),
                '[' => Some(']'),
                _ => None,
            };
            if closer.is_none() {
                plain.push(c);
                continue;
            }
        }
        plain.push(' ');
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if matches!(
                word.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                // `group_left` may come without a label list.
                skip_list = next == Some(&'(');
            } else if next == Some(&'(') || KEYWORDS.contains(&word.as_str()) {
                // A function or aggregation.
            } else if !skip_list {
                names.insert(word);
            }
            continue;
        }
        if c == ')' {
            skip_list = false;
        }
        // Numbers (0.99, 1e3) are skipped whole, exponent included.
        if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    names
}

/// Every `expr` in the dashboard (panel targets and templating queries).
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for target in panel["targets"].as_array().expect("targets") {
            out.push((
                title.clone(),
                target["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(q) = var["query"]["query"].as_str() {
            // label_values(METRIC{…}, label): the metric is the first argument.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(m, _)| m.to_string())
                .expect("label_values query");
            out.push((format!("variable {}", var["name"]), inner));
        }
    }
    out
}

/// The metric names in docs/operations.md's metrics table (rows starting with `` | `name` ``).
fn documented_metrics(doc: &str) -> BTreeSet<String> {
    let section = doc
        .split("\n### Metrics\n")
        .nth(1)
        .expect("docs/operations.md has a ### Metrics section");
    let section = section.split("\n#").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_string())
        .collect()
}

fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
}

#[test]
fn promql_names_are_found_outside_matchers_ranges_and_groupings() {
    let names = promql_metric_names(
        r#"histogram_quantile(0.99, sum by (le, kind) (rate(skycanary_x_bucket{a=~"b|c",d="{e}"}[5m]))) / on (le) group_left other:metric_total > bool 1e3"#,
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "skycanary_x_bucket".to_string(),
            "other:metric_total".to_string()
        ])
    );
    assert_eq!(
        promql_metric_names(r#"skycanary_canary_phase{namespace=~"$namespace"} == 1"#),
        BTreeSet::from(["skycanary_canary_phase".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_scrape_passes_promtool_and_backs_the_dashboard_and_the_docs() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let d = start(setup(&canary("Abort")), &running.url());
    wait_for(&d, "Promoted", Duration::from_secs(40), |s| {
        phase(s) == "Promoted"
    })
    .await;
    // The classic format, as curl and promtool ask for it (no Accept header).
    let response = http()
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let classic = response.text().await.unwrap();
    let exported = families(&classic);
    // The release's own series are there: measurements, decisions, its duration, OAP requests.
    for sample in [
        "skycanary_measurements_total{",
        "skycanary_decisions_total{",
        "skycanary_canary_duration_seconds_count{outcome=\"Promoted\"} 1",
        "skycanary_provider_requests_total{",
        "skycanary_build_info{",
        "process_resident_memory_bytes ",
    ] {
        assert!(classic.contains(sample), "{sample} missing:\n{classic}");
    }
    // Prometheus asks for OpenMetrics and gets it.
    let om = http()
        .get(format!("{}/metrics", d.url))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(
        om.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(om.text().await.unwrap().ends_with("# EOF\n"));

    // promtool.
    match promtool() {
        Some(tool) => {
            let mut child = Command::new(tool)
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(classic.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}\n{classic}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None if std::env::var("SKYCANARY_REQUIRE_PROMTOOL").as_deref() == Ok("1") => {
            panic!("promtool is required (SKYCANARY_REQUIRE_PROMTOOL=1) but not on PATH")
        }
        None => eprintln!(
            "SKIPPED promtool: not on PATH (apt-get install --no-install-recommends prometheus)"
        ),
    }

    // The dashboard.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/grafana/skycanary.json")).unwrap(),
    )
    .unwrap();
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 12, "{exprs:?}");
    for (panel, expr) in &exprs {
        let names = promql_metric_names(expr);
        assert!(!names.is_empty(), "{panel}: no metric in {expr}");
        for name in names {
            assert!(
                is_exported(&name, &exported),
                "panel {panel:?} queries {name}, which the daemon does not export ({expr})"
            );
        }
    }

    // The docs' metrics table.
    let doc = std::fs::read_to_string(repo("docs/operations.md")).unwrap();
    let documented = documented_metrics(&doc);
    let undocumented: Vec<&String> = exported
        .keys()
        .filter(|n| !documented.contains(*n))
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/operations.md: {undocumented:?}"
    );
    let stale: Vec<&String> = documented
        .iter()
        .filter(|n| !exported.contains_key(*n) && !OPTIONAL.contains(&n.as_str()))
        .collect();
    assert!(stale.is_empty(), "documented but not exported: {stale:?}");
}
