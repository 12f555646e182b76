//! SkyWalking alarm webhook payloads (OAP 8.0 – 10.4): a JSON array of AlarmMessage whose
//! field set grew over versions; every field but the rule and entity is optional here.

use std::collections::{HashSet, VecDeque};

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

use super::matcher::AlarmMatchers;
use crate::resources::canary::AlarmMatcher;

/// One alarm as OAP sends it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmMessage {
    /// Scope id (1 = Service, ...).
    #[serde(default)]
    pub scope_id: Option<i64>,
    /// Scope name (`SERVICE`, ...).
    #[serde(default)]
    pub scope: Option<String>,
    /// Entity name (`reviews.bookinfo`, `inst of svc`, ...).
    #[serde(default)]
    pub name: String,
    /// Entity id (service: `base64(name).1`).
    #[serde(default)]
    pub id0: Option<String>,
    /// Relation destination id.
    #[serde(default)]
    pub id1: Option<String>,
    /// Alarm rule name.
    pub rule_name: String,
    /// Rendered message.
    #[serde(default)]
    pub alarm_message: Option<String>,
    /// Start time, epoch ms.
    #[serde(default)]
    pub start_time: Option<i64>,
    /// Tags (8.6+).
    #[serde(default)]
    pub tags: Vec<serde_json::Value>,
    /// Hooks (9.6+).
    #[serde(default)]
    pub hooks: Vec<String>,
    /// MQE rule expression (10.2+).
    #[serde(default)]
    pub expression: Option<String>,
    /// Metric snapshot (10.2+): values are JSON strings.
    #[serde(default)]
    pub mqe_metrics_snapshot: Option<serde_json::Value>,
    /// Same for trigger and recovery (10.4+).
    #[serde(default)]
    pub uuid: Option<String>,
    /// Set on recovery messages (10.4+).
    #[serde(default)]
    pub recovery_time: Option<i64>,
}

impl AlarmMessage {
    /// When the alarm started.
    pub fn started(&self) -> Option<DateTime<Utc>> {
        self.start_time
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
    }

    /// A recovery notice, which never triggers a rollback.
    pub fn is_recovery(&self) -> bool {
        self.recovery_time.is_some()
    }

    /// Identity for de-duplication: the uuid, else rule + entity + start time.
    pub fn identity(&self) -> String {
        match &self.uuid {
            Some(u) if !u.is_empty() => format!("uuid:{u}"),
            _ => format!(
                "{}|{}|{}",
                self.rule_name,
                self.id0.clone().unwrap_or_else(|| self.name.clone()),
                self.start_time.unwrap_or_default()
            ),
        }
    }
}

/// Why a payload was refused.
#[derive(Debug, thiserror::Error)]
#[error("not a SkyWalking alarm payload (a JSON array of AlarmMessage): {0}")]
pub struct ParseError(String);

/// Parses a webhook body.
pub fn parse_payload(body: &[u8]) -> Result<Vec<AlarmMessage>, ParseError> {
    serde_json::from_slice(body).map_err(|e| ParseError(e.to_string()))
}

/// True when `msg` matches one of the matchers (every regex a matcher sets must match; an
/// invalid regex matches nothing — validation refuses them at load time). Compiles the
/// regexes on every call: the daemon keeps an [`AlarmMatchers`] per canary instead.
pub fn matches(matchers: &[AlarmMatcher], msg: &AlarmMessage) -> bool {
    AlarmMatchers::compile(matchers).matches(msg)
}

/// Remembers the last `capacity` alarm identities, so a re-delivered alarm is handled once.
#[derive(Debug)]
pub struct Deduper {
    seen: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Deduper {
    /// Keeps up to `capacity` identities.
    pub fn new(capacity: usize) -> Self {
        Deduper {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// True the first time an identity is seen.
    pub fn first_time(&mut self, msg: &AlarmMessage) -> bool {
        let id = msg.identity();
        if self.seen.contains(&id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(id.clone());
        self.order.push_back(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V8_0: &str = r#"[{"scopeId":1,"scope":"SERVICE","name":"reviews.bookinfo","id0":"cmV2aWV3cy5ib29raW5mbw==.1","id1":"","ruleName":"service_resp_time_rule","alarmMessage":"Response time of service reviews.bookinfo is more than 1000ms","startTime":1719835380000}]"#;
    const V10_4: &str = r#"[{"scopeId":1,"scope":"SERVICE","name":"reviews.bookinfo","id0":"cmV2aWV3cy5ib29raW5mbw==.1","id1":"","ruleName":"service_resp_time_rule","alarmMessage":"slow","tags":[{"key":"level","value":"WARNING"}],"startTime":1719835380000,"hooks":["webhook.default"],"expression":"sum(service_resp_time > 1000) >= 3","mqeMetricsSnapshot":{"service_resp_time":"[{\"metric\":{\"labels\":[]},\"values\":[]}]"},"uuid":"5f0c"},
      {"scopeId":1,"scope":"SERVICE","name":"ratings.bookinfo","id0":"x","ruleName":"service_sla_rule","startTime":1719835380000}]"#;

    fn matcher(rule: Option<&str>, name: Option<&str>) -> AlarmMatcher {
        AlarmMatcher {
            rule_name: rule.map(str::to_string),
            name: name.map(str::to_string),
        }
    }

    #[test]
    fn parses_every_version_field_set() {
        let a = parse_payload(V8_0.as_bytes()).unwrap();
        assert_eq!(a[0].rule_name, "service_resp_time_rule");
        assert!(a[0].uuid.is_none() && !a[0].is_recovery());
        let b = parse_payload(V10_4.as_bytes()).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].uuid.as_deref(), Some("5f0c"));
        assert!(b[0].mqe_metrics_snapshot.is_some());
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(parse_payload(b"{}").is_err());
        assert!(
            parse_payload(b"[{\"name\": \"x\"}]").is_err(),
            "ruleName is required"
        );
        assert!(parse_payload(b"not json").is_err());
    }

    #[test]
    fn matching_uses_rule_and_entity_regexes() {
        let b = parse_payload(V10_4.as_bytes()).unwrap();
        let m = [matcher(
            Some("service_(sla|resp_time)_rule"),
            Some("^reviews\\."),
        )];
        assert!(matches(&m, &b[0]));
        assert!(!matches(&m, &b[1]), "other service");
        assert!(
            !matches(&[matcher(None, None)], &b[0]),
            "an empty matcher matches nothing"
        );
    }

    #[test]
    fn duplicates_are_handled_once() {
        let b = parse_payload(V10_4.as_bytes()).unwrap();
        let mut d = Deduper::new(2);
        assert!(d.first_time(&b[0]));
        assert!(!d.first_time(&b[0]));
        assert!(d.first_time(&b[1]));
        let a = parse_payload(V8_0.as_bytes()).unwrap();
        assert!(d.first_time(&a[0]), "no uuid: rule+entity+start");
        assert!(d.first_time(&b[0]), "forgotten after capacity");
    }

    #[test]
    fn recovery_messages_are_recognised() {
        let body = V8_0.replace(
            "\"startTime\"",
            "\"recoveryTime\":1719835500000,\"startTime\"",
        );
        assert!(parse_payload(body.as_bytes()).unwrap()[0].is_recovery());
    }
}
