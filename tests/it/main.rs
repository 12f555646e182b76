//! Integration tests: the analysis engine, the SkyWalking provider and the CLI against the
//! SkyWalking simulator over real HTTP on 127.0.0.1.

mod alarm_flood;
mod alarm_poll;
mod analyze_cli;
mod argo_analysis_cli;
mod argo_conditions;
mod argo_istio;
mod argocd;
mod bounded_oap;
mod bundled_templates;
mod chaos;
mod cli_shape;
mod control_kube;
mod daemon;
mod daemon_kube;
mod daemon_kube_e2e;
mod dashboard_browser;
mod demo;
mod deploy;
mod drift;
mod evidence_time;
mod hostile_http;
mod kube_fake;
mod kubectl;
mod logs;
mod metrics_export;
mod provider_sim;
mod report_browser;
mod route_cli;
mod route_kube;
mod runner;
mod scheduled;
mod step_windows;
mod support;
mod tls;
