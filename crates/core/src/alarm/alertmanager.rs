//! Prometheus Alertmanager webhook payloads (`version: "4"`): a group of alerts, each firing
//! or resolved, identified by its label fingerprint and start time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::intake::{Batch, DedupeKey, Rejected, dedupe_key};

/// The webhook body Alertmanager POSTs to a `webhook_configs` receiver, its alerts parsed one
/// by one: a malformed alert is refused alone (listed in `rejected`), the others are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// Payload format version; Alertmanager sends `"4"`.
    pub version: Option<String>,
    /// Group key.
    pub group_key: Option<String>,
    /// Alerts left out because of `max_alerts`.
    pub truncated_alerts: u64,
    /// `firing` when at least one alert fires.
    pub status: Option<String>,
    /// Receiver name.
    pub receiver: Option<String>,
    /// Labels the group is keyed by.
    pub group_labels: BTreeMap<String, String>,
    /// Labels every alert shares.
    pub common_labels: BTreeMap<String, String>,
    /// Annotations every alert shares.
    pub common_annotations: BTreeMap<String, String>,
    /// Alertmanager's URL.
    pub external_url: Option<String>,
    /// The alerts that parsed, in payload order.
    pub alerts: Vec<Alert>,
    /// The first refused alerts (index in `alerts` of the body, reason).
    pub rejected: Vec<Rejected>,
    /// How many alerts were refused in all.
    pub rejected_total: usize,
}

impl Payload {
    /// The alerts with the refused ones, for the intake.
    pub fn into_batch(self) -> Batch<Alert> {
        Batch {
            items: self.alerts,
            rejected: self.rejected,
            rejected_total: self.rejected_total,
        }
    }
}

/// The body as sent, its alerts left raw so each is parsed on its own. Public for the
/// runtime's OpenAPI document, which describes the webhook's body with its schema.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "AlertmanagerPayload")]
pub struct WirePayload<'a> {
    /// Payload format version; Alertmanager sends `"4"`, the only one accepted.
    #[serde(default)]
    #[schemars(extend("enum" = ["4", null]))]
    pub version: Option<String>,
    /// Group key.
    #[serde(default)]
    pub group_key: Option<String>,
    /// Alerts left out because of `max_alerts`.
    #[serde(default)]
    pub truncated_alerts: u64,
    /// `firing` when at least one alert fires.
    #[serde(default)]
    pub status: Option<String>,
    /// Receiver name.
    #[serde(default)]
    pub receiver: Option<String>,
    /// Labels the group is keyed by.
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    /// Labels every alert shares.
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    /// Annotations every alert shares.
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    /// Alertmanager's URL.
    #[serde(default, rename = "externalURL")]
    pub external_url: Option<String>,
    /// The alerts, unparsed (each is parsed on its own).
    #[serde(borrow)]
    #[schemars(with = "Vec<Alert>")]
    pub alerts: Vec<&'a RawValue>,
}

/// Whether an alert fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// The alert is active: a matching `rollbackOn` rule rolls its canary back.
    #[default]
    Firing,
    /// Resolved: never triggers a rollback.
    Resolved,
}

/// One alert.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Firing or resolved.
    pub status: AlertStatus,
    /// Identifying labels (`alertname`, ...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations (`summary`, `description`, ...).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (stays the same on every re-notification).
    pub starts_at: Option<DateTime<Utc>>,
    /// When it ended or will be considered resolved (`0001-01-01T00:00:00Z` when unknown).
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// Link to the source expression.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: Option<String>,
    /// Hash of the labels.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

impl Alert {
    /// A resolved alert never triggers.
    pub fn is_resolved(&self) -> bool {
        self.status == AlertStatus::Resolved
    }

    /// The `alertname` label.
    pub fn rule_label(&self) -> String {
        self.labels
            .get("alertname")
            .cloned()
            .unwrap_or_else(|| "unknown".to_string())
    }

    /// The other labels, Prometheus style: `{namespace="bookinfo", service="reviews"}`.
    pub fn entity_label(&self) -> String {
        let parts: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "alertname")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{{{}}}", parts.join(", "))
    }

    /// The `summary` (else `description`) annotation.
    pub fn message(&self) -> String {
        self.annotations
            .get("summary")
            .or_else(|| self.annotations.get("description"))
            .cloned()
            .unwrap_or_default()
    }

    /// Identity: fingerprint (else the labels) + start time; a re-notification of the same
    /// firing alert repeats both. Hashed: fixed size whatever the labels hold.
    pub fn dedupe_keys(&self) -> Vec<DedupeKey> {
        let at = self
            .starts_at
            .map(|t| (t.timestamp(), t.timestamp_subsec_nanos()));
        let key = match &self.fingerprint {
            Some(f) if !f.is_empty() => dedupe_key(&("am-fp", f, at)),
            _ => dedupe_key(&("am-labels", &self.labels, at)),
        };
        vec![key]
    }
}

/// Why a payload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not the webhook JSON shape.
    #[error("not an Alertmanager webhook payload: {0}")]
    Shape(String),
    /// A payload version this daemon does not know.
    #[error("unsupported Alertmanager payload version {0:?} (expected \"4\")")]
    Version(String),
}

/// Parses a webhook body: a body that is not the webhook shape, or of another version, is
/// refused whole; then each alert on its own. An alert without `startsAt` is kept with an
/// unknown start (it can then never count as older than a canary's run).
pub fn parse_payload(body: &[u8]) -> Result<Payload, ParseError> {
    let p: WirePayload<'_> =
        serde_json::from_slice(body).map_err(|e| ParseError::Shape(e.to_string()))?;
    if let Some(v) = &p.version
        && v != "4"
    {
        return Err(ParseError::Version(v.clone()));
    }
    let batch = Batch::parse(&p.alerts, Ok::<Alert, String>);
    Ok(Payload {
        version: p.version,
        group_key: p.group_key,
        truncated_alerts: p.truncated_alerts,
        status: p.status,
        receiver: p.receiver,
        group_labels: p.group_labels,
        common_labels: p.common_labels,
        common_annotations: p.common_annotations,
        external_url: p.external_url,
        alerts: batch.items,
        rejected: batch.rejected,
        rejected_total: batch.rejected_total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::intake::{Incoming, Verdict, verdict};
    use crate::alarm::matcher::RollbackRules;
    use skycanary_api::resources::canary::{AlertMatcher, RollbackOn};

    const FIRING: &str = include_str!("fixtures/alertmanager-firing.json");
    const RESOLVED: &str = include_str!("fixtures/alertmanager-resolved.json");

    fn rules() -> RollbackRules {
        RollbackRules::compile(Some(&RollbackOn {
            alarms: Vec::new(),
            alerts: vec![AlertMatcher {
                labels: [
                    ("alertname".to_string(), "HighErrorRate".to_string()),
                    ("service".to_string(), "reviews.*".to_string()),
                ]
                .into(),
            }],
        }))
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn judge(a: &Alert, run: &str) -> Verdict {
        verdict(&Incoming::Alert(a.clone()), &rules(), Some(t(run)))
    }

    #[test]
    fn firing_payload_parses_every_field() {
        let p = parse_payload(FIRING.as_bytes()).unwrap();
        assert_eq!(p.version.as_deref(), Some("4"));
        assert_eq!(p.receiver.as_deref(), Some("skycanary"));
        assert_eq!(p.status.as_deref(), Some("firing"));
        assert_eq!(p.truncated_alerts, 0);
        assert_eq!(p.group_labels["alertname"], "HighErrorRate");
        assert_eq!(p.common_labels["namespace"], "bookinfo");
        assert_eq!(p.common_annotations["summary"], "5xx ratio above 5%");
        assert_eq!(
            p.external_url.as_deref(),
            Some("http://alertmanager.monitoring:9093")
        );
        assert!(p.group_key.as_deref().unwrap().contains("HighErrorRate"));
        let a = &p.alerts[0];
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.starts_at, Some(t("2024-07-01T12:03:00.123456789Z")));
        assert_eq!(a.fingerprint.as_deref(), Some("c2e8d2a1f0b3e4d5"));
        assert!(
            a.generator_url
                .as_deref()
                .unwrap()
                .starts_with("http://prometheus")
        );
        assert_eq!(a.rule_label(), "HighErrorRate");
        assert_eq!(
            a.entity_label(),
            "{namespace=\"bookinfo\", service=\"reviews-canary\", severity=\"page\"}"
        );
        assert_eq!(a.message(), "5xx ratio above 5%");
    }

    #[test]
    fn a_firing_alert_on_the_canary_matches_and_others_do_not() {
        let p = parse_payload(FIRING.as_bytes()).unwrap();
        assert_eq!(
            judge(&p.alerts[0], "2024-07-01T12:00:00Z"),
            Verdict::Trigger
        );
        assert_eq!(
            judge(&p.alerts[1], "2024-07-01T12:00:00Z"),
            Verdict::NoMatch
        );
    }

    #[test]
    fn resolved_alerts_are_ignored() {
        let p = parse_payload(RESOLVED.as_bytes()).unwrap();
        assert!(p.alerts[0].is_resolved());
        assert_eq!(
            judge(&p.alerts[0], "2024-07-01T12:00:00Z"),
            Verdict::Recovered
        );
    }

    #[test]
    fn alerts_that_started_before_the_run_are_ignored() {
        let p = parse_payload(FIRING.as_bytes()).unwrap();
        assert_eq!(
            judge(&p.alerts[0], "2024-07-01T12:05:00Z"),
            Verdict::OlderThanRun
        );
    }

    #[test]
    fn renotifications_share_an_identity() {
        let a = parse_payload(FIRING.as_bytes()).unwrap().alerts[0].clone();
        let r = parse_payload(RESOLVED.as_bytes()).unwrap().alerts[0].clone();
        assert_eq!(a.dedupe_keys(), r.dedupe_keys());
        let later = Alert {
            starts_at: Some(t("2024-07-01T13:00:00Z")),
            ..a.clone()
        };
        assert_ne!(a.dedupe_keys(), later.dedupe_keys(), "it fired again");
        let no_fp = Alert {
            fingerprint: None,
            ..a.clone()
        };
        let mut relabelled = no_fp.clone();
        relabelled
            .labels
            .insert("service".into(), "ratings-canary".into());
        assert_ne!(no_fp.dedupe_keys(), relabelled.dedupe_keys(), "by labels");
        assert_ne!(no_fp.dedupe_keys(), a.dedupe_keys());
        let unknown_start = Alert {
            starts_at: None,
            ..no_fp.clone()
        };
        assert_ne!(unknown_start.dedupe_keys(), no_fp.dedupe_keys());
    }

    #[test]
    fn malformed_payloads_are_refused_with_a_reason() {
        let e = parse_payload(b"[]").unwrap_err().to_string();
        assert!(e.contains("not an Alertmanager webhook payload"), "{e}");
        let e = parse_payload(br#"{"version": "3", "alerts": []}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("version \"3\""), "{e}");
        let e = parse_payload(br#"{"alerts": 3}"#).unwrap_err().to_string();
        assert!(e.contains("not an Alertmanager"), "{e}");
        assert!(
            parse_payload(br#"{"alerts": []}"#)
                .unwrap()
                .alerts
                .is_empty()
        );
    }

    #[test]
    fn a_malformed_alert_is_refused_alone() {
        let p = parse_payload(
            br#"{"version": "4", "alerts": [
                {"status": "pending", "startsAt": "2024-07-01T12:00:00Z"},
                {"status": "firing", "labels": {"alertname": "A"}, "startsAt": "2024-07-01T12:00:00Z"},
                {"status": "firing", "startsAt": "yesterday"},
                {"status": "firing", "labels": {"alertname": "B"}}
            ]}"#,
        )
        .unwrap();
        let names: Vec<_> = p.alerts.iter().map(Alert::rule_label).collect();
        assert_eq!(names, vec!["A", "B"]);
        assert_eq!(p.rejected_total, 2);
        assert_eq!(p.rejected[0].index, 0);
        assert!(p.rejected[0].error.contains("pending"), "{p:?}");
        assert_eq!(p.rejected[1].index, 2);
        assert_eq!(p.alerts[1].starts_at, None, "kept, its start unknown");
    }

    #[test]
    fn an_alert_without_a_plausible_start_is_never_older_than_the_run() {
        let a = parse_payload(FIRING.as_bytes()).unwrap().alerts[0].clone();
        for starts_at in [
            None,
            Some(t("0001-01-01T00:00:00Z")),
            Some(t("1970-01-01T00:00:00Z")),
        ] {
            let odd = Alert {
                starts_at,
                ..a.clone()
            };
            assert_eq!(
                judge(&odd, "2024-07-01T12:05:00Z"),
                Verdict::Trigger,
                "{starts_at:?}"
            );
        }
    }
}
