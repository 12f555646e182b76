//! The standard `process_*` metrics (CPU, memory, file descriptors, start time), read from
//! `/proc/self` at each scrape, so dashboards built for other Prometheus clients work as they
//! are. Linux only: elsewhere the collector is not registered and the families are absent.
//!
//! prometheus-client ships no process collector; the parsing is split from the reading so
//! every field is tested on fixed text.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// `/proc/[pid]/stat` times are in `USER_HZ` ticks, which Linux fixes at 100 on every
/// architecture it reports to user space (the kernel's `CLOCK_TICKS`/`sysconf(_SC_CLK_TCK)`).
const USER_HZ: f64 = 100.0;

/// Why a `/proc` file could not be read as expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcError {
    /// A field the kernel always writes is missing or not a number.
    #[error("{file}: field {field} missing or not a number")]
    Field {
        /// Which file.
        file: &'static str,
        /// Which field.
        field: &'static str,
    },
}

/// The fields of `/proc/self/stat` the metrics need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatFields {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Start time after boot, in seconds.
    pub start_after_boot_seconds: f64,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: u64,
}

/// One process snapshot, as exported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// `process_cpu_seconds_total`.
    pub cpu_seconds: f64,
    /// `process_resident_memory_bytes`.
    pub resident_bytes: u64,
    /// `process_virtual_memory_bytes`.
    pub virtual_bytes: u64,
    /// `process_open_fds`.
    pub open_fds: u64,
    /// `process_max_fds` (the soft `RLIMIT_NOFILE`); `None` when unlimited.
    pub max_fds: Option<u64>,
    /// `process_start_time_seconds` (Unix time).
    pub start_time_seconds: f64,
}

/// Parses `/proc/self/stat`. The command name (field 2) is in parentheses and may hold
/// spaces or parentheses itself, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Result<StatFields, ProcError> {
    let err = |field| ProcError::Field {
        file: "/proc/self/stat",
        field,
    };
    let after = text.rfind(')').map(|i| &text[i + 1..]).ok_or(err("comm"))?;
    // Field 3 (state) is the first after the name; field n is at index n - 3.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let num = |n: usize, name| -> Result<u64, ProcError> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or(err(name))
    };
    let utime = num(14, "utime")?;
    let stime = num(15, "stime")?;
    let start = num(22, "starttime")?;
    let vsize = num(23, "vsize")?;
    Ok(StatFields {
        cpu_seconds: (utime.saturating_add(stime)) as f64 / USER_HZ,
        start_after_boot_seconds: start as f64 / USER_HZ,
        virtual_bytes: vsize,
    })
}

/// The resident set size from `/proc/self/status` (`VmRSS:  1234 kB`), in bytes.
pub fn parse_rss_bytes(status: &str) -> Result<u64, ProcError> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb.saturating_mul(1024))
        .ok_or(ProcError::Field {
            file: "/proc/self/status",
            field: "VmRSS",
        })
}

/// The boot time (Unix seconds) from `/proc/stat` (`btime 1700000000`).
pub fn parse_boot_time(stat: &str) -> Result<u64, ProcError> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or(ProcError::Field {
            file: "/proc/stat",
            field: "btime",
        })
}

/// The soft open-files limit from `/proc/self/limits`; `None` when unlimited.
pub fn parse_max_fds(limits: &str) -> Result<Option<u64>, ProcError> {
    let err = ProcError::Field {
        file: "/proc/self/limits",
        field: "Max open files",
    };
    let rest = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .ok_or(err.clone())?;
    match rest.split_whitespace().next() {
        Some("unlimited") => Ok(None),
        Some(n) => n.parse().map(Some).map_err(|_| err),
        None => Err(err),
    }
}

/// Reads the live process; any unreadable file makes the whole snapshot unavailable (a
/// partial one would mix readings).
#[cfg(target_os = "linux")]
fn read_self() -> Result<ProcessStats, String> {
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"));
    let stat = parse_stat(&read("/proc/self/stat")?).map_err(|e| e.to_string())?;
    let boot = parse_boot_time(&read("/proc/stat")?).map_err(|e| e.to_string())?;
    let resident_bytes = parse_rss_bytes(&read("/proc/self/status")?).map_err(|e| e.to_string())?;
    let max_fds = parse_max_fds(&read("/proc/self/limits")?).map_err(|e| e.to_string())?;
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("/proc/self/fd: {e}"))?
        .count() as u64;
    Ok(ProcessStats {
        cpu_seconds: stat.cpu_seconds,
        resident_bytes,
        virtual_bytes: stat.virtual_bytes,
        open_fds,
        max_fds,
        start_time_seconds: boot as f64 + stat.start_after_boot_seconds,
    })
}

/// The `process_*` families, read at every scrape.
pub struct ProcessCollector {
    read: Box<dyn Fn() -> Result<ProcessStats, String> + Send + Sync>,
}

impl fmt::Debug for ProcessCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessCollector").finish_non_exhaustive()
    }
}

impl ProcessCollector {
    /// Over `/proc/self`; `None` where there is none (not Linux).
    pub fn for_self() -> Option<Self> {
        #[cfg(target_os = "linux")]
        {
            Some(Self::with_reader(read_self))
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }

    /// Over any source of snapshots (tests pass fixed ones).
    pub fn with_reader(
        read: impl Fn() -> Result<ProcessStats, String> + Send + Sync + 'static,
    ) -> Self {
        ProcessCollector {
            read: Box::new(read),
        }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = match (self.read)() {
            Ok(s) => s,
            Err(e) => {
                // The scrape still answers; only these families are missing this time.
                tracing::debug!("process metrics unavailable: {e}");
                return Ok(());
            }
        };
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds.",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, Option<Unit>, f64); 3] = [
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                stats.resident_bytes as f64,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(Unit::Bytes),
                stats.virtual_bytes as f64,
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(Unit::Seconds),
                stats.start_time_seconds,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                gauge.metric_type(),
            )?)?;
        }
        let fds = ConstGauge::new(stats.open_fds as i64);
        fds.encode(encoder.encode_descriptor(
            "process_open_fds",
            "Number of open file descriptors.",
            None,
            fds.metric_type(),
        )?)?;
        if let Some(max) = stats.max_fds {
            let max = ConstGauge::new(i64::try_from(max).unwrap_or(i64::MAX));
            max.encode(encoder.encode_descriptor(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                max.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line, with a command name holding `) (` and spaces to trip a naive split.
    const STAT: &str = "4242 (sky) (canary 1) S 1 4242 4242 0 -1 4194560 1200 0 3 0 \
        250 75 0 0 20 0 9 0 123456 987654321 5120 18446744073709551615 1 1 0 0 0 0 0 4096 \
        17664 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s.cpu_seconds, 3.25);
        assert_eq!(s.start_after_boot_seconds, 1234.56);
        assert_eq!(s.virtual_bytes, 987_654_321);
    }

    #[test]
    fn a_truncated_or_garbled_stat_is_an_error() {
        assert_eq!(
            parse_stat("4242 sky S 1"),
            Err(ProcError::Field {
                file: "/proc/self/stat",
                field: "comm"
            })
        );
        assert!(matches!(
            parse_stat("4242 (sky) S 1 2 3"),
            Err(ProcError::Field { field: "utime", .. })
        ));
        let garbled = STAT.replace(" 250 ", " x ");
        assert!(matches!(
            parse_stat(&garbled),
            Err(ProcError::Field { field: "utime", .. })
        ));
    }

    #[test]
    fn rss_is_read_in_kib_and_exported_in_bytes() {
        let status = "Name:\tskycanary\nVmPeak:\t  9999 kB\nVmRSS:\t   16384 kB\nThreads:\t9\n";
        assert_eq!(parse_rss_bytes(status), Ok(16 * 1024 * 1024));
        assert!(parse_rss_bytes("Name:\tx\n").is_err());
        assert!(parse_rss_bytes("VmRSS:\t many kB\n").is_err());
    }

    #[test]
    fn boot_time_and_fd_limit() {
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Ok(1_700_000_000)
        );
        assert!(parse_boot_time("cpu 1 2 3\n").is_err());
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max processes             63459                63459                processes \n\
            Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Ok(Some(1024)));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_fds(unlimited), Ok(None));
        assert!(parse_max_fds("Max processes 1 1\n").is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_live_process_reads_whole() {
        let s = read_self().unwrap();
        assert!(s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes);
        assert!(s.open_fds >= 3, "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Started before now, and not before 2020.
        assert!(s.start_time_seconds <= now + 1.0 && s.start_time_seconds > 1.577e9);
    }
}
