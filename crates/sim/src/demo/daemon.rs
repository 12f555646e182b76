//! The real daemon: `skycanary run` in file mode, started as a child process of this same
//! binary on loopback, with a scaled clock shared with the simulator. The demo talks to it
//! only through its HTTP API (status, scheduled analyses, alarm webhook), as a user or OAP
//! would.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use skycanary_runtime::schedule::ScheduleSummary;
use skycanary_runtime::server::CanarySummary;

/// Failures talking to, or starting, the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The process could not be started.
    #[error("cannot start the daemon ({program}): {source}")]
    Spawn {
        /// The executable.
        program: String,
        /// Why the daemon process could not be started.
        source: std::io::Error,
    },
    /// It exited or never said where it listens.
    #[error("the daemon did not start: {0} (its log: {1})")]
    NotStarted(String, String),
    /// An HTTP failure.
    #[error("daemon API: {0}")]
    Http(String),
}

/// What the daemon is started with.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The skycanary executable.
    pub program: PathBuf,
    /// `--config`.
    pub config: PathBuf,
    /// `--manifests`.
    pub manifests: PathBuf,
    /// `--state-dir`.
    pub state_dir: PathBuf,
    /// `--skywalking`.
    pub skywalking: String,
    /// `--token-file`.
    pub token_file: PathBuf,
    /// The token in it.
    pub token: String,
    /// `--time-scale`.
    pub time_scale: f64,
    /// `--clock-origin`.
    pub clock_origin: DateTime<Utc>,
    /// Where its logs go.
    pub log_file: PathBuf,
}

/// A running daemon; killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    url: String,
    token: String,
    http: reqwest::Client,
    log_file: PathBuf,
}

impl Daemon {
    /// Starts `skycanary run` and waits until it listens.
    pub async fn start(cfg: &DaemonConfig) -> Result<Daemon, DaemonError> {
        let log = std::fs::File::create(&cfg.log_file).map_err(|source| DaemonError::Spawn {
            program: cfg.program.display().to_string(),
            source,
        })?;
        let mut child = Command::new(&cfg.program)
            .arg("run")
            .arg("--config")
            .arg(&cfg.config)
            .arg("--manifests")
            .arg(&cfg.manifests)
            .arg("--state-dir")
            .arg(&cfg.state_dir)
            .arg("--skywalking")
            .arg(&cfg.skywalking)
            .args(["--listen", "127.0.0.1:0", "--token-file"])
            .arg(&cfg.token_file)
            .arg("--time-scale")
            .arg(cfg.time_scale.to_string())
            .arg("--clock-origin")
            .arg(
                cfg.clock_origin
                    .to_rfc3339_opts(SecondsFormat::Micros, true),
            )
            .args(["--log-level", "skycanary=info", "--log-format", "plain"])
            .env_remove("RUST_LOG")
            .env_remove("SKYCANARY_TOKEN")
            .env_remove("SKYCANARY_SKYWALKING")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| DaemonError::Spawn {
                program: cfg.program.display().to_string(),
                source,
            })?;
        let log_name = cfg.log_file.display().to_string();
        let Some(stdout) = child.stdout.take() else {
            return Err(DaemonError::NotStarted("no stdout".into(), log_name));
        };
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let line = match first {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => {
                return Err(DaemonError::NotStarted(
                    "it exited".into(),
                    log_tail(&cfg.log_file, &log_name),
                ));
            }
            Ok(Err(e)) => return Err(DaemonError::NotStarted(e.to_string(), log_name)),
            Err(_) => {
                return Err(DaemonError::NotStarted(
                    "no answer within 30 s".into(),
                    log_name,
                ));
            }
        };
        let Some(url) = line
            .split("listening on ")
            .nth(1)
            .map(|u| u.trim().to_string())
        else {
            return Err(DaemonError::NotStarted(
                format!("unexpected first line {line:?}"),
                log_name,
            ));
        };
        // Keep draining stdout so the daemon never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| DaemonError::Http(e.to_string()))?;
        Ok(Daemon {
            child,
            url,
            token: cfg.token.clone(),
            http,
            log_file: cfg.log_file.clone(),
        })
    }

    /// The daemon's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its log file.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// `GET /api/v1/canaries/{ns}/{name}`.
    pub async fn canary(&self, ns: &str, name: &str) -> Result<CanarySummary, DaemonError> {
        self.get_json(&format!("/api/v1/canaries/{ns}/{name}"))
            .await
    }

    /// `GET /api/v1/scheduled-analyses`: every ScheduledAnalysis with its status (runs under
    /// way and the history, with measurements and actions).
    pub async fn scheduled_analyses(&self) -> Result<Vec<ScheduleSummary>, DaemonError> {
        #[derive(serde::Deserialize)]
        struct List {
            items: Vec<ScheduleSummary>,
        }
        let list: List = self.get_json("/api/v1/scheduled-analyses").await?;
        Ok(list.items)
    }

    /// An authenticated GET of the daemon's API, decoded; a non-2xx answer is an error with
    /// its body.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, DaemonError> {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| DaemonError::Http(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| DaemonError::Http(e.to_string()))?;
        if !status.is_success() {
            return Err(DaemonError::Http(format!("{status}: {body}")));
        }
        serde_json::from_str(&body).map_err(|e| DaemonError::Http(format!("{e}: {body}")))
    }

    /// `POST /webhooks/skywalking` with the bearer token, as OAP 10.2+ sends it; returns the
    /// daemon's answer (sent once the rollback is written).
    pub async fn skywalking_alarm(
        &self,
        payload: &serde_json::Value,
    ) -> Result<serde_json::Value, DaemonError> {
        let resp = self
            .http
            .post(format!("{}/webhooks/skywalking", self.url))
            .bearer_auth(&self.token)
            .json(payload)
            .send()
            .await
            .map_err(|e| DaemonError::Http(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| DaemonError::Http(e.to_string()))?;
        if !status.is_success() {
            return Err(DaemonError::Http(format!("{status}: {body}")));
        }
        serde_json::from_str(&body).map_err(|e| DaemonError::Http(format!("{e}: {body}")))
    }

    /// Stops the daemon (its state is persisted after every change, so a kill is safe).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// The last lines of the daemon's log, for an error message.
fn log_tail(path: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("\n");
    if tail.is_empty() {
        name.to_string()
    } else {
        format!("{name}:\n{tail}")
    }
}
