//! Shared fixtures: a simulator on loopback and a one-call analysis runner.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{FixedOffset, Utc};
use skycanary::analysis::RunState;
use skycanary::resources::load_str;
use skycanary::runner::{self, Clock, Defaults, ScaledClock};
use skycanary::sim::{OapProfile, RunningSim, SimConfig, SimEntity, Simulator};

/// A running simulator and the clock it shares with the analysis under test.
pub struct Sim {
    pub sim: Simulator,
    pub running: RunningSim,
    pub clock: Arc<dyn Clock>,
}

impl Sim {
    pub async fn start(profile: OapProfile) -> Sim {
        Sim::start_with(profile, FixedOffset::east_opt(0).unwrap()).await
    }

    /// Simulated time runs 60x faster, so one simulated minute takes one second.
    pub async fn start_with(profile: OapProfile, tz: FixedOffset) -> Sim {
        let clock: Arc<dyn Clock> = Arc::new(ScaledClock::new(Utc::now(), 60.0));
        let c = clock.clone();
        let sim = Simulator::new(
            SimConfig::new(profile)
                .with_tz(tz)
                .with_clock(move || c.now()),
        );
        let running = sim
            .serve("127.0.0.1:0".parse().unwrap())
            .await
            .expect("simulator starts");
        Sim {
            sim,
            running,
            clock,
        }
    }

    pub fn url(&self) -> String {
        self.running.url()
    }

    /// A constant series for a service metric.
    pub fn constant(&self, metric: &str, service: &str, v: f64) {
        self.sim
            .set_series(metric, SimEntity::service(service), move |_| Some(v));
    }

    /// Runs the first template of `yaml` with `args` against this simulator.
    pub async fn analyze(&self, yaml: &str, args: &[(&str, &str)]) -> RunState {
        self.analyze_with(
            yaml,
            args,
            Defaults {
                skywalking: Some(self.url()),
                timezone: None,
            },
        )
        .await
    }

    pub async fn analyze_with(
        &self,
        yaml: &str,
        args: &[(&str, &str)],
        defaults: Defaults,
    ) -> RunState {
        let loaded = load_str("test.yaml", yaml);
        assert!(
            loaded.errors.is_empty(),
            "template errors: {:?}",
            loaded.errors
        );
        let given: BTreeMap<String, String> = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let plan = runner::plan(&loaded.templates[0], &given, &defaults).expect("plan");
        let clients = runner::connect(&plan).expect("clients");
        runner::run_analysis(&plan, &clients, self.clock.as_ref(), &mut |_| {}).await
    }
}

/// A one-metric template; `body` is the metric's fields after `name`.
pub fn template(body: &str) -> String {
    format!(
        r#"apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: t}}
spec:
  args:
  - name: service
    value: reviews.bookinfo
  metrics:
  - name: m
{body}
"#
    )
}

/// Single-measurement apdex template with the given conditions / extra fields.
pub fn apdex(extra: &str) -> String {
    template(&format!(
        r#"    {extra}
    provider:
      skywalking:
        window: 5m
        metric: service_apdex
        entity: {{scope: Service, serviceName: "{{{{args.service}}}}"}}"#
    ))
}

/// The last measurement's message of the first metric.
pub fn last_message(s: &RunState) -> String {
    s.metric_results[0]
        .measurements
        .last()
        .and_then(|m| m.message.clone())
        .unwrap_or_default()
}
