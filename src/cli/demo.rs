//! `skycanary demo`: canary releases of Bookinfo's `reviews` on loopback, narrated live —
//! the SkyWalking simulator, the file traffic backend and the real daemon — in about a
//! minute. Exit 0 when every scenario ends as expected, 1 when one does not, 3 when the demo
//! could not run, 4 on invalid input.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use chrono::{SecondsFormat, Utc};
use serde_json::json;

use crate::demo::narrate::{Narrator, Style};
use crate::demo::scenario::Scenario;
use crate::demo::{self, DemoOptions, ScenarioRun};

/// `--scenario`: one scenario, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioChoice {
    /// Every scenario, in order.
    All,
    /// Just this one.
    One(Scenario),
}

impl ScenarioChoice {
    /// The scenarios to run.
    pub fn scenarios(self) -> Vec<Scenario> {
        match self {
            ScenarioChoice::All => Scenario::ALL.to_vec(),
            ScenarioChoice::One(s) => vec![s],
        }
    }
}

fn parse_choice(s: &str) -> Result<ScenarioChoice, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(ScenarioChoice::All);
    }
    Scenario::ALL
        .iter()
        .find(|x| x.name().eq_ignore_ascii_case(s))
        .map(|x| ScenarioChoice::One(*x))
        .ok_or_else(|| {
            let names: Vec<&str> = Scenario::ALL.iter().map(|x| x.name()).collect();
            format!("{s:?}: expected one of {}, all", names.join(", "))
        })
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 && f <= 3600.0 => Ok(f),
        _ => Err(format!("{s:?}: expected a number in (0, 3600]")),
    }
}

/// Summary format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Narration and a summary line per scenario.
    Text,
    /// A JSON summary on stdout (narration on stderr).
    Json,
}

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Which scenario to run: healthy, regression, alarm, scheduled, late-ready, or all.
    #[arg(long, default_value = "all", value_parser = parse_choice, value_name = "SCENARIO")]
    pub scenario: ScenarioChoice,
    /// Time compression: simulated seconds per real second (20: a simulated minute lasts 3 s).
    #[arg(long, default_value_t = 20.0, value_parser = parse_speed)]
    pub speed: f64,
    /// Also write a self-contained HTML report (weights, metrics against thresholds,
    /// verdicts and events of every scenario) to this file.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Plain output: no colours, no progress bars (also when stdout is not a terminal, or
    /// NO_COLOR is set).
    #[arg(long, alias = "plain")]
    pub no_color: bool,
    /// Summary format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Keep each scenario's files (Canary, template, Istio manifests, daemon state and log)
    /// under DIR/<scenario> instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    #[allow(rustdoc::invalid_html_tags)] // the help text's `<scenario>`, shown as written
    pub work_dir: Option<PathBuf>,
}

/// Runs the demo; returns the exit code.
pub async fn run(
    args: &DemoArgs,
    out: &mut (dyn Write + Send),
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    if let Some(path) = &args.report
        && let Err(e) = crate::report::check_writable(path)
    {
        writeln!(err, "error: --report {}: {e}", path.display())?;
        return Ok(4);
    }
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            writeln!(err, "error: cannot find the skycanary executable: {e}")?;
            return Ok(3);
        }
    };
    let json = args.output == Output::Json;
    let terminal = !json && std::io::stdout().is_terminal();
    let color = terminal && !args.no_color && std::env::var_os("NO_COLOR").is_none();
    let style = Style { color };
    let sink: Box<dyn Write + Send> = if json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let mut narrator = Narrator::new(sink, style, color);
    let mut opts = DemoOptions::new(args.speed, program);
    opts.work_dir = args.work_dir.clone();
    let started = std::time::Instant::now();
    let mut runs: Vec<ScenarioRun> = Vec::new();
    let mut errors: Vec<(Scenario, String)> = Vec::new();
    for scenario in args.scenario.scenarios() {
        match demo::run_scenario(scenario.spec(), &opts, &mut narrator).await {
            Ok(r) => runs.push(r),
            Err(e) => {
                narrator.finish_bars();
                narrator.line(&style.bad(&format!("✘ {}: error: {e}", scenario.name())));
                errors.push((scenario, e.to_string()));
            }
        }
    }
    drop(narrator);
    let all_ok = errors.is_empty() && runs.iter().all(|r| r.outcome.ok);

    let mut report_written = None;
    if let Some(path) = &args.report {
        let report = crate::report::Report {
            title: "skycanary demo".to_string(),
            subtitle: Some(format!(
                "Bookinfo reviews on loopback: SkyWalking simulator, file traffic backend, skycanary run; time ×{}; {}",
                crate::analysis::fmt_num(args.speed),
                Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
            )),
            sections: runs.iter().map(crate::demo::report::section).collect(),
        };
        match crate::report::write(path, &report) {
            Ok(()) => report_written = Some(path.clone()),
            Err(e) => {
                writeln!(err, "error: --report {}: {e}", path.display())?;
                return Ok(3);
            }
        }
    }

    if json {
        let scenarios: Vec<_> = runs
            .iter()
            .map(|r| {
                let status = r.status.as_ref();
                json!({
                    "name": r.spec.scenario.name(),
                    "ok": r.outcome.ok,
                    "outcome": r.outcome.summary,
                    "problems": r.outcome.problems,
                    "expected": format!("{:?}", r.spec.expect.phase),
                    "phase": status.map(|s| format!("{:?}", s.phase)),
                    "abort": status.and_then(|s| s.abort.as_ref()),
                    "weights": r.final_weights,
                    "simulatedSeconds": r.simulated.num_seconds(),
                    "realSeconds": r.real.as_secs_f64(),
                    "alarmLatencyMs": r.alarm_latency.map(|d| d.as_secs_f64() * 1000.0),
                    "scheduledRuns": r.scheduled_runs.iter().map(|run| json!({
                        "name": run.name,
                        "phase": run.status.phase,
                        "actions": run.actions,
                    })).collect::<Vec<_>>(),
                })
            })
            .chain(errors.iter().map(|(s, e)| {
                json!({"name": s.name(), "ok": false, "outcome": format!("error: {e}"), "problems": [e]})
            }))
            .collect();
        let doc = json!({
            "ok": all_ok,
            "speed": args.speed,
            "scenarios": scenarios,
            "report": report_written.as_ref().map(|p| p.display().to_string()),
        });
        serde_json::to_writer_pretty(&mut *out, &doc).map_err(std::io::Error::other)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", style.bold("summary"))?;
        for r in &runs {
            let mark = if r.outcome.ok {
                style.good("✔")
            } else {
                style.bad("✘")
            };
            write!(
                out,
                "  {mark} {}: {}",
                r.spec.scenario.name(),
                r.outcome.summary
            )?;
            if let Some(l) = r.alarm_latency {
                write!(out, " — webhook answered in {} ms", l.as_millis())?;
            }
            if !r.outcome.ok {
                write!(out, " — unexpected: {}", r.outcome.problems.join("; "))?;
            }
            writeln!(out)?;
        }
        for (s, e) in &errors {
            writeln!(out, "  {} {}: error: {e}", style.bad("✘"), s.name())?;
        }
        let total = runs.len() + errors.len();
        let simulated: i64 = runs.iter().map(|r| r.simulated.num_seconds()).sum();
        writeln!(
            out,
            "{} in {:.1} s ({} simulated minutes at ×{})",
            if all_ok {
                style.good(&format!("all {total} scenario(s) ended as expected"))
            } else {
                style.bad("some scenarios did not end as expected")
            },
            started.elapsed().as_secs_f64(),
            simulated / 60,
            crate::analysis::fmt_num(args.speed)
        )?;
        if let Some(p) = &report_written {
            writeln!(out, "report written to {}", p.display())?;
        }
    }
    out.flush()?;
    Ok(if !errors.is_empty() {
        3
    } else if all_ok {
        0
    } else {
        1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_choices() {
        assert_eq!(parse_choice("all"), Ok(ScenarioChoice::All));
        assert_eq!(
            parse_choice("Regression"),
            Ok(ScenarioChoice::One(Scenario::Regression))
        );
        assert_eq!(
            parse_choice("scheduled"),
            Ok(ScenarioChoice::One(Scenario::Scheduled))
        );
        assert!(
            parse_choice("nope")
                .unwrap_err()
                .contains("healthy, regression, alarm, scheduled, late-ready, all")
        );
        assert_eq!(ScenarioChoice::All.scenarios(), Scenario::ALL.to_vec());
        assert!(parse_speed("0").is_err());
        assert!(parse_speed("NaN").is_err());
        assert!(parse_speed("5000").is_err());
        assert_eq!(parse_speed("60"), Ok(60.0));
    }
}
