//! A canary's workload readiness as data (issue 19): what a canary asks about
//! ([`ReadinessQuery`]), how two sides' counts become a [`ReadinessStatus`], when a new one is
//! a change worth feeding the machine, the pod template hash an automatic revision comes from,
//! and how `fromSubset` references become plain selectors ([`plan_read`]). The sources that
//! read the workloads (files, the cluster) and the task that polls them are in the runtime
//! (`canary::readiness`).

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
    status_from(canary_ready, stable_ready, &why, now)
}

/// The status of what was counted (`None`: unknown), the reasons of what was not joined into
/// its message; no template yet ([`with_template`] adds it).
pub fn status_from(
    canary_ready: Option<i64>,
    stable_ready: Option<i64>,
    why: &[String],
    now: DateTime<Utc>,
) -> ReadinessStatus {
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
    /// The canary's subset (`canarySubsetName`), whose labels select its pods.
    pub canary: String,
    /// The stable subset (`stableSubsetName`), whose labels select its pods.
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

/// What reading a query's readiness comes to once its `fromSubset` references are turned
/// into the selectors of their DestinationRule subsets.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadPlan {
    /// Nothing is asked of the source: the canary's subset cannot be resolved, so neither
    /// side is counted (the status says why — unknown, never 0 ready).
    Unknown(ReadinessStatus),
    /// Ask the source about `query` (plain selectors only), then [`complete_read`] its answer
    /// with `stable_error`: the stable side's subset could not be resolved, so it is not
    /// asked and stays unknown with this reason.
    Ask {
        /// The query with its references resolved.
        query: ReadinessQuery,
        /// Why the stable side is unknown, when it is.
        stable_error: Option<String>,
    },
}

/// How to read `query`'s readiness: with `subsets` (which DestinationRule subsets its
/// `fromSubset` references read, and that DestinationRule as last read, or why it could not
/// be), its references are resolved first ([`resolve_ref`]); without, it is asked as it is.
pub fn plan_read(
    query: &ReadinessQuery,
    subsets: Option<(&SubsetRefs, &Result<serde_json::Value, String>)>,
    now: DateTime<Utc>,
) -> ReadPlan {
    let Some((refs, dr)) = subsets else {
        return ReadPlan::Ask {
            query: query.clone(),
            stable_error: None,
        };
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
            return ReadPlan::Unknown(status_of(Err(why), stable, now));
        }
    };
    let (stable, stable_error) = match stable {
        None => (None, None),
        Some(Ok(s)) => (Some(s), None),
        Some(Err(e)) => (None, Some(e)),
    };
    ReadPlan::Ask {
        query: ReadinessQuery {
            workload,
            stable,
            ..query.clone()
        },
        stable_error,
    }
}

/// The source's answer to a [`ReadPlan::Ask`]: with `stable_error`, the stable side is
/// unknown and its reason joins the message.
pub fn complete_read(mut status: ReadinessStatus, stable_error: Option<String>) -> ReadinessStatus {
    if let Some(e) = stable_error {
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
#[path = "readiness_tests.rs"]
mod tests;
