//! The `Duration` window sent to the OAP, computed as a pure function of `now`.
//!
//! Buckets are wall-clock times in the OAP JVM's timezone, so the strings are
//! formatted in that zone (half-hour offsets included: swctl drops the minutes
//! of `+0530`, we do not). Both ends are inclusive.

use chrono::{DateTime, FixedOffset, Utc};

use super::{ProviderError, Step};

/// The OAP rejects windows with more than this many points.
pub const MAX_POINTS: u32 = 500;

/// A window as sent in `Duration { start end step }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Window {
    pub start: String,
    pub end: String,
    pub step: Step,
    /// Number of buckets (inclusive on both ends).
    pub points: u32,
    /// The requested span exceeded [`MAX_POINTS`] and the start was moved forward.
    pub clamped: bool,
    /// First bucket as wall-clock seconds in the OAP zone (read as if UTC).
    pub start_local: i64,
    /// The OAP zone's offset from UTC, seconds.
    pub offset_secs: i32,
}

impl Window {
    /// Index of the bucket that starts at `local` (wall-clock seconds in the OAP zone), or
    /// `None` when no bucket of this window starts there: the point is from another time.
    pub fn slot_of_local(&self, local: i64) -> Option<usize> {
        let step = self.step.seconds();
        let since = local.checked_sub(self.start_local)?;
        if since < 0 || since % step != 0 {
            return None;
        }
        let i = usize::try_from(since / step).ok()?;
        (i < self.points as usize).then_some(i)
    }

    /// Slot of an MQE id: the bucket start as epoch milliseconds (the OAP parses the bucket
    /// in its zone, so a wrong zone shows up here as every point being outside).
    pub fn slot_of_epoch_ms(&self, id: &str) -> Option<usize> {
        let ms: i64 = id.trim().parse().ok()?;
        if ms % 1000 != 0 {
            return None;
        }
        let local = (ms / 1000).checked_add(i64::from(self.offset_secs))?;
        self.slot_of_local(local)
    }

    /// Slot of a v2 `KVInt` id. Its shape depends on the storage (`<bucket>_<entity>`,
    /// `<metric>_<bucket>_<entity>`), so the bucket is the `_`-separated all-digit part
    /// with the step's length (`yyyyMMddHHmm` for MINUTE).
    pub fn slot_of_bucket_id(&self, id: &str) -> Option<usize> {
        let len = match self.step {
            Step::Second => 14,
            Step::Minute => 12,
            Step::Hour => 10,
            Step::Day => 8,
        };
        id.split('_')
            .filter(|part| part.len() == len && part.bytes().all(|b| b.is_ascii_digit()))
            .find_map(|part| bucket_local_secs(part).and_then(|t| self.slot_of_local(t)))
    }
}

/// `yyyyMMdd[HH[mm[ss]]]` → wall-clock seconds (read as if UTC); `None` if not a real time.
fn bucket_local_secs(digits: &str) -> Option<i64> {
    let num = |a: usize, b: usize| -> Option<u32> {
        match digits.get(a..b) {
            Some(s) if !s.is_empty() => s.parse().ok(),
            _ => Some(0),
        }
    };
    let year = i32::try_from(num(0, 4)?).ok()?;
    let date = chrono::NaiveDate::from_ymd_opt(year, num(4, 6)?, num(6, 8)?)?;
    let t = date.and_hms_opt(num(8, 10)?, num(10, 12)?, num(12, 14)?)?;
    Some(t.and_utc().timestamp())
}

/// Computes the window ending at the last *closed* bucket before `now`.
///
/// - end = floor(now, step) − 1 step: the current bucket is still filling up
///   (metrics are persisted every ~25 s) and would read as a partial value.
/// - start = end − span + 1 step, with the span rounded up to whole steps.
/// - At least 2 buckets: `start == end` fails on OAP < 9.4.
/// - At most [`MAX_POINTS`] buckets: the start is clamped (the newest data is kept).
pub fn window(
    now: DateTime<Utc>,
    tz: FixedOffset,
    span: std::time::Duration,
    step: Step,
) -> Result<Window, ProviderError> {
    let step_secs = step.seconds();
    // Wall-clock seconds in the OAP zone, as if it were UTC; flooring this
    // floors the local bucket (midnight for DAY).
    let local = now.timestamp() + i64::from(tz.local_minus_utc());
    let floor = local.div_euclid(step_secs) * step_secs;
    let end = floor - step_secs;
    let step_ms = u128::from(step_secs.unsigned_abs()) * 1000;
    let wanted = span.as_millis().div_ceil(step_ms);
    let points = wanted.clamp(2, u128::from(MAX_POINTS));
    let clamped = wanted > u128::from(MAX_POINTS);
    let points = u32::try_from(points).unwrap_or(MAX_POINTS);
    let start = end - (i64::from(points) - 1) * step_secs;
    Ok(Window {
        start: format_bucket(start, step)?,
        end: format_bucket(end, step)?,
        step,
        points,
        clamped,
        start_local: start,
        offset_secs: tz.local_minus_utc(),
    })
}

/// A window that holds only evidence from after the last routing change, or when it will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aligned {
    /// Measure with this window.
    Ready(Window),
    /// Fewer than two complete buckets began after the change (the OAP refuses a one-bucket
    /// window before 9.4): nothing may be measured before this time.
    WaitUntil(DateTime<Utc>),
}

/// [`window`], starting no earlier than the first bucket that begins at or after `changed`
/// (the canary's last weight, header or mirror route change): a bucket that began before it
/// holds traffic of the previous routing and is not evidence for the current one. `None`
/// (scheduled analyses, `analyze`) is [`window`] unchanged. A change in the future waits too.
pub fn aligned_window(
    now: DateTime<Utc>,
    tz: FixedOffset,
    span: std::time::Duration,
    step: Step,
    changed: Option<DateTime<Utc>>,
) -> Result<Aligned, ProviderError> {
    let w = window(now, tz, span, step)?;
    let Some(changed) = changed else {
        return Ok(Aligned::Ready(w));
    };
    let step_secs = step.seconds();
    let offset = i64::from(tz.local_minus_utc());
    let out_of_range =
        || ProviderError::Config(format!("routing change time {changed} is out of range"));
    // First bucket starting at or after the change, in OAP wall-clock seconds. A change at
    // 12:07:00.2 is after the start of bucket 12:07: that bucket is mixed too.
    let local = changed
        .timestamp()
        .checked_add(offset)
        .ok_or_else(out_of_range)?;
    let on_boundary = local.rem_euclid(step_secs) == 0 && changed.timestamp_subsec_nanos() == 0;
    let first = local
        .div_euclid(step_secs)
        .checked_add(i64::from(!on_boundary))
        .and_then(|b| b.checked_mul(step_secs))
        .ok_or_else(out_of_range)?;
    if w.start_local >= first {
        return Ok(Aligned::Ready(w));
    }
    let end = w.start_local + (i64::from(w.points) - 1) * step_secs;
    if end.checked_sub(first).is_some_and(|d| d >= step_secs) {
        let points = u32::try_from((end - first) / step_secs + 1).map_err(|_| out_of_range())?;
        return Ok(Aligned::Ready(Window {
            start: format_bucket(first, step)?,
            points,
            clamped: false,
            start_local: first,
            ..w
        }));
    }
    // The bucket `first + step` closes (so the window [first, first + step] exists) at
    // `first + 2 steps`, local time.
    let ready_local = first
        .checked_add(step_secs.saturating_mul(2))
        .and_then(|t| t.checked_sub(offset))
        .ok_or_else(out_of_range)?;
    DateTime::from_timestamp(ready_local, 0)
        .map(Aligned::WaitUntil)
        .ok_or_else(out_of_range)
}

/// Formats local wall-clock seconds with the OAP pattern for `step`.
fn format_bucket(local_secs: i64, step: Step) -> Result<String, ProviderError> {
    let t = DateTime::from_timestamp(local_secs, 0)
        .ok_or_else(|| ProviderError::Config(format!("time {local_secs} is out of range")))?
        .naive_utc();
    let pattern = match step {
        Step::Second => "%Y-%m-%d %H%M%S",
        Step::Minute => "%Y-%m-%d %H%M",
        Step::Hour => "%Y-%m-%d %H",
        Step::Day => "%Y-%m-%d",
    };
    Ok(t.format(pattern).to_string())
}

/// Parses `getTimeInfo.timezone` (`"+0800"`, `"-0330"`, also `"+05:30"`, `"+08"`, `"Z"`).
/// Minutes are kept.
pub fn parse_timezone(s: &str) -> Option<FixedOffset> {
    let s = s.trim();
    if s == "Z" || s.eq_ignore_ascii_case("UTC") || s.eq_ignore_ascii_case("GMT") {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i32>().ok()?, 0),
        4 => (
            digits[..2].parse::<i32>().ok()?,
            digits[2..].parse::<i32>().ok()?,
        ),
        _ => return None,
    };
    if h > 18 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid test time")
    }

    fn tz(s: &str) -> FixedOffset {
        parse_timezone(s).expect("valid test zone")
    }

    fn w(now: DateTime<Utc>, zone: &str, span_secs: u64, step: Step) -> Window {
        window(now, tz(zone), Duration::from_secs(span_secs), step).expect("window")
    }

    #[test]
    fn minute_window_utc_excludes_open_bucket() {
        let x = w(at(2024, 7, 1, 12, 5, 42), "+0000", 300, Step::Minute);
        assert_eq!(
            (x.start.as_str(), x.end.as_str()),
            ("2024-07-01 1200", "2024-07-01 1204")
        );
        assert_eq!(x.points, 5);
        assert!(!x.clamped);
    }

    #[test]
    fn formats_in_server_zone_with_half_hours() {
        let now = at(2024, 7, 1, 12, 5, 42);
        let x = w(now, "+0800", 300, Step::Minute);
        assert_eq!(
            (x.start.as_str(), x.end.as_str()),
            ("2024-07-01 2000", "2024-07-01 2004")
        );
        let x = w(now, "+0530", 300, Step::Minute);
        assert_eq!(
            (x.start.as_str(), x.end.as_str()),
            ("2024-07-01 1730", "2024-07-01 1734")
        );
        let x = w(now, "-0330", 300, Step::Minute);
        assert_eq!(
            (x.start.as_str(), x.end.as_str()),
            ("2024-07-01 0830", "2024-07-01 0834")
        );
        // Crossing midnight backwards.
        let x = w(at(2024, 7, 1, 2, 0, 10), "-0330", 120, Step::Minute);
        assert_eq!(
            (x.start.as_str(), x.end.as_str()),
            ("2024-06-30 2228", "2024-06-30 2229")
        );
    }

    #[test]
    fn every_step_format() {
        let now = at(2024, 7, 1, 12, 5, 42);
        let x = w(now, "+0000", 10, Step::Second);
        assert_eq!(
            (x.start.as_str(), x.end.as_str()),
            ("2024-07-01 120532", "2024-07-01 120541")
        );
        let x = w(now, "+0000", 3 * 3600, Step::Hour);
        assert_eq!(
            (x.start.as_str(), x.end.as_str()),
            ("2024-07-01 09", "2024-07-01 11")
        );
        let x = w(now, "+0000", 3 * 86_400, Step::Day);
        assert_eq!(
            (x.start.as_str(), x.end.as_str()),
            ("2024-06-28", "2024-06-30")
        );
        // DAY floors at the OAP's local midnight: 12:05 UTC is 02:05 on July 2 in +1400.
        let x = w(now, "+1400", 2 * 86_400, Step::Day);
        assert_eq!(
            (x.start.as_str(), x.end.as_str()),
            ("2024-06-30", "2024-07-01")
        );
    }

    #[test]
    fn never_a_single_bucket() {
        let now = at(2024, 7, 1, 12, 5, 0);
        for span in [0, 1, 59, 60] {
            let x = w(now, "+0000", span, Step::Minute);
            assert_eq!(x.points, 2, "span {span}");
            assert_ne!(x.start, x.end);
            assert_eq!(
                (x.start.as_str(), x.end.as_str()),
                ("2024-07-01 1203", "2024-07-01 1204")
            );
        }
    }

    #[test]
    fn partial_steps_round_up() {
        let x = w(at(2024, 7, 1, 12, 5, 0), "+0000", 150, Step::Minute);
        assert_eq!(x.points, 3);
        assert_eq!(x.start, "2024-07-01 1202");
    }

    #[test]
    fn clamps_to_500_points() {
        let x = w(at(2024, 7, 1, 12, 5, 0), "+0000", 1000 * 60, Step::Minute);
        assert_eq!(x.points, MAX_POINTS);
        assert!(x.clamped);
        assert_eq!(x.end, "2024-07-01 1204");
        // 499 minutes before 12:04 = 03:45.
        assert_eq!(x.start, "2024-07-01 0345");
        let x = w(at(2024, 7, 1, 12, 5, 0), "+0000", 500 * 60, Step::Minute);
        assert_eq!(x.points, MAX_POINTS);
        assert!(!x.clamped);
    }

    #[test]
    fn slots_accept_only_the_window_buckets() {
        // 12:00..12:04 in +0800 local time = 04:00..04:04 UTC.
        let x = w(at(2024, 7, 1, 4, 5, 42), "+0800", 300, Step::Minute);
        assert_eq!(x.start, "2024-07-01 1200");
        let ms = |h, m| at(2024, 7, 1, h, m, 0).timestamp_millis().to_string();
        assert_eq!(x.slot_of_epoch_ms(&ms(4, 0)), Some(0));
        assert_eq!(x.slot_of_epoch_ms(&ms(4, 4)), Some(4));
        // The still-open bucket, one before the window, the same time read as UTC, 1970,
        // a day earlier, mid-bucket and junk are all outside.
        for bad in [
            ms(4, 5),
            ms(3, 59),
            ms(12, 0),
            "0".to_string(),
            at(2024, 6, 30, 4, 0, 0).timestamp_millis().to_string(),
            (at(2024, 7, 1, 4, 1, 0).timestamp_millis() + 500).to_string(),
            "x".to_string(),
            i64::MAX.to_string(),
            i64::MIN.to_string(),
        ] {
            assert_eq!(x.slot_of_epoch_ms(&bad), None, "{bad}");
        }
        assert_eq!(
            x.slot_of_bucket_id("202407011203_cmV2aWV3cy5ib29raW5mbw==.1"),
            Some(3)
        );
        assert_eq!(
            x.slot_of_bucket_id("service_apdex_202407011200_Y2FuYXJ5=.1"),
            Some(0)
        );
        for bad in [
            "202406301203_cmV2.1",
            "197001010000_cmV2.1",
            "202407011205_cmV2.1",
            "202407011299_x",
            "2024070112_x",
            "a",
            "",
        ] {
            assert_eq!(x.slot_of_bucket_id(bad), None, "{bad}");
        }
        let d = w(at(2024, 7, 1, 12, 5, 42), "+0000", 2 * 86_400, Step::Day);
        assert_eq!(d.slot_of_bucket_id("20240630_x"), Some(1));
        let h = w(at(2024, 7, 1, 12, 5, 42), "+0000", 3 * 3600, Step::Hour);
        assert_eq!(h.slot_of_bucket_id("2024070110_x"), Some(1));
    }

    fn aligned(
        now: DateTime<Utc>,
        zone: &str,
        span: u64,
        step: Step,
        changed: Option<DateTime<Utc>>,
    ) -> Aligned {
        aligned_window(now, tz(zone), Duration::from_secs(span), step, changed).expect("aligned")
    }

    fn ready(a: Aligned) -> (String, String, u32) {
        match a {
            Aligned::Ready(w) => (w.start, w.end, w.points),
            Aligned::WaitUntil(t) => panic!("expected a window, waits until {t}"),
        }
    }

    /// (changed, zone, span seconds, step, expected (start, end, points) or wait-until).
    type Case = (
        Option<DateTime<Utc>>,
        &'static str,
        u64,
        Step,
        Result<(String, String, u32), DateTime<Utc>>,
    );

    #[test]
    fn aligned_window_starts_after_the_routing_change() {
        let now = at(2024, 7, 1, 12, 10, 30);
        let s = |a: &str, b: &str, n: u32| (a.to_string(), b.to_string(), n);
        // (changed, zone, span, step, expected window or wait)
        let cases: Vec<Case> = vec![
            // Opt-out / no change known: today's window.
            (
                None,
                "+0000",
                300,
                Step::Minute,
                Ok(s("2024-07-01 1205", "2024-07-01 1209", 5)),
            ),
            // Change long ago: nothing to cut.
            (
                Some(at(2024, 7, 1, 11, 0, 0)),
                "+0000",
                300,
                Step::Minute,
                Ok(s("2024-07-01 1205", "2024-07-01 1209", 5)),
            ),
            // Mid-bucket change at 12:06:20: bucket 12:06 is mixed, 12:07 is the first clean one.
            (
                Some(at(2024, 7, 1, 12, 6, 20)),
                "+0000",
                300,
                Step::Minute,
                Ok(s("2024-07-01 1207", "2024-07-01 1209", 3)),
            ),
            // Exactly on a boundary: the bucket starting at the change is clean.
            (
                Some(at(2024, 7, 1, 12, 7, 0)),
                "+0000",
                300,
                Step::Minute,
                Ok(s("2024-07-01 1207", "2024-07-01 1209", 3)),
            ),
            // A fraction of a second past a boundary: that bucket began before the change.
            (
                Some(at(2024, 7, 1, 12, 7, 0) + chrono::TimeDelta::milliseconds(170)),
                "+0000",
                300,
                Step::Minute,
                Ok(s("2024-07-01 1208", "2024-07-01 1209", 2)),
            ),
            // Only one clean closed bucket (12:09): wait until 12:08 + 2 min... the change
            // at 12:08:01 makes 12:09 the first clean bucket; [12:09, 12:10] closes at 12:11.
            (
                Some(at(2024, 7, 1, 12, 8, 1)),
                "+0000",
                300,
                Step::Minute,
                Err(at(2024, 7, 1, 12, 11, 0)),
            ),
            // On a boundary with one closed bucket since: wait for the second.
            (
                Some(at(2024, 7, 1, 12, 9, 0)),
                "+0000",
                300,
                Step::Minute,
                Err(at(2024, 7, 1, 12, 11, 0)),
            ),
            // A change in the future never reads the past.
            (
                Some(at(2024, 7, 1, 12, 30, 0)),
                "+0000",
                300,
                Step::Minute,
                Err(at(2024, 7, 1, 12, 32, 0)),
            ),
            // HOUR: change at 09:15 → first clean hour 10, window [10, 11] (now 12:10).
            (
                Some(at(2024, 7, 1, 9, 15, 0)),
                "+0000",
                5 * 3600,
                Step::Hour,
                Ok(s("2024-07-01 10", "2024-07-01 11", 2)),
            ),
            // HOUR, change at 10:00 exactly: [10, 11] too.
            (
                Some(at(2024, 7, 1, 10, 0, 0)),
                "+0000",
                5 * 3600,
                Step::Hour,
                Ok(s("2024-07-01 10", "2024-07-01 11", 2)),
            ),
            // HOUR, change at 10:00:01: first clean hour 11; [11, 12] closes at 13:00.
            (
                Some(at(2024, 7, 1, 10, 0, 1)),
                "+0000",
                5 * 3600,
                Step::Hour,
                Err(at(2024, 7, 1, 13, 0, 0)),
            ),
            // HOUR buckets in a +0530 zone start at :30 UTC (now = 17:40 local, last closed
            // hour 16): change 08:45 UTC = 14:15 local → first clean hour 15, window [15, 16].
            (
                Some(at(2024, 7, 1, 8, 45, 0)),
                "+0530",
                5 * 3600,
                Step::Hour,
                Ok(s("2024-07-01 15", "2024-07-01 16", 2)),
            ),
            // Change 09:45 UTC = 15:15 local: [16, 17] closes at 18:00 local = 12:30 UTC.
            (
                Some(at(2024, 7, 1, 9, 45, 0)),
                "+0530",
                5 * 3600,
                Step::Hour,
                Err(at(2024, 7, 1, 12, 30, 0)),
            ),
            (
                Some(at(2024, 7, 1, 10, 45, 0)),
                "+0530",
                5 * 3600,
                Step::Hour,
                Err(at(2024, 7, 1, 13, 30, 0)),
            ),
            // MINUTE in +0800: the change's minute boundary is the same, the strings local.
            (
                Some(at(2024, 7, 1, 12, 6, 20)),
                "+0800",
                300,
                Step::Minute,
                Ok(s("2024-07-01 2007", "2024-07-01 2009", 3)),
            ),
        ];
        for (i, (changed, zone, span, step, want)) in cases.into_iter().enumerate() {
            let got = aligned(now, zone, span, step, changed);
            match want {
                Ok(w) => assert_eq!(ready(got), w, "case {i}"),
                Err(t) => assert_eq!(got, Aligned::WaitUntil(t), "case {i}"),
            }
        }
    }

    #[test]
    fn an_aligned_window_checks_points_from_its_new_start() {
        // The slot check follows the cut start: the mixed bucket 12:06 is outside.
        let now = at(2024, 7, 1, 12, 10, 30);
        let Aligned::Ready(w) = aligned(
            now,
            "+0000",
            300,
            Step::Minute,
            Some(at(2024, 7, 1, 12, 6, 20)),
        ) else {
            panic!("ready");
        };
        let ms = |m| at(2024, 7, 1, 12, m, 0).timestamp_millis().to_string();
        assert_eq!(w.slot_of_epoch_ms(&ms(6)), None);
        assert_eq!(w.slot_of_epoch_ms(&ms(7)), Some(0));
        assert_eq!(w.slot_of_epoch_ms(&ms(9)), Some(2));
        assert_eq!(w.slot_of_epoch_ms(&ms(10)), None);
    }

    #[test]
    fn waiting_ends_exactly_when_the_window_exists() {
        let changed = Some(at(2024, 7, 1, 12, 8, 1));
        let Aligned::WaitUntil(t) = aligned(
            at(2024, 7, 1, 12, 10, 30),
            "+0000",
            300,
            Step::Minute,
            changed,
        ) else {
            panic!("waits");
        };
        assert_eq!(
            ready(aligned(t, "+0000", 300, Step::Minute, changed)),
            ("2024-07-01 1209".into(), "2024-07-01 1210".into(), 2)
        );
        let just_before = t - chrono::Duration::seconds(1);
        assert!(matches!(
            aligned(just_before, "+0000", 300, Step::Minute, changed),
            Aligned::WaitUntil(_)
        ));
    }

    #[test]
    fn parses_timezones() {
        assert_eq!(tz("+0800").local_minus_utc(), 8 * 3600);
        assert_eq!(tz("+0530").local_minus_utc(), 5 * 3600 + 1800);
        assert_eq!(tz("-0330").local_minus_utc(), -(3 * 3600 + 1800));
        assert_eq!(tz("+05:45").local_minus_utc(), 5 * 3600 + 2700);
        assert_eq!(tz("+0000").local_minus_utc(), 0);
        assert_eq!(tz("-08").local_minus_utc(), -8 * 3600);
        assert_eq!(tz("Z").local_minus_utc(), 0);
        for bad in [
            "",
            "0800",
            "+8",
            "+08000",
            "+ab00",
            "+2500",
            "+0860",
            "Asia/Shanghai",
        ] {
            assert!(parse_timezone(bad).is_none(), "{bad}");
        }
    }
}
