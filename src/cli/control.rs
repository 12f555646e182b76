//! `skycanary status|promote|abort|retry|pause|resume`: talk to a running daemon's API.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use super::control_kube;
use super::output::{self, OutputFormat};
use super::target::TargetArgs;
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
    /// One canary (`NAME` with -n, or `NAMESPACE/NAME`); without it, every canary of the
    /// namespace (all namespaces with -A).
    pub canary: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// List the canaries of every namespace.
    #[arg(short = 'A', long, conflicts_with_all = ["canary", "namespace"])]
    pub all_namespaces: bool,
    /// Keep watching. With a canary: exit 0 when it is Promoted, 1 when Aborted or RolledBack,
    /// 2 when --timeout passes first; without one, refresh until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// With --watch and a canary: give up (exit 2) after this long (e.g. `10m`).
    #[arg(long, requires = "watch", value_parser = crate::resources::duration::parse_duration)]
    pub timeout: Option<Duration>,
    /// Output format (default: a table).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<OutputFormat>,
    /// Old spelling of `-o json`.
    #[arg(long, hide = true, conflicts_with = "output")]
    pub json: bool,
    /// Read the Canaries from the cluster (kubeconfig or in-cluster) instead of the daemon's API.
    #[arg(long)]
    pub kube: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// What every action takes: the canary, where it is, how to reach whoever carries it out.
#[derive(Debug, clap::Args)]
pub struct ActionCommon {
    /// The canary: `NAME` (namespace from -n or the kubeconfig context) or `NAMESPACE/NAME`.
    pub canary: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Write the request into the Canary's `status.command` in the cluster (kubeconfig or
    /// in-cluster) instead of calling the daemon's API; the leading daemon carries it out.
    #[arg(long)]
    pub kube: bool,
    /// With --kube: how long to wait for the daemon's answer (`0s`: do not wait).
    #[arg(long, default_value = "30s", requires = "kube", value_parser = crate::resources::duration::parse_duration)]
    pub wait: Duration,
    /// Output format of the canary afterwards (default: a table).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<OutputFormat>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `promote`.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub common: ActionCommon,
    /// Skip every remaining step.
    #[arg(long)]
    pub full: bool,
}

/// Arguments of `abort`.
#[derive(Debug, clap::Args)]
pub struct AbortArgs {
    #[command(flatten)]
    pub common: ActionCommon,
    /// Why (shown in status).
    #[arg(long)]
    pub reason: Option<String>,
}

/// Which action, with what only it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Next step, or every remaining one (`full`).
    Promote { full: bool },
    /// Roll back.
    Abort { reason: Option<String> },
    /// Start again after an abort.
    Retry,
    /// Hold the canary at its weights until resumed.
    Pause,
    /// Go on from where a pause held it.
    Resume,
}

impl Action {
    fn path(&self) -> &'static str {
        self.command_action().as_str()
    }

    fn command_action(&self) -> CommandAction {
        match self {
            Action::Promote { .. } => CommandAction::Promote,
            Action::Abort { .. } => CommandAction::Abort,
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

/// Which canaries `status` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selection {
    One(String, String),
    Namespace(String),
    All,
}

impl Source {
    async fn canaries(&self, sel: &Selection) -> Result<Vec<CanarySummary>, String> {
        match (self, sel) {
            (Source::Api(api), Selection::One(ns, n)) => {
                api.canaries(Some(&format!("{ns}/{n}"))).await
            }
            (Source::Api(api), Selection::Namespace(ns)) => Ok(api
                .canaries(None)
                .await?
                .into_iter()
                .filter(|c| &c.namespace == ns)
                .collect()),
            (Source::Api(api), Selection::All) => api.canaries(None).await,
            (Source::Kube(client), Selection::One(ns, n)) => {
                control_kube::canaries(client, Some(&format!("{ns}/{n}")), None).await
            }
            (Source::Kube(client), Selection::Namespace(ns)) => {
                control_kube::canaries(client, None, Some(ns)).await
            }
            (Source::Kube(client), Selection::All) => {
                control_kube::canaries(client, None, None).await
            }
        }
    }
}

pub(crate) struct Api {
    pub(crate) base: String,
    token: Option<Token>,
    pub(crate) http: reqwest::Client,
}

/// The innermost cause of an error: "Connection refused (os error 111)" rather than
/// "error sending request for url (...)".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
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
        self.call_status(req).await.map_err(|(_, e)| e)
    }

    /// Like [`Self::call`], with the HTTP status of a refusal (`None`: no answer at all).
    async fn call_status(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, (Option<u16>, String)> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        };
        let resp = req.send().await.map_err(|e| {
            let cause = if e.is_timeout() {
                "no answer within 10s".to_string()
            } else {
                root_cause(&e)
            };
            (
                None,
                format!(
                    "cannot reach the daemon at {}: {cause} (is it running? use --server)",
                    self.base
                ),
            )
        })?;
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
            Err((Some(status.as_u16()), format!("{status}: {msg}")))
        }
    }

    async fn canaries(&self, one: Option<&str>) -> Result<Vec<CanarySummary>, String> {
        self.canaries_status(one).await.map_err(|(_, e)| e)
    }

    async fn canaries_status(
        &self,
        one: Option<&str>,
    ) -> Result<Vec<CanarySummary>, (Option<u16>, String)> {
        let body = match one {
            Some(c) => {
                self.call_status(self.http.get(format!("{}/api/v1/canaries/{c}", self.base)))
                    .await?
            }
            None => {
                let list = self
                    .call_status(self.http.get(format!("{}/api/v1/canaries", self.base)))
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
        serde_json::from_value(items)
            .map_err(|e| (None, format!("unexpected answer from the daemon: {e}")))
    }
}

/// `NAME` resolved against -n / the kubeconfig context, or `NS/NAME`; `ns/name` for the API.
pub(crate) fn qualified(target: &TargetArgs, name: &str) -> Result<(String, String), String> {
    target.resolve(name).map_err(|e| e.to_string())
}

/// How a watched canary ended, for the exit code (DESIGN: 0 Promoted, 1 rolled back; an
/// invalid spec cannot progress until someone edits it, so a CI wait ends there too).
pub fn watch_exit(phase: CanaryPhase) -> Option<u8> {
    match phase {
        CanaryPhase::Promoted => Some(0),
        CanaryPhase::Aborted | CanaryPhase::RolledBack | CanaryPhase::Invalid => Some(1),
        CanaryPhase::Pending
        | CanaryPhase::Progressing
        | CanaryPhase::Paused
        | CanaryPhase::Degraded => None,
    }
}

/// Exit code of `status --watch` when --timeout passes first.
pub const EXIT_WATCH_TIMEOUT: u8 = 2;

/// `status`: exit 0, 1 when the daemon cannot be reached / answers an error, 4 bad input;
/// `--watch NAME`: 0 Promoted, 1 Aborted/RolledBack/Invalid/not found, 2 timeout.
pub async fn status(
    args: &StatusArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let sel = match (&args.canary, args.all_namespaces) {
        (Some(c), _) => match qualified(&args.target, c) {
            Ok((ns, n)) => Selection::One(ns, n),
            Err(e) => {
                writeln!(err, "error: {e}")?;
                return Ok(4);
            }
        },
        (None, true) => Selection::All,
        (None, false) => match args.target.namespace() {
            Ok(ns) => Selection::Namespace(ns),
            Err(e) => {
                writeln!(err, "error: {e}")?;
                return Ok(4);
            }
        },
    };
    let source = if args.kube {
        match args.target.client().await {
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
    let format = output::pick(args.output, args.json);
    let terminal = std::io::stdout().is_terminal();
    let colour = terminal && std::env::var_os("NO_COLOR").is_none();
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut last_printed: Option<String> = None;
    loop {
        match source.canaries(&sel).await {
            Ok(list) => {
                let text = render(&list, &sel, format, colour)?;
                // A terminal redraws; a pipe (CI) gets a new block only when something changed.
                if args.watch && colour {
                    write!(out, "\x1b[2J\x1b[H{text}")?;
                } else if last_printed.as_deref() != Some(text.as_str()) {
                    write!(out, "{text}")?;
                }
                out.flush()?;
                last_printed = Some(text);
                if list.is_empty() && !args.watch && format.is_none() {
                    match &sel {
                        Selection::Namespace(ns) => writeln!(
                            err,
                            "No canaries in namespace {ns} (-A for all namespaces)."
                        )?,
                        _ => writeln!(err, "No canaries.")?,
                    }
                }
                if args.watch
                    && let Selection::One(..) = sel
                    && let Some(code) = list.first().and_then(|c| watch_exit(c.status.phase))
                {
                    return Ok(code);
                }
            }
            Err(e) => {
                writeln!(err, "error: {e}")?;
                let gone = e.starts_with("404") || e.starts_with("no Canary");
                if !args.watch || (gone && matches!(sel, Selection::One(..))) {
                    return Ok(1);
                }
            }
        }
        if !args.watch {
            return Ok(0);
        }
        let pause = tokio::time::sleep(Duration::from_secs(2));
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(0),
            () = expired => {
                writeln!(
                    err,
                    "error: timed out after {} waiting for the canary to finish",
                    crate::resources::duration::format_duration(args.timeout.unwrap_or_default())
                )?;
                return Ok(EXIT_WATCH_TIMEOUT);
            }
            () = pause => {}
        }
    }
}

/// The canaries in the asked format: one object for one canary, a list otherwise.
fn render(
    list: &[CanarySummary],
    sel: &Selection,
    format: Option<OutputFormat>,
    colour: bool,
) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let structured = match (format, sel, list) {
        (Some(f), Selection::One(..), [one]) => output::write_structured(&mut buf, f, one)?,
        (Some(f), _, _) => output::write_structured(&mut buf, f, &list)?,
        (None, _, _) => false,
    };
    if !structured {
        match format {
            Some(OutputFormat::Name) => {
                for c in list {
                    writeln!(buf, "canary.skycanary.io/{}", c.name)?;
                }
            }
            Some(OutputFormat::Wide) => write!(buf, "{}", render_table_wide(list, colour, true))?,
            _ => write!(buf, "{}", render_table(list, colour))?,
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `promote|abort|retry|pause|resume`: exit 0 done, 1 refused or unreachable, 4 bad input.
pub async fn action(
    action: Action,
    args: &ActionCommon,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let (ns, name) = match qualified(&args.target, &args.canary) {
        Ok(x) => x,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(4);
        }
    };
    if args.kube {
        return action_kube(action, args, &ns, &name, out, err).await;
    }
    let api = match Api::new(&args.server) {
        Ok(a) => a,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(4);
        }
    };
    let mut url = format!("{}/api/v1/canaries/{ns}/{name}/{}", api.base, action.path());
    if let Action::Promote { full: true } = action {
        url.push_str("?full=true");
    }
    let mut req = api.http.post(url);
    if let Action::Abort { reason: Some(r) } = &action {
        req = req.json(&serde_json::json!({ "reason": r }));
    }
    match api.call(req).await {
        Ok(body) => {
            match serde_json::from_value::<CanarySummary>(body) {
                Ok(s) => print_one(out, &s, args.output)?,
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

/// One canary after an action, in the asked format.
fn print_one(
    out: &mut dyn Write,
    s: &CanarySummary,
    format: Option<OutputFormat>,
) -> std::io::Result<()> {
    let sel = Selection::One(s.namespace.clone(), s.name.clone());
    write!(
        out,
        "{}",
        render(std::slice::from_ref(s), &sel, format, false)?
    )
}

/// `<action> --kube`: exit 0 carried out (or written, with `--wait 0s`), 1 refused, not found,
/// unreachable or not answered within `--wait`.
async fn action_kube(
    action: Action,
    args: &ActionCommon,
    ns: &str,
    name: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let client = match args.target.client().await {
        Ok(c) => c,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(1);
        }
    };
    let (full, reason) = match &action {
        Action::Promote { full } => (*full, None),
        Action::Abort { reason } => (false, reason.clone()),
        _ => (false, None),
    };
    let result = control_kube::request(
        &client,
        ns,
        name,
        action.command_action(),
        full,
        reason,
        args.wait,
    )
    .await;
    match result {
        Ok(control_kube::RequestResult::Done(s)) => {
            print_one(out, &s, args.output)?;
            Ok(0)
        }
        Ok(control_kube::RequestResult::Refused(why, _)) => {
            writeln!(err, "error: refused: {why}")?;
            Ok(1)
        }
        Ok(control_kube::RequestResult::Pending(id)) if args.wait.is_zero() => {
            writeln!(
                out,
                "requested {} of {ns}/{name} (request {id}); the leading skycanary daemon carries it out",
                action.path(),
            )?;
            Ok(0)
        }
        Ok(control_kube::RequestResult::Pending(id)) => {
            writeln!(
                err,
                "error: no skycanary daemon answered request {id} ({} of {ns}/{name}) within {}; it stays in \
                 status.command and is carried out when a daemon leads (is one running?)",
                action.path(),
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

/// `step 3/7`: the step being executed, 1-based (the last one once all are done); shared with
/// the daemon's logs and Event messages.
pub use crate::canary::model::step_label;

/// Longest verdict the default table shows; `-o wide` shows it whole.
const VERDICT_WIDTH: usize = 120;

/// The status table.
pub fn render_table(list: &[CanarySummary], colour: bool) -> String {
    render_table_wide(list, colour, false)
}

/// The status table; `wide` adds the revision and does not cut the verdict.
pub fn render_table_wide(list: &[CanarySummary], colour: bool, wide: bool) -> String {
    let mut s = String::new();
    let name_w = list
        .iter()
        .map(|c| c.namespace.len() + c.name.len() + 1)
        .max()
        .unwrap_or(0)
        .max(6);
    let rev_w = list
        .iter()
        .filter_map(|c| c.status.revision.as_ref().map(String::len))
        .max()
        .unwrap_or(0)
        .max(8);
    let revision_header = if wide {
        format!("{:rev_w$}  ", "REVISION")
    } else {
        String::new()
    };
    s.push_str(&format!(
        "{:name_w$}  {revision_header}{:11}  {:5}  {:17}  {}\n",
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
        let step = step_label(st.current_step_index, c.steps);
        let mut verdict = last_verdict(st);
        if let Some(p) = &st.pause {
            verdict = format!("paused ({:?}) — {verdict}", p.reason);
        }
        if let Some(a) = &st.abort {
            verdict = format!("aborted: {}", a.reason);
        }
        if !wide && verdict.chars().count() > VERDICT_WIDTH {
            verdict = verdict.chars().take(VERDICT_WIDTH - 1).collect::<String>() + "…";
        }
        let revision = if wide {
            format!("{:rev_w$}  ", st.revision.as_deref().unwrap_or("-"))
        } else {
            String::new()
        };
        s.push_str(&format!(
            "{:name_w$}  {revision}{phase}  {step:5}  {}  {verdict}\n",
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
    fn steps_are_numbered_from_one() {
        assert_eq!(step_label(0, 7), "1/7");
        assert_eq!(step_label(2, 7), "3/7");
        assert_eq!(step_label(6, 7), "7/7");
        assert_eq!(step_label(7, 7), "7/7");
        assert_eq!(step_label(0, 0), "0/0");
    }

    #[test]
    fn watch_ends_on_promotion_and_rollback_only() {
        assert_eq!(watch_exit(CanaryPhase::Promoted), Some(0));
        assert_eq!(watch_exit(CanaryPhase::Aborted), Some(1));
        assert_eq!(watch_exit(CanaryPhase::RolledBack), Some(1));
        for p in [
            CanaryPhase::Pending,
            CanaryPhase::Progressing,
            CanaryPhase::Paused,
            CanaryPhase::Degraded,
        ] {
            assert_eq!(watch_exit(p), None, "{p:?}");
        }
    }

    #[test]
    fn a_long_verdict_is_cut_with_an_ellipsis_except_wide() {
        let c = CanarySummary {
            namespace: "bookinfo".into(),
            name: "reviews".into(),
            steps: 3,
            status: CanaryStatus {
                phase: CanaryPhase::Aborted,
                abort: Some(crate::canary::AbortStatus {
                    reason: "x".repeat(300),
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        let t = render_table(std::slice::from_ref(&c), false);
        assert!(t.contains('…') && !t.contains(&"x".repeat(200)), "{t}");
        let w = render_table_wide(&[c], false, true);
        assert!(
            w.contains(&"x".repeat(300)) && w.contains("REVISION"),
            "{w}"
        );
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
                && t.contains("3/6")
                && t.contains(" 30%"),
            "{t}"
        );
    }
}
