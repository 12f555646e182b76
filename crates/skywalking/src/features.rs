//! The feature set derived from an OAP's version (refined by introspection when the server
//! allows it), and what a client detected about its server.

use chrono::FixedOffset;

use super::OapVersion;

/// What the server's schema supports, deciding what we select and send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// `execExpression` (OAP >= 9.5).
    pub mqe: bool,
    /// `KVInt.isEmptyValue` (OAP >= 9.5).
    pub is_empty_value: bool,
    /// `MQEValue.owner` (OAP >= 10.2). Never selected; informational.
    pub mqe_owner: bool,
    /// `Duration.coldStage` (OAP >= 10.3). Never sent; informational.
    pub cold_stage: bool,
    /// metadata-v2 `listInstances` (OAP >= 9.0); else `getServiceInstances`.
    pub list_instances: bool,
    /// `AlarmMessage.tags` in `getAlarm` (OAP >= 8.6).
    pub alarm_tags: bool,
    /// `AlarmMessage.name` in `getAlarm` (OAP >= 10.2).
    pub alarm_name: bool,
    /// `AlarmMessage.recoveryTime` in `getAlarm` (OAP >= 10.4).
    pub alarm_recovery: bool,
}

impl Features {
    /// Features implied by a version; an unknown version (null before 8.9) is treated as old.
    pub fn from_version(v: Option<OapVersion>) -> Self {
        let at_least = |maj, min| v.is_some_and(|v| v >= OapVersion::new(maj, min, 0));
        Features {
            mqe: at_least(9, 5),
            is_empty_value: at_least(9, 5),
            mqe_owner: at_least(10, 2),
            cold_stage: at_least(10, 3),
            list_instances: at_least(9, 0),
            alarm_tags: at_least(8, 6),
            alarm_name: at_least(10, 2),
            alarm_recovery: at_least(10, 4),
        }
    }

    /// Overrides version-derived features with what introspection actually saw.
    pub(crate) fn refine(mut self, seen: &Introspected) -> Self {
        if let Some(query_fields) = &seen.query_fields {
            self.mqe = query_fields.iter().any(|f| f == "execExpression");
            self.list_instances = query_fields.iter().any(|f| f == "listInstances");
        }
        if let Some(kv) = &seen.kvint_fields {
            self.is_empty_value = kv.iter().any(|f| f == "isEmptyValue");
        }
        self.mqe_owner = seen
            .mqe_value_fields
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == "owner"));
        if let Some(d) = &seen.duration_fields {
            self.cold_stage = d.iter().any(|f| f == "coldStage");
        }
        if let Some(a) = &seen.alarm_fields {
            let has = |name: &str| a.iter().any(|f| f == name);
            self.alarm_tags = has("tags");
            self.alarm_name = has("name");
            self.alarm_recovery = has("recoveryTime");
        }
        self
    }
}

/// Field names seen via `__type` introspection; `None` = type absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Introspected {
    pub query_fields: Option<Vec<String>>,
    pub kvint_fields: Option<Vec<String>>,
    pub mqe_value_fields: Option<Vec<String>>,
    pub duration_fields: Option<Vec<String>>,
    pub alarm_fields: Option<Vec<String>>,
}

/// What we know about one OAP, detected once per client.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    /// Raw `version` string (null before OAP 8.9).
    pub version: Option<String>,
    pub parsed: Option<OapVersion>,
    pub features: Features,
    /// The OAP JVM's zone: buckets are wall-clock times in it.
    pub timezone: FixedOffset,
    /// Server clock (`getTimeInfo.currentTimestamp`, epoch ms) at detection.
    pub server_time_ms: Option<i64>,
}

impl ServerInfo {
    /// Human-readable version for messages.
    pub fn version_label(&self) -> String {
        match (&self.parsed, &self.version) {
            (Some(v), _) => v.to_string(),
            (None, Some(raw)) => format!("{raw:?} (unparsed)"),
            (None, None) => "unknown (older than 8.9)".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_by_version() {
        let f = Features::from_version(Some(OapVersion::new(9, 4, 0)));
        assert!(!f.mqe && !f.is_empty_value && f.list_instances);
        let f = Features::from_version(Some(OapVersion::new(9, 5, 0)));
        assert!(f.mqe && f.is_empty_value && !f.mqe_owner);
        let f = Features::from_version(Some(OapVersion::new(10, 2, 0)));
        assert!(f.mqe_owner && !f.cold_stage);
        assert!(f.alarm_tags && f.alarm_name && !f.alarm_recovery);
        let f = Features::from_version(Some(OapVersion::new(10, 4, 0)));
        assert!(f.alarm_recovery);
        let f = Features::from_version(Some(OapVersion::new(8, 6, 0)));
        assert!(f.alarm_tags && !f.alarm_name);
        let f = Features::from_version(Some(OapVersion::new(8, 9, 0)));
        assert!(!f.list_instances && !f.mqe);
        assert_eq!(Features::from_version(None), Features::default());
    }

    #[test]
    fn introspection_wins() {
        let seen = Introspected {
            query_fields: Some(vec!["version".into(), "execExpression".into()]),
            kvint_fields: Some(vec!["id".into(), "value".into()]),
            mqe_value_fields: Some(vec!["id".into(), "value".into(), "owner".into()]),
            duration_fields: None,
            alarm_fields: Some(vec![
                "startTime".into(),
                "tags".into(),
                "recoveryTime".into(),
            ]),
        };
        let f = Features::from_version(None).refine(&seen);
        assert!(f.mqe && !f.is_empty_value && f.mqe_owner && !f.list_instances);
        assert!(f.alarm_tags && !f.alarm_name && f.alarm_recovery);
    }
}
