//! Load harness (see BENCHMARKS.md): runs the real daemon, `skycanary run --kube`, against the
//! fake Kubernetes API server (`skycanary::testkit`) and the SkyWalking simulator
//! (`skycanary::sim`), both served on 127.0.0.1 by this process, and reports:
//!
//! - footprint: start-to-ready time, idle RSS, binary size;
//! - latency: alarm webhook → VirtualService write acknowledged, and failed measurement
//!   (simulator response) → VirtualService write acknowledged;
//! - overhead: the daemon's time per measurement ÷ a bare HTTP round trip of the same request;
//! - scale: N canaries, one metric every `--interval` seconds each, for `--duration` seconds:
//!   CPU seconds per minute, peak RSS, lateness of measurements against their schedule,
//!   requests per measurement cycle to the simulator and to the API server;
//! - alarm-flood: `--flood-requests` webhook requests of ~1 MB alarms that match no canary;
//!   VmRSS and VmHWM after them, which must stay under 64 MiB (issue 16).
//! - file-alarm: file mode (`run --config --manifests`), one VirtualService file per canary;
//!   alarm webhook → rollback written, at each of `--file-canaries`, against the floor (the same
//!   request for an alarm that matches nothing) (issue 15).
//! - file-drift: file mode, `--samples` foreign edits of a managed weight (another tool sets a
//!   paused canary's VirtualService back to 100/0 in its file): edit → drift recorded in the
//!   status, and edit → the intended weights written back (issue 15 item 9). Each canary
//!   drifts at most twice (a third drift in one step pauses it), so the run has
//!   `⌈samples / 2⌉` canaries.
//! - notify-dead: file-alarm at the first of `--file-canaries`, twice: without notifications,
//!   and with every lifecycle event subscribed to a webhook that accepts connections and never
//!   answers (issue 21: a dead receiver delays no rollback).
//!
//! ```text
//! cargo bench --bench load -- [--scenarios footprint,latency,overhead,scale,alarm-flood,file-alarm,file-drift,notify-dead]
//!     [--canaries 100,1000,5000] [--file-canaries 5,40,80] [--duration 60] [--interval 5] [--samples 100]
//!     [--daemon target/release/skycanary] [--json FILE] [--quick]
//! ```
//! Everything is bounded: each wait has a limit, and the daemons are killed when done.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use serde_json::{Value, json};
use skycanary::sim::{OapProfile, RunningSim, SimConfig, SimEntity, Simulator};
use skycanary::testkit::{FakeApiServer, ServerHandle, install_crypto_provider, write_kubeconfig};

const TOKEN: &str = "bench-token";
const NS: &str = "bench";
/// Apdex of a healthy service, and of one that fails `min(result) >= 9900`.
const HEALTHY: f64 = 9950.0;
const FAILING: f64 = 5000.0;

#[derive(Parser, Debug, Clone)]
#[command(about = "skycanary load harness (see BENCHMARKS.md)")]
struct Args {
    /// Scenarios to run, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "footprint,latency,overhead,scale,alarm-flood,file-alarm,file-drift"
    )]
    scenarios: Vec<String>,
    /// Canary counts of the scale scenario.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    canaries: Vec<usize>,
    /// Canary counts of the file-alarm scenario.
    #[arg(long, value_delimiter = ',', default_value = "5,40,80")]
    file_canaries: Vec<usize>,
    /// Seconds measured per scale run (after warm-up).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seconds between measurements of each canary's metric.
    #[arg(long, default_value_t = 5)]
    interval: u64,
    /// Rollbacks timed per latency kind (alarm, failed measurement), per canary count of the
    /// file-alarm scenario, and foreign edits timed by the file-drift scenario.
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Daemon starts timed by the footprint scenario.
    #[arg(long, default_value_t = 10)]
    starts: usize,
    /// Measurements timed by the overhead scenario.
    #[arg(long, default_value_t = 40)]
    measurements: usize,
    /// Webhook requests of ~1 MB sent by the alarm-flood scenario.
    #[arg(long, default_value_t = 1000)]
    flood_requests: usize,
    /// The daemon binary (default: the one cargo built with this harness).
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// CI mode: 20 canaries for 10 s, 10 samples, 3 starts, 10 measurements, 200 flood requests,
    /// file-alarm at 5 and 20 canaries.
    #[arg(long)]
    quick: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.canaries = vec![20];
        args.duration = 10;
        args.samples = 10;
        args.starts = 3;
        args.measurements = 10;
        args.flood_requests = 200;
        args.file_canaries = vec![5, 20];
    }
    install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let daemon = args
        .daemon
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_skycanary")));
    let mut report = Report::default();
    report.line(format!("daemon binary: {}", daemon.display()));
    report.line(format!("machine: {}", machine()));
    for s in &args.scenarios {
        match s.as_str() {
            "footprint" => footprint(&args, &daemon, &mut report).await?,
            "latency" => latency(&args, &daemon, &mut report).await?,
            "overhead" => overhead(&args, &daemon, &mut report).await?,
            "scale" => {
                for &n in &args.canaries {
                    scale(&args, &daemon, n, &mut report).await?;
                }
            }
            "alarm-flood" => alarm_flood(&args, &daemon, &mut report).await?,
            "file-alarm" => {
                for &n in &args.file_canaries {
                    file_alarm(&args, &daemon, n, None, &mut report).await?;
                }
            }
            "file-drift" => file_drift(&args, &daemon, &mut report).await?,
            "notify-dead" => notify_dead(&args, &daemon, &mut report).await?,
            other => bail!(
                "unknown scenario {other:?} (footprint, latency, overhead, scale, alarm-flood, \
                 file-alarm, file-drift, notify-dead)"
            ),
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report.json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reporting

#[derive(Default)]
struct Report {
    json: serde_json::Map<String, Value>,
}

impl Report {
    fn line(&mut self, s: String) {
        println!("{s}");
    }
    fn figure(&mut self, key: &str, value: Value) {
        println!("  {key}: {value}");
        self.json.insert(key.to_string(), value);
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cores} core(s), {cpu}; load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// `{"n", "p50", "p99", "max"}` of millisecond samples.
fn summary_ms(mut samples: Vec<f64>) -> Value {
    samples.sort_by(f64::total_cmp);
    json!({
        "n": samples.len(),
        "p50_ms": round(pct(&samples, 0.50), 3),
        "p99_ms": round(pct(&samples, 0.99), 3),
        "max_ms": round(samples.last().copied().unwrap_or(f64::NAN), 3),
    })
}

// ---------------------------------------------------------------------------------------------
// The world: fake API server + simulator + recorders

/// What the API server answered, compactly.
#[derive(Debug, Clone)]
struct ApiRec {
    method: String,
    target: Target,
    status: u16,
    received: Instant,
    answered: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    /// Write to VirtualService `vs-{i}`.
    VsWrite(usize),
    /// Read of VirtualService `vs-{i}`, when the path names one.
    VsRead(Option<usize>),
    /// Status write or read of Canary `c-{i}`.
    CanaryStatus(Option<usize>),
    Watch,
    Lease,
    Event,
    Other,
}

impl Target {
    fn label(&self, method: &str) -> String {
        match self {
            Target::VsWrite(_) => format!("{method} virtualservice"),
            Target::VsRead(_) => format!("{method} virtualservice"),
            Target::CanaryStatus(_) => format!("{method} canary/status"),
            Target::Watch => "watch".into(),
            Target::Lease => format!("{method} lease"),
            Target::Event => format!("{method} event"),
            Target::Other => format!("{method} other"),
        }
    }
}

/// One simulator exchange: the canary's service index (if the body names one).
#[derive(Debug, Clone)]
struct SimRec {
    service: Option<usize>,
    metrics: bool,
    status: u16,
    received: Instant,
    answered: Instant,
}

fn service_name(i: usize) -> String {
    format!("svc-{i:05}.bench")
}

fn index_after(s: &str, prefix: &str) -> Option<usize> {
    let at = s.find(prefix)? + prefix.len();
    let digits: String = s[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

struct World {
    fake: FakeApiServer,
    _api: ServerHandle,
    sim: Simulator,
    running: RunningSim,
    dir: tempfile::TempDir,
    api: Arc<Mutex<Vec<ApiRec>>>,
    exchanges: Arc<Mutex<Vec<SimRec>>>,
    failing: Arc<Vec<AtomicBool>>,
    janitor: tokio::task::JoinHandle<()>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.janitor.abort();
    }
}

impl World {
    /// `n` canaries (interval `interval_s`, `retention` measurements kept), served.
    async fn new(n: usize, interval_s: u64, retention: usize) -> Result<World> {
        let fake = FakeApiServer::new();
        fake.set_event_log_capacity(100_000);
        let api: Arc<Mutex<Vec<ApiRec>>> = Arc::default();
        let sink = api.clone();
        fake.set_observer(move |a| {
            let target = if a.query.as_deref().is_some_and(|q| q.contains("watch=")) {
                Target::Watch
            } else if a.path.contains("/virtualservices/") {
                match (
                    a.method.as_str(),
                    index_after(&a.path, "/virtualservices/vs-"),
                ) {
                    ("PUT" | "PATCH", Some(i)) => Target::VsWrite(i),
                    (_, i) => Target::VsRead(i),
                }
            } else if a.path.contains("/canaries/") && a.path.ends_with("/status") {
                Target::CanaryStatus(index_after(&a.path, "/canaries/c-"))
            } else if a.path.contains("/leases") {
                Target::Lease
            } else if a.path.contains("/events") {
                Target::Event
            } else {
                Target::Other
            };
            if let Ok(mut v) = sink.lock() {
                v.push(ApiRec {
                    method: a.method.clone(),
                    target,
                    status: a.status,
                    received: a.received,
                    answered: a.answered,
                });
            }
        });
        fake.seed(template(interval_s, retention))?;
        for i in 0..n {
            fake.seed(virtual_service(i))?;
            fake.seed(canary(i))?;
        }
        let (addr, handle) = fake.serve().await?;

        let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
        let failing: Arc<Vec<AtomicBool>> =
            Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());
        for i in 0..n {
            let f = failing.clone();
            sim.set_series(
                "service_apdex",
                SimEntity::service(service_name(i)),
                move |_| {
                    Some(if f[i].load(Ordering::Relaxed) {
                        FAILING
                    } else {
                        HEALTHY
                    })
                },
            );
        }
        let exchanges: Arc<Mutex<Vec<SimRec>>> = Arc::default();
        let sink = exchanges.clone();
        sim.set_observer(move |x| {
            let body = std::str::from_utf8(x.body).unwrap_or_default();
            if let Ok(mut v) = sink.lock() {
                v.push(SimRec {
                    service: index_after(body, "svc-"),
                    metrics: body.contains("SkycanaryMetrics"),
                    status: x.status,
                    received: x.received,
                    answered: x.answered,
                });
            }
        });
        let running = sim
            .serve("127.0.0.1:0".parse()?)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let dir = tempfile::tempdir()?;
        write_kubeconfig(addr, &dir.path().join("kubeconfig"))?;
        std::fs::write(dir.path().join("token"), TOKEN)?;
        // The fake and the simulator also keep full request logs; drop them so memory stays flat.
        let (f2, s2) = (fake.clone(), sim.clone());
        let janitor = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                f2.clear_requests();
                s2.clear_requests();
            }
        });
        Ok(World {
            fake,
            _api: handle,
            sim,
            running,
            dir,
            api,
            exchanges,
            failing,
            janitor,
        })
    }

    fn api_recs(&self) -> Vec<ApiRec> {
        self.api.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn sim_recs(&self) -> Vec<SimRec> {
        self.exchanges.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn canary_weight(&self, i: usize) -> Option<i64> {
        self.fake
            .virtual_service(NS, &format!("vs-{i:05}"))
            .and_then(|v| v["spec"]["http"][0]["route"][1]["weight"].as_i64())
    }

    /// Starts the daemon against this world.
    fn start_daemon(&self, bin: &Path) -> Result<Daemon> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(self.dir.path().join("daemon.log"))?;
        let started = Instant::now();
        let child = Command::new(bin)
            .args(["run", "--kube", "--namespace", NS, "--lease"])
            .arg(format!("{NS}/skycanary-leader"))
            .args(["--skywalking", &self.running.url(), "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--token-file")
            .arg(self.dir.path().join("token"))
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Daemon {
            child,
            url: format!("http://127.0.0.1:{port}"),
            started,
        })
    }

    /// Waits until every canary has its canary weight written and one measurement done.
    async fn wait_steady(&self, n: usize, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let measured: std::collections::HashSet<usize> = self
                .sim_recs()
                .iter()
                .filter(|r| r.metrics && r.status == 200)
                .filter_map(|r| r.service)
                .collect();
            let weighted = (0..n)
                .filter(|&i| self.canary_weight(i) == Some(20))
                .count();
            if measured.len() >= n && weighted == n {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!(
                    "not steady after {limit:?}: {weighted}/{n} canaries at weight 20, {}/{n} measured",
                    measured.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn template(interval_s: u64, retention: usize) -> Value {
    json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "apdex", "namespace": NS},
        "spec": {
            "args": [{"name": "service"}],
            "metrics": [{
                "name": "apdex", "interval": format!("{interval_s}s"),
                "successCondition": "min(result) >= 9900",
                "provider": {"skywalking": {
                    // Measured at once: the harness times the loop, not the wait for a
                    // complete bucket after each weight change.
                    "window": {"duration": "3m", "alignToStep": false},
                    "metric": "service_apdex",
                    "entity": {"serviceName": "{{args.service}}"}}}
            }],
            "measurementRetention": [{"metricName": ".*", "limit": retention}]
        }
    })
}

fn virtual_service(i: usize) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": format!("vs-{i:05}"), "namespace": NS},
        "spec": {"hosts": [format!("svc-{i:05}")], "http": [{"name": "primary", "route": [
            {"destination": {"host": format!("svc-{i:05}-stable")}, "weight": 100},
            {"destination": {"host": format!("svc-{i:05}-canary")}, "weight": 0}]}]}
    })
}

/// Canary `i`: weight 20, then paused for a human; background analysis from step 0; rolled
/// back by alarms on its own service.
fn canary(i: usize) -> Value {
    json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
        "metadata": {"name": format!("c-{i:05}"), "namespace": NS},
        "spec": {
            "revision": "v2",
            "trafficRouting": {"istio": {
                "virtualService": {"name": format!("vs-{i:05}"), "routes": ["primary"]},
                "stableService": format!("svc-{i:05}-stable"),
                "canaryService": format!("svc-{i:05}-canary")}},
            "analysis": {"templates": [{"templateName": "apdex"}],
                         "args": [{"name": "service", "value": service_name(i)}]},
            "rollbackOn": {"alarms": [{"ruleName": "service_resp_time_rule",
                                       "name": format!("^svc-{i:05}\\.bench$")}]},
            "steps": [{"setWeight": 20}, {"pause": {}}]
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The daemon process

struct Daemon {
    child: Child,
    url: String,
    started: Instant,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time from spawn to the first 200 from `/readyz` (polled every millisecond).
    async fn wait_ready(&mut self, http: &reqwest::Client, limit: Duration) -> Result<Duration> {
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(self.started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("daemon exited before ready: {status}");
            }
            if self.started.elapsed() > limit {
                bail!("daemon not ready after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// user+system CPU seconds so far.
    fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        let after = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow!("odd /proc stat"))?;
        let f: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 of stat(5); `after` starts at field 3.
        let utime: f64 = f.get(11).ok_or_else(|| anyhow!("no utime"))?.parse()?;
        let stime: f64 = f.get(12).ok_or_else(|| anyhow!("no stime"))?.parse()?;
        Ok((utime + stime) / clock_ticks())
    }

    /// A `/proc/PID/status` field in MiB (`VmRSS`, `VmHWM`, `RssAnon`, `RssFile`).
    fn mem_mib(&self, field: &str) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .ok_or_else(|| anyhow!("no {field}"))?
            .parse()?;
        Ok(kb / 1024.0)
    }

    async fn metrics(&self, http: &reqwest::Client) -> Result<String> {
        Ok(http
            .get(format!("{}/metrics", self.url))
            .send()
            .await?
            .text()
            .await?)
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn http() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

// ---------------------------------------------------------------------------------------------
// Scenarios

async fn footprint(args: &Args, bin: &Path, report: &mut Report) -> Result<()> {
    report.line("\n## footprint".into());
    let size = std::fs::metadata(bin)?.len() as f64 / 1024.0 / 1024.0;
    report.figure("binary_mib", json!(round(size, 2)));
    let stripped = std::env::temp_dir().join(format!("skycanary-stripped-{}", std::process::id()));
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(bin)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let s = std::fs::metadata(&stripped)?.len() as f64 / 1024.0 / 1024.0;
        report.figure("binary_stripped_mib", json!(round(s, 2)));
        let _ = std::fs::remove_file(&stripped);
    }
    let http = http()?;
    let world = World::new(0, args.interval, 10).await?;
    let (mut ready, mut idle, mut anon) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.starts {
        let mut d = world.start_daemon(bin)?;
        ready.push(ms(d.wait_ready(&http, Duration::from_secs(60)).await?));
        tokio::time::sleep(Duration::from_secs(2)).await;
        idle.push(d.mem_mib("VmRSS")?);
        anon.push(d.mem_mib("RssAnon")?);
        drop(d);
        // The next start must take the lease over from a dead holder: delete it instead.
        let _ = world
            .fake
            .delete("coordination.k8s.io", "leases", NS, "skycanary-leader");
    }
    report.figure("start_to_ready", summary_ms(ready));
    idle.sort_by(f64::total_cmp);
    report.figure("idle_rss_mib_p50", json!(round(pct(&idle, 0.5), 2)));
    report.figure(
        "idle_rss_mib_max",
        json!(round(idle.last().copied().unwrap_or(f64::NAN), 2)),
    );
    // RSS = memory the daemon allocated (anonymous) + pages of its binary and libraries
    // mapped in (file-backed, shared with the page cache).
    anon.sort_by(f64::total_cmp);
    report.figure("idle_rss_anon_mib_p50", json!(round(pct(&anon, 0.5), 2)));
    Ok(())
}

/// Issue 16's acceptance: webhook requests of ~1 MB alarms for a service no canary watches
/// leave the daemon under 64 MiB (its de-duplicator once kept every alarm's text: 300 such
/// requests took it from 14 to 365 MiB). Each alarm's rule, entity and message are ~330 KB and
/// unique to its request.
async fn alarm_flood(args: &Args, bin: &Path, report: &mut Report) -> Result<()> {
    let requests = args.flood_requests;
    report.line(format!(
        "\n## alarm-flood ({requests} webhook requests of ~1 MB non-matching alarms)"
    ));
    let http = http()?;
    let world = World::new(1, args.interval, 10).await?;
    let mut d = world.start_daemon(bin)?;
    d.wait_ready(&http, Duration::from_secs(120)).await?;
    world.wait_steady(1, Duration::from_secs(300)).await?;
    report.figure(
        "alarm_flood_rss_before_mib",
        json!(round(d.mem_mib("VmRSS")?, 2)),
    );
    let t0 = Instant::now();
    for i in 0..requests {
        let fill = |c: &str| format!("{i:06}-{}", c.repeat(330_000));
        let body = format!(
            r#"[{{"scopeId":1,"scope":"SERVICE","name":"{}","id0":"id-{i}","id1":"","ruleName":"{}","alarmMessage":"{}","startTime":{}}}]"#,
            fill("n"),
            fill("r"),
            fill("m"),
            chrono::Utc::now().timestamp_millis()
        );
        let r = http
            .post(format!("{}/webhooks/skywalking", d.url))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("flood request {i}: {}", r.status());
        }
    }
    report.figure(
        "alarm_flood_seconds",
        json!(round(t0.elapsed().as_secs_f64(), 2)),
    );
    let (rss, hwm) = (d.mem_mib("VmRSS")?, d.mem_mib("VmHWM")?);
    report.figure("alarm_flood_rss_after_mib", json!(round(rss, 2)));
    report.figure("alarm_flood_hwm_mib", json!(round(hwm, 2)));
    if rss >= 64.0 || hwm >= 64.0 {
        bail!("after {requests} flood requests: VmRSS {rss:.1} MiB, VmHWM {hwm:.1} MiB (limit 64)");
    }
    Ok(())
}

/// The stages between a failing answer of the simulator and the rollback's acknowledged write,
/// from the API server's log: whose time the tail is (the daemon's or the API server's).
const FAILURE_STAGES: [&str; 6] = [
    "daemon: answer -> status write sent",
    "api: status write",
    "daemon: status saved -> VS read sent",
    "api: VS read",
    "daemon: VS read -> VS write sent",
    "api: VS write",
];

/// Durations of [`FAILURE_STAGES`] for canary `i` after the failing answer at `bad`.
fn failure_stages(recs: &[ApiRec], i: usize, bad: Instant) -> Option<[f64; 6]> {
    let first = |pred: &dyn Fn(&ApiRec) -> bool, after: Instant| {
        recs.iter()
            .filter(|r| pred(r) && r.received >= after)
            .min_by_key(|r| r.received)
    };
    let status = first(
        &|r| r.method == "PUT" && r.target == Target::CanaryStatus(Some(i)),
        bad,
    )?;
    let read = first(
        &|r| r.method == "GET" && r.target == Target::VsRead(Some(i)),
        status.answered,
    )?;
    let write = first(&|r| r.target == Target::VsWrite(i), read.answered)?;
    Some([
        ms(status.received - bad),
        ms(status.answered - status.received),
        ms(read.received - status.answered),
        ms(read.answered - read.received),
        ms(write.received - read.answered),
        ms(write.answered - write.received),
    ])
}

/// The first acknowledged write to VirtualService `vs-{i}` received after `after`.
fn vs_ack(recs: &[ApiRec], i: usize, after: Instant) -> Option<Instant> {
    recs.iter()
        .filter(|r| r.target == Target::VsWrite(i) && r.received >= after && r.status < 300)
        .map(|r| r.answered)
        .min()
}

fn alarm_body(i: usize, seq: usize) -> Value {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let svc = service_name(i);
    json!([{
        "scopeId": 1, "scope": "SERVICE", "name": svc, "id0": format!("{svc}.1"), "id1": "",
        "ruleName": "service_resp_time_rule",
        "alarmMessage": format!("Response time of service {svc} is more than 1000ms in 3 minutes of last 10 minutes."),
        "startTime": now_ms, "tags": [{"key": "level", "value": "WARNING"}],
        "hooks": ["webhook.default"], "expression": "sum(service_resp_time > 1000) >= 3",
        "uuid": format!("bench-{seq}")
    }])
}

async fn latency(args: &Args, bin: &Path, report: &mut Report) -> Result<()> {
    let k = args.samples;
    let n = 2 * k;
    report.line(format!(
        "\n## latency ({n} canaries, metric every {}s; {k} alarm and {k} failure rollbacks)",
        args.interval
    ));
    let http = http()?;
    let world = World::new(n, args.interval, 10).await?;
    let mut d = world.start_daemon(bin)?;
    d.wait_ready(&http, Duration::from_secs(120)).await?;
    world.wait_steady(n, Duration::from_secs(300)).await?;

    // Alarms, one at a time: webhook sent → VS write acknowledged.
    let mut sent = Vec::new();
    let mut answered = Vec::new();
    for i in 0..k {
        let t0 = Instant::now();
        let r = http
            .post(format!("{}/webhooks/skywalking", d.url))
            .bearer_auth(TOKEN)
            .json(&alarm_body(i, i))
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        answered.push(ms(t0.elapsed()));
        if !status.is_success() || body["matched"].as_array().map(Vec::len) != Some(1) {
            bail!("alarm for canary {i} not matched: {status} {body}");
        }
        sent.push((i, t0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Failures, staggered: the simulator's first failing answer → VS write acknowledged.
    let mut flipped = Vec::new();
    for i in k..n {
        flipped.push((i, Instant::now()));
        world.failing[i].store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let limit = Instant::now() + Duration::from_secs(args.interval * 3 + 30);
    while (k..n).any(|i| world.canary_weight(i) != Some(0)) && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let api = world.api_recs();
    let sims = world.sim_recs();
    let alarm: Vec<f64> = sent
        .iter()
        .filter_map(|&(i, t0)| vs_ack(&api, i, t0).map(|a| ms(a - t0)))
        .collect();
    let mut failure = Vec::new();
    let mut stages: Vec<Vec<f64>> = vec![Vec::new(); FAILURE_STAGES.len()];
    for &(i, flip) in &flipped {
        let first_bad = sims
            .iter()
            .filter(|r| r.service == Some(i) && r.metrics && r.received > flip)
            .map(|r| r.answered)
            .min();
        if let Some(bad) = first_bad
            && let Some(ack) = vs_ack(&api, i, bad)
        {
            failure.push(ms(ack - bad));
            if let Some(split) = failure_stages(&api, i, bad) {
                for (all, d) in stages.iter_mut().zip(split) {
                    all.push(d);
                }
            }
        }
    }
    let (na, nf) = (alarm.len(), failure.len());
    report.figure("alarm_to_rollback", summary_ms(alarm));
    report.figure("alarm_webhook_answered", summary_ms(answered));
    report.figure("failed_measurement_to_rollback", summary_ms(failure));
    for (name, all) in FAILURE_STAGES.iter().zip(stages) {
        report.figure(&format!("failed_measurement_stage {name}"), summary_ms(all));
    }
    if na < k || nf < k {
        bail!("only {na}/{k} alarm and {nf}/{k} failure rollbacks were observed");
    }
    let metrics = d.metrics(&http).await?;
    let hist: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("skycanary_alarm_rollback") && !l.starts_with('#'))
        .collect();
    report.figure("daemon_alarm_rollback_histogram", json!(hist));
    Ok(())
}

async fn overhead(args: &Args, bin: &Path, report: &mut Report) -> Result<()> {
    let m = args.measurements;
    report.line(format!(
        "\n## overhead (1 canary, metric every 1s, {m} measurements)"
    ));
    let http = http()?;
    let world = World::new(1, 1, m + 5).await?;
    let mut d = world.start_daemon(bin)?;
    d.wait_ready(&http, Duration::from_secs(60)).await?;
    world.wait_steady(1, Duration::from_secs(60)).await?;
    // Keep one metrics request as the daemon sent it, for the bare round trip.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let tx = Mutex::new(Some(tx));
    let exchanges = world.exchanges.clone();
    world.sim.set_observer(move |x| {
        if let Ok(mut v) = exchanges.lock() {
            v.push(SimRec {
                service: Some(0),
                metrics: true,
                status: x.status,
                received: x.received,
                answered: x.answered,
            });
        }
        if std::str::from_utf8(x.body).is_ok_and(|b| b.contains("SkycanaryMetrics"))
            && let Some(tx) = tx.lock().ok().and_then(|mut t| t.take())
        {
            let _ = tx.send(x.body.to_vec());
        }
    });
    let limit = Instant::now() + Duration::from_secs(m as u64 * 3 + 30);
    let measured = loop {
        let ms = measurements(&world.fake, 0);
        if ms.len() > m || Instant::now() > limit {
            break ms;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    drop(d);
    // The first measurement also detects the OAP version: left out.
    let daemon: Vec<f64> = measured.iter().skip(1).copied().collect();
    let body = rx
        .recv_timeout(Duration::from_secs(5))
        .context("no metrics request seen")?;
    let bare_client = reqwest::Client::new();
    let mut bare = Vec::new();
    for k in 0..(m + 10) {
        let t0 = Instant::now();
        let r = bare_client
            .post(world.running.graphql_url())
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body.clone())
            .send()
            .await?;
        let _ = r.bytes().await?;
        if k >= 10 {
            bare.push(ms(t0.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ds = daemon.clone();
    ds.sort_by(f64::total_cmp);
    let mut bs = bare.clone();
    bs.sort_by(f64::total_cmp);
    report.figure("daemon_measurement", summary_ms(daemon));
    report.figure("bare_round_trip", summary_ms(bare));
    report.figure(
        "overhead_ratio_p50",
        json!(round(pct(&ds, 0.5) / pct(&bs, 0.5), 2)),
    );
    Ok(())
}

/// finishedAt − startedAt (ms) of canary `i`'s measurements, oldest first, from its status.
fn measurements(fake: &FakeApiServer, i: usize) -> Vec<f64> {
    let Some(c) = fake.get("skycanary.io", "canaries", NS, &format!("c-{i:05}")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for run in c["status"]["analysisRuns"].as_array().into_iter().flatten() {
        for mr in run["status"]["metricResults"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for m in mr["measurements"].as_array().into_iter().flatten() {
                let t = |k: &str| {
                    m[k].as_str()
                        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                };
                if let (Some(a), Some(b)) = (t("startedAt"), t("finishedAt")) {
                    out.push((b - a).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                }
            }
        }
    }
    out
}

async fn scale(args: &Args, bin: &Path, n: usize, report: &mut Report) -> Result<()> {
    let interval = args.interval;
    report.line(format!(
        "\n## scale: {n} canaries, one metric every {interval}s, {}s measured",
        args.duration
    ));
    let http = http()?;
    let setup = Instant::now();
    let world = World::new(n, interval, 10).await?;
    let mut d = world.start_daemon(bin)?;
    d.wait_ready(&http, Duration::from_secs(300)).await?;
    world
        .wait_steady(n, Duration::from_secs(300 + n as u64 / 10))
        .await?;
    report.figure(
        "setup_to_steady_s",
        json!(round(setup.elapsed().as_secs_f64(), 1)),
    );
    // One more interval, so the start-up burst is behind us.
    tokio::time::sleep(Duration::from_secs(interval)).await;
    let harness_cpu0 = self_cpu_seconds();
    let cpu0 = d.cpu_seconds()?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let cpu1 = d.cpu_seconds()?;
    let t1 = Instant::now();
    let harness_cpu1 = self_cpu_seconds();
    let hwm = d.mem_mib("VmHWM")?;
    let rss = d.mem_mib("VmRSS")?;
    let (anon, file) = (d.mem_mib("RssAnon")?, d.mem_mib("RssFile")?);
    drop(d);

    let minutes = (t1 - t0).as_secs_f64() / 60.0;
    let cycles = (t1 - t0).as_secs_f64() / interval as f64;
    report.figure(
        "cpu_seconds_per_minute",
        json!(round((cpu1 - cpu0) / minutes, 2)),
    );
    report.figure(
        "harness_cpu_seconds_per_minute",
        json!(round((harness_cpu1 - harness_cpu0) / minutes, 2)),
    );
    report.figure("peak_rss_mib", json!(round(hwm, 1)));
    report.figure("rss_at_end_mib", json!(round(rss, 1)));
    report.figure(
        "rss_at_end_anon_file_mib",
        json!([round(anon, 1), round(file, 1)]),
    );

    let sims = world.sim_recs();
    let mut per: HashMap<usize, Vec<&SimRec>> = HashMap::new();
    for r in sims.iter().filter(|r| r.metrics) {
        if let Some(s) = r.service {
            per.entry(s).or_default().push(r);
        }
    }
    let gap = Duration::from_secs(interval);
    let mut late = Vec::new();
    for rs in per.values_mut() {
        rs.sort_by_key(|r| r.received);
        for w in rs.windows(2) {
            if w[1].received >= t0 && w[1].received < t1 {
                let due = w[0].answered + gap;
                late.push(ms(w[1].received.saturating_duration_since(due)));
            }
        }
    }
    let measured_in_window = late.len();
    report.figure("lateness", summary_ms(late));
    let expected = n as f64 * cycles;
    report.figure(
        "measurements_per_expected",
        json!(round(measured_in_window as f64 / expected, 3)),
    );
    let in_window = |r: Instant| r >= t0 && r < t1;
    let sim_n = sims.iter().filter(|r| in_window(r.received)).count();
    let sim_errors = sims
        .iter()
        .filter(|r| in_window(r.received) && r.status != 200)
        .count();
    report.figure(
        "sim_requests_per_canary_cycle",
        json!(round(sim_n as f64 / expected, 3)),
    );
    report.figure("sim_non_200", json!(sim_errors));
    let api = world.api_recs();
    let mut by_kind: HashMap<String, usize> = HashMap::new();
    let mut api_n = 0;
    for r in api.iter().filter(|r| in_window(r.received)) {
        api_n += 1;
        *by_kind.entry(r.target.label(&r.method)).or_default() += 1;
    }
    report.figure(
        "api_requests_per_canary_cycle",
        json!(round(api_n as f64 / expected, 3)),
    );
    let mut kinds: Vec<(String, usize)> = by_kind.into_iter().collect();
    kinds.sort();
    report.figure(
        "api_requests_by_kind_per_canary_cycle",
        Value::Object(
            kinds
                .into_iter()
                .map(|(k, v)| (k, json!(round(v as f64 / expected, 3))))
                .collect(),
        ),
    );
    let key = format!("scale_{n}");
    let mut figures = serde_json::Map::new();
    for k in [
        "cpu_seconds_per_minute",
        "harness_cpu_seconds_per_minute",
        "peak_rss_mib",
        "rss_at_end_mib",
        "lateness",
        "measurements_per_expected",
        "sim_requests_per_canary_cycle",
        "sim_non_200",
        "api_requests_per_canary_cycle",
        "api_requests_by_kind_per_canary_cycle",
        "setup_to_steady_s",
    ] {
        if let Some(v) = report.json.remove(k) {
            figures.insert(k.to_string(), v);
        }
    }
    report.json.insert(key, Value::Object(figures));
    Ok(())
}

/// user+system CPU seconds of this process (the fake API server and the simulator).
fn self_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some((_, after)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / clock_ticks()
}

// ---------------------------------------------------------------------------------------------
// File mode

/// A hand-formatted VirtualService as kept in Git: comments, flow and block style.
fn file_virtual_service(i: usize) -> String {
    format!(
        "# Routing of svc-{i:05}; weights are written by skycanary.\n\
         apiVersion: networking.istio.io/v1\n\
         kind: VirtualService\n\
         metadata:\n  name: vs-{i:05}\n  namespace: {NS}\n\
         spec:\n  hosts: [svc-{i:05}]\n  http:\n    - name: primary  # the managed route\n      route:\n\
         \x20       - destination: {{host: svc-{i:05}-stable}}\n          weight: 100\n\
         \x20       - destination: {{host: svc-{i:05}-canary}}\n          weight: 0\n"
    )
}

/// Canary `i` in file mode: weight 20, then paused for a human; rolled back by alarms on its
/// own service. No analysis: the figure is the alarm path alone.
fn file_canary(i: usize) -> String {
    format!(
        "apiVersion: skycanary.io/v1alpha1\nkind: Canary\n\
         metadata: {{name: c-{i:05}, namespace: {NS}}}\n\
         spec:\n  revision: v2\n  trafficRouting:\n    istio:\n\
         \x20     virtualService: {{name: vs-{i:05}, routes: [primary]}}\n\
         \x20     stableService: svc-{i:05}-stable\n      canaryService: svc-{i:05}-canary\n\
         \x20 rollbackOn:\n    alarms: [{{ruleName: service_resp_time_rule, name: '^svc-{i:05}\\.bench$'}}]\n\
         \x20 steps: [{{setWeight: 20}}, {{pause: {{}}}}]\n"
    )
}

/// The canary weight of `vs-{i}` as written in its file.
fn file_weight(istio: &Path, i: usize) -> Option<i64> {
    let text = std::fs::read_to_string(istio.join(format!("vs-{i:05}.yaml"))).ok()?;
    let docs = skycanary::resources::yaml::parse_documents_with(
        &text,
        &skycanary::resources::yaml::MANIFEST_LIMITS,
    )
    .ok()?;
    docs.first()?.value["spec"]["http"][0]["route"][1]["weight"].as_i64()
}

/// Waits until every canary in `which` is paused at weight 20, in its status and its file.
async fn wait_file_paused(
    http: &reqwest::Client,
    d: &Daemon,
    istio: &Path,
    which: std::ops::Range<usize>,
    limit: Duration,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let list: Value = http
            .get(format!("{}/api/v1/canaries", d.url))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .json()
            .await?;
        let paused: std::collections::HashSet<String> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| {
                c["status"]["phase"] == "Paused"
                    && c["status"]["routingWrite"].is_null()
                    && c["status"]["applied"]["canaryWeight"] == 20
            })
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect();
        let waiting: Vec<usize> = which
            .clone()
            .filter(|&i| {
                !paused.contains(&format!("c-{i:05}")) || file_weight(istio, i) != Some(20)
            })
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!(
                "{} canaries not paused at weight 20 after {limit:?} (first: c-{:05})",
                waiting.len(),
                waiting[0]
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 15 item 11: in file mode, alarm webhook → rollback written (the webhook answers once
/// the VirtualService write is acknowledged, or 503), with one VirtualService file per canary,
/// against the floor: the same request for an alarm that matches nothing. The two alternate,
/// so both see the same machine. Each canary rolls back once per round; then all are retried.
/// With `notifications`, the daemon runs with that `--notifications` file and the figures are
/// keyed `notify_dead_<n>`.
async fn file_alarm(
    args: &Args,
    bin: &Path,
    n: usize,
    notifications: Option<&Path>,
    report: &mut Report,
) -> Result<()> {
    let k = args.samples;
    let what = if notifications.is_some() {
        ", every event notified to a dead webhook"
    } else {
        ""
    };
    report.line(format!(
        "\n## file-alarm ({n} canaries in file mode{what}, {k} alarms and {k} floor requests)"
    ));
    if n == 0 {
        bail!("file-alarm needs at least one canary");
    }
    let http = http()?;
    let dir = tempfile::tempdir()?;
    let (d, istio) = start_file_mode(&http, bin, dir.path(), n, notifications).await?;
    let settle = Duration::from_secs(60 + n as u64);

    let post = |body: Value| {
        http.post(format!("{}/webhooks/skywalking", d.url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let (mut floor, mut hit) = (Vec::with_capacity(k), Vec::with_capacity(k));
    for s in 0..k {
        let i = s % n;
        if s > 0 && i == 0 {
            // Every canary has rolled back: start them all again.
            for j in 0..n {
                let r = http
                    .post(format!("{}/api/v1/canaries/{NS}/c-{j:05}/retry", d.url))
                    .bearer_auth(TOKEN)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("retry of c-{j:05}: {} {}", r.status(), r.text().await?);
                }
            }
            wait_file_paused(&http, &d, &istio, 0..n, settle).await?;
        }
        let mut nobody = alarm_body(i, 2 * s);
        nobody[0]["name"] = json!("nobody.elsewhere");
        nobody[0]["id0"] = json!("nobody.elsewhere.1");
        let t0 = Instant::now();
        let r = post(nobody).await?;
        let status = r.status();
        let body: Value = r.json().await?;
        floor.push(ms(t0.elapsed()));
        if !status.is_success() || body["matched"].as_array().map(Vec::len) != Some(0) {
            bail!("the floor alarm matched or failed: {status} {body}");
        }
        let t0 = Instant::now();
        let r = post(alarm_body(i, 2 * s + 1)).await?;
        let status = r.status();
        let body: Value = r.json().await?;
        hit.push(ms(t0.elapsed()));
        if !status.is_success() || body["matched"].as_array().map(Vec::len) != Some(1) {
            bail!("alarm for c-{i:05} not rolled back: {status} {body}");
        }
        if file_weight(&istio, i) != Some(0) {
            bail!("the webhook answered but vs-{i:05}'s file is not at weight 0");
        }
    }
    let ratio = {
        let (mut f, mut h) = (floor.clone(), hit.clone());
        f.sort_by(f64::total_cmp);
        h.sort_by(f64::total_cmp);
        round(pct(&h, 0.5) / pct(&f, 0.5), 2)
    };
    let mut figures = serde_json::Map::new();
    for (key, value) in [
        ("alarm_to_rollback_written", summary_ms(hit)),
        ("floor_unmatched_alarm", summary_ms(floor)),
        ("p50_ratio_to_floor", json!(ratio)),
    ] {
        println!("  {key}: {value}");
        figures.insert(key.to_string(), value);
    }
    let key = if notifications.is_some() {
        format!("notify_dead_{n}")
    } else {
        format!("file_alarm_{n}")
    };
    report.json.insert(key, Value::Object(figures));
    Ok(())
}

/// Issue 21: alarm → rollback written in file mode without notifications, then with every
/// lifecycle event of every canary subscribed to a webhook that accepts connections and never
/// answers (one attempt of 300 s each: the sink's worker is stuck for the whole run and its
/// queue fills and drops). The rollback path only enqueues, so both should match.
async fn notify_dead(args: &Args, bin: &Path, report: &mut Report) -> Result<()> {
    let n = args.file_canaries.first().copied().unwrap_or(5);
    file_alarm(args, bin, n, None, report).await?;
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", hole.local_addr()?);
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = accepted.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "bench-secret")?;
    let file = dir.path().join("notifications.yaml");
    std::fs::write(
        &file,
        format!(
            "sinks:\n- name: dead\n  type: webhook\n  url: {url}\n  secretFile: {}\n  timeout: 300s\n\
             defaults:\n- sink: dead\ndelivery: {{maxAttempts: 1, queueSize: 64}}\n",
            secret.display()
        ),
    )?;
    let result = file_alarm(args, bin, n, Some(&file), report).await;
    holder.abort();
    result?;
    let held = accepted.load(Ordering::SeqCst);
    report.line(format!(
        "  dead webhook: {held} connection(s) accepted, none answered"
    ));
    if held == 0 {
        bail!("the dead webhook was never contacted: notifications were not enabled");
    }
    Ok(())
}

/// Starts the daemon in file mode over `n` canaries (one Canary and one VirtualService file
/// each) and waits until every one is paused at weight 20. Returns the daemon and the
/// VirtualService directory; `dir` holds everything.
async fn start_file_mode(
    http: &reqwest::Client,
    bin: &Path,
    dir: &Path,
    n: usize,
    notifications: Option<&Path>,
) -> Result<(Daemon, PathBuf)> {
    let (config, istio, state) = (dir.join("config"), dir.join("istio"), dir.join("state"));
    for d in [&config, &istio, &state] {
        std::fs::create_dir_all(d)?;
    }
    for i in 0..n {
        std::fs::write(config.join(format!("c-{i:05}.yaml")), file_canary(i))?;
        std::fs::write(
            istio.join(format!("vs-{i:05}.yaml")),
            file_virtual_service(i),
        )?;
    }
    let token = dir.join("token");
    std::fs::write(&token, TOKEN)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let started = Instant::now();
    let mut cmd = Command::new(bin);
    cmd.arg("run");
    if let Some(f) = notifications {
        cmd.arg("--notifications").arg(f);
    }
    let child = cmd
        .arg("--config")
        .arg(&config)
        .arg("--manifests")
        .arg(&istio)
        .arg("--state-dir")
        .arg(&state)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--token-file")
        .arg(&token)
        .env_remove("RUST_LOG")
        .env_remove("SKYCANARY_SKYWALKING")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut d = Daemon {
        child,
        url: format!("http://127.0.0.1:{port}"),
        started,
    };
    d.wait_ready(http, Duration::from_secs(60)).await?;
    let settle = Duration::from_secs(60 + n as u64);
    wait_file_paused(http, &d, &istio, 0..n, settle).await?;
    Ok((d, istio))
}

/// Issue 15 item 9: in file mode, another tool sets a paused canary's weights back to 100/0 in
/// its file (renamed into place, as editors and `git checkout` do). Timed from the rename: the
/// drift recorded in the canary's status (`status.drifts` up by one), and the intended weights
/// written back to the file. One edit at a time, spread over the daemon's poll period; each
/// canary is edited at most twice (the third drift in a step would pause it instead of
/// correcting).
async fn file_drift(args: &Args, bin: &Path, report: &mut Report) -> Result<()> {
    let k = args.samples.max(1);
    let n = k.div_ceil(2);
    report.line(format!(
        "\n## file-drift ({n} canaries in file mode, {k} foreign edits of a managed weight)"
    ));
    let http = http()?;
    let dir = tempfile::tempdir()?;
    let (d, istio) = start_file_mode(&http, bin, dir.path(), n, None).await?;
    let drifts = |i: usize| {
        let http = http.clone();
        let url = format!("{}/api/v1/canaries/{NS}/c-{i:05}", d.url);
        async move {
            let v: Value = http
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            anyhow::Ok(v["status"]["drifts"].as_u64().unwrap_or(0))
        }
    };
    let limit = Duration::from_secs(30);
    let (mut detected, mut corrected) = (Vec::with_capacity(k), Vec::with_capacity(k));
    for s in 0..k {
        let i = s % n;
        let before = drifts(i).await?;
        let path = istio.join(format!("vs-{i:05}.yaml"));
        let text = std::fs::read_to_string(&path)?;
        let edited = text
            .replace("          weight: 80\n", "          weight: 100\n")
            .replace("          weight: 20\n", "          weight: 0\n");
        if edited == text {
            bail!("vs-{i:05} is not at 80/20 before the edit:\n{text}");
        }
        // Spread the edits over the 0.5 s poll period: right after a correction (which
        // follows a poll) every edit would otherwise wait almost a whole period.
        tokio::time::sleep(Duration::from_millis((s as u64 * 211) % 500)).await;
        let tmp = istio.join(format!(".vs-{i:05}.yaml.edit"));
        std::fs::write(&tmp, &edited)?;
        let t0 = Instant::now();
        std::fs::rename(&tmp, &path)?;
        let (mut seen, mut back) = (None, None);
        while seen.is_none() || back.is_none() {
            if back.is_none() && file_weight(&istio, i) == Some(20) {
                back = Some(ms(t0.elapsed()));
            }
            if seen.is_none() && drifts(i).await? > before {
                seen = Some(ms(t0.elapsed()));
            }
            if t0.elapsed() > limit {
                bail!(
                    "drift of c-{i:05} not handled after {limit:?} (recorded: {}, written back: {})",
                    seen.is_some(),
                    back.is_some()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        detected.extend(seen);
        corrected.extend(back);
        // The correction is a write of ours: let its status settle before the next edit.
        wait_file_paused(&http, &d, &istio, i..i + 1, limit).await?;
    }
    let mut figures = serde_json::Map::new();
    for (key, value) in [
        ("edit_to_drift_recorded", summary_ms(detected)),
        ("edit_to_weights_written_back", summary_ms(corrected)),
    ] {
        println!("  {key}: {value}");
        figures.insert(key.to_string(), value);
    }
    report
        .json
        .insert("file_drift".into(), Value::Object(figures));
    Ok(())
}
