//! `skycanary status|promote|abort|retry|pause|resume --kube`: the same commands without the
//! daemon's API, straight against the cluster. Reads list the Canaries' `.status`; an action
//! writes a request into `status.command` (a merge patch of that one key through the status
//! subresource, so it never races the daemon's own status writes) and waits until the leading
//! daemon answers in `status.lastCommand`. The daemon carries it out with the same state
//! machine as an API call, so both paths behave identically.

use std::time::Duration;

use chrono::Utc;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;

use crate::canary::{CommandAction, CommandOutcome, CommandRequest};
use crate::server::CanarySummary;
use crate::state::kube_status::{canary_resource, parse_status, write_request};

/// A client from the kubeconfig / in-cluster configuration, like `run --kube`.
pub async fn client() -> Result<Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_default()
        .await
        .map_err(|e| format!("cannot configure the Kubernetes client: {e}"))
}

fn api(client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = canary_resource();
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// A failed request about Canary `what`: a missing Canary is said plainly, every other
/// failure as [`crate::traffic::kube::describe`] words it.
fn failed_for(err: kube::Error, what: &str) -> String {
    match err {
        kube::Error::Api(s) if s.is_not_found() => format!("no Canary {what}"),
        e @ kube::Error::Api(_) => format!("Canary {what}: {}", crate::traffic::kube::describe(&e)),
        other => format!(
            "cannot reach the Kubernetes API for Canary {what}: {}",
            crate::traffic::kube::describe(&other)
        ),
    }
}

/// What `status` shows of one Canary object.
pub fn summary(obj: &DynamicObject) -> Result<CanarySummary, String> {
    let namespace = obj.metadata.namespace.clone().unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let steps = obj
        .data
        .get("spec")
        .and_then(|s| s.get("steps"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let status = parse_status(obj.data.get("status"))
        .map_err(|e| format!("Canary {namespace}/{name} has an unreadable status: {e}"))?
        .unwrap_or_default();
    Ok(CanarySummary {
        namespace,
        name,
        steps,
        status,
    })
}

/// One Canary (`NS/NAME`), or every Canary in `namespace` (all namespaces when None).
pub async fn canaries(
    client: &Client,
    one: Option<&str>,
    namespace: Option<&str>,
) -> Result<Vec<CanarySummary>, String> {
    if let Some((ns, name)) = one.and_then(|c| c.split_once('/')) {
        let obj = api(client, Some(ns))
            .get(name)
            .await
            .map_err(|e| failed_for(e, &format!("{ns}/{name}")))?;
        return Ok(vec![summary(&obj)?]);
    }
    let what = namespace.map_or("in any namespace".to_string(), |n| format!("in {n}"));
    let list = api(client, namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| failed_for(e, &what))?;
    let mut out = list
        .items
        .iter()
        .map(summary)
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

/// A request id unique across clients (see [`CommandRequest::new_id`]).
pub fn request_id() -> String {
    CommandRequest::new_id()
}

/// Who is asking, for the audit trail in the status (`user@host`).
fn requester() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

/// What became of a request.
#[derive(Debug)]
pub enum RequestResult {
    /// The daemon carried it out; the canary afterwards.
    Done(CanarySummary),
    /// The daemon refused it (message), the canary as it is.
    Refused(String, CanarySummary),
    /// Written, but no daemon answered within the wait (or no wait was asked for).
    Pending(String),
}

/// Writes `status.command` and waits up to `wait` for the daemon's `lastCommand` answer.
pub async fn request(
    client: &Client,
    namespace: &str,
    name: &str,
    action: CommandAction,
    full: bool,
    reason: Option<String>,
    wait: Duration,
) -> Result<RequestResult, String> {
    let what = format!("{namespace}/{name}");
    let api = api(client, Some(namespace));
    // Refuse early (and clearly) when the Canary does not exist: a status patch would 404 too,
    // but its message names the subresource.
    api.get_metadata(name)
        .await
        .map_err(|e| failed_for(e, &what))?;
    let req = CommandRequest {
        id: request_id(),
        action,
        full,
        reason,
        requested_at: Some(Utc::now()),
        requested_by: Some(requester()),
        alarm: None,
    };
    write_request(client, namespace, name, &req)
        .await
        .map_err(|e| failed_for(e, &what))?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let obj = api
            .get_status(name)
            .await
            .map_err(|e| failed_for(e, &what))?;
        let s = summary(&obj)?;
        if let Some(outcome) = answered(&s, &req.id) {
            return Ok(if outcome.accepted {
                RequestResult::Done(s)
            } else {
                let why = outcome.message.clone().unwrap_or_else(|| "refused".into());
                RequestResult::Refused(why, s)
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(RequestResult::Pending(req.id));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The daemon's answer to request `id`, if it answered.
pub fn answered<'a>(s: &'a CanarySummary, id: &str) -> Option<&'a CommandOutcome> {
    s.status.last_command.as_ref().filter(|c| c.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::CanaryPhase;
    use serde_json::json;

    #[test]
    fn request_ids_differ() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
    }

    #[test]
    fn summary_counts_steps_and_parses_status() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"steps": [{"setWeight": 10}, {"pause": {}}]},
            "status": {"phase": "Paused", "currentStepIndex": 1, "desiredWeight": 10,
                       "command": {"id": "x", "action": "promote"},
                       "lastCommand": {"id": "x", "action": "promote", "accepted": true,
                                       "at": "2026-11-21T00:00:00Z"}}
        }))
        .unwrap();
        let s = summary(&obj).unwrap();
        assert_eq!(
            (s.namespace.as_str(), s.name.as_str()),
            ("bookinfo", "reviews")
        );
        assert_eq!(s.steps, 2);
        assert_eq!(s.status.phase, CanaryPhase::Paused);
        assert!(answered(&s, "x").is_some_and(|c| c.accepted));
        assert!(answered(&s, "y").is_none());
    }

    #[test]
    fn unreadable_status_is_an_error_naming_the_canary() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"steps": []},
            "status": {"phase": "Sideways"}
        }))
        .unwrap();
        let e = summary(&obj).unwrap_err();
        assert!(e.contains("bookinfo/reviews"), "{e}");
    }
}
