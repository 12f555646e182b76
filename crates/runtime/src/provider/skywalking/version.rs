//! OAP version parsing and the feature set derived from it (refined by
//! introspection when the server allows it).

use std::fmt;
use std::str::FromStr;

use chrono::FixedOffset;

use super::ProviderError;

/// `major.minor.patch` of an OAP release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OapVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl OapVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        OapVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses `query { version }` output: `"10.2.0-abc1234"`,
    /// `"8.9.0-abc1234 (buildtime)"`, `"9.4.0"`, `"10.0.0-SNAPSHOT"`, `"v9.5"`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        let core = s
            .split(|c: char| c == '-' || c == '+' || c.is_whitespace())
            .next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        Some(OapVersion::new(major, minor, patch))
    }
}

impl fmt::Display for OapVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for OapVersion {
    type Err = ProviderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OapVersion::parse(s)
            .ok_or_else(|| ProviderError::Config(format!("cannot parse OAP version {s:?}")))
    }
}

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
    fn parses_version_strings() {
        assert_eq!(
            OapVersion::parse("10.2.0-abc1234"),
            Some(OapVersion::new(10, 2, 0))
        );
        assert_eq!(
            OapVersion::parse("8.9.0-abc1234 (20211229104558)"),
            Some(OapVersion::new(8, 9, 0))
        );
        assert_eq!(OapVersion::parse("9.4.0"), Some(OapVersion::new(9, 4, 0)));
        assert_eq!(
            OapVersion::parse("10.0.0-SNAPSHOT"),
            Some(OapVersion::new(10, 0, 0))
        );
        assert_eq!(OapVersion::parse("v9.5"), Some(OapVersion::new(9, 5, 0)));
        assert_eq!(OapVersion::parse(""), None);
        assert_eq!(OapVersion::parse("latest"), None);
        assert!("x.y".parse::<OapVersion>().is_err());
        assert_eq!(OapVersion::new(9, 4, 0).to_string(), "9.4.0");
    }

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
