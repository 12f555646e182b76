//! Invalid objects are never silent: a Canary or ScheduledAnalysis that fails validation gets
//! the message `skycanary validate` prints (field path included) in its status — Canary phase
//! `Invalid`, condition `InvalidSpec=True` — and a Warning Event (reason `InvalidSpec`) in
//! cluster mode. A valid spec clears it: the next task to drive the object resumes from the
//! phase the refusal interrupted and its first write derives `InvalidSpec=False`.
//!
//! Only objects no task drives are written here (in cluster mode an invalid Canary's task is
//! stopped first; in file mode a refused reload keeps the running task on its previous spec,
//! whose own writes own the status), so two writers never race over one status.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::TaskRegistry;
use crate::canary::CanaryStatus;
use crate::resources::ConfigError;
use crate::schedule::store::ScheduleStatusStore;
use crate::server::CanarySummary;
use crate::state::StatusStore;
use crate::state::status::mark_invalid;

/// The kinds with a status to mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InvalidKind {
    /// A Canary.
    Canary,
    /// A ScheduledAnalysis.
    ScheduledAnalysis,
}

impl InvalidKind {
    /// The Kubernetes kind.
    pub fn kind(self) -> &'static str {
        match self {
            InvalidKind::Canary => "Canary",
            InvalidKind::ScheduledAnalysis => "ScheduledAnalysis",
        }
    }
}

/// One refused object and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Which resource was refused: its status and Event are written on that kind.
    pub kind: InvalidKind,
    /// The refused object's namespace.
    pub namespace: String,
    /// The refused object's name.
    pub name: String,
    /// What `validate` prints, one problem per `; `.
    pub message: String,
    /// The refused object's `metadata.generation` (cluster mode), written as
    /// `status.observedGeneration`: the status says which version of the spec it refused.
    pub generation: Option<i64>,
    /// The refused object's `metadata.uid` (cluster mode): its Warning Event names it, or
    /// `kubectl describe` would not list the Event.
    pub uid: Option<String>,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.kind(), self.namespace, self.name)
    }
}

/// A span naming one object the way the drivers' spans do (`namespace` plus `canary` or
/// `scheduledanalysis`, and `kind`), for the lines logged about it outside its task; other
/// kinds (templates) get `name`. `namespace` is empty for cluster-scoped objects.
pub fn object_span(kind: &str, namespace: &str, name: &str) -> tracing::Span {
    match kind {
        "Canary" => tracing::info_span!("canary", namespace, canary = name, kind),
        "ScheduledAnalysis" => {
            tracing::info_span!(
                "scheduledanalysis",
                namespace,
                scheduledanalysis = name,
                kind
            )
        }
        _ => tracing::info_span!("object", namespace, name, kind),
    }
}

/// Longest refusal message kept in a status (the rest is in the daemon's log and `validate`).
pub const MAX_INVALID_MESSAGE_CHARS: usize = 4096;

/// The problems of one object as one line, as `validate` prints each of them.
pub fn message(errors: &[ConfigError]) -> String {
    let joined = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    joined.chars().take(MAX_INVALID_MESSAGE_CHARS).collect()
}

/// What was reported, so each refusal is written and announced once — again only when its
/// message or its generation changes, or after the object was valid (or gone) in between.
#[derive(Debug, Default)]
pub struct InvalidReports {
    reported: BTreeMap<(InvalidKind, String, String), (String, Option<i64>)>,
    /// The refused Canaries' statuses as last written, for the API.
    listed: BTreeMap<(String, String), CanaryStatus>,
}

impl InvalidReports {
    /// Of the objects invalid now, those whose report is due; forgets the rest.
    pub fn due(&mut self, now: &[Invalid]) -> Vec<Invalid> {
        let key = |i: &Invalid| (i.kind, i.namespace.clone(), i.name.clone());
        self.reported
            .retain(|k, _| now.iter().any(|i| key(i) == *k));
        self.listed.retain(|(ns, n), _| {
            now.iter()
                .any(|i| i.kind == InvalidKind::Canary && i.namespace == *ns && i.name == *n)
        });
        now.iter()
            .filter(|i| self.reported.get(&key(i)) != Some(&(i.message.clone(), i.generation)))
            .cloned()
            .collect()
    }

    /// Records a report as written (a failed one is left out, so it is tried again).
    pub fn written(&mut self, i: &Invalid) {
        self.reported.insert(
            (i.kind, i.namespace.clone(), i.name.clone()),
            (i.message.clone(), i.generation),
        );
    }
}

/// Where refusals go.
pub struct InvalidSinks<'a> {
    /// Canary statuses.
    pub canaries: &'a StatusStore,
    /// ScheduledAnalysis statuses.
    pub schedules: &'a ScheduleStatusStore,
    /// Cluster mode: Events.
    pub events: Option<&'a crate::traffic::kube::EventRecorder>,
    /// The API's list of canaries.
    pub registry: &'a TaskRegistry,
    /// Notifications (an invalid spec's own subscriptions cannot be trusted: the daemon's
    /// defaults get it).
    pub notifier: &'a crate::notify::Notifier,
}

/// Reports every object of `invalid` (each driven by no task) whose report is due: logged with
/// its `namespace/name`, written into its status, announced as a Warning Event; then lists the
/// refused Canaries in the API.
pub async fn report(
    reports: &mut InvalidReports,
    invalid: &[Invalid],
    sinks: &InvalidSinks<'_>,
    now: DateTime<Utc>,
) {
    for i in reports.due(invalid) {
        let kind = i.kind.kind();
        let span = object_span(kind, &i.namespace, &i.name);
        tracing::error!(parent: &span, "invalid {kind}, not driven until fixed: {}", i.message);
        match write_status(&i, sinks.canaries, sinks.schedules, now).await {
            Ok(st) => {
                if let Some(st) = st {
                    reports
                        .listed
                        .insert((i.namespace.clone(), i.name.clone()), st);
                }
                reports.written(&i);
            }
            Err(e) => {
                tracing::warn!(parent: &span, "cannot record the refusal in the status: {e}");
                continue;
            }
        }
        sinks.notifier.notify(
            None,
            &crate::notify::invalid_spec(
                kind,
                &i.namespace,
                &i.name,
                i.generation,
                &i.message,
                now,
            ),
        );
        if let Some(client) = sinks.events
            && let Err(e) = emit_event(client, &i).await
        {
            tracing::warn!(parent: &span, "cannot record the InvalidSpec event: {e}");
        }
    }
    sinks.registry.set_invalid(
        reports
            .listed
            .iter()
            .map(|((namespace, name), status)| CanarySummary {
                namespace: namespace.clone(),
                name: name.clone(),
                steps: 0,
                status: status.clone(),
            })
            .collect(),
    );
}

/// Writes the refusal into the object's status (keeping the rest of it) and returns the
/// Canary status written (`None` for a ScheduledAnalysis).
pub async fn write_status(
    i: &Invalid,
    canaries: &StatusStore,
    schedules: &ScheduleStatusStore,
    now: DateTime<Utc>,
) -> Result<Option<CanaryStatus>, String> {
    match i.kind {
        InvalidKind::Canary => {
            let current = canaries
                .load_raw(&i.namespace, &i.name)
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            let mut st = mark_invalid(current, &i.message);
            canaries
                .save(&i.namespace, &i.name, &mut st, i.generation, now)
                .await?;
            Ok(Some(st))
        }
        InvalidKind::ScheduledAnalysis => {
            let mut st = schedules
                .load_raw(&i.namespace, &i.name)
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            st.invalid_spec = Some(i.message.clone());
            schedules
                .save(&i.namespace, &i.name, &mut st, i.generation, now)
                .await
                .map_err(|e| e.to_string())?;
            Ok(None)
        }
    }
}

/// Announces the refusal as a Warning Event on the object (cluster mode).
pub async fn emit_event(
    events: &crate::traffic::kube::EventRecorder,
    i: &Invalid,
) -> Result<(), String> {
    use crate::traffic::kube::{EventType, emit_event};
    let involved = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(crate::resources::API_VERSION.to_string()),
        kind: Some(i.kind.kind().into()),
        name: Some(i.name.clone()),
        namespace: Some(i.namespace.clone()),
        uid: i.uid.clone(),
        ..Default::default()
    };
    emit_event(
        events,
        &i.namespace,
        &involved,
        "InvalidSpec",
        &format!("spec refused, not driven until fixed: {}", i.message),
        EventType::Warning,
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(name: &str, message: &str) -> Invalid {
        Invalid {
            kind: InvalidKind::Canary,
            namespace: "ns".into(),
            name: name.into(),
            message: message.into(),
            generation: Some(1),
            uid: None,
        }
    }

    #[test]
    fn each_refusal_is_reported_once_until_it_changes_or_clears() {
        let mut r = InvalidReports::default();
        let a = inv("a", "setWeight: 150");
        assert_eq!(r.due(std::slice::from_ref(&a)), vec![a.clone()]);
        // Not written (the API failed): due again.
        assert_eq!(r.due(std::slice::from_ref(&a)), vec![a.clone()]);
        r.written(&a);
        assert!(r.due(std::slice::from_ref(&a)).is_empty());
        let a2 = inv("a", "setWeight: 200");
        assert_eq!(r.due(std::slice::from_ref(&a2)), vec![a2.clone()]);
        r.written(&a2);
        // Valid in between: a new refusal with the old message is reported again.
        assert!(r.due(&[]).is_empty());
        assert_eq!(r.due(std::slice::from_ref(&a2)), vec![a2.clone()]);
        // Kinds are apart.
        r.written(&a2);
        let s = Invalid {
            kind: InvalidKind::ScheduledAnalysis,
            ..a2.clone()
        };
        assert_eq!(r.due(&[a2.clone(), s.clone()]), vec![s]);
    }

    #[test]
    fn a_new_generation_with_the_same_message_is_reported_again() {
        let mut r = InvalidReports::default();
        let a = inv("a", "spec.analysis.startingStep: step 9 does not exist");
        r.written(&a);
        assert!(r.due(std::slice::from_ref(&a)).is_empty());
        // Edited, still refused for the same reason: the status must name the new generation.
        let a2 = Invalid {
            generation: Some(2),
            uid: None,
            ..a.clone()
        };
        assert_eq!(r.due(std::slice::from_ref(&a2)), vec![a2.clone()]);
    }

    #[tokio::test]
    async fn the_refusal_is_written_with_the_refused_generation() {
        let dir = tempfile::tempdir().unwrap();
        let files = crate::state::FileStatusStore::open(dir.path()).unwrap();
        let canaries = StatusStore::file(files.clone());
        let schedules = ScheduleStatusStore::file(files);
        let a = Invalid {
            generation: Some(7),
            uid: None,
            ..inv("a", "spec.analysis.startingStep: step 9 does not exist")
        };
        let st = write_status(&a, &canaries, &schedules, chrono::Utc::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(st.observed_generation, Some(7));
        let saved = canaries.load_raw("ns", "a").await.unwrap().unwrap();
        assert_eq!(saved.phase, crate::canary::CanaryPhase::Invalid);
        assert_eq!(saved.observed_generation, Some(7));
        let cond = saved
            .conditions
            .iter()
            .find(|c| c.type_ == "InvalidSpec")
            .unwrap();
        assert_eq!(cond.status, "True");
        assert_eq!(cond.observed_generation, Some(7));
        assert!(
            cond.message.contains("spec.analysis.startingStep"),
            "{cond:?}"
        );
    }

    #[test]
    fn the_message_is_what_validate_prints_and_bounded() {
        let e = |path: &str, m: &str| ConfigError {
            file: "canary.yaml".into(),
            line: Some(9),
            path: path.into(),
            message: m.into(),
        };
        assert_eq!(
            message(&[e("spec.steps[0].setWeight", "150 > 100"), e(".", "x")]),
            "canary.yaml:9: spec.steps[0].setWeight: 150 > 100; canary.yaml:9: x"
        );
        let long = message(&[e("p", &"y".repeat(10_000))]);
        assert_eq!(long.chars().count(), MAX_INVALID_MESSAGE_CHARS);
    }
}
