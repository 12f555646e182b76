//! Scenario files for `skycanary simulator` and `skycanary run --simulator`: which services a
//! simulated OAP serves, how each behaves (a canned profile, or versions blended by the traffic
//! weights actually routed to them), and which faults it injects. Read with the bounded YAML
//! loader of resource files; every mistake is reported with file, line and field.
//!
//! ```yaml
//! oapVersion: "10.4"          # optional (flag --oap-version wins)
//! timezone: "+0000"           # optional (flag --timezone wins)
//! services:
//! - name: reviews.bookinfo
//!   cpm: 120                  # calls per minute, all versions together
//!   versions:
//!     v1: {apdex: 9950, sla: 9990, respTimeMs: 80}
//!     v2: {apdex: 9950, sla: 9990, respTimeMs: 80,
//!          overload: {aboveShare: 0.5, apdex: 7000, sla: 9300, respTimeMs: 900}}
//!   weightsFrom: {virtualService: reviews, namespace: bookinfo, route: primary}
//! - name: ratings.bookinfo
//!   profile: healthy          # healthy | degraded | noTraffic | partial
//! faults:
//! - {status: 503, times: 2}   # or {delay: 3s}, {storageError: true}, {graphqlError: "..."}
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use super::blend::{Overload, VersionBehaviour, VersionValues, Weights};
use super::scenario::Scenario;
use super::{Fault, OapProfile};
use skycanary_runtime::resources::ConfigError;
use skycanary_runtime::resources::load::{Origin, deserialize_all};
use skycanary_runtime::resources::yaml::{self, CONFIG_LIMITS, MAX_CONFIG_FILE_BYTES};

/// At most this many services, versions per service and faults: a scenario is a test bench.
pub const MAX_SERVICES: usize = 64;
/// See [`MAX_SERVICES`].
pub const MAX_VERSIONS: usize = 16;
/// See [`MAX_SERVICES`].
pub const MAX_FAULTS: usize = 64;

/// A whole scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScenarioFile {
    /// OAP release emulated (`8.9`, `9.4`, `9.7`, `10.2`, `10.4`).
    #[serde(default)]
    pub oap_version: Option<String>,
    /// The OAP JVM's time zone (`+0800`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Services served.
    pub services: Vec<ServiceSpec>,
    /// Faults injected into the next requests, in order.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// SkyWalking service name (`reviews.bookinfo`).
    pub name: String,
    /// A canned behaviour (`healthy`, `degraded`, `noTraffic`, `partial`); excludes `versions`.
    #[serde(default)]
    pub profile: Option<String>,
    /// Calls per minute, all versions together (with `versions`).
    #[serde(default)]
    pub cpm: Option<f64>,
    /// Versions blended by traffic weight (keys: subset or destination host names).
    #[serde(default)]
    pub versions: BTreeMap<String, VersionSpec>,
    /// Where the routed weights are read: a VirtualService of the manifests directory.
    #[serde(default)]
    pub weights_from: Option<WeightsFrom>,
    /// Fixed weights per version, when nothing routes (default: all on the first version).
    #[serde(default)]
    pub weights: Option<BTreeMap<String, f64>>,
}

/// Values of one version.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionSpec {
    /// Apdex, 10000 = 1.0.
    pub apdex: f64,
    /// Successful calls, 10000 = 100 %.
    pub sla: f64,
    /// Mean response time, ms.
    pub resp_time_ms: f64,
    /// Degradation above a share of the calls.
    #[serde(default)]
    pub overload: Option<OverloadSpec>,
}

/// A degradation above a share of the calls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OverloadSpec {
    /// Share of all calls (0..1) above which the version degrades.
    pub above_share: f64,
    /// Apdex when overloaded.
    pub apdex: f64,
    /// SLA when overloaded.
    pub sla: f64,
    /// Response time when overloaded.
    pub resp_time_ms: f64,
}

/// A VirtualService route whose weights the service follows.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightsFrom {
    /// VirtualService name.
    pub virtual_service: String,
    /// Its namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The named http route.
    pub route: String,
}

fn default_namespace() -> String {
    "default".into()
}

/// One fault: exactly one kind, optionally limited to `times` requests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    /// Answer with this HTTP status.
    #[serde(default)]
    pub status: Option<u16>,
    /// Answer after this long (`3s`).
    #[serde(default)]
    pub delay: Option<String>,
    /// A GraphQL error with this message.
    #[serde(default)]
    pub graphql_error: Option<String>,
    /// The storage fails.
    #[serde(default)]
    pub storage_error: Option<bool>,
    /// A gateway's HTML 502 page.
    #[serde(default)]
    pub html_gateway: Option<bool>,
    /// A valid answer cut in half.
    #[serde(default)]
    pub truncated: Option<bool>,
    /// For this many requests (default: until the simulator stops).
    #[serde(default)]
    pub times: Option<usize>,
}

/// How one service is served.
#[derive(Debug, Clone, PartialEq)]
pub enum ServicePlan {
    /// A canned profile.
    Profile(Scenario),
    /// Versions blended by weights.
    Blended {
        /// Calls per minute.
        cpm: f64,
        /// Version behaviours.
        versions: BTreeMap<String, VersionBehaviour>,
        /// Followed VirtualService route, if any.
        follow: Option<WeightsFrom>,
        /// Weights when nothing is followed (or before the first read).
        weights: Weights,
    },
}

/// A validated scenario, ready to install.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioPlan {
    /// OAP release, if the file names one.
    pub profile: Option<OapProfile>,
    /// Time zone, if the file names one.
    pub timezone: Option<chrono::FixedOffset>,
    /// Services in file order.
    pub services: Vec<(String, ServicePlan)>,
    /// Faults with their use counts.
    pub faults: Vec<(Fault, Option<usize>)>,
}

/// Reads and validates a scenario file; every error names file, line and field.
pub fn load(path: &Path) -> Result<ScenarioPlan, Vec<ConfigError>> {
    let file = path.display().to_string();
    let text = yaml::read_file(path, MAX_CONFIG_FILE_BYTES)
        .map_err(|e| vec![ConfigError::whole_file(file.clone(), e.to_string())])?;
    parse(&file, &text)
}

/// [`load`] on text.
pub fn parse(file: &str, text: &str) -> Result<ScenarioPlan, Vec<ConfigError>> {
    let docs = yaml::parse_documents_with(text, &CONFIG_LIMITS).map_err(|e| {
        vec![ConfigError {
            file: file.into(),
            line: Some(e.line),
            path: ".".into(),
            message: format!("YAML syntax error: {}", e.message),
        }]
    })?;
    let [doc] = docs.as_slice() else {
        return Err(vec![ConfigError {
            file: file.into(),
            line: None,
            path: ".".into(),
            message: format!(
                "a scenario file holds exactly one document (found {})",
                docs.len()
            ),
        }]);
    };
    let origin = Origin {
        file: file.to_string(),
        lines: doc.lines.clone(),
    };
    let (parsed, mut errors) = deserialize_all::<ScenarioFile>(&doc.value, &origin);
    let Some(sf) = parsed else {
        return Err(errors);
    };
    let plan = validate(&sf, &origin, &mut errors);
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(errors)
    }
}

fn check_values(v: (f64, f64, f64), path: &str, origin: &Origin, errors: &mut Vec<ConfigError>) {
    let (apdex, sla, rt) = v;
    for (name, value, max) in [
        ("apdex", apdex, 10_000.0),
        ("sla", sla, 10_000.0),
        ("respTimeMs", rt, 3_600_000.0),
    ] {
        if !(value.is_finite() && (0.0..=max).contains(&value)) {
            let p = format!("{path}.{name}");
            errors.push(origin.error(&p, format!("{value} is outside 0..={max}")));
        }
    }
}

/// Checks what types alone cannot, and builds the plan (meaningful only without errors).
fn validate(sf: &ScenarioFile, origin: &Origin, errors: &mut Vec<ConfigError>) -> ScenarioPlan {
    let profile = sf
        .oap_version
        .as_deref()
        .and_then(|v| match v.parse::<OapProfile>() {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(origin.error("oapVersion", e.to_string()));
                None
            }
        });
    let timezone = sf.timezone.as_deref().and_then(|t| {
        let tz = skycanary_runtime::provider::skywalking::parse_timezone(t);
        if tz.is_none() {
            errors.push(origin.error(
                "timezone",
                format!("{t:?}: expected an offset like +0800 or -0330"),
            ));
        }
        tz
    });
    if sf.services.is_empty() {
        errors.push(origin.error("services", "at least one service is needed"));
    }
    if sf.services.len() > MAX_SERVICES {
        errors.push(origin.error("services", format!("more than {MAX_SERVICES} services")));
    }
    if sf.faults.len() > MAX_FAULTS {
        errors.push(origin.error("faults", format!("more than {MAX_FAULTS} faults")));
    }
    let mut names = BTreeSet::new();
    let mut services = Vec::new();
    for (i, s) in sf.services.iter().enumerate() {
        let at = format!("services[{i}]");
        if s.name.trim().is_empty() {
            errors.push(origin.error(&format!("{at}.name"), "must not be empty"));
        } else if !names.insert(s.name.clone()) {
            errors.push(origin.error(
                &format!("{at}.name"),
                format!("duplicate service {:?}", s.name),
            ));
        }
        if let Some(plan) = service_plan(s, &at, origin, errors) {
            services.push((s.name.clone(), plan));
        }
    }
    let mut faults = Vec::new();
    for (i, f) in sf.faults.iter().enumerate() {
        if let Some(fault) = fault(f, &format!("faults[{i}]"), origin, errors) {
            faults.push((fault, f.times));
        }
    }
    ScenarioPlan {
        profile,
        timezone,
        services,
        faults,
    }
}

fn service_plan(
    s: &ServiceSpec,
    at: &str,
    origin: &Origin,
    errors: &mut Vec<ConfigError>,
) -> Option<ServicePlan> {
    if let Some(p) = &s.profile {
        if !s.versions.is_empty() || s.weights_from.is_some() || s.weights.is_some() {
            errors.push(origin.error(
                &format!("{at}.profile"),
                "profile excludes versions, weights and weightsFrom",
            ));
        }
        let scenario = match p.as_str() {
            "healthy" => Scenario::Healthy,
            "degraded" => Scenario::Degraded,
            "noTraffic" => Scenario::NoTraffic,
            "partial" => Scenario::Partial,
            other => {
                errors.push(origin.error(
                    &format!("{at}.profile"),
                    format!("{other:?}: expected healthy, degraded, noTraffic or partial"),
                ));
                return None;
            }
        };
        return Some(ServicePlan::Profile(scenario));
    }
    if s.versions.is_empty() {
        errors.push(origin.error(at, "needs either profile or versions"));
        return None;
    }
    if s.versions.len() > MAX_VERSIONS {
        errors.push(origin.error(
            &format!("{at}.versions"),
            format!("more than {MAX_VERSIONS} versions"),
        ));
    }
    let cpm = s.cpm.unwrap_or(120.0);
    if !(cpm.is_finite() && cpm > 0.0 && cpm <= 1e9) {
        errors.push(origin.error(&format!("{at}.cpm"), format!("{cpm} is not in (0, 1e9]")));
    }
    let mut versions = BTreeMap::new();
    for (name, v) in &s.versions {
        let vp = format!("{at}.versions.{name}");
        check_values((v.apdex, v.sla, v.resp_time_ms), &vp, origin, errors);
        let normal = VersionValues {
            apdex: v.apdex,
            sla: v.sla,
            resp_time_ms: v.resp_time_ms,
        };
        let overload = v.overload.as_ref().map(|o| {
            let op = format!("{vp}.overload");
            check_values((o.apdex, o.sla, o.resp_time_ms), &op, origin, errors);
            if !(o.above_share.is_finite() && (0.0..1.0).contains(&o.above_share)) {
                errors.push(origin.error(
                    &format!("{op}.aboveShare"),
                    format!("{} is not in [0, 1)", o.above_share),
                ));
            }
            Overload {
                above_share: o.above_share,
                values: VersionValues {
                    apdex: o.apdex,
                    sla: o.sla,
                    resp_time_ms: o.resp_time_ms,
                },
            }
        });
        versions.insert(name.clone(), VersionBehaviour { normal, overload });
    }
    if s.weights_from.is_some() && s.weights.is_some() {
        errors.push(origin.error(
            &format!("{at}.weights"),
            "weights and weightsFrom exclude each other",
        ));
    }
    let weights: Weights = match &s.weights {
        Some(w) => {
            for (k, v) in w {
                if !versions.contains_key(k) {
                    errors.push(origin.error(
                        &format!("{at}.weights.{k}"),
                        format!("{k:?} is not one of the versions"),
                    ));
                }
                if !(v.is_finite() && *v >= 0.0) {
                    errors.push(origin.error(&format!("{at}.weights.{k}"), "must be ≥ 0"));
                }
            }
            if w.values().sum::<f64>() <= 0.0 {
                errors.push(origin.error(&format!("{at}.weights"), "all weights are 0"));
            }
            w.clone()
        }
        None => versions
            .keys()
            .next()
            .map(|first| Weights::from([(first.clone(), 100.0)]))
            .unwrap_or_default(),
    };
    Some(ServicePlan::Blended {
        cpm,
        versions,
        follow: s.weights_from.clone(),
        weights,
    })
}

fn fault(f: &FaultSpec, at: &str, origin: &Origin, errors: &mut Vec<ConfigError>) -> Option<Fault> {
    let mut kinds: Vec<Fault> = Vec::new();
    if let Some(code) = f.status {
        if !(100..=599).contains(&code) {
            errors.push(origin.error(
                &format!("{at}.status"),
                format!("{code} is not an HTTP status"),
            ));
        }
        kinds.push(Fault::Status(code));
    }
    if let Some(d) = &f.delay {
        match skycanary_runtime::resources::duration::parse_duration(d) {
            Ok(d) if d <= std::time::Duration::from_secs(600) => kinds.push(Fault::Delay(d)),
            Ok(_) => errors.push(origin.error(&format!("{at}.delay"), "at most 10m")),
            Err(e) => errors.push(origin.error(&format!("{at}.delay"), e)),
        }
    }
    if let Some(m) = &f.graphql_error {
        kinds.push(Fault::GraphqlError(m.clone()));
    }
    if f.storage_error == Some(true) {
        kinds.push(Fault::StorageError);
    }
    if f.html_gateway == Some(true) {
        kinds.push(Fault::HtmlGateway);
    }
    if f.truncated == Some(true) {
        kinds.push(Fault::TruncatedJson);
    }
    if f.times == Some(0) {
        errors.push(origin.error(
            &format!("{at}.times"),
            "must be at least 1 (omit it: until stopped)",
        ));
    }
    match kinds.len() {
        1 => kinds.pop(),
        0 => {
            errors.push(origin.error(
                at,
                "names no fault (status, delay, graphqlError, storageError, htmlGateway, truncated)",
            ));
            None
        }
        _ => {
            errors.push(origin.error(at, "one fault per entry"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"oapVersion: "9.7"
timezone: "+0800"
services:
- name: reviews.bookinfo
  cpm: 60
  versions:
    v1: {apdex: 9950, sla: 9990, respTimeMs: 80}
    v2: {apdex: 9950, sla: 9990, respTimeMs: 80,
         overload: {aboveShare: 0.5, apdex: 7000, sla: 9300, respTimeMs: 900}}
  weightsFrom: {virtualService: reviews, namespace: bookinfo, route: primary}
- name: ratings.bookinfo
  profile: degraded
faults:
- {status: 503, times: 2}
- {delay: 3s}
"#;

    #[test]
    fn a_full_scenario_loads() {
        let p = parse("s.yaml", GOOD).unwrap();
        assert_eq!(p.profile, Some("9.7".parse().unwrap()));
        assert_eq!(p.timezone.map(|t| t.local_minus_utc()), Some(8 * 3600));
        assert_eq!(p.services.len(), 2);
        match &p.services[0].1 {
            ServicePlan::Blended {
                cpm,
                versions,
                follow,
                weights,
            } => {
                assert_eq!(*cpm, 60.0);
                assert!(versions["v2"].overload.is_some());
                assert_eq!(follow.as_ref().unwrap().route, "primary");
                assert_eq!(weights.get("v1"), Some(&100.0));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.services[1].1, ServicePlan::Profile(Scenario::Degraded));
        assert_eq!(
            p.faults,
            vec![
                (Fault::Status(503), Some(2)),
                (Fault::Delay(std::time::Duration::from_secs(3)), None)
            ]
        );
    }

    #[test]
    fn every_mistake_is_reported_with_its_line_and_field() {
        let bad = r#"oapVersion: "7.0"
services:
- name: reviews
  versions:
    v1: {apdex: 19950, sla: 9990, respTimeMs: 80}
  weights: {v9: 100}
- name: reviews
  profile: great
faults:
- {status: 503, delay: 1s}
- {times: 3}
"#;
        let errs = parse("bad.yaml", bad).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let all = text.join("\n");
        for want in [
            "bad.yaml:1",
            "oapVersion",
            "bad.yaml:5",
            "apdex",
            "bad.yaml:6",
            "v9",
            "duplicate service",
            "great",
            "one fault per entry",
            "names no fault",
        ] {
            assert!(all.contains(want), "{want} missing in:\n{all}");
        }
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_named() {
        let errs = parse("x.yaml", "services:\n- name: a\n  profil: healthy\n").unwrap_err();
        assert!(errs[0].to_string().contains("profil"), "{errs:?}");
        let errs = parse("x.yaml", "services: 3\n").unwrap_err();
        assert!(errs[0].to_string().contains("x.yaml"), "{errs:?}");
        let errs = parse("x.yaml", "services: []\n---\nservices: []\n").unwrap_err();
        assert!(errs[0].to_string().contains("exactly one"), "{errs:?}");
    }

    #[test]
    fn limits_are_enforced() {
        let many: String = (0..=MAX_SERVICES)
            .map(|i| format!("- {{name: s{i}, profile: healthy}}\n"))
            .collect();
        let errs = parse("x.yaml", &format!("services:\n{many}")).unwrap_err();
        assert!(
            errs.iter().any(|e| e.to_string().contains("more than")),
            "{errs:?}"
        );
    }
}
