//! `getAlarm`: the alarm records of a time range, with the field set the server's version
//! has (`tags` 8.6+, `name` 10.2+, `recoveryTime` 10.4+), paged until exhausted.

use chrono::{DateTime, FixedOffset, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Features, ProviderError, Step};

/// Operation name (shows up in OAP logs).
pub const ALARMS_OPERATION: &str = "SkycanaryAlarms";

/// `getAlarm` buckets are minutes here; OAP turns them into second-precision bounds, the
/// end bucket inclusive to its last second.
const ALARM_STEP: Step = Step::Minute;

/// At most this many minute buckets per query (the OAP's duration cap for metrics; kept for
/// alarms so every version accepts the window).
const MAX_ALARM_MINUTES: i64 = 500;

/// One alarm record as `getAlarm` returns it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlarmRecord {
    /// Start time, epoch ms.
    pub start_time: i64,
    /// GraphQL scope (`Service`, `ServiceInstance`, ...), when set.
    pub scope: Option<String>,
    /// Entity id (`id0`: the service id for service alarms).
    pub id: String,
    /// Entity name (10.2+).
    pub name: Option<String>,
    /// Rendered message.
    pub message: String,
    /// Tags (8.6+).
    pub tags: Vec<(String, String)>,
    /// Recovery time (10.4+; null while firing).
    pub recovery_time: Option<i64>,
}

/// What one poll brought back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlarmPage {
    /// The records, newest first as OAP sorts them.
    pub records: Vec<AlarmRecord>,
    /// The page bound was reached with pages still full: older records may be missing.
    pub truncated: bool,
    /// `Duration.start` and `Duration.end` as sent.
    pub window: (String, String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAlarm {
    start_time: i64,
    #[serde(default)]
    scope: Option<String>,
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    tags: Option<Vec<WireKeyValue>>,
    #[serde(default)]
    recovery_time: Option<i64>,
}

#[derive(Deserialize)]
struct WireKeyValue {
    key: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Deserialize)]
struct WireAlarms {
    msgs: Vec<WireAlarm>,
}

/// The query document selecting exactly the fields `features` says the server has.
pub fn alarm_query(f: &Features) -> String {
    let mut fields = String::from("startTime scope id message");
    if f.alarm_tags {
        fields.push_str(" tags { key value }");
    }
    if f.alarm_name {
        fields.push_str(" name");
    }
    if f.alarm_recovery {
        fields.push_str(" recoveryTime");
    }
    format!(
        "query {ALARMS_OPERATION}($duration: Duration!, $paging: Pagination!) {{ \
         getAlarm(duration: $duration, paging: $paging) {{ msgs {{ {fields} }} }} }}"
    )
}

/// Minute buckets in the OAP zone covering `[from, to]`: at least two (OAP < 9.4 refuses
/// `start == end`) and at most [`MAX_ALARM_MINUTES`] (the newest kept).
pub fn alarm_window(from: DateTime<Utc>, to: DateTime<Utc>, tz: FixedOffset) -> (String, String) {
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).naive_local();
    let floor = |t: DateTime<Utc>| {
        let s = local(t).and_utc().timestamp();
        s.div_euclid(60) * 60
    };
    let end = floor(to);
    let start = floor(from.min(to)).clamp(end - (MAX_ALARM_MINUTES - 1) * 60, end - 60);
    let fmt = |secs: i64| {
        DateTime::from_timestamp(secs, 0)
            .map(|t| t.naive_utc().format("%Y-%m-%d %H%M").to_string())
            .unwrap_or_default()
    };
    (fmt(start), fmt(end))
}

/// The variables of one page.
pub fn alarm_variables(window: &(String, String), page: u32, page_size: u32) -> Value {
    json!({
        "duration": {"start": window.0, "end": window.1, "step": ALARM_STEP.as_graphql()},
        "paging": {"pageNum": page, "pageSize": page_size},
    })
}

/// Decodes `data.getAlarm`.
pub fn decode_alarms(get_alarm: Value) -> Result<Vec<AlarmRecord>, ProviderError> {
    let wire: WireAlarms = serde_json::from_value(get_alarm)
        .map_err(|e| ProviderError::Decode(format!("getAlarm: {e}")))?;
    Ok(wire
        .msgs
        .into_iter()
        .map(|w| AlarmRecord {
            start_time: w.start_time,
            scope: w.scope.filter(|s| !s.is_empty()),
            id: w.id,
            name: w.name,
            message: w.message,
            tags: w
                .tags
                .unwrap_or_default()
                .into_iter()
                .map(|t| (t.key, t.value.unwrap_or_default()))
                .collect(),
            recovery_time: w.recovery_time,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::skywalking::OapVersion;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn queries_select_each_versions_fields() {
        let q = |v: (u32, u32)| {
            alarm_query(&Features::from_version(Some(OapVersion::new(v.0, v.1, 0))))
        };
        let old = alarm_query(&Features::default());
        assert!(old.contains("msgs { startTime scope id message }"), "{old}");
        assert!(q((8, 9)).contains("tags { key value }"));
        assert!(!q((9, 7)).contains("name") && !q((9, 7)).contains("recoveryTime"));
        assert!(q((10, 2)).contains(" name") && !q((10, 2)).contains("recoveryTime"));
        assert!(q((10, 4)).contains("recoveryTime"));
        assert!(
            !q((10, 4)).contains("total"),
            "Alarms.total is gone since 9.1"
        );
    }

    #[test]
    fn windows_are_minutes_in_the_oap_zone() {
        let utc = FixedOffset::east_opt(0).unwrap();
        let cst = FixedOffset::east_opt(8 * 3600).unwrap();
        assert_eq!(
            alarm_window(t("2024-07-01T12:00:30Z"), t("2024-07-01T12:10:59Z"), utc),
            ("2024-07-01 1200".to_string(), "2024-07-01 1210".to_string())
        );
        assert_eq!(
            alarm_window(t("2024-07-01T12:00:30Z"), t("2024-07-01T12:10:59Z"), cst),
            ("2024-07-01 2000".to_string(), "2024-07-01 2010".to_string())
        );
        let ist = FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
        assert_eq!(
            alarm_window(t("2024-07-01T12:00:00Z"), t("2024-07-01T12:05:00Z"), ist).0,
            "2024-07-01 1730"
        );
    }

    #[test]
    fn windows_have_two_to_five_hundred_buckets() {
        let utc = FixedOffset::east_opt(0).unwrap();
        assert_eq!(
            alarm_window(t("2024-07-01T12:10:20Z"), t("2024-07-01T12:10:40Z"), utc),
            ("2024-07-01 1209".to_string(), "2024-07-01 1210".to_string())
        );
        assert_eq!(
            alarm_window(t("2024-07-01T13:00:00Z"), t("2024-07-01T12:10:00Z"), utc),
            ("2024-07-01 1209".to_string(), "2024-07-01 1210".to_string()),
            "from after to"
        );
        assert_eq!(
            alarm_window(t("2024-06-01T00:00:00Z"), t("2024-07-01T12:00:00Z"), utc),
            ("2024-07-01 0341".to_string(), "2024-07-01 1200".to_string()),
            "500 buckets, the newest"
        );
    }

    #[test]
    fn records_decode_with_and_without_optional_fields() {
        let v = json!({"msgs": [
            {"startTime": 1719835380000_i64, "scope": "Service", "id": "cmV2aWV3cw==.1", "message": "slow",
             "tags": [{"key": "level", "value": "WARNING"}, {"key": "bare"}], "name": "reviews", "recoveryTime": null},
            {"startTime": 1, "scope": null, "id": "x", "message": "m"}
        ]});
        let r = decode_alarms(v).unwrap();
        assert_eq!(
            r[0].tags,
            vec![
                ("level".into(), "WARNING".into()),
                ("bare".into(), String::new())
            ]
        );
        assert_eq!(r[0].name.as_deref(), Some("reviews"));
        assert_eq!(r[0].recovery_time, None);
        assert_eq!(r[1].scope, None);
        assert!(r[1].tags.is_empty());
        assert!(decode_alarms(json!({"msgs": [{"id": "x"}]})).is_err());
        assert!(decode_alarms(json!(null)).is_err());
    }

    #[test]
    fn variables_carry_duration_and_paging() {
        let v = alarm_variables(&("a".into(), "b".into()), 2, 50);
        assert_eq!(v["duration"]["step"], "MINUTE");
        assert_eq!(v["paging"], json!({"pageNum": 2, "pageSize": 50}));
    }
}
