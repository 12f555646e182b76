//! SkyWalking alarms: the webhook payload (OAP 8.0 – 10.4, a JSON array of AlarmMessage whose
//! field set grew over versions) and the one shape the daemon matches, which polled
//! `getAlarm` records are turned into as well.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::intake::{Batch, DedupeKey, dedupe_key};

/// One alarm as OAP's webhook sends it (Gson: null fields are omitted, so every field but the
/// rule name is optional; unknown fields such as HEAD's `layers` are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlarmMessage {
    /// Scope id (1 Service, 2 ServiceInstance, 3 Endpoint, 4–6 relations).
    #[serde(default)]
    pub scope_id: Option<i64>,
    /// Scope catalog name (`SERVICE`, `SERVICE_INSTANCE`, ...).
    #[serde(default)]
    pub scope: Option<String>,
    /// Entity name (`reviews.bookinfo`, `inst of svc`, `ep in svc`, `src to dest`).
    #[serde(default)]
    pub name: Option<String>,
    /// Entity id (service: `base64(name).1`); the source for relations.
    #[serde(default)]
    pub id0: Option<String>,
    /// Relation destination id (`""` otherwise).
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
    /// Tags (8.6+; `[]` when none).
    #[serde(default)]
    pub tags: Vec<WireTag>,
    /// Hooks that received it (9.6+).
    #[serde(default)]
    pub hooks: Vec<String>,
    /// MQE rule expression (10.2+).
    #[serde(default)]
    pub expression: Option<String>,
    /// Metric snapshot (10.2+): each value is a JSON *string* holding `[MQEValues]`.
    #[serde(default)]
    pub mqe_metrics_snapshot: Option<BTreeMap<String, serde_json::Value>>,
    /// The same for trigger and recovery (10.4+).
    #[serde(default)]
    pub uuid: Option<String>,
    /// Set on recovery messages only (10.4+).
    #[serde(default)]
    pub recovery_time: Option<i64>,
}

/// `{"key", "value"}` of an alarm tag.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
pub struct WireTag {
    /// Tag key.
    pub key: String,
    /// Tag value (Gson omits a null one).
    #[serde(default)]
    pub value: Option<String>,
}

/// A SkyWalking alarm from either the webhook or `getAlarm`, with what each version and
/// channel carries; absent fields are `None` and never match a criterion on them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Alarm {
    /// Rule name (webhook only: `getAlarm` does not expose it).
    pub rule_name: Option<String>,
    /// Entity name (webhook; `getAlarm` 10.2+, or derived from the id for non-relation scopes).
    pub name: Option<String>,
    /// Scope as the channel spells it (`SERVICE` from webhooks, `Service` from GraphQL).
    pub scope: Option<String>,
    /// Scope id (webhook).
    pub scope_id: Option<i64>,
    /// Entity id (`id0` / `id`).
    pub id0: Option<String>,
    /// Rendered message.
    pub message: Option<String>,
    /// Tags as (key, value).
    pub tags: Vec<(String, String)>,
    /// Start time, epoch ms.
    pub start_time: Option<i64>,
    /// Recovery time, epoch ms (10.4+): a recovered alarm never triggers.
    pub recovery_time: Option<i64>,
    /// Alarm uuid (10.4+ webhook).
    pub uuid: Option<String>,
    /// MQE rule expression (10.2+).
    pub expression: Option<String>,
    /// Metric snapshot with the JSON strings decoded (10.2+ webhook).
    pub snapshot: BTreeMap<String, serde_json::Value>,
}

impl AlarmMessage {
    /// The matchable alarm.
    pub fn into_alarm(self) -> Alarm {
        let snapshot = self
            .mqe_metrics_snapshot
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, decode_snapshot_value(v)))
            .collect();
        Alarm {
            rule_name: Some(self.rule_name),
            name: self.name,
            scope: self.scope.filter(|s| !s.is_empty()),
            scope_id: self.scope_id,
            id0: self.id0.filter(|s| !s.is_empty()),
            message: self.alarm_message,
            tags: self
                .tags
                .into_iter()
                .map(|t| (t.key, t.value.unwrap_or_default()))
                .collect(),
            start_time: self.start_time,
            recovery_time: self.recovery_time,
            uuid: self.uuid.filter(|s| !s.is_empty()),
            expression: self.expression,
            snapshot,
        }
    }
}

/// OAP 10.2+ puts `[MQEValues]` in a JSON string; decode it (a value that is not a string
/// holding JSON is kept as it came).
fn decode_snapshot_value(v: serde_json::Value) -> serde_json::Value {
    match &v {
        serde_json::Value::String(s) => serde_json::from_str(s).unwrap_or(v),
        _ => v,
    }
}

/// Scopes by id: (GraphQL enum, catalog name).
const SCOPES: [(i64, &str, &str); 6] = [
    (1, "Service", "SERVICE"),
    (2, "ServiceInstance", "SERVICE_INSTANCE"),
    (3, "Endpoint", "ENDPOINT"),
    (4, "ServiceRelation", "SERVICE_RELATION"),
    (5, "ServiceInstanceRelation", "SERVICE_INSTANCE_RELATION"),
    (6, "EndpointRelation", "ENDPOINT_RELATION"),
];

/// `SERVICE_INSTANCE` → `ServiceInstance`.
fn catalog_to_graphql(s: &str) -> String {
    s.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let lower = p.to_ascii_lowercase();
            let mut c = lower.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `ServiceInstance` → `SERVICE_INSTANCE`.
fn graphql_to_catalog(s: &str) -> String {
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

impl Alarm {
    /// When the alarm started.
    pub fn started(&self) -> Option<DateTime<Utc>> {
        self.start_time
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
    }

    /// A recovery notice (10.4 webhook) or a recovered polled alarm: never triggers.
    pub fn is_recovery(&self) -> bool {
        self.recovery_time.is_some()
    }

    /// Every spelling of the scope (`SERVICE` and `Service`), so a matcher may use either.
    pub fn scope_spellings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(s) = &self.scope {
            out.push(s.clone());
            out.push(
                if s.contains('_') || s.chars().all(|c| !c.is_ascii_lowercase()) {
                    catalog_to_graphql(s)
                } else {
                    graphql_to_catalog(s)
                },
            );
        } else if let Some((_, g, c)) = SCOPES.iter().find(|(id, _, _)| Some(*id) == self.scope_id)
        {
            out.push((*g).to_string());
            out.push((*c).to_string());
        }
        out.dedup();
        out
    }

    /// What the alarm is called in status, events and metrics: the rule name, else (polled
    /// alarms) the message.
    pub fn rule_label(&self) -> String {
        self.rule_name
            .clone()
            .or_else(|| self.message.clone())
            .unwrap_or_else(|| "unknown".to_string())
    }

    /// The entity in status, events and metrics: its name, else its id.
    pub fn entity_label(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.id0.clone())
            .unwrap_or_else(|| "unknown".to_string())
    }

    /// De-duplication identities: the uuid (10.4+), rule + entity + start time, and entity id +
    /// start time + message, which a webhook alarm and the same alarm polled through
    /// `getAlarm` (no uuid, no rule name) share. Hashed: fixed size whatever the fields hold;
    /// an absent start time is its own value, never the same as `startTime: 0`.
    pub fn dedupe_keys(&self) -> Vec<DedupeKey> {
        let mut keys = Vec::new();
        if let Some(u) = &self.uuid {
            keys.push(dedupe_key(&("sw-uuid", u)));
        }
        let entity = self.id0.as_ref().or(self.name.as_ref());
        if let (Some(rule), Some(entity)) = (&self.rule_name, entity) {
            keys.push(dedupe_key(&("sw-rule", rule, entity, self.start_time)));
        }
        if let (Some(id), Some(start), Some(msg)) = (&self.id0, self.start_time, &self.message) {
            keys.push(dedupe_key(&("sw-id", id, start, msg)));
        }
        if keys.is_empty() {
            // Nothing identifies it: fall back to everything we have.
            keys.push(dedupe_key(&(
                "sw-all",
                &self.rule_name,
                &self.name,
                &self.message,
                self.start_time,
            )));
        }
        keys
    }
}

/// The entity name OAP renders, rebuilt from an entity id for `getAlarm` before 10.2 (which
/// has no `name`): services `base64(name).N`, instances and endpoints
/// `serviceId_base64(name)`. Relations need the destination, which `getAlarm` lacks: `None`.
pub fn name_from_id(scope: &str, id: &str) -> Option<String> {
    let decode = |b: &str| {
        BASE64
            .decode(b)
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
    };
    let service = |sid: &str| decode(sid.split_once('.')?.0);
    match scope {
        "Service" | "SERVICE" => service(id),
        "ServiceInstance" | "SERVICE_INSTANCE" => {
            let (sid, inst) = id.split_once('_')?;
            Some(format!("{} of {}", decode(inst)?, service(sid)?))
        }
        "Endpoint" | "ENDPOINT" => {
            let (sid, ep) = id.split_once('_')?;
            Some(format!("{} in {}", decode(ep)?, service(sid)?))
        }
        _ => None,
    }
}

/// Why a payload was refused.
#[derive(Debug, thiserror::Error)]
#[error("not a SkyWalking alarm payload (a JSON array of AlarmMessage): {0}")]
pub struct ParseError(String);

/// Parses a webhook body into matchable alarms, refusing the whole body if any element is
/// malformed (tools and tests; the daemon uses [`parse_batch`]).
pub fn parse_payload(body: &[u8]) -> Result<Vec<Alarm>, ParseError> {
    let batch = parse_batch(body)?;
    if batch.rejected_total > 0 {
        return Err(ParseError(batch.rejection_summary("alarms")));
    }
    Ok(batch.items)
}

/// Parses a webhook body element by element: a body that is not a JSON array is refused, a
/// malformed element is refused alone (reported in the batch) and the others are kept.
pub fn parse_batch(body: &[u8]) -> Result<Batch<Alarm>, ParseError> {
    let elements: Vec<&RawValue> =
        serde_json::from_slice(body).map_err(|e| ParseError(e.to_string()))?;
    Ok(Batch::parse(
        &elements,
        |m: AlarmMessage| Ok(m.into_alarm()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::intake::{Incoming, Verdict, dedupe_key, verdict};
    use crate::alarm::matcher::RollbackRules;
    use skycanary_api::resources::canary::{AlarmMatcher, RollbackOn};

    const V8_0: &str = include_str!("fixtures/skywalking-8.0.json");
    const V8_6: &str = include_str!("fixtures/skywalking-8.6.json");
    const V9_6: &str = include_str!("fixtures/skywalking-9.6.json");
    const V10_2: &str = include_str!("fixtures/skywalking-10.2.json");
    const V10_4_TRIGGER: &str = include_str!("fixtures/skywalking-10.4-trigger.json");
    const V10_4_RECOVERY: &str = include_str!("fixtures/skywalking-10.4-recovery.json");

    /// 2024-07-01T12:03:00Z, the fixtures' startTime.
    const START_MS: i64 = 1_719_835_380_000;

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).single().unwrap()
    }

    /// The canary's rules: resp-time or SLA rules on reviews.bookinfo.
    fn rules(f: impl FnOnce(&mut AlarmMatcher)) -> RollbackRules {
        let mut m = AlarmMatcher {
            rule_name: Some("service_(sla|resp_time)_rule".into()),
            name: Some("reviews\\.bookinfo".into()),
            ..AlarmMatcher::default()
        };
        f(&mut m);
        RollbackRules::compile(Some(&RollbackOn {
            alarms: vec![m],
            alerts: Vec::new(),
        }))
    }

    fn judge(a: &Alarm, r: &RollbackRules, run_start_ms: i64) -> Verdict {
        verdict(&Incoming::Alarm(a.clone()), r, Some(at(run_start_ms)))
    }

    fn before() -> i64 {
        START_MS - 60_000
    }

    #[test]
    fn oap_8_0_payload_parses_and_matches() {
        let a = parse_payload(V8_0.as_bytes()).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].rule_name.as_deref(), Some("service_resp_time_rule"));
        assert!(a[0].tags.is_empty() && a[0].uuid.is_none() && !a[0].is_recovery());
        assert_eq!(a[0].scope_spellings(), vec!["SERVICE", "Service"]);
        assert_eq!(judge(&a[0], &rules(|_| {}), before()), Verdict::Trigger);
        assert_eq!(
            judge(&a[1], &rules(|_| {}), before()),
            Verdict::NoMatch,
            "an instance of another service"
        );
        assert_eq!(
            judge(
                &a[0],
                &rules(|m| m.tags = [("level".into(), "WARNING".into())].into()),
                before()
            ),
            Verdict::NoMatch,
            "8.0 has no tags: a tag criterion reads \"\""
        );
    }

    #[test]
    fn oap_8_6_payload_parses_with_tags_and_matches() {
        let a = parse_payload(V8_6.as_bytes()).unwrap();
        assert_eq!(
            a[0].tags,
            vec![("level".to_string(), "CRITICAL".to_string())]
        );
        assert!(a[1].tags.is_empty());
        let critical = rules(|m| m.tags = [("level".into(), "CRITICAL".into())].into());
        assert_eq!(judge(&a[0], &critical, before()), Verdict::Trigger);
        let endpoints = rules(|m| {
            m.rule_name = None;
            m.name = Some(".* in reviews\\.bookinfo".into());
            m.scope = Some("Endpoint".into());
        });
        assert_eq!(judge(&a[1], &endpoints, before()), Verdict::Trigger);
        assert_eq!(judge(&a[0], &endpoints, before()), Verdict::NoMatch);
    }

    #[test]
    fn oap_9_6_payload_parses_with_hooks_and_matches() {
        let a = parse_payload(V9_6.as_bytes()).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].tags[0].1, "WARNING");
        assert_eq!(judge(&a[0], &rules(|_| {}), before()), Verdict::Trigger);
        assert_eq!(
            judge(&a[1], &rules(|_| {}), before()),
            Verdict::NoMatch,
            "a relation rule"
        );
        let relations = rules(|m| {
            m.rule_name = None;
            m.name = Some(".* to reviews\\.bookinfo".into());
            m.scope = Some("SERVICE_RELATION".into());
        });
        assert_eq!(judge(&a[1], &relations, before()), Verdict::Trigger);
    }

    #[test]
    fn oap_10_2_payload_decodes_the_snapshot_strings_and_matches() {
        let a = parse_payload(V10_2.as_bytes()).unwrap();
        let a = &a[0];
        assert_eq!(
            a.expression.as_deref(),
            Some("sum(service_resp_time > 1000) >= 3")
        );
        let snap = &a.snapshot["service_resp_time"];
        assert_eq!(snap[0]["values"][1]["value"], "1350", "{snap}");
        assert!(a.uuid.is_none());
        assert_eq!(judge(a, &rules(|_| {}), before()), Verdict::Trigger);
        assert_eq!(
            judge(
                a,
                &rules(|m| m.rule_name = Some("service_sla_rule".into())),
                before()
            ),
            Verdict::NoMatch
        );
    }

    #[test]
    fn oap_10_4_trigger_parses_with_uuid_and_matches() {
        let a = parse_payload(V10_4_TRIGGER.as_bytes()).unwrap();
        let a = &a[0];
        assert_eq!(
            a.uuid.as_deref(),
            Some("5f0c2b7e-8d3a-4c5e-9f1a-2b3c4d5e6f70")
        );
        assert!(!a.is_recovery());
        assert_eq!(judge(a, &rules(|_| {}), before()), Verdict::Trigger);
        assert_eq!(
            a.dedupe_keys()[0],
            dedupe_key(&("sw-uuid", "5f0c2b7e-8d3a-4c5e-9f1a-2b3c4d5e6f70"))
        );
    }

    #[test]
    fn oap_10_4_recovery_is_ignored() {
        let a = parse_payload(V10_4_RECOVERY.as_bytes()).unwrap();
        let a = &a[0];
        assert!(a.is_recovery());
        assert_eq!(a.recovery_time, Some(1_719_835_800_000));
        assert_eq!(judge(a, &rules(|_| {}), before()), Verdict::Recovered);
        let trigger = &parse_payload(V10_4_TRIGGER.as_bytes()).unwrap()[0];
        assert_eq!(a.uuid, trigger.uuid, "same uuid as its trigger");
    }

    #[test]
    fn alarms_older_than_the_run_are_ignored() {
        for body in [V8_0, V8_6, V9_6, V10_2, V10_4_TRIGGER] {
            let a = &parse_payload(body.as_bytes()).unwrap()[0];
            assert_eq!(
                judge(a, &rules(|m| m.rule_name = None), START_MS + 1),
                Verdict::OlderThanRun,
                "{body}"
            );
            assert_eq!(
                judge(a, &rules(|m| m.rule_name = None), START_MS),
                Verdict::Trigger,
                "an alarm at the run start counts"
            );
        }
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(parse_payload(b"{}").is_err());
        assert!(
            parse_payload(b"[{\"name\": \"x\"}]").is_err(),
            "ruleName is required"
        );
        assert!(parse_payload(b"not json").is_err());
        assert!(
            parse_payload(b"[{\"ruleName\": \"r\", \"tags\": [\"level\"]}]").is_err(),
            "tags are key/value objects"
        );
        assert!(
            parse_payload(b"[{\"ruleName\": \"r\", \"startTime\": \"soon\"}]").is_err(),
            "startTime is epoch ms"
        );
        assert_eq!(parse_payload(b"[]").unwrap(), Vec::new());
    }

    #[test]
    fn unknown_fields_of_newer_oaps_are_ignored() {
        let a = parse_payload(
            br#"[{"ruleName": "r", "name": "svc", "layers": ["MESH"], "startTime": 1}]"#,
        )
        .unwrap();
        assert_eq!(a[0].name.as_deref(), Some("svc"));
    }

    #[test]
    fn scope_spellings_convert_both_ways() {
        let s = |scope: &str| Alarm {
            scope: Some(scope.into()),
            ..Alarm::default()
        };
        assert_eq!(
            s("SERVICE_INSTANCE_RELATION").scope_spellings(),
            vec!["SERVICE_INSTANCE_RELATION", "ServiceInstanceRelation"]
        );
        assert_eq!(
            s("EndpointRelation").scope_spellings(),
            vec!["EndpointRelation", "ENDPOINT_RELATION"]
        );
        let by_id = Alarm {
            scope_id: Some(2),
            ..Alarm::default()
        };
        assert_eq!(
            by_id.scope_spellings(),
            vec!["ServiceInstance", "SERVICE_INSTANCE"]
        );
        assert!(Alarm::default().scope_spellings().is_empty());
    }

    #[test]
    fn names_are_rebuilt_from_ids() {
        assert_eq!(
            name_from_id("Service", "cmV2aWV3cy5ib29raW5mbw==.1").as_deref(),
            Some("reviews.bookinfo")
        );
        assert_eq!(
            name_from_id(
                "ServiceInstance",
                "cmF0aW5ncy5ib29raW5mbw==.1_cmF0aW5ncy12MS03ZDlm"
            )
            .as_deref(),
            Some("ratings-v1-7d9f of ratings.bookinfo")
        );
        assert_eq!(
            name_from_id(
                "Endpoint",
                "cmV2aWV3cy5ib29raW5mbw==.1_R0VUOi9yZXZpZXdzL3tpZH0="
            )
            .as_deref(),
            Some("GET:/reviews/{id} in reviews.bookinfo")
        );
        assert_eq!(name_from_id("ServiceRelation", "cmV2aWV3cw==.1"), None);
        assert_eq!(name_from_id("Service", "not base64!.1"), None);
        assert_eq!(name_from_id("Service", "no-dot"), None);
    }

    #[test]
    fn dedupe_keys_cover_uuid_rule_and_id() {
        let a = &parse_payload(V10_4_TRIGGER.as_bytes()).unwrap()[0];
        let keys = a.dedupe_keys();
        assert_eq!(keys.len(), 3);
        assert_eq!(
            keys[1],
            dedupe_key(&(
                "sw-rule",
                "service_resp_time_rule",
                a.id0.as_deref().unwrap(),
                a.start_time
            ))
        );
        let polled = Alarm {
            rule_name: None,
            uuid: None,
            ..a.clone()
        };
        assert_eq!(
            polled.dedupe_keys(),
            vec![keys[2]],
            "shared with the webhook"
        );
        assert_eq!(Alarm::default().dedupe_keys().len(), 1);
    }

    #[test]
    fn dedupe_keys_are_fixed_size_whatever_the_fields_hold() {
        let huge = "m".repeat(200_000);
        let a = Alarm {
            rule_name: Some(huge.clone()),
            name: Some(huge.clone()),
            id0: Some(huge.clone()),
            message: Some(huge.clone()),
            start_time: Some(1),
            uuid: Some(huge.clone()),
            ..Alarm::default()
        };
        let keys = a.dedupe_keys();
        assert_eq!(keys.len(), 3);
        assert_eq!(std::mem::size_of_val(keys.as_slice()), 3 * 16);
        let other = Alarm {
            message: Some(format!("{huge}x")),
            uuid: None,
            ..a.clone()
        };
        assert_ne!(other.dedupe_keys()[1], keys[2], "a different message");
        assert_ne!(other.dedupe_keys(), a.dedupe_keys());
    }

    #[test]
    fn a_missing_start_time_is_not_the_same_alarm_as_start_time_zero() {
        let zero = Alarm {
            rule_name: Some("r".into()),
            name: Some("svc".into()),
            start_time: Some(0),
            ..Alarm::default()
        };
        let missing = Alarm {
            start_time: None,
            ..zero.clone()
        };
        let mut d = crate::alarm::Deduper::new(10);
        assert!(d.first_time(&zero.dedupe_keys()));
        assert!(
            d.first_time(&missing.dedupe_keys()),
            "no startTime is not startTime 0"
        );
        assert!(!d.first_time(&missing.dedupe_keys()));
    }

    #[test]
    fn absurd_start_times_are_unknown_and_never_older_than_the_run() {
        // i64::MIN, -1, 0 and a missing time alike: a matching alarm rolls back.
        for start in [
            Some(i64::MIN),
            Some(-1),
            Some(0),
            Some(1),
            None,
            Some(i64::MAX),
        ] {
            let a = Alarm {
                rule_name: Some("service_sla_rule".into()),
                name: Some("reviews.bookinfo".into()),
                start_time: start,
                ..Alarm::default()
            };
            assert_eq!(
                judge(&a, &rules(|_| {}), START_MS),
                Verdict::Trigger,
                "{start:?}"
            );
        }
        let just_before = Alarm {
            rule_name: Some("service_sla_rule".into()),
            name: Some("reviews.bookinfo".into()),
            start_time: Some(START_MS - 1),
            ..Alarm::default()
        };
        assert_eq!(
            judge(&just_before, &rules(|_| {}), START_MS),
            Verdict::OlderThanRun,
            "a plausible earlier time still counts as older"
        );
    }

    #[test]
    fn a_malformed_alarm_is_refused_alone() {
        let body = br#"[
            {"ruleName": "service_sla_rule", "name": "reviews.bookinfo", "startTime": 1},
            {"name": "no rule"},
            42,
            {"ruleName": "r", "startTime": "soon"},
            {"ruleName": "service_sla_rule", "name": "ratings.bookinfo"}
        ]"#;
        let batch = parse_batch(body).unwrap();
        let names: Vec<_> = batch.items.iter().map(|a| a.name.as_deref()).collect();
        assert_eq!(
            names,
            vec![Some("reviews.bookinfo"), Some("ratings.bookinfo")]
        );
        assert_eq!(batch.rejected_total, 3);
        let indexes: Vec<_> = batch.rejected.iter().map(|r| r.index).collect();
        assert_eq!(indexes, vec![1, 2, 3]);
        assert!(batch.rejected[0].error.contains("ruleName"), "{batch:?}");
        let text = batch.rejection_summary("alarms");
        assert!(
            text.starts_with("alarms[1]: missing field `ruleName`"),
            "{text}"
        );
        let strict = parse_payload(body).unwrap_err().to_string();
        assert!(strict.contains("alarms[2]"), "{strict}");
        assert!(parse_batch(b"{}").is_err(), "not an array: refused whole");
    }

    #[test]
    fn refusals_are_bounded_in_count_and_size() {
        // A refused element's reason may quote its value: it is cut.
        let huge = "x".repeat(500_000);
        let body = format!(r#"[{{"ruleName": "r", "startTime": "{huge}"}}]"#);
        let batch = parse_batch(body.as_bytes()).unwrap();
        assert_eq!(batch.rejected_total, 1);
        assert!(
            batch.rejected[0].error.len() < 1100,
            "{}",
            batch.rejected[0].error.len()
        );
        // Many bad elements: every one counted, a few reasons kept.
        let body = format!("[{}]", vec!["1"; 5_000].join(","));
        let batch = parse_batch(body.as_bytes()).unwrap();
        assert_eq!(batch.rejected_total, 5_000);
        assert_eq!(
            batch.rejected.len(),
            crate::alarm::intake::MAX_REPORTED_REJECTIONS
        );
        assert!(batch.rejection_summary("alarms").ends_with("and 4980 more"));
        // Too many alarms: the ones past the limit are refused.
        let n = crate::alarm::intake::MAX_ALARMS_PER_PAYLOAD + 3;
        let body = format!("[{}]", vec![r#"{"ruleName":"r"}"#; n].join(","));
        let batch = parse_batch(body.as_bytes()).unwrap();
        assert_eq!(batch.items.len(), n - 3);
        assert_eq!(batch.rejected_total, 3);
        assert!(batch.rejected[0].error.contains("more than 10000 alarms"));
    }

    #[test]
    fn labels_fall_back_when_fields_are_absent() {
        let polled = Alarm {
            message: Some("slow".into()),
            id0: Some("aWQ=.1".into()),
            ..Alarm::default()
        };
        assert_eq!(polled.rule_label(), "slow");
        assert_eq!(polled.entity_label(), "aWQ=.1");
        assert_eq!(Alarm::default().rule_label(), "unknown");
    }
}
