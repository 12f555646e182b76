//! OAP `Duration` semantics: step formats, inclusive points, the 500-point cap,
//! and bucket interpretation in the server's timezone.

use chrono::{
    DateTime, Duration as ChronoDuration, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc,
};
use serde_json::Value as Json;

use super::profile::OapProfile;

/// OAP's `Step` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Second,
    Minute,
    Hour,
    Day,
}

impl Step {
    fn parse(s: &str) -> Option<Step> {
        match s {
            "SECOND" => Some(Step::Second),
            "MINUTE" => Some(Step::Minute),
            "HOUR" => Some(Step::Hour),
            "DAY" => Some(Step::Day),
            _ => None,
        }
    }

    /// Shape of the accepted string: `d` is a digit, anything else is literal.
    fn pattern(self) -> &'static str {
        match self {
            Step::Second => "dddd-dd-dd dddddd",
            Step::Minute => "dddd-dd-dd dddd",
            Step::Hour => "dddd-dd-dd dd",
            Step::Day => "dddd-dd-dd",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Step::Second => "seconds",
            Step::Minute => "minutes",
            Step::Hour => "hours",
            Step::Day => "days",
        }
    }

    fn delta(self) -> ChronoDuration {
        match self {
            Step::Second => ChronoDuration::seconds(1),
            Step::Minute => ChronoDuration::minutes(1),
            Step::Hour => ChronoDuration::hours(1),
            Step::Day => ChronoDuration::days(1),
        }
    }

    /// Number of stored minutes a bucket of this step averages (0: nothing stored).
    pub fn minutes(self) -> i64 {
        match self {
            Step::Second => 0,
            Step::Minute => 1,
            Step::Hour => 60,
            Step::Day => 1440,
        }
    }

    fn bucket_format(self) -> &'static str {
        match self {
            Step::Second => "%Y%m%d%H%M%S",
            Step::Minute => "%Y%m%d%H%M",
            Step::Hour => "%Y%m%d%H",
            Step::Day => "%Y%m%d",
        }
    }
}

/// One time point of a query.
#[derive(Debug, Clone)]
pub struct Point {
    /// The OAP time bucket, e.g. `202407011200`.
    pub bucket: String,
    /// Bucket start as an instant (wall clock interpreted in the server TZ).
    pub start: DateTime<Utc>,
}

/// A validated duration.
#[derive(Debug, Clone)]
pub struct Points {
    pub step: Step,
    pub points: Vec<Point>,
}

const UNEXPECTED: &str = "org.apache.skywalking.oap.server.core.UnexpectedException";

/// Parses and enumerates a GraphQL `Duration` argument. Errors are the inner
/// Java exception text (`java.lang.IllegalArgumentException: ...`).
pub fn points(profile: OapProfile, tz: FixedOffset, arg: Option<&Json>) -> Result<Points, String> {
    let obj = arg.and_then(Json::as_object);
    let get = |k: &str| {
        obj.and_then(|o| o.get(k))
            .and_then(Json::as_str)
            .unwrap_or("")
    };
    let step = Step::parse(get("step"))
        .ok_or_else(|| "java.lang.IllegalArgumentException: Unsupported step".to_string())?;
    let start = parse_time(profile, step, get("start"))?;
    let end = parse_time(profile, step, get("end"))?;
    let too_long = || {
        format!(
            "{UNEXPECTED}: Duration data error, the range between the start time and the end time can't exceed 500 {}",
            step.unit()
        )
    };
    if start > end || (start == end && !profile.allows_single_point()) {
        return Err(too_long());
    }
    let mut out = Vec::new();
    let mut t = start;
    while t <= end {
        if out.len() >= 500 {
            return Err(too_long());
        }
        let utc = tz
            .from_local_datetime(&t)
            .single()
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|| t.and_utc());
        out.push(Point {
            bucket: t.format(step.bucket_format()).to_string(),
            start: utc,
        });
        t += step.delta();
    }
    Ok(Points { step, points: out })
}

fn parse_time(profile: OapProfile, step: Step, s: &str) -> Result<NaiveDateTime, String> {
    if profile.checks_duration_format() {
        check_format(step, s)?;
        let digits: String = s.chars().filter(char::is_ascii_digit).collect();
        from_digits(&digits).ok_or_else(|| {
            format!("java.lang.IllegalArgumentException: Cannot parse \"{s}\": Value out of range")
        })
    } else {
        // 8.x–9.2 strip separators and Long.parseLong the rest: a mismatched
        // string silently lands on other buckets instead of failing.
        let digits: String = s.chars().filter(|c| *c != '-' && *c != ' ').collect();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "java.lang.NumberFormatException: For input string: \"{digits}\""
            ));
        }
        from_digits(&digits).ok_or_else(|| {
            format!("java.lang.IllegalArgumentException: Invalid format: \"{digits}\"")
        })
    }
}

/// Joda-like strict pattern check.
fn check_format(step: Step, s: &str) -> Result<(), String> {
    let pat: Vec<char> = step.pattern().chars().collect();
    let chars: Vec<char> = s.chars().collect();
    for (i, p) in pat.iter().enumerate() {
        let Some(c) = chars.get(i) else {
            return Err(format!(
                "java.lang.IllegalArgumentException: Invalid format: \"{s}\" is too short"
            ));
        };
        let ok = if *p == 'd' {
            c.is_ascii_digit()
        } else {
            c == p
        };
        if !ok {
            let rest: String = chars[i..].iter().collect();
            return Err(format!(
                "java.lang.IllegalArgumentException: Invalid format: \"{s}\" is malformed at \"{rest}\""
            ));
        }
    }
    if chars.len() > pat.len() {
        let rest: String = chars[pat.len()..].iter().collect();
        return Err(format!(
            "java.lang.IllegalArgumentException: Invalid format: \"{s}\" is malformed at \"{rest}\""
        ));
    }
    Ok(())
}

/// `yyyyMMdd[HH[mm[ss]]]` digits to a wall-clock time.
fn from_digits(d: &str) -> Option<NaiveDateTime> {
    let num = |a: usize, b: usize| d.get(a..b).and_then(|x| x.parse::<u32>().ok());
    if !matches!(d.len(), 8 | 10 | 12 | 14) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(4, 6)?, num(6, 8)?)?;
    let h = if d.len() >= 10 { num(8, 10)? } else { 0 };
    let m = if d.len() >= 12 { num(10, 12)? } else { 0 };
    let s = if d.len() >= 14 { num(12, 14)? } else { 0 };
    date.and_hms_opt(h, m, s)
}

/// `+0800` style, as `SimpleDateFormat("ZZZZZZ")` prints it.
pub fn tz_string(tz: FixedOffset) -> String {
    let secs = tz.local_minus_utc();
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.abs();
    format!("{sign}{:02}{:02}", a / 3600, (a % 3600) / 60)
}

/// Formats an instant as OAP expects for `step` in the server timezone (test helper for callers).
pub fn format_for_step(t: DateTime<Utc>, tz: FixedOffset, step: Step) -> String {
    let local = t.with_timezone(&tz);
    match step {
        Step::Second => local.format("%Y-%m-%d %H%M%S"),
        Step::Minute => local.format("%Y-%m-%d %H%M"),
        Step::Hour => local.format("%Y-%m-%d %H"),
        Step::Day => local.format("%Y-%m-%d"),
    }
    .to_string()
}
