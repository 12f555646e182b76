//! Every template in analysis-templates/ validates and runs against the simulator.

use std::path::PathBuf;

use skycanary::analysis::Phase;
use skycanary::resources::load_paths;
use skycanary::sim::{OapProfile, SimEntity};

use crate::support::Sim;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("analysis-templates")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).expect("template file")
}

/// Runs a bundled template once per metric (one measurement, no tolerated failures) so tests
/// stay short and the single verdict decides.
fn single_shot(yaml: &str) -> String {
    const DROP: [&str; 4] = [
        "interval: 1m",
        "count:",
        "failureLimit:",
        "inconclusiveLimit:",
    ];
    yaml.lines()
        .filter(|l| !DROP.iter().any(|d| l.trim_start().starts_with(d)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn all_bundled_templates_validate() {
    let r = load_paths(&[dir()]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.templates.len(), 6);
}

async fn healthy_sim() -> Sim {
    let s = Sim::start(OapProfile::V10_4).await;
    let svc = "reviews.bookinfo";
    s.constant("service_apdex", svc, 9950.0);
    s.constant("service_sla", svc, 9990.0);
    s.constant("service_cpm", svc, 120.0);
    for (p, v) in [
        ("50", 40.0),
        ("75", 60.0),
        ("90", 90.0),
        ("95", 120.0),
        ("99", 180.0),
    ] {
        s.sim.set_labeled_series(
            "service_percentile",
            SimEntity::service(svc),
            &format!("p={p}"),
            move |_| Some(v),
        );
    }
    s
}

#[tokio::test]
async fn apdex_template() {
    let s = healthy_sim().await;
    let r = s
        .analyze(
            &single_shot(&read("apdex.yaml")),
            &[("service", "reviews.bookinfo")],
        )
        .await;
    assert_eq!(r.phase, Phase::Successful, "{r:?}");
}

#[tokio::test]
async fn sla_template() {
    let s = healthy_sim().await;
    let r = s
        .analyze(
            &single_shot(&read("sla.yaml")),
            &[("service", "reviews.bookinfo")],
        )
        .await;
    assert_eq!(r.phase, Phase::Successful, "{r:?}");
    s.constant("service_sla", "reviews.bookinfo", 9700.0);
    let r = s
        .analyze(
            &single_shot(&read("sla.yaml")),
            &[("service", "reviews.bookinfo")],
        )
        .await;
    assert_eq!(r.phase, Phase::Failed, "{r:?}");
}

#[tokio::test]
async fn p99_template() {
    let s = healthy_sim().await;
    let r = s
        .analyze(
            &single_shot(&read("p99-latency.yaml")),
            &[("service", "reviews.bookinfo")],
        )
        .await;
    assert_eq!(r.phase, Phase::Successful, "{r:?}");
    let r = s
        .analyze(
            &single_shot(&read("p99-latency.yaml")),
            &[("service", "reviews.bookinfo"), ("max-p99-ms", "100")],
        )
        .await;
    assert_eq!(r.phase, Phase::Failed, "{r:?}");
}

#[tokio::test]
async fn error_rate_template() {
    let s = healthy_sim().await;
    let r = s
        .analyze(
            &single_shot(&read("error-rate.yaml")),
            &[("service", "reviews.bookinfo")],
        )
        .await;
    assert_eq!(r.phase, Phase::Successful, "{r:?}");
    s.constant("service_sla", "reviews.bookinfo", 9500.0);
    let r = s
        .analyze(
            &single_shot(&read("error-rate.yaml")),
            &[("service", "reviews.bookinfo")],
        )
        .await;
    assert_eq!(r.phase, Phase::Failed, "{r:?}");
}

#[tokio::test]
async fn min_traffic_template_is_never_failed() {
    let s = healthy_sim().await;
    let r = s
        .analyze(
            &single_shot(&read("min-traffic.yaml")),
            &[("service", "reviews.bookinfo")],
        )
        .await;
    assert_eq!(r.phase, Phase::Successful, "{r:?}");
    s.constant("service_cpm", "reviews.bookinfo", 2.0);
    let r = s
        .analyze(
            &single_shot(&read("min-traffic.yaml")),
            &[("service", "reviews.bookinfo")],
        )
        .await;
    assert_eq!(r.phase, Phase::Inconclusive, "{r:?}");
}

#[tokio::test]
async fn argo_template() {
    let s = healthy_sim().await;
    let r = s
        .analyze(
            &single_shot(&read("argo-apdex.yaml")),
            &[("service-name", "reviews.bookinfo")],
        )
        .await;
    assert_eq!(r.phase, Phase::Successful, "{r:?}");
}
