//! Go-style duration strings (`30s`, `1m`, `1h30m`, `1.5h`, `500ms`), the syntax Argo
//! AnalysisTemplates use, so templates move between the two tools unchanged.

use std::time::Duration;

/// Longest duration accepted anywhere (ten years): every duration a user writes ends up added
/// to an instant or a timestamp, which must not overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86400);

/// Whole seconds (`pause: {duration: 30}`) as a duration within `0..=MAX_DURATION`.
pub fn duration_from_secs(secs: i64) -> Result<Duration, String> {
    match u64::try_from(secs) {
        Err(_) => Err(format!("negative duration {secs}")),
        Ok(s) if s > MAX_DURATION.as_secs() => Err(out_of_range(&secs.to_string())),
        Ok(s) => Ok(Duration::from_secs(s)),
    }
}

fn out_of_range(s: &str) -> String {
    format!(
        "duration {s:?} is out of range (at most {})",
        format_duration(MAX_DURATION)
    )
}

/// Parses a Go duration string; a bare integer means seconds (Argo accepts `pause: {duration: 30}`).
/// Anything past [`MAX_DURATION`] is an error, integers included.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return match t.parse::<u64>() {
            Ok(secs) if secs <= MAX_DURATION.as_secs() => Ok(Duration::from_secs(secs)),
            _ => Err(out_of_range(s)),
        };
    }
    if t.starts_with('-') {
        return Err(format!("negative duration {s:?}"));
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    let bytes = t.as_bytes();
    let mut i = 0;
    let mut total = 0f64;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        if start == i {
            return Err(format!(
                "invalid duration {s:?}: expected a number at {:?}",
                &t[start..]
            ));
        }
        let num: f64 = t[start..i]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: bad number {:?}", &t[start..i]))?;
        let ustart = i;
        while i < bytes.len() && !(bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let unit = &t[ustart..i];
        let factor = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit (ns, us, ms, s, m, h)"
                ));
            }
            other => return Err(format!("invalid duration {s:?}: unknown unit {other:?}")),
        };
        total += num * factor;
    }
    if !total.is_finite() || total > MAX_DURATION.as_secs_f64() {
        return Err(out_of_range(s));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats a duration compactly (`1h30m`, `45s`, `250ms`) for messages.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) && ms < 60_000 {
        return if ms < 1000 {
            format!("{ms}ms")
        } else {
            format!("{}s", d.as_secs_f64())
        };
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
    }

    #[test]
    fn bad_durations() {
        for s in ["", "5", "x", "5x", "-5s", "m", "1m5"] {
            if s == "5" {
                continue;
            }
            assert!(parse_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn integers_and_strings_share_the_bound() {
        for s in [
            "9000000000000000",
            "99999999999999999999999",
            "315360001",
            "87601h",
            "1e400h",
        ] {
            let e = parse_duration(s).unwrap_err();
            assert!(
                e.contains("out of range") || e.contains("invalid"),
                "{s}: {e}"
            );
        }
        assert_eq!(parse_duration("315360000").unwrap(), MAX_DURATION);
        assert_eq!(parse_duration("87600h").unwrap(), MAX_DURATION);
        assert_eq!(duration_from_secs(30).unwrap(), Duration::from_secs(30));
        assert!(duration_from_secs(-1).is_err());
        assert!(
            duration_from_secs(i64::MAX)
                .unwrap_err()
                .contains("out of range")
        );
        // whatever parses can be added to a timestamp without overflow
        let d = chrono::Duration::from_std(parse_duration("315360000").unwrap()).unwrap();
        assert!(chrono::Utc::now().checked_add_signed(d).is_some());
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
    }
}
