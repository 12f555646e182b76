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

impl ReadinessStatus {
    /// This observation with the canary workload's template (none: not known).
    pub fn with_template(mut self, t: Option<WorkloadTemplate>) -> Self {
        (self.template_hash, self.images) = match t {
            Some(t) => (Some(t.hash), t.images),
            None => (None, Vec::new()),
        };
        self
    }
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
        let b = status_of(Ok(1), None, at(1)).with_template(Some(t.clone()));
        assert!(changed(Some(&a), &b));
        assert!(!changed(Some(&b), &b.clone().with_template(Some(t))));
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
}
