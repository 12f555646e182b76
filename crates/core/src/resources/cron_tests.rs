use chrono::{DateTime, Utc};

use super::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

/// The next `n` fire times after `from`.
fn nexts(expr: &str, tz: Option<&str>, from: &str, n: usize) -> Vec<DateTime<Utc>> {
    let s = CronSchedule::parse(expr, tz).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let mut out = Vec::new();
    let mut at = t(from);
    for _ in 0..n {
        at = s
            .next_after(at)
            .unwrap_or_else(|| panic!("{expr}: no fire after {at}"));
        out.push(at);
    }
    out
}

/// (expression, zone, from, expected next fire times as RFC 3339 with the zone's offset).
/// 2024-01-01 is a Monday. New York: 2024-03-10 02:00 EST → 03:00 EDT; 2024-11-03
/// 02:00 EDT → 01:00 EST.
const TABLE: &[(&str, Option<&str>, &str, &[&str])] = &[
    // Weekdays at 02:00 in Shanghai (UTC+8, no DST), from Friday 01:00 local.
    (
        "0 2 * * 1-5",
        Some("Asia/Shanghai"),
        "2024-01-05T01:00:00+08:00",
        &[
            "2024-01-05T02:00:00+08:00",
            "2024-01-08T02:00:00+08:00",
            "2024-01-09T02:00:00+08:00",
        ],
    ),
    (
        "0 2 * * mon-fri",
        Some("Asia/Shanghai"),
        "2024-01-05T02:00:00+08:00",
        &["2024-01-08T02:00:00+08:00"],
    ),
    // Sunday as 0, 7 and a name.
    (
        "0 12 * * 0",
        None,
        "2024-01-01T00:00:00Z",
        &["2024-01-07T12:00:00Z", "2024-01-14T12:00:00Z"],
    ),
    (
        "0 12 * * 7",
        None,
        "2024-01-01T00:00:00Z",
        &["2024-01-07T12:00:00Z", "2024-01-14T12:00:00Z"],
    ),
    (
        "0 12 * * SUN",
        None,
        "2024-01-01T00:00:00Z",
        &["2024-01-07T12:00:00Z"],
    ),
    // Friday to Sunday through 7.
    (
        "0 0 * * 5-7",
        None,
        "2024-01-01T00:00:00Z",
        &[
            "2024-01-05T00:00:00Z",
            "2024-01-06T00:00:00Z",
            "2024-01-07T00:00:00Z",
            "2024-01-12T00:00:00Z",
        ],
    ),
    // Steps over weekdays start at Sunday (0): Sun, Tue, Thu, Sat.
    (
        "0 0 * * */2",
        None,
        "2024-01-01T00:00:00Z",
        &[
            "2024-01-02T00:00:00Z",
            "2024-01-04T00:00:00Z",
            "2024-01-06T00:00:00Z",
            "2024-01-07T00:00:00Z",
            "2024-01-09T00:00:00Z",
        ],
    ),
    (
        "0 0 * * 0-6",
        None,
        "2024-01-01T00:00:00Z",
        &["2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"],
    ),
    (
        "0 0 * * MON,wed,Fri",
        None,
        "2024-01-01T00:00:00Z",
        &[
            "2024-01-03T00:00:00Z",
            "2024-01-05T00:00:00Z",
            "2024-01-08T00:00:00Z",
        ],
    ),
    (
        "0 0 * * 1-5/2",
        None,
        "2024-01-01T00:00:00Z",
        &[
            "2024-01-03T00:00:00Z",
            "2024-01-05T00:00:00Z",
            "2024-01-08T00:00:00Z",
        ],
    ),
    // Both day fields restricted: the 13th OR a Friday (cron's rule).
    (
        "0 0 13 * 5",
        None,
        "2024-01-01T00:00:00Z",
        &[
            "2024-01-05T00:00:00Z",
            "2024-01-12T00:00:00Z",
            "2024-01-13T00:00:00Z",
            "2024-01-19T00:00:00Z",
        ],
    ),
    // Day-of-month with `*` weekday: only the day of month.
    (
        "0 0 13 * *",
        None,
        "2024-01-01T00:00:00Z",
        &["2024-01-13T00:00:00Z", "2024-02-13T00:00:00Z"],
    ),
    // `?` is `*`.
    (
        "0 0 ? * 1",
        None,
        "2024-01-01T00:00:00Z",
        &["2024-01-08T00:00:00Z"],
    ),
    // Months by name, ranges and `a/n`.
    (
        "0 0 1 jan-mar *",
        None,
        "2024-01-01T00:00:00Z",
        &[
            "2024-02-01T00:00:00Z",
            "2024-03-01T00:00:00Z",
            "2025-01-01T00:00:00Z",
        ],
    ),
    (
        "5/15 * * * *",
        None,
        "2024-01-01T00:00:00Z",
        &[
            "2024-01-01T00:05:00Z",
            "2024-01-01T00:20:00Z",
            "2024-01-01T00:35:00Z",
            "2024-01-01T00:50:00Z",
            "2024-01-01T01:05:00Z",
        ],
    ),
    // The 31st skips shorter months.
    (
        "0 0 31 * *",
        None,
        "2024-01-31T00:00:00Z",
        &["2024-03-31T00:00:00Z", "2024-05-31T00:00:00Z"],
    ),
    // Leap day.
    (
        "0 0 29 2 *",
        None,
        "2024-03-01T00:00:00Z",
        &["2028-02-29T00:00:00Z"],
    ),
    // Seconds.
    (
        "*/2 * * * * *",
        None,
        "2024-01-01T12:00:00Z",
        &[
            "2024-01-01T12:00:02Z",
            "2024-01-01T12:00:04Z",
            "2024-01-01T12:00:06Z",
        ],
    ),
    (
        "30 0 9 * * 1",
        None,
        "2024-01-01T09:00:30Z",
        &["2024-01-08T09:00:30Z"],
    ),
    // Macros.
    (
        "@weekly",
        None,
        "2024-01-01T00:00:00Z",
        &["2024-01-07T00:00:00Z"],
    ),
    (
        "@daily",
        Some("Asia/Shanghai"),
        "2024-01-01T00:00:00+08:00",
        &["2024-01-02T00:00:00+08:00"],
    ),
    (
        "@midnight",
        None,
        "2024-01-01T00:00:00Z",
        &["2024-01-02T00:00:00Z"],
    ),
    (
        "@hourly",
        None,
        "2024-01-01T00:30:00Z",
        &["2024-01-01T01:00:00Z"],
    ),
    (
        "@monthly",
        None,
        "2024-01-01T00:00:00Z",
        &["2024-02-01T00:00:00Z"],
    ),
    (
        "@yearly",
        None,
        "2024-01-01T00:00:00Z",
        &["2025-01-01T00:00:00Z"],
    ),
    (
        "@annually",
        None,
        "2024-01-01T00:00:00Z",
        &["2025-01-01T00:00:00Z"],
    ),
    // Spring forward: 02:30 does not exist on 2024-03-10 in New York; that day is skipped.
    (
        "30 2 * * *",
        Some("America/New_York"),
        "2024-03-09T00:00:00-05:00",
        &[
            "2024-03-09T02:30:00-05:00",
            "2024-03-11T02:30:00-04:00",
            "2024-03-12T02:30:00-04:00",
        ],
    ),
    // Hourly over the spring-forward gap: 01:00 EST, then 03:00 EDT.
    (
        "0 * * * *",
        Some("America/New_York"),
        "2024-03-10T00:30:00-05:00",
        &[
            "2024-03-10T01:00:00-05:00",
            "2024-03-10T03:00:00-04:00",
            "2024-03-10T04:00:00-04:00",
        ],
    ),
    // Fall back: 01:30 happens twice on 2024-11-03 and fires at both instants.
    (
        "30 1 * * *",
        Some("America/New_York"),
        "2024-11-03T00:00:00-04:00",
        &[
            "2024-11-03T01:30:00-04:00",
            "2024-11-03T01:30:00-05:00",
            "2024-11-04T01:30:00-05:00",
        ],
    ),
    // 02:30 exists once on the fall-back day.
    (
        "30 2 * * *",
        Some("America/New_York"),
        "2024-11-02T12:00:00-04:00",
        &["2024-11-03T02:30:00-05:00", "2024-11-04T02:30:00-05:00"],
    ),
    // Every 15 minutes through the repeated hour: no gap, no reordering.
    (
        "*/15 * * * *",
        Some("America/New_York"),
        "2024-11-03T01:40:00-04:00",
        &[
            "2024-11-03T01:45:00-04:00",
            "2024-11-03T01:00:00-05:00",
            "2024-11-03T01:15:00-05:00",
        ],
    ),
    // Berlin: 2024-03-31 02:00 CET → 03:00 CEST.
    (
        "0 2 * * 0",
        Some("Europe/Berlin"),
        "2024-03-30T00:00:00+01:00",
        &["2024-04-07T02:00:00+02:00"],
    ),
];

#[test]
fn next_fire_times_match_known_answers() {
    for (expr, tz, from, want) in TABLE {
        let got = nexts(expr, *tz, from, want.len());
        let want: Vec<DateTime<Utc>> = want.iter().map(|w| t(w)).collect();
        assert_eq!(got, want, "{expr} in {tz:?} after {from}");
    }
}

#[test]
fn weekdays_are_translated_to_the_crates_numbering() {
    let tr = |e: &str| CronSchedule::parse(e, None).unwrap().translated();
    assert_eq!(tr("0 2 * * 1-5"), vec!["0 0 2 * * 2,3,4,5,6"]);
    assert_eq!(tr("0 2 * * 0,7"), vec!["0 0 2 * * 1"]);
    assert_eq!(tr("0 2 * * 5-7")[0].rsplit(' ').next(), Some("1,6,7"));
    assert_eq!(tr("0 2 * * */2")[0].rsplit(' ').next(), Some("1,3,5,7"));
    assert_eq!(tr("0 2 * * sat")[0].rsplit(' ').next(), Some("7"));
    assert_eq!(tr("0 0 13 * 5").len(), 2, "day-of-month OR day-of-week");
    assert_eq!(tr("0 0 13 * *").len(), 1);
    assert_eq!(tr("*/20 * * * * *"), vec!["0,20,40 * * * * *"]);
}

#[test]
fn invalid_schedules_say_why() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("", None, "empty"),
        ("* * * *", None, "expected 5 fields"),
        ("* * * * * * *", None, "got 7"),
        (
            "60 * * * *",
            None,
            "minute field \"60\": 60 is outside 0-59",
        ),
        ("* 24 * * *", None, "hour field"),
        ("* * 0 * *", None, "day-of-month field"),
        ("* * * 13 *", None, "month field"),
        (
            "* * * * 8",
            None,
            "day-of-week field \"8\": 8 is outside 0-7",
        ),
        ("* * * * foo", None, "neither a number nor one of sun"),
        ("5-1 * * * *", None, "starts after it ends"),
        ("*/0 * * * *", None, "step must be at least 1"),
        ("*/x * * * *", None, "step \"x\""),
        ("1,,2 * * * *", None, "empty list item"),
        ("0 0 30 2 *", None, "never fires"),
        ("TZ=UTC 0 0 * * *", None, "spec.timeZone"),
        ("CRON_TZ=UTC 0 0 * * *", None, "spec.timeZone"),
        ("@every 5m", None, "a macro stands alone"),
        ("@every", None, "@every is not supported"),
        ("@sometimes", None, "unknown macro"),
        ("0 0 * * *", Some("Mars/Olympus"), "unknown time zone"),
    ];
    for (expr, tz, want) in cases {
        let err = CronSchedule::parse(expr, *tz).expect_err(expr).to_string();
        assert!(
            err.contains(want),
            "{expr}: {err:?} should contain {want:?}"
        );
    }
}

#[test]
fn zones_default_to_utc() {
    assert_eq!(parse_time_zone(None).unwrap(), Tz::UTC);
    assert_eq!(parse_time_zone(Some("")).unwrap(), Tz::UTC);
    assert_eq!(
        parse_time_zone(Some("Asia/Shanghai")).unwrap(),
        Tz::Asia__Shanghai
    );
}

#[test]
fn latest_fire_time_between_bounds() {
    let s = CronSchedule::parse("0 2 * * 1-5", Some("Asia/Shanghai")).unwrap();
    // Sunday evening: the latest was Friday 02:00.
    let at = t("2024-01-07T20:00:00+08:00");
    assert_eq!(
        s.latest_between(t("2024-01-01T00:00:00Z"), at),
        Some(t("2024-01-05T02:00:00+08:00"))
    );
    assert_eq!(s.latest_between(t("2024-01-05T02:00:00+08:00"), at), None);
    // Exactly at a fire time: included.
    assert_eq!(
        s.latest_between(t("2024-01-01T00:00:00Z"), t("2024-01-05T02:00:00+08:00")),
        Some(t("2024-01-05T02:00:00+08:00"))
    );
    // Fall back: the latest 01:30 at 01:50 EST is the second one.
    let ny = CronSchedule::parse("30 1 * * *", Some("America/New_York")).unwrap();
    assert_eq!(
        ny.latest_between(t("2024-11-01T00:00:00Z"), t("2024-11-03T01:50:00-05:00")),
        Some(t("2024-11-03T01:30:00-05:00"))
    );
    assert_eq!(
        ny.latest_between(t("2024-11-01T00:00:00Z"), t("2024-11-03T01:10:00-05:00")),
        Some(t("2024-11-03T01:30:00-04:00"))
    );
    let every2 = CronSchedule::parse("*/2 * * * * *", None).unwrap();
    assert_eq!(
        every2.latest_between(t("2024-01-01T00:00:00Z"), t("2024-01-01T12:00:03.700Z")),
        Some(t("2024-01-01T12:00:02Z"))
    );
}

#[test]
fn counting_is_capped() {
    let s = CronSchedule::parse("*/2 * * * * *", None).unwrap();
    let from = t("2024-01-01T00:00:00Z");
    assert_eq!(s.count_between(from, t("2024-01-01T00:00:10Z"), 100), 5);
    assert_eq!(s.count_between(from, t("2024-01-02T00:00:00Z"), 100), 101);
    assert_eq!(s.count_between(from, from, 100), 0);
}
