//! Cron expressions with Kubernetes CronJob semantics, evaluated by the `cron` crate in an IANA
//! time zone (pure).
//!
//! Accepted: 5 fields (`minute hour day-of-month month day-of-week`, as CronJob), 6 fields with
//! seconds first, and the macros `@yearly @annually @monthly @weekly @daily @midnight @hourly`.
//! Each field is parsed here (numbers, `*`, `?`, ranges `a-b`, steps `*/n` `a-b/n` `a/n`, lists,
//! month and weekday names) into its set of values, and handed to the `cron` crate as explicit
//! lists, so the crate's own conventions never leak in:
//! - weekdays count 0 = Sunday … 6 = Saturday, and 7 is Sunday too; the crate counts
//!   1 = Sunday … 7 = Saturday, so every weekday `d` becomes `d + 1`;
//! - when both day-of-month and day-of-week are restricted (neither starts with `*`/`?`), a
//!   day matches when **either** matches (cron's rule; CronJob follows it), whereas the crate
//!   requires both: such a schedule is evaluated as two crate schedules and merged.
//!
//! Time zones: a fire time is every instant whose wall-clock time in the zone matches the
//! expression (CronJob's rule). Wall-clock times skipped by a spring-forward transition do not
//! exist and never fire; wall-clock times repeated by a fall-back transition fire at both
//! instants. The crate iterates wall-clock (naive) times; the mapping to instants is done here.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// An invalid schedule or time zone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(pub String);

/// Wider than any UTC offset change of any zone (2 h at most), so instants and wall-clock
/// times within this distance of a transition are looked at together.
const SLACK: TimeDelta = TimeDelta::hours(3);

/// Wall-clock candidates looked at for one answer before giving up (a per-second schedule
/// next to a transition needs about 2 × 3 h of seconds).
const MAX_CANDIDATES: usize = 100_000;

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    source: String,
    tz: Tz,
    /// One crate schedule, or two when both day fields are restricted (either may match).
    parts: Vec<cron::Schedule>,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.tz == other.tz
    }
}

/// Bounds and names of one field.
struct FieldDef {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MONTH_NAMES: &[(&str, u32)] = &[
    ("jan", 1),
    ("feb", 2),
    ("mar", 3),
    ("apr", 4),
    ("may", 5),
    ("jun", 6),
    ("jul", 7),
    ("aug", 8),
    ("sep", 9),
    ("oct", 10),
    ("nov", 11),
    ("dec", 12),
];

const DAY_NAMES: &[(&str, u32)] = &[
    ("sun", 0),
    ("mon", 1),
    ("tue", 2),
    ("wed", 3),
    ("thu", 4),
    ("fri", 5),
    ("sat", 6),
];

const SECOND: FieldDef = FieldDef {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: FieldDef = FieldDef {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldDef = FieldDef {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: FieldDef = FieldDef {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldDef = FieldDef {
    name: "month",
    min: 1,
    max: 12,
    names: MONTH_NAMES,
};
/// 7 is accepted as Sunday and folded to 0 after parsing.
const DAY_OF_WEEK: FieldDef = FieldDef {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: DAY_NAMES,
};

/// A parsed field: its values, and whether it is unrestricted in cron's sense (`*` or `?`
/// without a step greater than 1), which decides how the two day fields combine.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    values: BTreeSet<u32>,
    star: bool,
}

fn value(s: &str, def: &FieldDef) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some((_, v)) = def.names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    let v: u32 = s.parse().map_err(|_| {
        if def.names.is_empty() {
            format!("{s:?} is not a number")
        } else {
            let names: Vec<&str> = def.names.iter().map(|(n, _)| *n).collect();
            format!("{s:?} is neither a number nor one of {}", names.join(", "))
        }
    })?;
    if v < def.min || v > def.max {
        return Err(format!("{v} is outside {}-{}", def.min, def.max));
    }
    Ok(v)
}

fn parse_field(text: &str, def: &FieldDef) -> Result<Field, String> {
    let mut values = BTreeSet::new();
    let mut star = false;
    for item in text.split(',') {
        if item.is_empty() {
            return Err("empty list item".into());
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("step {s:?} is not a number"))?;
                if step == 0 {
                    return Err("step must be at least 1".into());
                }
                (r, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi, is_star) = if range == "*" || range == "?" {
            (def.min, def.max, true)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a, def)?, value(b, def)?);
            if a > b {
                return Err(format!("range {range:?} starts after it ends"));
            }
            (a, b, false)
        } else {
            let a = value(range, def)?;
            // `a/n` means `a-max/n` (as in CronJob).
            (a, if step.is_some() { def.max } else { a }, false)
        };
        let step = step.unwrap_or(1);
        star |= is_star && step == 1;
        let mut v = lo;
        while v <= hi {
            values.insert(v);
            v = match v.checked_add(step) {
                Some(n) => n,
                None => break,
            };
        }
    }
    Ok(Field { values, star })
}

fn list(values: impl IntoIterator<Item = u32>) -> String {
    values
        .into_iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A field for the crate: `*` when every value is in, else the explicit list.
fn emit(f: &Field, def: &FieldDef) -> String {
    if f.values.len() == (def.max - def.min + 1) as usize {
        "*".to_string()
    } else {
        list(f.values.iter().copied())
    }
}

/// The 5- or 6-field text of a macro.
fn expand_macro(m: &str) -> Result<&'static str, CronError> {
    Ok(match m.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        "@every" => {
            return Err(CronError(
                "@every is not supported: use a step, e.g. \"*/30 * * * * *\" (every 30 s) or \"*/5 * * * *\" (every 5 min)".into(),
            ));
        }
        other => {
            return Err(CronError(format!(
                "unknown macro {other:?} (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
            )));
        }
    })
}

/// Parses an IANA zone name (`Asia/Shanghai`); `None` or empty means UTC.
pub fn parse_time_zone(name: Option<&str>) -> Result<Tz, CronError> {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        None => Ok(Tz::UTC),
        Some(n) => Tz::from_str(n).map_err(|_| {
            CronError(format!(
                "unknown time zone {n:?} (expected an IANA name such as UTC, Europe/Berlin or Asia/Shanghai)"
            ))
        }),
    }
}

impl CronSchedule {
    /// Parses `expr` (CronJob syntax, see the module doc) in the zone `time_zone` (IANA; UTC
    /// when `None`). A schedule that can never fire (e.g. `0 0 30 2 *`) is an error.
    pub fn parse(expr: &str, time_zone: Option<&str>) -> Result<Self, CronError> {
        let tz = parse_time_zone(time_zone)?;
        let source = expr.trim();
        if source.is_empty() {
            return Err(CronError("empty schedule".into()));
        }
        let upper = source.to_ascii_uppercase();
        if upper.starts_with("TZ=") || upper.starts_with("CRON_TZ=") {
            return Err(CronError(
                "a time zone inside the schedule is not supported (nor by CronJob): set spec.timeZone".into(),
            ));
        }
        let text = match source.split_whitespace().next() {
            Some(first) if first.starts_with('@') => {
                if source.split_whitespace().count() > 1 {
                    return Err(CronError(format!("a macro stands alone; got {source:?}")));
                }
                expand_macro(first)?
            }
            _ => source,
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (sec, rest): (&str, &[&str]) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(CronError(format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week), 6 with seconds first, or a macro such as @daily; got {n} field(s)"
                )));
            }
        };
        let at = |def: &FieldDef, text: &str| {
            parse_field(text, def)
                .map_err(|e| CronError(format!("{} field {text:?}: {e}", def.name)))
        };
        let second = at(&SECOND, sec)?;
        let minute = at(&MINUTE, rest[0])?;
        let hour = at(&HOUR, rest[1])?;
        let dom = at(&DAY_OF_MONTH, rest[2])?;
        let month = at(&MONTH, rest[3])?;
        let mut dow = at(&DAY_OF_WEEK, rest[4])?;
        if dow.values.remove(&7) {
            dow.values.insert(0);
        }
        // The crate counts weekdays from 1 = Sunday.
        let dow_list = if dow.values.len() == 7 {
            "*".to_string()
        } else {
            list(dow.values.iter().map(|d| d + 1))
        };
        let head = format!(
            "{} {} {}",
            emit(&second, &SECOND),
            emit(&minute, &MINUTE),
            emit(&hour, &HOUR)
        );
        let month_list = emit(&month, &MONTH);
        let dom_list = emit(&dom, &DAY_OF_MONTH);
        let crate_exprs = match (dom.star, dow.star) {
            (true, true) => vec![format!("{head} * {month_list} *")],
            (false, true) => vec![format!("{head} {dom_list} {month_list} *")],
            (true, false) => vec![format!("{head} * {month_list} {dow_list}")],
            (false, false) => vec![
                format!("{head} {dom_list} {month_list} *"),
                format!("{head} * {month_list} {dow_list}"),
            ],
        };
        let parts = crate_exprs
            .iter()
            .map(|e| {
                cron::Schedule::from_str(e)
                    .map_err(|err| CronError(format!("{source:?} → {e:?}: {err}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let s = CronSchedule {
            source: source.to_string(),
            tz,
            parts,
        };
        // From 1970 the crate looks up to 2100: one match means the schedule can fire.
        if s.local_next(DateTime::UNIX_EPOCH.naive_utc()).is_none() {
            return Err(CronError(format!(
                "{source:?} never fires (no date matches it)"
            )));
        }
        Ok(s)
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The time zone.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The `cron` crate expressions this schedule was translated to (for tests and logs).
    pub fn translated(&self) -> Vec<String> {
        self.parts.iter().map(|p| p.source().to_string()).collect()
    }

    /// The first matching wall-clock time strictly after `t` (wall-clock).
    fn local_next(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let from = Utc.from_utc_datetime(&t);
        self.parts
            .iter()
            .filter_map(|p| p.after(&from).next())
            .min()
            .map(|d| d.naive_utc())
    }

    /// The last matching wall-clock time strictly before `t` (wall-clock).
    fn local_prev(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let from = Utc.from_utc_datetime(&t);
        self.parts
            .iter()
            .filter_map(|p| p.after(&from).next_back())
            .max()
            .map(|d| d.naive_utc())
    }

    /// The instants of a wall-clock time: none in a gap, two in a fold.
    fn instants(&self, local: NaiveDateTime) -> Vec<DateTime<Utc>> {
        match self.tz.from_local_datetime(&local) {
            LocalResult::None => Vec::new(),
            LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
            LocalResult::Ambiguous(a, b) => vec![a.with_timezone(&Utc), b.with_timezone(&Utc)],
        }
    }

    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.with_timezone(&self.tz).naive_local()
    }

    /// No offset change between `a` and `b` (both within a day): the zone maps wall-clock
    /// times to instants by one offset there.
    fn steady(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
        use chrono::Offset;
        let off = |t: DateTime<Utc>| t.with_timezone(&self.tz).offset().fix();
        b - a <= TimeDelta::hours(20) && off(a) == off(b)
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = floor_second(after);
        let local_after = self.local(after);
        // Fast path: no transition nearby, the first wall-clock match is the answer.
        let first = self.local_next(local_after)?;
        if let [only] = self.instants(first)[..]
            && self.steady(after - SLACK, only + SLACK)
        {
            return Some(only);
        }
        // Near a transition wall-clock order and instant order differ: look at every
        // wall-clock candidate from SLACK before until SLACK past the best instant found.
        let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
        let mut cursor = local_after - SLACK;
        for _ in 0..MAX_CANDIDATES {
            let Some(c) = self.local_next(cursor) else {
                break;
            };
            if best.is_some_and(|(_, l)| c > l + SLACK) {
                break;
            }
            for i in self.instants(c) {
                if i > after && best.is_none_or(|(b, _)| i < b) {
                    best = Some((i, c));
                }
            }
            cursor = c;
        }
        best.map(|(b, _)| b)
    }

    /// The last fire time at or before `at` and strictly after `floor`.
    pub fn latest_between(&self, floor: DateTime<Utc>, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let at = floor_second(at);
        if at <= floor {
            return None;
        }
        let local_at = self.local(at);
        let plus_one = local_at + TimeDelta::seconds(1);
        let first = self.local_prev(plus_one)?;
        if let [only] = self.instants(first)[..]
            && self.steady(only - SLACK, at + SLACK)
        {
            return (only > floor).then_some(only);
        }
        let local_floor = self.local(floor);
        let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
        let mut cursor = local_at + SLACK;
        for _ in 0..MAX_CANDIDATES {
            let Some(c) = self.local_prev(cursor) else {
                break;
            };
            if best.is_some_and(|(_, l)| c < l - SLACK) || c < local_floor - SLACK {
                break;
            }
            for i in self.instants(c) {
                if i <= at && i > floor && best.is_none_or(|(b, _)| i > b) {
                    best = Some((i, c));
                }
            }
            cursor = c;
        }
        best.map(|(b, _)| b)
    }

    /// Fire times in `(from, to]`, counting at most `cap` (`cap + 1` means "more than cap").
    pub fn count_between(&self, from: DateTime<Utc>, to: DateTime<Utc>, cap: u32) -> u32 {
        let mut n = 0;
        let mut t = from;
        while n <= cap {
            match self.next_after(t) {
                Some(next) if next <= to => {
                    n += 1;
                    t = next;
                }
                _ => break,
            }
        }
        n
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.source, self.tz.name())
    }
}

fn floor_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

#[cfg(test)]
#[path = "cron_tests.rs"]
mod tests;
