//! Which revision a canary is for (issue 19). With `spec.revision` the user says it; without
//! it, and with a `workloadRef` naming a Deployment or StatefulSet, the canary workload's pod
//! template does: its hash (reported by the readiness source) is the revision, so a new image
//! synced by Argo CD starts a run by itself. The driver resolves the revision with
//! [`resolve`] and hands the machine a spec carrying it, as if the user had written it.

use super::model::{CanaryPhase, CanaryStatus};
use crate::resources::canary::CanarySpec;

/// True when the canary's revision comes from its workload's pod template: no
/// `spec.revision`, and a `workloadRef` by kind and name (a pod selector has no template).
pub fn automatic(spec: &CanarySpec) -> bool {
    spec.revision.is_none()
        && spec
            .workload_ref
            .as_ref()
            .is_some_and(|w| w.kind.is_some() && w.name.is_some())
}

/// What an automatic canary's revision is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The observed template's hash: a run for it starts unless the status is already on it.
    Template(String),
    /// The status' revision stays: the template is the one its run stands for, or it is not
    /// known now (a watch error, the workload deleted mid-run) — never a reason to restart.
    Keep,
    /// The status' revision was given by `spec.revision` before it was removed: the observed
    /// template is recorded as the one that revision stands for, without a run. Its pods are
    /// what that run already judged (promoted, or rolled back); a new run would send traffic
    /// to them again. The next template change starts a run.
    Adopt(String),
    /// No run can start: the template is not known (why).
    Wait(String),
}

/// The revision of an automatic canary, from its status and the last observation in it
/// (`status.readiness`, fed to the machine before the spec is looked at).
pub fn resolve(status: &CanaryStatus) -> Resolution {
    let never_started = status.started_at.is_none() && status.phase == CanaryPhase::Pending;
    let observed = status.readiness.as_ref();
    let Some(hash) = observed.and_then(|r| r.template_hash.clone()) else {
        if !never_started {
            return Resolution::Keep;
        }
        let why = observed
            .and_then(|r| r.message.clone())
            .unwrap_or_else(|| "the canary workload is not observed yet".into());
        return Resolution::Wait(format!(
            "not started: the revision comes from the canary workload's pod template, which \
             is not known: {why}"
        ));
    };
    if never_started {
        return Resolution::Template(hash);
    }
    match &status.template_hash {
        Some(h) if *h == hash => Resolution::Keep,
        Some(_) => Resolution::Template(hash),
        None if status.revision.as_deref() == Some(hash.as_str()) => Resolution::Keep,
        None => Resolution::Adopt(hash),
    }
}

/// The revision the machine is handed for `resolution` over `status`.
pub fn effective(resolution: &Resolution, status: &CanaryStatus) -> Option<String> {
    match resolution {
        Resolution::Template(h) => Some(h.clone()),
        Resolution::Keep | Resolution::Adopt(_) | Resolution::Wait(_) => status.revision.clone(),
    }
}

/// `reviews:2.1.0, sidecar:1` for messages, `None` without images.
pub fn images_text(images: &[String]) -> Option<String> {
    (!images.is_empty()).then(|| images.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::model::ReadinessStatus;
    use crate::resources::canary::{WorkloadKind, WorkloadRef};

    fn at(s: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(s, 0).unwrap()
    }

    fn observed(hash: Option<&str>, message: Option<&str>) -> Option<ReadinessStatus> {
        Some(ReadinessStatus {
            canary_ready: Some(1),
            stable_ready: None,
            observed_at: at(0),
            message: message.map(String::from),
            template_hash: hash.map(String::from),
            images: vec!["reviews:2.1.0".into()],
        })
    }

    fn started(revision: &str, template: Option<&str>, phase: CanaryPhase) -> CanaryStatus {
        CanaryStatus {
            phase,
            revision: Some(revision.into()),
            started_at: Some(at(1)),
            template_hash: template.map(String::from),
            ..CanaryStatus::default()
        }
    }

    #[test]
    fn automatic_needs_no_revision_and_a_named_workload() {
        let mut spec = CanarySpec::default();
        assert!(
            !automatic(&spec),
            "no workload: the spec's revision (none) as before"
        );
        spec.workload_ref = Some(WorkloadRef {
            kind: Some(WorkloadKind::Deployment),
            name: Some("reviews-v2".into()),
            selector: None,
            from_subset: false,
        });
        assert!(automatic(&spec));
        spec.revision = Some("v2".into());
        assert!(!automatic(&spec), "spec.revision wins");
        spec.revision = None;
        spec.workload_ref = Some(WorkloadRef::default());
        assert!(!automatic(&spec), "a selector has no template");
    }

    #[test]
    fn a_first_sight_adopts_the_template_as_the_first_runs_revision() {
        let st = CanaryStatus {
            readiness: observed(Some("abc0123456"), None),
            ..CanaryStatus::default()
        };
        assert_eq!(resolve(&st), Resolution::Template("abc0123456".into()));
        assert_eq!(effective(&resolve(&st), &st).as_deref(), Some("abc0123456"));
    }

    #[test]
    fn an_unknown_template_waits_before_the_first_run_and_keeps_the_run_after() {
        let mut st = CanaryStatus {
            readiness: observed(
                None,
                Some("canary: Deployment bookinfo/reviews-v2 not found"),
            ),
            ..CanaryStatus::default()
        };
        match resolve(&st) {
            Resolution::Wait(why) => assert!(
                why.contains("Deployment bookinfo/reviews-v2 not found"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        st.readiness = None;
        assert!(matches!(resolve(&st), Resolution::Wait(w) if w.contains("not observed yet")));
        // Mid-run, or after it: a lost template never restarts anything.
        for phase in [
            CanaryPhase::Progressing,
            CanaryPhase::Paused,
            CanaryPhase::Promoted,
            CanaryPhase::Aborted,
        ] {
            let mut st = started("abc0123456", Some("abc0123456"), phase);
            st.readiness = observed(None, Some("watching Deployments failed"));
            assert_eq!(resolve(&st), Resolution::Keep, "{phase:?}");
            assert_eq!(
                effective(&Resolution::Keep, &st).as_deref(),
                Some("abc0123456")
            );
        }
    }

    #[test]
    fn a_new_template_is_a_new_revision_and_the_same_one_is_not() {
        for phase in [
            CanaryPhase::Progressing,
            CanaryPhase::Promoted,
            CanaryPhase::Aborted,
        ] {
            let mut st = started("abc0123456", Some("abc0123456"), phase);
            st.readiness = observed(Some("abc0123456"), None);
            assert_eq!(resolve(&st), Resolution::Keep);
            st.readiness = observed(Some("def0123456"), None);
            assert_eq!(resolve(&st), Resolution::Template("def0123456".into()));
        }
    }

    #[test]
    fn removing_an_explicit_revision_adopts_the_template_without_a_run() {
        // Promoted (or rolled back) on spec.revision v2; the user removes spec.revision.
        for phase in [
            CanaryPhase::Promoted,
            CanaryPhase::Aborted,
            CanaryPhase::Progressing,
        ] {
            let mut st = started("v2", None, phase);
            st.readiness = observed(Some("abc0123456"), None);
            let r = resolve(&st);
            assert_eq!(r, Resolution::Adopt("abc0123456".into()));
            // The machine sees the status' own revision: no new run.
            assert_eq!(effective(&r, &st).as_deref(), Some("v2"));
            // Once adopted, the same template keeps it, the next one starts a run.
            st.template_hash = Some("abc0123456".into());
            assert_eq!(resolve(&st), Resolution::Keep);
            st.readiness = observed(Some("fff0123456"), None);
            assert_eq!(resolve(&st), Resolution::Template("fff0123456".into()));
        }
        // A status whose revision already is the hash needs no adoption.
        let mut st = started("abc0123456", None, CanaryPhase::Promoted);
        st.readiness = observed(Some("abc0123456"), None);
        assert_eq!(resolve(&st), Resolution::Keep);
    }

    #[test]
    fn images_read_as_a_list() {
        assert_eq!(images_text(&[]), None);
        assert_eq!(
            images_text(&["a:1".into(), "b:2".into()]).as_deref(),
            Some("a:1, b:2")
        );
    }
}
