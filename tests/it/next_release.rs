//! The release-to-release workflow (docs/releases.md): after a promotion, what the user (or
//! Argo CD) changes to ship the next version, end to end with the real daemon in file mode.
//! Every VirtualService state the daemon writes is sampled while the releases run, so a
//! write that sends users to a retired version, or a jump of the canary's weight, is caught
//! even between the checkpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::daemon::{Daemon, PAUSED_AT_20, TOKEN, http, phase, setup, start, status, wait_for};

/// A route's destinations (`subset`, else `host`) and their weights.
type Route = BTreeMap<String, i64>;

/// The `primary` route of `reviews.yaml`, after checking the file against Istio's schema.
fn route(manifests: &Path) -> Route {
    let text = std::fs::read_to_string(manifests.join("reviews.yaml")).unwrap();
    skycanary::testkit::vs_schema::assert_valid_virtual_services_in(&text);
    let v = &skycanary::resources::yaml::parse_documents(&text).unwrap()[0].value;
    v["spec"]["http"][0]["route"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let d = &e["destination"];
            let name = d["subset"].as_str().or(d["host"].as_str()).unwrap();
            (name.to_string(), e["weight"].as_i64().unwrap_or(0))
        })
        .collect()
}

fn r(pairs: &[(&str, i64)]) -> Route {
    pairs.iter().map(|(n, w)| (n.to_string(), *w)).collect()
}

/// Records every distinct state of the route while a test runs, tagged with the release the
/// test was on when it was seen.
struct Sampler {
    seen: Arc<Mutex<Vec<(String, Route)>>>,
    release: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Sampler {
    fn start(manifests: PathBuf, release: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::<(String, Route)>::new()));
        let release = Arc::new(Mutex::new(release.to_string()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, rel, st) = (seen.clone(), release.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                // Writes are atomic renames: every read is a whole state.
                let now = route(&manifests);
                let tag = rel.lock().unwrap().clone();
                {
                    let mut seen = s.lock().unwrap();
                    if seen.last() != Some(&(tag.clone(), now.clone())) {
                        seen.push((tag, now));
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Sampler {
            seen,
            release,
            stop,
            task: Some(task),
        }
    }

    fn release(&self, name: &str) {
        *self.release.lock().unwrap() = name.to_string();
    }

    /// Stops sampling; every state seen, in order, with its release.
    async fn finish(mut self) -> Vec<(String, Route)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        self.seen.lock().unwrap().clone()
    }
}

/// Every state seen during `release` is one of `allowed`.
fn only(seen: &[(String, Route)], release: &str, allowed: &[Route]) {
    for (tag, state) in seen.iter().filter(|(t, _)| t == release) {
        assert!(
            allowed.contains(state),
            "release {tag}: the route was {state:?}, not one of {allowed:?}; all: {seen:#?}"
        );
    }
}

async fn post(d: &Daemon, action: &str) {
    let resp = http()
        .post(format!(
            "{}/api/v1/canaries/bookinfo/reviews/{action}",
            d.url
        ))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"reason": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "{action}: {}",
        resp.text().await.unwrap()
    );
}

/// Paused on its `pause: {}` step (the second) for `rev`, the weight written.
async fn paused_at_20(d: &Daemon, rev: &str) -> Value {
    wait_for(
        d,
        &format!("{rev} paused at 20 %"),
        Duration::from_secs(40),
        |s| {
            s["status"]["revision"] == rev
                && phase(s) == "Paused"
                && s["status"]["currentStepIndex"] == 1
                && s["status"].get("routingWrite").is_none()
        },
    )
    .await
}

async fn promoted(d: &Daemon, rev: &str) -> Value {
    wait_for(
        d,
        &format!("{rev} promoted"),
        Duration::from_secs(40),
        |s| s["status"]["revision"] == rev && phase(s) == "Promoted",
    )
    .await
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

// ---- subset mode -------------------------------------------------------------------------

const SUBSET_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - name: primary
    route:
    - destination: {host: reviews, subset: v1}
      weight: 100
    - destination: {host: reviews, subset: v2}
      weight: 0
"#;

fn destination_rule(subsets: &[&str]) -> String {
    let subsets: Vec<String> = subsets
        .iter()
        .map(|s| format!("  - name: {s}\n    labels: {{version: {s}}}\n"))
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec:\n  host: reviews\n  subsets:\n{}",
        subsets.concat()
    )
}

fn subset_canary(rev: &str, stable: &str, canary: &str) -> String {
    format!(
        "apiVersion: skycanary.io/v1alpha1\nkind: Canary\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec:\n  revision: {rev}\n  trafficRouting:\n    istio:\n      virtualService: {{name: reviews, routes: [primary]}}\n      destinationRule: {{name: reviews, stableSubsetName: {stable}, canarySubsetName: {canary}}}\n  steps:\n  - setWeight: 20\n  - pause: {{}}\n"
    )
}

/// Subset mode, ping-pong (docs/releases.md "Subset mode"): v2 is promoted over v1; the next
/// release names the promoted subset stable and the new one canary (with the new subset in
/// the DestinationRule and the retired one gone), and starts from step 1 at the promoted
/// state — the retired subset never gets a request and leaves the route at the first write.
/// A third release shows it repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subset_mode_next_release_swaps_the_subsets_and_starts_from_the_promoted_state() {
    let dirs = setup(&subset_canary("v2", "v1", "v2"));
    write(&dirs.path().join("istio/reviews.yaml"), SUBSET_VS);
    write(
        &dirs.path().join("istio/destinationrule.yaml"),
        &destination_rule(&["v1", "v2"]),
    );
    let d = start(dirs, "");
    let dr = d.manifests.join("destinationrule.yaml");
    let canary = d.config.join("canary.yaml");
    let sampler = Sampler::start(d.manifests.clone(), "v2");

    paused_at_20(&d, "v2").await;
    assert_eq!(route(&d.manifests), r(&[("v1", 80), ("v2", 20)]));
    post(&d, "promote?full=true").await;
    promoted(&d, "v2").await;
    assert_eq!(route(&d.manifests), r(&[("v1", 0), ("v2", 100)]));

    // Release v3: the DestinationRule gains v3 and drops v1; the Canary swaps its subsets.
    sampler.release("v3");
    write(&dr, &destination_rule(&["v2", "v3"]));
    write(&canary, &subset_canary("v3", "v2", "v3"));
    let s = paused_at_20(&d, "v3").await;
    assert_eq!(route(&d.manifests), r(&[("v2", 80), ("v3", 20)]));
    let runs: Vec<&str> = s["status"]["analysisRuns"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(runs.is_empty(), "no run of v2 is carried over: {runs:?}");
    post(&d, "promote?full=true").await;
    promoted(&d, "v3").await;
    assert_eq!(route(&d.manifests), r(&[("v2", 0), ("v3", 100)]));

    // Release v4, the same way.
    sampler.release("v4");
    write(&dr, &destination_rule(&["v3", "v4"]));
    write(&canary, &subset_canary("v4", "v3", "v4"));
    paused_at_20(&d, "v4").await;
    assert_eq!(route(&d.manifests), r(&[("v3", 80), ("v4", 20)]));
    post(&d, "promote?full=true").await;
    promoted(&d, "v4").await;
    assert_eq!(route(&d.manifests), r(&[("v3", 0), ("v4", 100)]));

    let seen = sampler.finish().await;
    only(
        &seen,
        "v3",
        &[
            r(&[("v1", 0), ("v2", 100)]),
            r(&[("v2", 80), ("v3", 20)]),
            r(&[("v2", 0), ("v3", 100)]),
        ],
    );
    only(
        &seen,
        "v4",
        &[
            r(&[("v2", 0), ("v3", 100)]),
            r(&[("v3", 80), ("v4", 20)]),
            r(&[("v3", 0), ("v4", 100)]),
        ],
    );
}

const SLOTS_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - name: primary
    route:
    - destination: {host: reviews, subset: blue}
      weight: 100
    - destination: {host: reviews, subset: green}
      weight: 0
"#;

/// Subset mode with two permanent slots (docs/releases.md "Fixed slots", the Argo CD form):
/// a release swaps `stableSubsetName`/`canarySubsetName` (the idle slot's Deployment got the
/// new image); the VirtualService keeps its two destinations and the DestinationRule is
/// never edited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subset_slots_next_release_updates_the_idle_slot_and_swaps() {
    let dirs = setup(&subset_canary("v2", "blue", "green"));
    write(&dirs.path().join("istio/reviews.yaml"), SLOTS_VS);
    let rule = destination_rule(&["blue", "green"]);
    write(&dirs.path().join("istio/destinationrule.yaml"), &rule);
    let d = start(dirs, "");
    let canary = d.config.join("canary.yaml");
    let sampler = Sampler::start(d.manifests.clone(), "v2");
    paused_at_20(&d, "v2").await;
    post(&d, "promote?full=true").await;
    promoted(&d, "v2").await;
    let on_green = r(&[("blue", 0), ("green", 100)]);
    assert_eq!(route(&d.manifests), on_green);

    sampler.release("v3");
    write(&canary, &subset_canary("v3", "green", "blue"));
    paused_at_20(&d, "v3").await;
    assert_eq!(route(&d.manifests), r(&[("blue", 20), ("green", 80)]));
    post(&d, "promote?full=true").await;
    promoted(&d, "v3").await;
    let on_blue = r(&[("blue", 100), ("green", 0)]);
    assert_eq!(route(&d.manifests), on_blue);

    sampler.release("v4");
    write(&canary, &subset_canary("v4", "blue", "green"));
    paused_at_20(&d, "v4").await;
    assert_eq!(route(&d.manifests), r(&[("blue", 80), ("green", 20)]));

    let seen = sampler.finish().await;
    only(
        &seen,
        "v3",
        &[on_green, r(&[("blue", 20), ("green", 80)]), on_blue.clone()],
    );
    only(&seen, "v4", &[on_blue, r(&[("blue", 80), ("green", 20)])]);
    assert_eq!(
        std::fs::read_to_string(d.manifests.join("destinationrule.yaml")).unwrap(),
        rule
    );
}

// ---- host mode ---------------------------------------------------------------------------

/// `PAUSED_AT_20` with its Services and revision replaced.
fn host_canary(rev: &str, stable: &str, canary: &str) -> String {
    PAUSED_AT_20
        .replace("revision: v2", &format!("revision: {rev}"))
        .replace(
            "stableService: reviews-stable",
            &format!("stableService: {stable}"),
        )
        .replace(
            "canaryService: reviews-canary",
            &format!("canaryService: {canary}"),
        )
}

/// Host mode, ping-pong (docs/releases.md "Host mode"): after v2 is promoted onto the canary
/// Service, a next release that only changes `revision` is held — its first step would send
/// 80 % of users back to the stable Service, the release before last — and says what to do;
/// swapping `stableService`/`canaryService` starts it from the promoted state. Then again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_mode_next_release_swaps_the_services_and_a_revision_alone_is_held() {
    let d = start(setup(PAUSED_AT_20), "");
    let canary = d.config.join("canary.yaml");
    let sampler = Sampler::start(d.manifests.clone(), "v2");
    paused_at_20(&d, "v2").await;
    post(&d, "promote?full=true").await;
    promoted(&d, "v2").await;
    let after_v2 = r(&[("reviews-stable", 0), ("reviews-canary", 100)]);
    assert_eq!(route(&d.manifests), after_v2);

    // Only the revision changes: held, with the fix in the message; nothing is written.
    sampler.release("v3-held");
    write(
        &canary,
        &host_canary("v3", "reviews-stable", "reviews-canary"),
    );
    let s = wait_for(&d, "the held v3", Duration::from_secs(30), |s| {
        s["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not starting revision \"v3\""))
    })
    .await;
    let message = s["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("swap stableService and canaryService"),
        "{message}"
    );
    assert_eq!(phase(&s), "Promoted", "{s:#}");
    assert_eq!(s["status"]["revision"], "v2", "{s:#}");
    assert_eq!(route(&d.manifests), after_v2);

    // Swapped: reviews-canary (v2) is stable now, reviews-stable gets v3.
    sampler.release("v3");
    write(
        &canary,
        &host_canary("v3", "reviews-canary", "reviews-stable"),
    );
    paused_at_20(&d, "v3").await;
    assert_eq!(
        route(&d.manifests),
        r(&[("reviews-stable", 20), ("reviews-canary", 80)])
    );
    post(&d, "promote?full=true").await;
    promoted(&d, "v3").await;
    let after_v3 = r(&[("reviews-stable", 100), ("reviews-canary", 0)]);
    assert_eq!(route(&d.manifests), after_v3);

    // v4: back the other way.
    sampler.release("v4");
    write(
        &canary,
        &host_canary("v4", "reviews-stable", "reviews-canary"),
    );
    paused_at_20(&d, "v4").await;
    assert_eq!(
        route(&d.manifests),
        r(&[("reviews-stable", 80), ("reviews-canary", 20)])
    );

    let seen = sampler.finish().await;
    only(&seen, "v3-held", std::slice::from_ref(&after_v2));
    only(
        &seen,
        "v3",
        &[
            after_v2.clone(),
            r(&[("reviews-stable", 20), ("reviews-canary", 80)]),
            after_v3.clone(),
        ],
    );
    only(
        &seen,
        "v4",
        &[
            after_v3,
            r(&[("reviews-stable", 80), ("reviews-canary", 20)]),
        ],
    );
}

// ---- onSuccess: Restore ------------------------------------------------------------------

/// `onSuccess: Restore` (docs/releases.md): the promotion puts the routes back exactly as
/// they were written (100 % stable, the file byte for byte) — the user then rolls the stable
/// workload to the new version — and the next release changes only `revision`. Its first
/// step is an analysis: nothing is written before it, and no promoted weight is "defended".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_mode_next_release_changes_only_the_revision() {
    let (_sim, running) = crate::daemon::sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = |rev: &str| {
        crate::daemon::canary("Abort")
            .replace("revision: v2", &format!("revision: {rev}\n  onSuccess: Restore"))
            .replace(
                "  - setWeight: 10\n",
                "  - analysis: {templates: [{templateName: apdex}], args: [{name: service, value: reviews.bookinfo}]}\n  - setWeight: 10\n",
            )
    };
    let dirs = setup(&yaml("v2"));
    let original = std::fs::read_to_string(dirs.path().join("istio/reviews.yaml")).unwrap();
    let d = start(dirs, &running.url());
    let sampler = Sampler::start(d.manifests.clone(), "v2");
    let at_stable = r(&[("reviews-stable", 100), ("reviews-canary", 0)]);
    let restored = |d: &Daemon, rev: &str| {
        let rev = rev.to_string();
        let manifests = d.manifests.clone();
        let original = original.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::fs::read_to_string(manifests.join("reviews.yaml")).unwrap() != original {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{rev}: the routes were not restored"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    promoted(&d, "v2").await;
    restored(&d, "v2").await;
    assert_eq!(route(&d.manifests), at_stable);

    sampler.release("v3");
    write(&d.config.join("canary.yaml"), &yaml("v3"));
    let s = promoted(&d, "v3").await;
    restored(&d, "v3").await;
    let runs: Vec<&str> = s["status"]["analysisRuns"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(runs, ["v3-step-0", "v3-step-2", "v3-step-6"], "{s:#}");

    let seen = sampler.finish().await;
    // v3 walked up from 100 % stable, never jumping ahead of its steps: its first step is an
    // analysis, and the promoted 100 % of v2 is not "defended" on the new canary meanwhile.
    let weights: Vec<i64> = seen
        .iter()
        .filter(|(t, _)| t == "v3")
        .map(|(_, s)| s["reviews-canary"])
        .collect();
    assert_eq!(weights.first(), Some(&0), "{seen:#?}");
    assert!(
        weights.windows(2).all(|w| w[1] >= w[0] || w[1] == 0),
        "{seen:#?}"
    );
    // (100 % lasts only until the restore, which may come before a read sees it.)
    assert!(weights.contains(&10), "{seen:#?}");
    assert_eq!(weights.last(), Some(&0), "restored: {seen:#?}");
}

// ---- after an abort ----------------------------------------------------------------------

/// An abort, then a fixed version (a new `revision`, nothing else): the new run starts
/// cleanly from step 1 — the abort and its rollback marker do not hold it — and promotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_version_after_an_abort_starts_cleanly() {
    let d = start(setup(PAUSED_AT_20), "");
    paused_at_20(&d, "v2").await;
    post(&d, "abort").await;
    wait_for(&d, "aborted", Duration::from_secs(20), |s| {
        phase(s) == "Aborted" && s["status"].get("routingWrite").is_none()
    })
    .await;
    let at_stable = r(&[("reviews-stable", 100), ("reviews-canary", 0)]);
    assert_eq!(route(&d.manifests), at_stable);

    write(
        &d.config.join("canary.yaml"),
        &PAUSED_AT_20.replace("revision: v2", "revision: v2.1"),
    );
    let s = paused_at_20(&d, "v2.1").await;
    assert!(s["status"].get("abort").is_none(), "{s:#}");
    assert_eq!(
        route(&d.manifests),
        r(&[("reviews-stable", 80), ("reviews-canary", 20)])
    );
    post(&d, "promote?full=true").await;
    promoted(&d, "v2.1").await;
    assert_eq!(
        route(&d.manifests),
        r(&[("reviews-stable", 0), ("reviews-canary", 100)])
    );
    let s = status(&d).await;
    assert_eq!(s["status"]["revision"], "v2.1");
}

// ---- GitOps: releases started by image changes (README "GitOps with Argo CD") -------------

/// `reviews-<slot>` (labels `app: reviews, version: <slot>`) running `image`, `ready` pods.
fn slot_deployment(slot: &str, image: &str, ready: i64) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: reviews-{slot}, namespace: bookinfo}}\n\
         spec:\n  replicas: 2\n  selector: {{matchLabels: {{app: reviews, version: {slot}}}}}\n  \
         template:\n    metadata: {{labels: {{app: reviews, version: {slot}}}}}\n    spec:\n      \
         containers:\n      - {{name: reviews, image: \"{image}\"}}\n\
         status: {{replicas: 2, readyReplicas: {ready}}}\n"
    )
}

/// The Canary of the README's GitOps flow: subsets v1 (stable) and v2 (canary), no
/// `revision`, `workloadRef` the v2 Deployment, `onSuccess: Restore`.
const GITOPS_CANARY: &str = "apiVersion: skycanary.io/v1alpha1\nkind: Canary\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  workloadRef: {kind: Deployment, name: reviews-v2}\n  onSuccess: Restore\n  trafficRouting:\n    istio:\n      virtualService: {name: reviews, routes: [primary]}\n      destinationRule: {name: reviews, stableSubsetName: v1, canarySubsetName: v2}\n  steps:\n  - setWeight: 20\n  - pause: {}\n";

/// README "GitOps with Argo CD", in file mode (the manifests directory stands in for what
/// Argo CD syncs): the Canary, VirtualService and DestinationRule never change. A new image
/// in `reviews-v2` starts a release by itself, which waits for the new pods, walks its
/// steps and, promoted, puts the routes back at v1; rolling `reviews-v1` to the promoted
/// image starts nothing; the next image in `reviews-v2` is the next release. Every route
/// state seen is sampled: no release ever routes to v2 before its new pods are ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_image_changes_start_releases_by_themselves() {
    let dirs = setup(GITOPS_CANARY);
    write(&dirs.path().join("istio/reviews.yaml"), SUBSET_VS);
    write(
        &dirs.path().join("istio/destinationrule.yaml"),
        &destination_rule(&["v1", "v2"]),
    );
    let (v1, v2) = (
        dirs.path().join("istio/reviews-v1.yaml"),
        dirs.path().join("istio/reviews-v2.yaml"),
    );
    write(&v1, &slot_deployment("v1", "reviews:1.0", 2));
    write(&v2, &slot_deployment("v2", "reviews:1.0", 2));
    let d = start(dirs, "");
    let at_v1 = r(&[("v1", 100), ("v2", 0)]);
    let at_20 = r(&[("v1", 80), ("v2", 20)]);
    let at_v2 = r(&[("v1", 0), ("v2", 100)]);
    let paused_at_20 = |s: &Value, not: &str| {
        s["status"]["revision"] != not
            && phase(s) == "Paused"
            && s["status"]["currentStepIndex"] == 1
            && s["status"].get("routingWrite").is_none()
    };
    // The first sight runs a release for the template reviews-v2 has.
    let s = wait_for(
        &d,
        "the first release at 20 %",
        Duration::from_secs(40),
        |s| paused_at_20(s, ""),
    )
    .await;
    let first = s["status"]["revision"].as_str().unwrap().to_string();
    post(&d, "promote?full=true").await;
    wait_for(&d, "promoted and restored", Duration::from_secs(40), |s| {
        phase(s) == "Promoted" && route(&d.manifests) == at_v1
    })
    .await;

    // Release 2: Argo CD syncs a new image into reviews-v2; its pods are not ready yet.
    let sampler = Sampler::start(d.manifests.clone(), "2.0 not ready");
    write(&v2, &slot_deployment("v2", "reviews:2.0", 0));
    let s = wait_for(&d, "release 2 held", Duration::from_secs(40), |s| {
        s["status"]["revision"] != first.as_str()
            && s["status"]["pause"]["reason"] == "CanaryNotReady"
    })
    .await;
    let second = s["status"]["revision"].as_str().unwrap().to_string();
    assert_eq!(route(&d.manifests), at_v1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampler.release("2.0 ready");
    write(&v2, &slot_deployment("v2", "reviews:2.0", 2));
    wait_for(&d, "release 2 at 20 %", Duration::from_secs(40), |s| {
        paused_at_20(s, &first)
    })
    .await;
    assert_eq!(route(&d.manifests), at_20);
    post(&d, "promote?full=true").await;
    wait_for(&d, "release 2 promoted", Duration::from_secs(40), |s| {
        s["status"]["revision"] == second.as_str()
            && phase(s) == "Promoted"
            && route(&d.manifests) == at_v1
    })
    .await;

    // The stable side catches up: no release.
    sampler.release("stable");
    write(&v1, &slot_deployment("v1", "reviews:2.0", 2));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = status(&d).await;
    assert_eq!(
        (phase(&s), s["status"]["revision"].as_str()),
        ("Promoted", Some(second.as_str())),
        "{s:#}"
    );

    // Release 3: the next image.
    sampler.release("3.0");
    write(&v2, &slot_deployment("v2", "reviews:3.0", 2));
    let s = wait_for(&d, "release 3 at 20 %", Duration::from_secs(40), |s| {
        paused_at_20(s, &second)
    })
    .await;
    assert_ne!(s["status"]["revision"], first.as_str());
    assert_eq!(route(&d.manifests), at_20);

    let seen = sampler.finish().await;
    only(&seen, "2.0 not ready", std::slice::from_ref(&at_v1));
    only(
        &seen,
        "2.0 ready",
        &[at_v1.clone(), at_20.clone(), at_v2.clone()],
    );
    only(&seen, "stable", std::slice::from_ref(&at_v1));
    only(&seen, "3.0", &[at_v1, at_20]);
}
