//! `skycanary route show|set-weight`: manual traffic control with the same router the
//! controller uses, against Kubernetes (`--kube`) or a directory of manifests (`--manifests`).

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::cli::target::{TargetArgs, TargetError};
use crate::resources::{LoadedCanary, load_paths};
use crate::traffic::file::FileManifestStore;
use crate::traffic::istio;
use crate::traffic::kube::{IstioApiVersion, KubeManifestStore};
use crate::traffic::planner::WeightPlanner;
use crate::traffic::router::{Router, RouterError};
use crate::traffic::spec::{destination_rule_key, routing_of, virtual_service_keys};
use crate::traffic::store::{ManifestStore, ObjectKey};
use crate::traffic::{DestinationWeight, IstioRouting, RouteKind, RouteWeights};

/// Where the Istio objects live.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct BackendArgs {
    /// A directory of YAML manifests (multi-document files; written atomically).
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// The Kubernetes cluster of the current kubeconfig (or in-cluster config).
    #[arg(long)]
    pub kube: bool,
}

/// Options shared by the route commands.
#[derive(Debug, clap::Args)]
pub struct CanaryArgs {
    /// File (or directory) holding the Canary.
    #[arg(long, value_name = "FILE")]
    pub canary: PathBuf,
    /// Canary name, when the file holds several.
    #[arg(long)]
    pub name: Option<String>,
    /// `-n/--namespace` (of the Canary when its metadata has none; with --kube the default is
    /// the kubeconfig context's namespace, else `default`), `--context`, `--kubeconfig` (with
    /// --kube), as kubectl takes them.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Istio API version used with --kube.
    #[arg(long, default_value = "v1", value_name = "VERSION")]
    pub istio_api_version: IstioApiVersion,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `route` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RouteCommand {
    /// Print stable/canary/other weights of every managed route.
    Show {
        #[command(flatten)]
        canary: CanaryArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ShowOutput::Text)]
        output: ShowOutput,
    },
    /// Move the canary to WEIGHT on every route the Canary names; 0 sends all traffic to
    /// stable and also removes header and mirror routes.
    SetWeight {
        #[command(flatten)]
        canary: CanaryArgs,
        /// Canary weight (0..=maxTrafficWeight).
        weight: i64,
    },
}

/// Output of `route show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowOutput {
    /// A table.
    Text,
    /// JSON array of routes.
    Json,
}

/// Exit codes: 0 ok, 1 routing error (nothing or everything written), 4 invalid input.
pub async fn run(
    cmd: &RouteCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let args = match cmd {
        RouteCommand::Show { canary, .. } | RouteCommand::SetWeight { canary, .. } => canary,
    };
    // They name a cluster: refused without --kube rather than silently ignored.
    if !args.backend.kube && args.target.names_cluster() {
        writeln!(
            err,
            "error: --context and --kubeconfig name a cluster: use them with --kube"
        )?;
        return Ok(4);
    }
    let Some((canary, namespace)) = load_canary(args, err)? else {
        return Ok(4);
    };
    let routing = routing_of(&canary.doc, &namespace);
    let targets = virtual_service_keys(&routing, &namespace);
    let dr = destination_rule_key(&routing, &namespace);
    match (&args.backend.manifests, args.backend.kube) {
        (Some(dir), _) => match FileManifestStore::open(dir) {
            Ok(store) => {
                execute(
                    cmd,
                    Router::new(store),
                    &routing,
                    &targets,
                    dr.as_ref(),
                    out,
                    err,
                )
                .await
            }
            Err(e) => {
                writeln!(err, "error: {e}")?;
                Ok(4)
            }
        },
        (None, true) => match args.target.client().await {
            Ok(client) => {
                let store = KubeManifestStore::new(client, args.istio_api_version);
                let client = store.client().clone();
                let version = store.version();
                let router = Router::new(store);
                let (code, outcome) =
                    execute_reporting(cmd, router, &routing, &targets, dr.as_ref(), out, err)
                        .await?;
                if let Some(outcome) = outcome {
                    record_events(&client, version, &outcome).await;
                }
                Ok(code)
            }
            Err(e) => {
                writeln!(err, "error: cannot connect to Kubernetes: {e}")?;
                Ok(1)
            }
        },
        (None, false) => {
            writeln!(err, "error: pass --manifests DIR or --kube")?;
            Ok(4)
        }
    }
}

fn load_canary(
    args: &CanaryArgs,
    err: &mut dyn Write,
) -> std::io::Result<Option<(LoadedCanary, String)>> {
    let loaded = load_paths(std::slice::from_ref(&args.canary));
    if !loaded.errors.is_empty() {
        for e in &loaded.errors {
            writeln!(err, "error: {e}")?;
        }
        return Ok(None);
    }
    let pick = match &args.name {
        Some(n) => loaded.canaries.iter().find(|c| &c.doc.metadata.name == n),
        None if loaded.canaries.len() == 1 => loaded.canaries.first(),
        None => {
            let names: Vec<_> = loaded
                .canaries
                .iter()
                .map(|c| c.doc.metadata.name.as_str())
                .collect();
            writeln!(
                err,
                "error: {}: {} Canaries found ({}); pick one with --name",
                args.canary.display(),
                names.len(),
                names.join(", ")
            )?;
            return Ok(None);
        }
    };
    let Some(c) = pick else {
        writeln!(err, "error: {}: no such Canary", args.canary.display())?;
        return Ok(None);
    };
    let ns = c
        .doc
        .metadata
        .namespace
        .clone()
        .map_or_else(|| default_namespace(args), Ok);
    match ns {
        Ok(ns) => Ok(Some((c.clone(), ns))),
        Err(e) => {
            writeln!(err, "error: {e}")?;
            Ok(None)
        }
    }
}

/// The namespace of a Canary whose metadata names none: `-n`; with --kube, else the
/// kubeconfig context's; else `default`.
fn default_namespace(args: &CanaryArgs) -> Result<String, TargetError> {
    if args.backend.kube {
        return args.target.namespace();
    }
    match &args.target.namespace {
        Some(_) => args.target.namespace(),
        None => Ok("default".into()),
    }
}

/// What a `set-weight` did, for Kubernetes Events.
enum Outcome {
    /// These VirtualServices were written.
    Changed(Vec<ObjectKey>, i64),
    /// The change failed.
    Failed(ObjectKey, String),
}

async fn execute<S: ManifestStore>(
    cmd: &RouteCommand,
    router: Router<S>,
    routing: &IstioRouting,
    targets: &[ObjectKey],
    dr: Option<&ObjectKey>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    Ok(
        execute_reporting(cmd, router, routing, targets, dr, out, err)
            .await?
            .0,
    )
}

async fn execute_reporting<S: ManifestStore>(
    cmd: &RouteCommand,
    router: Router<S>,
    routing: &IstioRouting,
    targets: &[ObjectKey],
    dr: Option<&ObjectKey>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<(u8, Option<Outcome>)> {
    let mut outcome = None;
    if let RouteCommand::SetWeight { weight, .. } = cmd {
        if *weight < 0 || *weight > routing.max_weight {
            writeln!(
                err,
                "error: weight {weight} is outside 0..={}",
                routing.max_weight
            )?;
            return Ok((4, None));
        }
        let planner = WeightPlanner {
            routing,
            weight: *weight,
        };
        match router.apply(targets, dr, &planner).await {
            Ok(report) => {
                outcome = Some(Outcome::Changed(report.changed.clone(), *weight));
                for k in &report.changed {
                    writeln!(out, "{k}: canary weight set to {weight}")?;
                }
                for k in &report.unchanged {
                    writeln!(out, "{k}: already at canary weight {weight} (not written)")?;
                }
                if report.conflicts_retried > 0 {
                    writeln!(
                        out,
                        "({} concurrent change(s) re-read and re-applied)",
                        report.conflicts_retried
                    )?;
                }
            }
            Err(e) => {
                let first = targets.first().cloned();
                let message = e.to_string();
                let code = report_error(e, err)?;
                return Ok((code, first.map(|k| Outcome::Failed(k, message))));
            }
        }
    }
    let objects = match router.read(targets).await {
        Ok(o) => o,
        Err(e) => return Ok((report_error(e, err)?, outcome)),
    };
    let mut rows: Vec<RouteWeights> = Vec::new();
    for (i, v) in objects.iter().enumerate() {
        match istio::read_weights(&v.object, &routing.virtual_services[i], routing) {
            Ok(mut w) => rows.append(&mut w),
            Err(e) => {
                writeln!(err, "error: {e}")?;
                return Ok((1, outcome));
            }
        }
    }
    match cmd {
        RouteCommand::Show {
            output: ShowOutput::Json,
            ..
        } => {
            serde_json::to_writer_pretty(
                &mut *out,
                &rows.iter().map(JsonRow::from).collect::<Vec<_>>(),
            )
            .map_err(std::io::Error::other)?;
            writeln!(out)?;
        }
        _ => print_table(out, &rows)?,
    }
    Ok((0, outcome))
}

/// Kubernetes Events on the VirtualServices, so `kubectl describe` shows manual changes.
/// Best effort: a failure to record an event never changes the command's result.
async fn record_events(client: &kube::Client, version: IstioApiVersion, outcome: &Outcome) {
    use crate::traffic::kube::{EventRecorder, EventType, emit_event};
    let recorder = EventRecorder::new(client.clone());
    let store = crate::traffic::kube::KubeManifestStore::new(client.clone(), version);
    let reference =
        |k: &ObjectKey, uid: Option<String>| k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(format!("networking.istio.io/{version}")),
            kind: Some(k.kind.as_str().to_string()),
            name: Some(k.name.clone()),
            namespace: Some(k.namespace.clone()),
            // `kubectl describe` lists an object's Events by its uid.
            uid,
            ..Default::default()
        };
    let events: Vec<(ObjectKey, &str, String, EventType)> = match outcome {
        Outcome::Changed(keys, w) => keys
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    "TrafficWeightUpdated",
                    format!("canary weight set to {w} by skycanary route set-weight"),
                    EventType::Normal,
                )
            })
            .collect(),
        Outcome::Failed(k, m) => vec![(
            k.clone(),
            "TrafficRoutingError",
            m.clone(),
            EventType::Warning,
        )],
    };
    for (key, reason, message, kind) in events {
        let uid = store.uid(&key).await;
        if let Err(e) = emit_event(
            &recorder,
            &key.namespace,
            &reference(&key, uid),
            reason,
            &message,
            kind,
        )
        .await
        {
            tracing::warn!(object = %key, "could not record event {reason}: {e}");
        }
    }
}

fn report_error(e: RouterError, err: &mut dyn Write) -> std::io::Result<u8> {
    writeln!(err, "error: {e}")?;
    Ok(1)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonRow<'a> {
    virtual_service: &'a str,
    kind: RouteKind,
    route: &'a str,
    stable: i64,
    canary: i64,
    others: &'a [DestinationWeight],
}

impl<'a> From<&'a RouteWeights> for JsonRow<'a> {
    fn from(r: &'a RouteWeights) -> Self {
        JsonRow {
            virtual_service: &r.virtual_service,
            kind: r.kind,
            route: &r.route,
            stable: r.stable,
            canary: r.canary,
            others: &r.others,
        }
    }
}

fn print_table(out: &mut dyn Write, rows: &[RouteWeights]) -> std::io::Result<()> {
    let kind = |k: RouteKind| match k {
        RouteKind::Http => "http",
        RouteKind::Tls => "tls",
        RouteKind::Tcp => "tcp",
    };
    let vs_w = rows
        .iter()
        .map(|r| r.virtual_service.len())
        .max()
        .unwrap_or(0)
        .max("VIRTUALSERVICE".len());
    let route_w = rows
        .iter()
        .map(|r| r.route.len())
        .max()
        .unwrap_or(0)
        .max("ROUTE".len());
    writeln!(
        out,
        "{:vs_w$}  KIND  {:route_w$}  STABLE  CANARY  OTHERS",
        "VIRTUALSERVICE", "ROUTE"
    )?;
    for r in rows {
        let others = if r.others.is_empty() {
            "-".to_string()
        } else {
            r.others
                .iter()
                .map(|o| format!("{}={}", o.destination, o.weight))
                .collect::<Vec<_>>()
                .join(",")
        };
        writeln!(
            out,
            "{:vs_w$}  {:4}  {:route_w$}  {:>6}  {:>6}  {others}",
            r.virtual_service,
            kind(r.kind),
            r.route,
            r.stable,
            r.canary
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> RouteWeights {
        RouteWeights {
            virtual_service: "reviews".into(),
            kind: RouteKind::Http,
            route: "primary".into(),
            stable: 60,
            canary: 30,
            others: vec![DestinationWeight::new("reviews/v3", 10)],
        }
    }

    /// `route show -o json` names each additional destination's fields, as the status does.
    #[test]
    fn json_rows_name_the_other_destinations_fields() {
        let r = row();
        let v = serde_json::to_value(JsonRow::from(&r)).expect("serialises");
        assert_eq!(
            v["others"],
            serde_json::json!([{"destination": "reviews/v3", "weight": 10}])
        );
    }

    #[test]
    fn the_table_prints_other_destinations_as_name_equals_weight() {
        let mut out = Vec::new();
        print_table(&mut out, &[row()]).expect("prints");
        let text = String::from_utf8(out).expect("utf-8");
        let line = text.lines().nth(1).expect("a row");
        assert!(line.ends_with("reviews/v3=10"), "{text}");
    }
}
