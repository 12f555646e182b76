//! The readiness port (issue 19): where a canary task learns how many pods of its
//! `spec.workloadRef` (and `stableWorkloadRef`) are ready. File mode reads manifests
//! ([`super::readiness_file::FileReadiness`]); cluster mode plugs its watchers into the same
//! trait. The task asks at start and then every [`ReadinessSource::interval`], and feeds the
//! machine an `Input::Readiness` on every change.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::model::ReadinessStatus;
use crate::resources::canary::{CanaryDoc, WorkloadRef};

/// What a canary asks about: its workloads, in its namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadinessQuery {
    /// The Canary's namespace (workloads are looked up there).
    pub namespace: String,
    /// `spec.workloadRef`.
    pub workload: WorkloadRef,
    /// `spec.stableWorkloadRef`.
    pub stable: Option<WorkloadRef>,
    /// `trafficRouting.istio.canaryService` (host mode): its EndpointSlices' ready endpoints
    /// also bound the canary's count, since they are what its traffic reaches.
    pub canary_service: Option<String>,
}

impl ReadinessQuery {
    /// The query of a canary, `None` when it names no workload (no gate, nothing to read).
    pub fn of(doc: &CanaryDoc, namespace: &str) -> Option<Self> {
        Some(ReadinessQuery {
            namespace: namespace.to_string(),
            workload: doc.spec.workload_ref.clone()?,
            stable: doc.spec.stable_workload_ref.clone(),
            canary_service: doc.spec.traffic_routing.istio.canary_service.clone(),
        })
    }
}

/// The future a [`ReadinessSource`] returns.
pub type ReadinessFuture<'a> = Pin<Box<dyn Future<Output = ReadinessStatus> + Send + 'a>>;

/// Something that can tell a canary's ready pods. It never fails: a workload it cannot read
/// or find is an unknown count (`None`) with the reason in `message`, which the machine
/// treats as not ready.
pub trait ReadinessSource: Send + Sync {
    /// The readiness of `query`'s workloads now, stamped `now`.
    fn readiness<'a>(
        &'a self,
        query: &'a ReadinessQuery,
        now: DateTime<Utc>,
    ) -> ReadinessFuture<'a>;
    /// How long until asking again.
    fn interval(&self) -> Duration;
}

/// One side's count: ready pods, or why it is unknown.
pub type Count = Result<i64, String>;

/// Hex characters of a template hash: short enough for run names (`<revision>-step-1`),
/// long enough that two templates of one workload never meet by chance.
pub const TEMPLATE_HASH_LEN: usize = 10;
/// Most images a template reports (a pod with more containers names the first ones).
pub const MAX_IMAGES: usize = 8;
/// Longest image reference kept (longer ones are cut, marked with `…`).
pub const MAX_IMAGE_LEN: usize = 200;

/// A workload's pod template as the readiness sources report it: its hash and images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadTemplate {
    /// [`template_hash`] of `spec.template`.
    pub hash: String,
    /// `spec.template.spec.containers[].image`, in order.
    pub images: Vec<String>,
}

/// The first [`TEMPLATE_HASH_LEN`] hex characters of the SHA-256 of `template`'s canonical
/// JSON (object keys sorted, no whitespace): the same template always gives the same hash,
/// whatever order its manifest wrote the keys in.
pub fn template_hash(template: &serde_json::Value) -> String {
    use sha2::Digest;
    let mut canonical = Vec::new();
    write_canonical(template, &mut canonical);
    let digest = sha2::Sha256::digest(&canonical);
    let mut hex = String::with_capacity(TEMPLATE_HASH_LEN);
    for b in digest.iter().take(TEMPLATE_HASH_LEN.div_ceil(2)) {
        hex.push_str(&format!("{b:02x}"));
    }
    hex.truncate(TEMPLATE_HASH_LEN);
    hex
}

/// JSON with sorted keys (serde_json's maps keep insertion order only with a feature some
/// dependency may turn on, so the order is made explicit here).
fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).unwrap_or_default());
                out.push(b':');
                write_canonical(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(x, out);
            }
            out.push(b']');
        }
        scalar => out.extend(serde_json::to_vec(scalar).unwrap_or_default()),
    }
}

/// The hash and images of a workload's `spec.template` (JSON of the pod template spec).
pub fn workload_template(template: &serde_json::Value) -> WorkloadTemplate {
    let images = template
        .pointer("/spec/containers")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("image").and_then(serde_json::Value::as_str))
        .take(MAX_IMAGES)
        .map(|i| match i.char_indices().nth(MAX_IMAGE_LEN) {
            Some((cut, _)) => format!("{}…", &i[..cut]),
            None => i.to_string(),
        })
        .collect();
    WorkloadTemplate {
        hash: template_hash(template),
        images,
    }
}

/// `status` with the canary workload's template (none: not known).
pub fn with_template(mut status: ReadinessStatus, t: Option<WorkloadTemplate>) -> ReadinessStatus {
    (status.template_hash, status.images) = match t {
        Some(t) => (Some(t.hash), t.images),
        None => (None, Vec::new()),
    };
    status
}

/// The status of a canary side (and optionally the stable side), the reasons of unknown
/// counts joined into its message.
pub fn status_of(canary: Count, stable: Option<Count>, now: DateTime<Utc>) -> ReadinessStatus {
    let mut why = Vec::new();
    let canary_ready = canary.map_err(|e| why.push(format!("canary: {e}"))).ok();
    let stable_ready = stable.and_then(|s| s.map_err(|e| why.push(format!("stable: {e}"))).ok());
    ReadinessStatus {
        canary_ready,
        stable_ready,
        observed_at: now,
        message: (!why.is_empty()).then(|| why.join("; ")),
        template_hash: None,
        images: Vec::new(),
    }
}

/// Whether `now` says something `prev` did not (its time aside): the machine is fed only
/// changes, so an unchanged poll costs no status write.
pub fn changed(prev: Option<&ReadinessStatus>, now: &ReadinessStatus) -> bool {
    prev.is_none_or(|p| {
        p.canary_ready != now.canary_ready
            || p.stable_ready != now.stable_ready
            || p.message != now.message
            || p.template_hash != now.template_hash
            || p.images != now.images
    })
}

/// The DestinationRule subsets that `fromSubset` references read (subset-level routing).
#[derive(Debug, Clone, PartialEq)]
pub struct SubsetRefs {
    /// `DestinationRule ns/name`, for messages.
    pub destination_rule: String,
    /// `canarySubsetName`.
    pub canary: String,
    /// `stableSubsetName`.
    pub stable: String,
}

impl SubsetRefs {
    /// The subsets a canary's `fromSubset` references read; `None` when none has one (or the
    /// canary has no DestinationRule, which validation refuses with `fromSubset`).
    pub fn of(doc: &CanaryDoc, namespace: &str) -> Option<Self> {
        let spec = &doc.spec;
        let any = [&spec.workload_ref, &spec.stable_workload_ref]
            .into_iter()
            .flatten()
            .any(|r| r.from_subset);
        let dr = spec.traffic_routing.istio.destination_rule.as_ref()?;
        let (name, ns) = crate::traffic::spec::split_name(&dr.name, namespace);
        any.then(|| SubsetRefs {
            destination_rule: format!("DestinationRule {ns}/{name}"),
            canary: dr.canary_subset_name.clone(),
            stable: dr.stable_subset_name.clone(),
        })
    }
}

/// `r` as a plain selector: a `fromSubset` reference gets the labels of `subset` in `dr`
/// (the DestinationRule as read, or why it could not be) plus its own `matchLabels`; other
/// references are kept. Unknown (with why) when the labels cannot be read or contradict.
pub fn resolve_ref(
    r: &WorkloadRef,
    subset: &str,
    refs: &SubsetRefs,
    dr: &Result<serde_json::Value, String>,
) -> Result<WorkloadRef, String> {
    if !r.from_subset {
        return Ok(r.clone());
    }
    let dr = dr.as_ref().map_err(Clone::clone)?;
    let mut labels = crate::traffic::istio::subset_labels(dr, subset)
        .map_err(|e| format!("{}: {e}", refs.destination_rule))?;
    for (k, v) in r.selector.iter().flat_map(|s| &s.match_labels) {
        match labels.get(k) {
            Some(theirs) if theirs != v => {
                return Err(format!(
                    "selector.matchLabels {k}={v} contradicts label {k}={theirs} of subset \
                     {subset} in {}: no pod can match both",
                    refs.destination_rule
                ));
            }
            _ => {
                labels.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(WorkloadRef {
        selector: Some(crate::resources::canary::PodSelector {
            match_labels: labels,
        }),
        from_subset: false,
        ..WorkloadRef::default()
    })
}

/// The readiness of `query` from `source`, its `fromSubset` references first turned into
/// the selectors of their DestinationRule subsets (`subsets`: which ones, and the
/// DestinationRule as last read). A side whose subset cannot be read is unknown with why —
/// not ready — and is not asked of the source.
pub async fn read(
    source: &dyn ReadinessSource,
    query: &ReadinessQuery,
    subsets: Option<(&SubsetRefs, &Result<serde_json::Value, String>)>,
    now: DateTime<Utc>,
) -> ReadinessStatus {
    let Some((refs, dr)) = subsets else {
        return source.readiness(query, now).await;
    };
    let canary = resolve_ref(&query.workload, &refs.canary, refs, dr);
    let stable = query
        .stable
        .as_ref()
        .map(|s| resolve_ref(s, &refs.stable, refs, dr));
    let workload = match canary {
        Ok(w) => w,
        Err(why) => {
            let stable = stable.map(|s| match s {
                Err(e) => Err(e),
                Ok(_) => Err("not counted while the canary's pods are unknown".to_string()),
            });
            return status_of(Err(why), stable, now);
        }
    };
    let (stable, stable_err) = match stable {
        None => (None, None),
        Some(Ok(s)) => (Some(s), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let resolved = ReadinessQuery {
        workload,
        stable,
        ..query.clone()
    };
    let mut status = source.readiness(&resolved, now).await;
    if let Some(e) = stable_err {
        status.stable_ready = None;
        let why = format!("stable: {e}");
        status.message = Some(match status.message.take() {
            Some(m) => format!("{m}; {why}"),
            None => why,
        });
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn unknown_counts_carry_their_reason() {
        let s = status_of(Err("no Deployment x".into()), Some(Ok(3)), at(0));
        assert_eq!(s.canary_ready, None);
        assert_eq!(s.stable_ready, Some(3));
        assert_eq!(s.message.as_deref(), Some("canary: no Deployment x"));
        let s = status_of(Ok(2), None, at(0));
        assert_eq!(
            (s.canary_ready, s.stable_ready, s.message),
            (Some(2), None, None)
        );
    }

    #[test]
    fn template_hashes_ignore_key_order_and_change_with_the_template() {
        let a: serde_json::Value = serde_json::from_str(
            r#"{"metadata":{"labels":{"app":"reviews","version":"v2"}},"spec":{"containers":[{"name":"reviews","image":"reviews:2.1.0"}]}}"#,
        )
        .unwrap();
        let b: serde_json::Value = serde_json::from_str(
            r#"{"spec":{"containers":[{"image":"reviews:2.1.0","name":"reviews"}]},"metadata":{"labels":{"version":"v2","app":"reviews"}}}"#,
        )
        .unwrap();
        let t = workload_template(&a);
        assert_eq!(t.hash, template_hash(&b), "key order does not matter");
        assert_eq!(t.hash.len(), TEMPLATE_HASH_LEN);
        assert!(
            t.hash
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(t.images, ["reviews:2.1.0"]);
        let mut c = a.clone();
        c["spec"]["containers"][0]["image"] = "reviews:2.2.0".into();
        assert_ne!(template_hash(&c), t.hash, "a new image is a new template");
        // Array order is part of the template.
        let d = serde_json::json!({"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}});
        let e = serde_json::json!({"spec": {"containers": [
            {"name": "b", "image": "b:1"}, {"name": "a", "image": "a:1"}]}});
        assert_ne!(template_hash(&d), template_hash(&e));
        // Bounded: many or long images are cut.
        let many: Vec<serde_json::Value> = (0..20)
            .map(|i| serde_json::json!({"name": format!("c{i}"), "image": "x".repeat(500)}))
            .collect();
        let t = workload_template(&serde_json::json!({"spec": {"containers": many}}));
        assert_eq!(t.images.len(), MAX_IMAGES);
        assert_eq!(t.images[0].chars().count(), MAX_IMAGE_LEN + 1);
    }

    #[test]
    fn a_new_template_is_a_change() {
        let a = status_of(Ok(1), None, at(0));
        let t = WorkloadTemplate {
            hash: "0123456789".into(),
            images: vec!["reviews:2".into()],
        };
        let b = with_template(status_of(Ok(1), None, at(1)), Some(t.clone()));
        assert!(changed(Some(&a), &b));
        assert!(!changed(Some(&b), &with_template(b.clone(), Some(t))));
        assert_eq!(b.images, ["reviews:2"]);
    }

    #[test]
    fn only_changes_count_not_the_time() {
        let a = status_of(Ok(1), None, at(0));
        assert!(changed(None, &a));
        assert!(!changed(Some(&a), &status_of(Ok(1), None, at(5))));
        assert!(changed(Some(&a), &status_of(Ok(0), None, at(5))));
        assert!(changed(
            Some(&a),
            &status_of(Err("gone".into()), None, at(5))
        ));
    }

    /// A source that records what it is asked and answers 2 canary / 5 stable ready pods.
    #[derive(Default)]
    struct Recording(std::sync::Mutex<Vec<ReadinessQuery>>);

    impl ReadinessSource for Recording {
        fn readiness<'a>(
            &'a self,
            query: &'a ReadinessQuery,
            now: DateTime<Utc>,
        ) -> ReadinessFuture<'a> {
            self.0.lock().unwrap().push(query.clone());
            let stable = query.stable.as_ref().map(|_| Ok(5));
            Box::pin(std::future::ready(status_of(Ok(2), stable, now)))
        }
        fn interval(&self) -> Duration {
            Duration::from_secs(1)
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn from_subset(extra: &[(&str, &str)]) -> WorkloadRef {
        WorkloadRef {
            from_subset: true,
            selector: (!extra.is_empty()).then(|| crate::resources::canary::PodSelector {
                match_labels: labels(extra),
            }),
            ..WorkloadRef::default()
        }
    }

    fn query(canary: WorkloadRef, stable: Option<WorkloadRef>) -> ReadinessQuery {
        ReadinessQuery {
            namespace: "bookinfo".into(),
            workload: canary,
            stable,
            canary_service: None,
        }
    }

    fn refs() -> SubsetRefs {
        SubsetRefs {
            destination_rule: "DestinationRule bookinfo/reviews".into(),
            canary: "v2".into(),
            stable: "v1".into(),
        }
    }

    fn dr(subsets: serde_json::Value) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({"spec": {"host": "reviews", "subsets": subsets}}))
    }

    fn selector_of(r: &WorkloadRef) -> std::collections::BTreeMap<String, String> {
        assert!(!r.from_subset && r.kind.is_none(), "{r:?}");
        r.selector.clone().unwrap().match_labels
    }

    #[tokio::test]
    async fn from_subset_refs_count_the_subsets_labels_and_their_own() {
        let src = Recording::default();
        let q = query(from_subset(&[("app", "reviews")]), Some(from_subset(&[])));
        let dr = dr(serde_json::json!([
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}}
        ]));
        let s = read(&src, &q, Some((&refs(), &dr)), at(0)).await;
        assert_eq!(
            (s.canary_ready, s.stable_ready, s.message),
            (Some(2), Some(5), None)
        );
        let asked = src.0.lock().unwrap().clone();
        assert_eq!(asked.len(), 1);
        assert_eq!(
            selector_of(&asked[0].workload),
            labels(&[("app", "reviews"), ("version", "v2")])
        );
        assert_eq!(
            selector_of(asked[0].stable.as_ref().unwrap()),
            labels(&[("version", "v1")])
        );
        // References that name their workload are asked as they are.
        let named = WorkloadRef {
            kind: Some(crate::resources::canary::WorkloadKind::Deployment),
            name: Some("reviews-v1".into()),
            ..WorkloadRef::default()
        };
        let q = query(from_subset(&[]), Some(named.clone()));
        read(&src, &q, Some((&refs(), &dr)), at(0)).await;
        assert_eq!(src.0.lock().unwrap()[1].stable, Some(named.clone()));
        // Without fromSubset nothing is resolved.
        let q = query(named, None);
        read(&src, &q, None, at(0)).await;
        assert_eq!(src.0.lock().unwrap()[2], q);
    }

    #[tokio::test]
    async fn a_missing_destination_rule_or_subset_is_unknown_and_never_counted() {
        let src = Recording::default();
        let q = query(from_subset(&[]), Some(from_subset(&[])));
        // The DestinationRule cannot be read: neither side is counted.
        let gone: Result<serde_json::Value, String> =
            Err("DestinationRule bookinfo/reviews not found".into());
        let s = read(&src, &q, Some((&refs(), &gone)), at(0)).await;
        assert_eq!((s.canary_ready, s.stable_ready), (None, None));
        assert_eq!(
            s.message.as_deref(),
            Some(
                "canary: DestinationRule bookinfo/reviews not found; \
                 stable: DestinationRule bookinfo/reviews not found"
            )
        );
        // The canary's subset is missing: unknown, and the stable side is not counted either.
        let only_v1 = dr(serde_json::json!([{"name": "v1", "labels": {"version": "v1"}}]));
        let s = read(&src, &q, Some((&refs(), &only_v1)), at(0)).await;
        assert_eq!((s.canary_ready, s.stable_ready), (None, None));
        let m = s.message.unwrap();
        assert!(
            m.starts_with("canary: DestinationRule bookinfo/reviews: subset v2 not found"),
            "{m}"
        );
        assert!(src.0.lock().unwrap().is_empty(), "nothing was asked");
        // The stable subset is missing: the canary is counted, the stable side is unknown.
        let only_v2 = dr(serde_json::json!([{"name": "v2", "labels": {"version": "v2"}}]));
        let s = read(&src, &q, Some((&refs(), &only_v2)), at(0)).await;
        assert_eq!((s.canary_ready, s.stable_ready), (Some(2), None));
        assert_eq!(
            s.message.as_deref(),
            Some("stable: DestinationRule bookinfo/reviews: subset v1 not found")
        );
        assert_eq!(src.0.lock().unwrap()[0].stable, None);
        // Own labels that contradict the subset's select nothing: unknown, not 0.
        let q = query(from_subset(&[("version", "v3")]), None);
        let s = read(&src, &q, Some((&refs(), &only_v2)), at(0)).await;
        assert_eq!(s.canary_ready, None);
        assert!(s.message.unwrap().contains("contradicts label version=v2"));
    }

    #[test]
    fn subset_refs_name_the_destination_rule_only_when_a_side_reads_it() {
        let doc = |refs: serde_json::Value| -> CanaryDoc {
            let mut spec = serde_json::json!({
                "trafficRouting": {"istio": {
                    "virtualService": {"name": "reviews"},
                    "destinationRule": {"name": "reviews.mesh", "stableSubsetName": "v1",
                        "canarySubsetName": "v2"}}}
            });
            spec.as_object_mut()
                .unwrap()
                .extend(refs.as_object().unwrap().clone());
            serde_json::from_value(serde_json::json!({
                "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
                "metadata": {"name": "reviews", "namespace": "bookinfo"},
                "spec": spec
            }))
            .unwrap()
        };
        let stable_only = doc(serde_json::json!({
            "workloadRef": {"kind": "Deployment", "name": "reviews-v2"},
            "stableWorkloadRef": {"fromSubset": true}
        }));
        assert_eq!(
            SubsetRefs::of(&stable_only, "bookinfo"),
            Some(SubsetRefs {
                destination_rule: "DestinationRule mesh/reviews".into(),
                canary: "v2".into(),
                stable: "v1".into(),
            })
        );
        let named = doc(serde_json::json!({
            "workloadRef": {"kind": "Deployment", "name": "reviews-v2"}
        }));
        assert_eq!(SubsetRefs::of(&named, "bookinfo"), None);
    }
}
