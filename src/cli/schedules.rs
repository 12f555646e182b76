//! `skycanary schedules [run NS/NAME]`: the scheduled analyses of a running daemon, with next
//! fire time and recent results, and starting a run now.

use std::io::Write;

use chrono::{DateTime, Utc};

use super::control::{Api, ServerArgs, qualified};
use super::output::{self, OutputFormat};
use super::target::TargetArgs;
use crate::schedule::model::{RunStarted, ScheduleSummary, ScheduledRun};

/// Arguments of `schedules`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SchedulesArgs {
    /// `run NAME` starts a run now; without a subcommand the schedules of the namespace are
    /// listed (all namespaces with -A).
    #[command(subcommand)]
    pub command: Option<SchedulesCommand>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// List the scheduled analyses of every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Output format (default: a table).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<OutputFormat>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Subcommands of `schedules`.
#[derive(Debug, clap::Subcommand)]
pub enum SchedulesCommand {
    /// Start a run of a ScheduledAnalysis now (respects concurrencyPolicy: refused while one
    /// runs under Forbid).
    Run(RunArgs),
}

/// Arguments of `schedules run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The ScheduledAnalysis: `NAME` (namespace from -n or the kubeconfig context) or
    /// `NAMESPACE/NAME`.
    pub scheduled: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Output format (default: a sentence).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<OutputFormat>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Lists (exit 0) or starts a run (exit 0; 1 refused or unreachable; 4 bad input).
pub async fn run(
    args: &SchedulesArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    match &args.command {
        Some(SchedulesCommand::Run(r)) => run_now(r, out, err).await,
        None => list(args, out, err).await,
    }
}

async fn list(
    args: &SchedulesArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let namespace = if args.all_namespaces {
        None
    } else {
        match args.target.namespace() {
            Ok(ns) => Some(ns),
            Err(e) => {
                writeln!(err, "error: {e}")?;
                return Ok(4);
            }
        }
    };
    let api = match Api::new(&args.server) {
        Ok(a) => a,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(4);
        }
    };
    let url = format!("{}/api/v1/scheduled-analyses", api.base);
    let body = match api.call(api.http.get(url)).await {
        Ok(b) => b,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(1);
        }
    };
    let items = body
        .get("items")
        .cloned()
        .unwrap_or(serde_json::Value::Array(Vec::new()));
    let list: Vec<ScheduleSummary> = match serde_json::from_value(items) {
        Ok(l) => l,
        Err(e) => {
            writeln!(err, "error: unexpected answer from the daemon: {e}")?;
            return Ok(1);
        }
    };
    let list: Vec<ScheduleSummary> = list
        .into_iter()
        .filter(|s| namespace.as_ref().is_none_or(|ns| &s.namespace == ns))
        .collect();
    match output::pick(args.output, false) {
        Some(OutputFormat::Name) => {
            for s in &list {
                writeln!(out, "scheduledanalysis.skycanary.io/{}", s.name)?;
            }
        }
        Some(f @ (OutputFormat::Json | OutputFormat::Yaml)) => {
            output::write_structured(out, f, &list)?;
        }
        _ => write!(out, "{}", render_table(&list, chrono::Utc::now()))?,
    }
    Ok(0)
}

async fn run_now(args: &RunArgs, out: &mut dyn Write, err: &mut dyn Write) -> std::io::Result<u8> {
    let (ns, name) = match qualified(&args.target, &args.scheduled) {
        Ok(x) => x,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(4);
        }
    };
    let api = match Api::new(&args.server) {
        Ok(a) => a,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(4);
        }
    };
    let url = format!("{}/api/v1/scheduled-analyses/{ns}/{name}/run", api.base);
    match api.call(api.http.post(url)).await {
        Ok(body) => {
            match output::pick(args.output, false) {
                Some(f @ (OutputFormat::Json | OutputFormat::Yaml)) => {
                    output::write_structured(out, f, &body)?;
                }
                Some(OutputFormat::Name) => writeln!(out, "scheduledanalysis.skycanary.io/{name}")?,
                _ => match serde_json::from_value::<RunStarted>(body) {
                    Ok(r) if r.replaced.is_empty() => {
                        writeln!(out, "started run {} of {}/{}", r.run, r.namespace, r.name)?
                    }
                    Ok(r) => writeln!(
                        out,
                        "started run {} of {}/{} (replacing {})",
                        r.run,
                        r.namespace,
                        r.name,
                        r.replaced.join(", ")
                    )?,
                    Err(_) => writeln!(out, "ok")?,
                },
            }
            Ok(0)
        }
        Err(e) => {
            writeln!(err, "error: {e}")?;
            Ok(1)
        }
    }
}

/// `2024-01-08 02:00:00 UTC (in 3h12m)`.
fn when(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(t) = t else {
        return "-".into();
    };
    let d = t - now;
    let secs = d.num_seconds();
    let rel = |s: i64| {
        let s = s.abs();
        if s < 60 {
            format!("{s}s")
        } else if s < 3600 {
            format!("{}m{}s", s / 60, s % 60)
        } else if s < 86400 {
            format!("{}h{}m", s / 3600, (s % 3600) / 60)
        } else {
            format!("{}d{}h", s / 86400, (s % 86400) / 3600)
        }
    };
    let stamp = t.format("%Y-%m-%d %H:%M:%S");
    if secs >= 0 {
        format!("{stamp} (in {})", rel(secs))
    } else {
        format!("{stamp} ({} ago)", rel(secs))
    }
}

/// One line per run: name, phase, and its deciding metric's value.
fn describe_run(r: &ScheduledRun) -> String {
    let ev = crate::canary::machine::evidence(&r.status);
    let mut s = format!("{} {}", r.name, r.status.phase);
    let metric = r
        .status
        .metric_results
        .iter()
        .find(|m| Some(&m.name) == ev.metric.as_ref())
        .or_else(|| r.status.metric_results.first());
    if let Some(m) = metric {
        let value = m
            .measurements
            .last()
            .and_then(|x| x.value.clone())
            .unwrap_or_else(|| "-".into());
        s.push_str(&format!(" ({} {} = {value})", m.name, m.phase));
    } else if let Some(msg) = &r.status.message {
        s.push_str(&format!(" ({msg})"));
    }
    for a in &r.actions {
        s.push_str(&format!(" [{:?} {} {:?}]", a.kind, a.target, a.outcome));
    }
    s
}

/// The schedules table, then the recent runs of each.
pub fn render_table(list: &[ScheduleSummary], now: DateTime<Utc>) -> String {
    let mut s = String::new();
    let name_w = list
        .iter()
        .map(|c| c.namespace.len() + c.name.len() + 1)
        .max()
        .unwrap_or(0)
        .max(18);
    let sched_w = list
        .iter()
        .map(|c| c.schedule.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let zone_w = list
        .iter()
        .map(|c| c.time_zone.len())
        .max()
        .unwrap_or(0)
        .max(4);
    s.push_str(&format!(
        "{:name_w$}  {:sched_w$}  {:zone_w$}  {:9}  {:32}  {:32}  {}\n",
        "SCHEDULED ANALYSIS", "SCHEDULE", "ZONE", "POLICY", "NEXT (UTC)", "LAST (UTC)", "ACTIVE"
    ));
    for c in list {
        let st = &c.status;
        let next = if c.suspend {
            "suspended".to_string()
        } else {
            when(st.next_schedule_time, now)
        };
        s.push_str(&format!(
            "{:name_w$}  {:sched_w$}  {:zone_w$}  {:9}  {:32}  {:32}  {}\n",
            format!("{}/{}", c.namespace, c.name),
            c.schedule,
            c.time_zone,
            format!("{:?}", c.concurrency_policy),
            next,
            when(st.last_schedule_time, now),
            st.active.len()
        ));
    }
    for c in list {
        let st = &c.status;
        if st.active.is_empty() && st.history.is_empty() {
            continue;
        }
        s.push_str(&format!("\n{}/{}:\n", c.namespace, c.name));
        for r in &st.active {
            s.push_str(&format!("  running  {}\n", describe_run(r)));
        }
        for r in st.history.iter().take(5) {
            let line: String = describe_run(r).chars().take(160).collect();
            s.push_str(&format!("  finished {line}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{Phase, RunState};
    use crate::resources::scheduled::ConcurrencyPolicy;
    use crate::schedule::model::{RunTrigger, ScheduledAnalysisStatus};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn table_shows_schedule_next_time_and_recent_runs() {
        let now = t("2024-01-05T12:00:00Z");
        let run = ScheduledRun {
            name: "nightly-1704420000".into(),
            trigger: RunTrigger::Schedule,
            scheduled_time: Some(t("2024-01-05T02:00:00Z")),
            status: RunState {
                phase: Phase::Failed,
                message: Some("apdex failed".into()),
                metric_results: Vec::new(),
                started_at: t("2024-01-05T02:00:00Z"),
                completed_at: Some(t("2024-01-05T02:03:00Z")),
                terminated: true,
                terminate_reason: None,
            },
            actions: Vec::new(),
        };
        let summary = ScheduleSummary {
            namespace: "bookinfo".into(),
            name: "nightly".into(),
            schedule: "0 2 * * 1-5".into(),
            time_zone: "Asia/Shanghai".into(),
            concurrency_policy: ConcurrencyPolicy::Forbid,
            suspend: false,
            templates: vec!["apdex".into()],
            status: ScheduledAnalysisStatus {
                next_schedule_time: Some(t("2024-01-07T18:00:00Z")),
                last_schedule_time: Some(t("2024-01-04T18:00:00Z")),
                history: vec![run],
                ..Default::default()
            },
        };
        let table = render_table(&[summary], now);
        assert!(table.contains("bookinfo/nightly"), "{table}");
        assert!(
            table.contains("0 2 * * 1-5") && table.contains("Asia/Shanghai"),
            "{table}"
        );
        assert!(table.contains("2024-01-07 18:00:00 (in 2d6h)"), "{table}");
        assert!(table.contains("(18h0m ago)"), "{table}");
        assert!(
            table.contains("finished nightly-1704420000 Failed (apdex failed)"),
            "{table}"
        );
    }

    #[test]
    fn relative_times() {
        let now = t("2024-01-01T00:00:00Z");
        assert_eq!(when(None, now), "-");
        assert_eq!(
            when(Some(t("2024-01-01T00:00:02Z")), now),
            "2024-01-01 00:00:02 (in 2s)"
        );
        assert_eq!(
            when(Some(t("2023-12-31T23:58:30Z")), now),
            "2023-12-31 23:58:30 (1m30s ago)"
        );
    }
}
