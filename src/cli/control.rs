//! `skycanary status|promote|abort|retry|pause|resume`: talk to a running daemon's API.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use super::control_kube;
use crate::canary::{CanaryPhase, CanaryStatus, CommandAction};
use crate::server::{CanarySummary, Token};

/// How to reach the daemon.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The daemon's HTTP address.
    #[arg(
        long,
        env = "SKYCANARY_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// File holding the API bearer token (else SKYCANARY_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// One canary (`NAMESPACE/NAME`); all when omitted.
    pub canary: Option<String>,
    /// Refresh every 2 seconds until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Read the Canaries from the cluster (kubeconfig or in-cluster) instead of the daemon's API.
    #[arg(long)]
    pub kube: bool,
    /// With --kube and no canary: only this namespace (default: all namespaces).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of the action commands.
#[derive(Debug, clap::Args)]
pub struct ActionArgs {
    /// The canary, `NAMESPACE/NAME`.
    pub canary: String,
    /// promote: skip every remaining step.
    #[arg(long)]
    pub full: bool,
    /// abort: why (shown in status).
    #[arg(long)]
    pub reason: Option<String>,
    /// Write the request into the Canary's `status.command` in the cluster (kubeconfig or
    /// in-cluster) instead of calling the daemon's API; the leading daemon carries it out.
    #[arg(long)]
    pub kube: bool,
    /// With --kube: how long to wait for the daemon's answer (`0s`: do not wait).
    #[arg(long, default_value = "30s", value_parser = crate::resources::duration::parse_duration)]
    pub wait: Duration,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Which action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Next step (or all with --full).
    Promote,
    /// Roll back.
    Abort,
    /// Start again after an abort.
    Retry,
    /// Pause.
    Pause,
    /// Resume.
    Resume,
}

impl Action {
    fn path(self) -> &'static str {
        self.command_action().as_str()
    }

    fn command_action(self) -> CommandAction {
        match self {
            Action::Promote => CommandAction::Promote,
            Action::Abort => CommandAction::Abort,
            Action::Retry => CommandAction::Retry,
            Action::Pause => CommandAction::Pause,
            Action::Resume => CommandAction::Resume,
        }
    }
}

/// Where `status` reads from.
enum Source {
    Api(Api),
    Kube(kube::Client),
}

impl Source {
    async fn canaries(
        &self,
        one: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Vec<CanarySummary>, String> {
        match self {
            Source::Api(api) => api.canaries(one).await,
            Source::Kube(client) => control_kube::canaries(client, one, namespace).await,
        }
    }
}

pub(crate) struct Api {
    pub(crate) base: String,
    token: Option<Token>,
    pub(crate) http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(args: &ServerArgs) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let token = Token::load(args.token_file.as_deref()).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Api {
            base: args.server.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    pub(crate) async fn call(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, String> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach the daemon at {}: {e}", self.base))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            let msg = body
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("")
                .to_string();
            Err(format!("{status}: {msg}"))
        }
    }

    async fn canaries(&self, one: Option<&str>) -> Result<Vec<CanarySummary>, String> {
        let body = match one {
            Some(c) => {
                self.call(self.http.get(format!("{}/api/v1/canaries/{c}", self.base)))
                    .await?
            }
            None => {
                let list = self
                    .call(self.http.get(format!("{}/api/v1/canaries", self.base)))
                    .await?;
                list.get("items")
                    .cloned()
                    .unwrap_or(serde_json::Value::Array(Vec::new()))
            }
        };
        let items = if body.is_array() {
            body
        } else {
            serde_json::Value::Array(vec![body])
        };
        serde_json::from_value(items).map_err(|e| format!("unexpected answer from the daemon: {e}"))
    }
}

pub(crate) fn check_name(c: &str) -> Result<(), String> {
    match c.split_once('/') {
        Some((ns, n)) if !ns.is_empty() && !n.is_empty() && !n.contains('/') => Ok(()),
        _ => Err(format!("{c:?}: expected NAMESPACE/NAME")),
    }
}

/// `status`: exit 0, or 1 when the daemon cannot be reached / answers an error.
pub async fn status(
    args: &StatusArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    if let Some(c) = &args.canary
        && let Err(e) = check_name(c)
    {
        writeln!(err, "error: {e}")?;
        return Ok(4);
    }
    if args.namespace.is_some() && !args.kube {
        writeln!(
            err,
            "error: --namespace applies to --kube; the daemon's API lists every canary"
        )?;
        return Ok(4);
    }
    let source = if args.kube {
        match control_kube::client().await {
            Ok(c) => Source::Kube(c),
            Err(e) => {
                writeln!(err, "error: {e}")?;
                return Ok(1);
            }
        }
    } else {
        match Api::new(&args.server) {
            Ok(a) => Source::Api(a),
            Err(e) => {
                writeln!(err, "error: {e}")?;
                return Ok(4);
            }
        }
    };
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    loop {
        match source
            .canaries(args.canary.as_deref(), args.namespace.as_deref())
            .await
        {
            Ok(list) => {
                if args.watch && colour {
                    write!(out, "\x1b[2J\x1b[H")?;
                }
                if args.json {
                    serde_json::to_writer_pretty(&mut *out, &list)
                        .map_err(std::io::Error::other)?;
                    writeln!(out)?;
                } else {
                    write!(out, "{}", render_table(&list, colour))?;
                }
                out.flush()?;
            }
            Err(e) => {
                writeln!(err, "error: {e}")?;
                if !args.watch {
                    return Ok(1);
                }
            }
        }
        if !args.watch {
            return Ok(0);
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(0),
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// `promote|abort|retry|pause|resume`: exit 0 done, 1 refused or unreachable, 4 bad input.
pub async fn action(
    action: Action,
    args: &ActionArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    if let Err(e) = check_name(&args.canary) {
        writeln!(err, "error: {e}")?;
        return Ok(4);
    }
    if args.kube {
        return action_kube(action, args, out, err).await;
    }
    let api = match Api::new(&args.server) {
        Ok(a) => a,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(4);
        }
    };
    let mut url = format!(
        "{}/api/v1/canaries/{}/{}",
        api.base,
        args.canary,
        action.path()
    );
    if action == Action::Promote && args.full {
        url.push_str("?full=true");
    }
    let mut req = api.http.post(url);
    if action == Action::Abort
        && let Some(r) = &args.reason
    {
        req = req.json(&serde_json::json!({ "reason": r }));
    }
    match api.call(req).await {
        Ok(body) => {
            let summary: Result<CanarySummary, _> = serde_json::from_value(body);
            match summary {
                Ok(s) => write!(out, "{}", render_table(&[s], false))?,
                Err(_) => writeln!(out, "ok")?,
            }
            Ok(0)
        }
        Err(e) => {
            writeln!(err, "error: {e}")?;
            Ok(1)
        }
    }
}

/// `<action> --kube`: exit 0 carried out (or written, with `--wait 0s`), 1 refused, not found,
/// unreachable or not answered within `--wait`.
async fn action_kube(
    action: Action,
    args: &ActionArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let (ns, name) = args.canary.split_once('/').unwrap_or_default();
    let client = match control_kube::client().await {
        Ok(c) => c,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(1);
        }
    };
    let result = control_kube::request(
        &client,
        ns,
        name,
        action.command_action(),
        args.full,
        args.reason.clone(),
        args.wait,
    )
    .await;
    match result {
        Ok(control_kube::RequestResult::Done(s)) => {
            write!(out, "{}", render_table(&[s], false))?;
            Ok(0)
        }
        Ok(control_kube::RequestResult::Refused(why, _)) => {
            writeln!(err, "error: refused: {why}")?;
            Ok(1)
        }
        Ok(control_kube::RequestResult::Pending(id)) if args.wait.is_zero() => {
            writeln!(
                out,
                "requested {} of {} (request {id}); the leading skycanary daemon carries it out",
                action.path(),
                args.canary
            )?;
            Ok(0)
        }
        Ok(control_kube::RequestResult::Pending(id)) => {
            writeln!(
                err,
                "error: no skycanary daemon answered request {id} ({} of {}) within {}; it stays in \
                 status.command and is carried out when a daemon leads (is one running?)",
                action.path(),
                args.canary,
                crate::resources::duration::format_duration(args.wait)
            )?;
            Ok(1)
        }
        Err(e) => {
            writeln!(err, "error: {e}")?;
            Ok(1)
        }
    }
}

/// `[███░░░░░░░]  30%`
pub fn weight_bar(weight: i64, max: i64) -> String {
    let max = max.max(1);
    let filled = ((weight.clamp(0, max) * 10 + max / 2) / max) as usize;
    format!(
        "[{}{}] {:>3}%",
        "█".repeat(filled),
        "░".repeat(10 - filled),
        weight * 100 / max
    )
}

fn phase_colour(p: CanaryPhase) -> &'static str {
    match p {
        CanaryPhase::Promoted => "\x1b[32m",
        CanaryPhase::Aborted
        | CanaryPhase::RolledBack
        | CanaryPhase::Degraded
        | CanaryPhase::Invalid => "\x1b[31m",
        CanaryPhase::Paused => "\x1b[33m",
        CanaryPhase::Progressing | CanaryPhase::Pending => "\x1b[36m",
    }
}

/// The last verdict of the newest analysis run: `apdex Successful: <message>`.
fn last_verdict(s: &CanaryStatus) -> String {
    let Some(run) = s.analysis_runs.last() else {
        return "-".into();
    };
    let newest = run
        .status
        .metric_results
        .iter()
        .filter_map(|m| m.measurements.last().map(|x| (m, x)))
        .max_by_key(|(_, x)| x.finished_at.unwrap_or(x.started_at));
    match newest {
        Some((m, x)) => format!(
            "{} {:?}: {}",
            m.name,
            x.phase,
            x.message.clone().unwrap_or_default()
        ),
        None => format!("{} {:?}", run.name, run.status.phase),
    }
}

/// The status table.
pub fn render_table(list: &[CanarySummary], colour: bool) -> String {
    let mut s = String::new();
    let name_w = list
        .iter()
        .map(|c| c.namespace.len() + c.name.len() + 1)
        .max()
        .unwrap_or(0)
        .max(6);
    s.push_str(&format!(
        "{:name_w$}  {:11}  {:5}  {:17}  {}\n",
        "CANARY", "PHASE", "STEP", "WEIGHT", "LAST VERDICT"
    ));
    for c in list {
        let st = &c.status;
        let phase = format!("{:?}", st.phase);
        let phase = if colour {
            format!("{}{phase:11}\x1b[0m", phase_colour(st.phase))
        } else {
            format!("{phase:11}")
        };
        let step = format!("{}/{}", st.current_step_index.min(c.steps as u32), c.steps);
        let mut verdict = last_verdict(st);
        if let Some(p) = &st.pause {
            verdict = format!("paused ({:?}) — {verdict}", p.reason);
        }
        if let Some(a) = &st.abort {
            verdict = format!("aborted: {}", a.reason);
        }
        let verdict: String = verdict.chars().take(120).collect();
        s.push_str(&format!(
            "{:name_w$}  {phase}  {step:5}  {}  {verdict}\n",
            format!("{}/{}", c.namespace, c.name),
            weight_bar(st.desired_weight, 100),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars() {
        assert_eq!(weight_bar(0, 100), "[░░░░░░░░░░]   0%");
        assert_eq!(weight_bar(30, 100), "[███░░░░░░░]  30%");
        assert_eq!(weight_bar(100, 100), "[██████████] 100%");
    }

    #[test]
    fn names() {
        assert!(check_name("bookinfo/reviews").is_ok());
        assert!(check_name("reviews").is_err());
        assert!(check_name("a/b/c").is_err());
    }

    #[test]
    fn table_shows_phase_step_weight_and_verdict() {
        let c = CanarySummary {
            namespace: "bookinfo".into(),
            name: "reviews".into(),
            steps: 6,
            status: CanaryStatus {
                phase: CanaryPhase::Progressing,
                current_step_index: 2,
                desired_weight: 30,
                ..Default::default()
            },
        };
        let t = render_table(&[c], false);
        assert!(
            t.contains("bookinfo/reviews")
                && t.contains("Progressing")
                && t.contains("2/6")
                && t.contains(" 30%"),
            "{t}"
        );
    }
}
