//! Semantic checks of a Canary: every problem, located by file, line and field.

use std::collections::BTreeSet;

use super::canary::*;
use super::duration::{duration_from_secs, parse_duration};
use super::error::{ConfigError, Origin};
use super::template::IntOrString;
use super::yaml::{child_path, index_path};

/// Default `maxTrafficWeight`, defined with the resource type (the routing model reads it too).
pub use super::canary::DEFAULT_MAX_WEIGHT;

/// Longest Canary name: a Kubernetes label value's limit, which also keeps the state file
/// (`.<name>.tmp-<pid>`, `<name>.json`) within the 255-byte file name limit.
pub const CANARY_NAME_MAX: usize = 63;

/// Longest object name Kubernetes accepts (RFC 1123 subdomain).
pub const OBJECT_NAME_MAX: usize = 253;

/// Longest namespace (RFC 1123 label).
pub const NAMESPACE_MAX: usize = 63;

/// An RFC 1123 label: lowercase letters, digits and '-', starting and ending alphanumeric.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain of at most `max` characters: dot-separated labels, so `..`, `a/b`,
/// spaces and the like, which would escape or break file and object names, are refused.
pub fn is_dns_subdomain(s: &str, max: usize) -> bool {
    s.len() <= max && s.split('.').all(is_dns_label)
}

/// `metadata.name`: present, an RFC 1123 subdomain of at most `max` characters.
pub fn check_name(name: &str, max: usize, o: &Origin, errs: &mut Vec<ConfigError>) {
    if name.is_empty() {
        errs.push(o.error("metadata.name", "missing name"));
    } else if !is_dns_subdomain(name, max) {
        errs.push(o.error(
            "metadata.name",
            format!(
                "{:?} is not a valid name (at most {max} lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)",
                clip(name)
            ),
        ));
    }
}

/// `metadata.namespace`, when set: an RFC 1123 label, as Kubernetes requires.
pub fn check_namespace(namespace: Option<&str>, o: &Origin, errs: &mut Vec<ConfigError>) {
    if let Some(ns) = namespace
        && !(ns.len() <= NAMESPACE_MAX && is_dns_label(ns))
    {
        errs.push(o.error(
            "metadata.namespace",
            format!(
                "{:?} is not a valid namespace (at most {NAMESPACE_MAX} lowercase letters, digits and '-', starting and ending with a letter or digit)",
                clip(ns)
            ),
        ));
    }
}

/// The start of a long value, for messages.
fn clip(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Checks one Canary on its own (references to templates are checked by the loader).
pub fn validate_canary(c: &CanaryDoc, o: &Origin) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    check_name(&c.metadata.name, CANARY_NAME_MAX, o, &mut errs);
    check_namespace(c.metadata.namespace.as_deref(), o, &mut errs);
    let tr = &c.spec.traffic_routing;
    let max = tr.max_traffic_weight.unwrap_or(DEFAULT_MAX_WEIGHT);
    if max <= 0 {
        errs.push(o.error(
            "spec.trafficRouting.maxTrafficWeight",
            format!("must be greater than 0, got {max}"),
        ));
    }
    let mut managed = Vec::new();
    for (i, r) in tr.managed_routes.iter().enumerate() {
        let p = child_path(&index_path("spec.trafficRouting.managedRoutes", i), "name");
        if r.name.is_empty() {
            errs.push(o.error(&p, "missing route name"));
        } else if managed.contains(&r.name) {
            errs.push(o.error(&p, format!("duplicate managed route {:?}", r.name)));
        } else {
            managed.push(r.name.clone());
        }
    }
    let ip = "spec.trafficRouting.istio";
    let istio = &tr.istio;
    let vss: Vec<(String, &VirtualServiceSpec)> =
        match (&istio.virtual_service, istio.virtual_services.is_empty()) {
            (Some(vs), true) => vec![(child_path(ip, "virtualService"), vs)],
            (None, false) => istio
                .virtual_services
                .iter()
                .enumerate()
                .map(|(i, vs)| (index_path(&child_path(ip, "virtualServices"), i), vs))
                .collect(),
            (Some(_), false) => {
                errs.push(o.error(ip, "set either virtualService or virtualServices, not both"));
                Vec::new()
            }
            (None, true) => {
                errs.push(o.error(
                    ip,
                    "no VirtualService: set virtualService or virtualServices",
                ));
                Vec::new()
            }
        };
    let mut seen = BTreeSet::new();
    for (p, vs) in &vss {
        if vs.name.is_empty() {
            errs.push(o.error(&child_path(p, "name"), "missing VirtualService name"));
        } else if !seen.insert(vs.name.clone()) {
            errs.push(o.error(
                &child_path(p, "name"),
                format!("VirtualService {:?} is listed twice", vs.name),
            ));
        }
        for (i, r) in vs.routes.iter().enumerate() {
            if managed.contains(r) {
                errs.push(o.error(
                    &index_path(&child_path(p, "routes"), i),
                    format!("route {r:?} is a managed route; managed routes cannot carry the weighted split"),
                ));
            }
        }
    }
    match (&istio.stable_service, &istio.canary_service, &istio.destination_rule) {
        (Some(s), Some(c), None) => {
            if s == c {
                errs.push(o.error(&child_path(ip, "canaryService"), "canaryService must differ from stableService"));
            }
        }
        (None, None, Some(dr)) => {
            let dp = child_path(ip, "destinationRule");
            if dr.name.is_empty() {
                errs.push(o.error(&child_path(&dp, "name"), "missing DestinationRule name"));
            }
            if dr.stable_subset_name.is_empty() || dr.canary_subset_name.is_empty() {
                errs.push(o.error(&dp, "stableSubsetName and canarySubsetName are required"));
            } else if dr.stable_subset_name == dr.canary_subset_name {
                errs.push(o.error(&child_path(&dp, "canarySubsetName"), "canary and stable subsets must differ"));
            }
        }
        (_, _, Some(_)) => errs.push(o.error(
            ip,
            "use either stableService/canaryService (host-level) or destinationRule (subset-level), not both",
        )),
        _ => errs.push(o.error(
            ip,
            "set both stableService and canaryService (host-level split) or destinationRule (subset-level split)",
        )),
    }
    for (i, a) in istio.additional_destinations.iter().enumerate() {
        if a.host.is_none() && a.subset.is_none() {
            errs.push(o.error(
                &index_path(&child_path(ip, "additionalDestinations"), i),
                "set host and/or subset",
            ));
        }
    }

    // Steps.
    if let Some(bg) = &c.spec.analysis {
        check_templates(&bg.templates, "spec.analysis.templates", o, &mut errs);
        check_args(&bg.args, "spec.analysis.args", o, &mut errs);
        if let Some(s) = bg.starting_step
            && s as usize > c.spec.steps.len()
        {
            errs.push(o.error(
                "spec.analysis.startingStep",
                format!(
                    "step {s} does not exist (there are {} steps)",
                    c.spec.steps.len()
                ),
            ));
        }
    }
    for (i, step) in c.spec.steps.iter().enumerate() {
        let sp = index_path("spec.steps", i);
        match step {
            CanaryStep::SetWeight(w) => {
                if *w < 0 || *w > max {
                    errs.push(o.error(
                        &child_path(&sp, "setWeight"),
                        format!("weight {w} is outside 0..={max}"),
                    ));
                }
            }
            CanaryStep::Pause(p) => match &p.duration {
                None => {}
                Some(IntOrString::Int(s)) if *s < 0 => {
                    errs.push(o.error(&child_path(&sp, "pause.duration"), "must not be negative"))
                }
                Some(IntOrString::Int(s)) => {
                    if let Err(e) = duration_from_secs(*s) {
                        errs.push(o.error(&child_path(&sp, "pause.duration"), e));
                    }
                }
                Some(IntOrString::String(s)) => {
                    if let Err(e) = parse_duration(s) {
                        errs.push(o.error(&child_path(&sp, "pause.duration"), e));
                    }
                }
            },
            CanaryStep::Analysis(a) => {
                let ap = child_path(&sp, "analysis");
                if a.templates.is_empty() {
                    errs.push(o.error(
                        &child_path(&ap, "templates"),
                        "an analysis step needs at least one template",
                    ));
                }
                check_templates(&a.templates, &child_path(&ap, "templates"), o, &mut errs);
                check_args(&a.args, &child_path(&ap, "args"), o, &mut errs);
            }
            CanaryStep::SetHeaderRoute(h) => {
                let hp = child_path(&sp, "setHeaderRoute");
                check_managed(&h.name, &managed, &child_path(&hp, "name"), o, &mut errs);
                let mut headers = BTreeSet::new();
                for (j, m) in h.matches.iter().enumerate() {
                    let mp = index_path(&child_path(&hp, "match"), j);
                    if m.header_name.is_empty() {
                        errs.push(o.error(&child_path(&mp, "headerName"), "missing header name"));
                    } else if !headers.insert(m.header_name.to_ascii_lowercase()) {
                        // Matchers are ORed (one match entry each); a second matcher for the
                        // same header is almost always a mistaken AND, so it is refused here
                        // rather than at the step that writes it.
                        errs.push(o.error(
                            &child_path(&mp, "headerName"),
                            format!(
                                "header {:?} is listed twice; each match entry is an alternative (OR), \
                                 use one regex to accept several values",
                                m.header_name
                            ),
                        ));
                    }
                    check_string_match(
                        &m.header_value,
                        &child_path(&mp, "headerValue"),
                        o,
                        &mut errs,
                    );
                }
            }
            CanaryStep::SetMirrorRoute(m) => {
                let mp = child_path(&sp, "setMirrorRoute");
                check_managed(&m.name, &managed, &child_path(&mp, "name"), o, &mut errs);
                if let Some(p) = m.percentage
                    && !(0.0..=100.0).contains(&p)
                {
                    errs.push(o.error(
                        &child_path(&mp, "percentage"),
                        format!("{p} is outside 0..=100"),
                    ));
                }
                for (j, rm) in m.matches.iter().enumerate() {
                    let rp = index_path(&child_path(&mp, "match"), j);
                    if let Some(s) = &rm.method {
                        check_string_match(s, &child_path(&rp, "method"), o, &mut errs);
                    }
                    if let Some(s) = &rm.path {
                        check_string_match(s, &child_path(&rp, "path"), o, &mut errs);
                    }
                    for (h, s) in &rm.headers {
                        check_string_match(
                            s,
                            &child_path(&child_path(&rp, "headers"), h),
                            o,
                            &mut errs,
                        );
                    }
                }
            }
        }
    }
    if let Some(rb) = &c.spec.rollback_on {
        check_rollback_on(rb, o, &mut errs);
    }
    if let Some(w) = c
        .spec
        .post_promotion
        .as_ref()
        .and_then(|p| p.watch.as_ref())
        && let Err(e) = parse_duration(w)
    {
        errs.push(o.error("spec.postPromotion.watch", e));
    }
    if let Some(subs) = &c.spec.notifications {
        super::notifications::check_subscriptions(
            subs,
            super::notifications::SubscriberKind::Canary,
            "spec.notifications",
            o,
            &mut errs,
        );
    }
    check_workloads(&c.spec, o, &mut errs);
    errs
}

/// Most labels a workload selector may list (one bound with a subset's labels).
pub const SELECTOR_LABELS_MAX: usize = crate::traffic::istio::SUBSET_LABELS_MAX;

/// Most ready pods `readiness.minReady` may ask for.
pub const MIN_READY_MAX: i64 = 100_000;

/// Longest `readiness.progressDeadline`.
pub const PROGRESS_DEADLINE_MAX: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// `workloadRef`, `stableWorkloadRef` and `readiness`: each reference names one workload, and
/// the readiness options have what they read.
fn check_workloads(spec: &CanarySpec, o: &Origin, errs: &mut Vec<ConfigError>) {
    for (field, r) in [
        ("spec.workloadRef", &spec.workload_ref),
        ("spec.stableWorkloadRef", &spec.stable_workload_ref),
    ] {
        if let Some(r) = r {
            check_workload_ref(r, field, o, errs);
            if r.from_subset && spec.traffic_routing.istio.destination_rule.is_none() {
                errs.push(o.error(
                    &child_path(field, "fromSubset"),
                    "fromSubset reads a DestinationRule subset's labels: it needs \
                     trafficRouting.istio.destinationRule (subset-level routing); name a \
                     Deployment, StatefulSet or selector instead",
                ));
            }
        }
    }
    if spec.workload_ref.is_none() {
        if spec.stable_workload_ref.is_some() {
            errs.push(o.error(
                "spec.stableWorkloadRef",
                "stableWorkloadRef needs workloadRef (the canary side) as well",
            ));
        }
        if spec.readiness.is_some() {
            errs.push(o.error(
                "spec.readiness",
                "readiness needs workloadRef: without it there is no canary workload to watch",
            ));
        }
    }
    let Some(r) = &spec.readiness else {
        return;
    };
    if let Some(n) = r.min_ready
        && !(1..=MIN_READY_MAX).contains(&n)
    {
        errs.push(o.error(
            "spec.readiness.minReady",
            format!("{n} is outside 1..={MIN_READY_MAX}"),
        ));
    }
    if r.min_ready_for_weight && spec.stable_workload_ref.is_none() {
        errs.push(o.error(
            "spec.readiness.minReadyForWeight",
            "minReadyForWeight compares with the stable side's ready pods: set stableWorkloadRef",
        ));
    }
    if let Some(d) = &r.progress_deadline {
        match parse_duration(d) {
            Err(e) => errs.push(o.error("spec.readiness.progressDeadline", e)),
            Ok(d) if d.is_zero() => {
                errs.push(o.error("spec.readiness.progressDeadline", "must be greater than 0"))
            }
            Ok(d) if d > PROGRESS_DEADLINE_MAX => {
                errs.push(o.error("spec.readiness.progressDeadline", "must be at most 168h"))
            }
            Ok(_) => {}
        }
    }
}

fn check_workload_ref(r: &WorkloadRef, p: &str, o: &Origin, errs: &mut Vec<ConfigError>) {
    if r.from_subset {
        if r.kind.is_some() || r.name.is_some() {
            errs.push(o.error(
                &child_path(p, "fromSubset"),
                "fromSubset selects pods by the subset's labels: remove kind and name",
            ));
        }
        // Istio applies a subset's labels within the host Service's pods only; skycanary
        // matches Pods in the whole namespace, so the host's own labels (e.g. `app`) must be
        // named, or a `version: v2` subset would count another app's ready v2 pods.
        match &r.selector {
            Some(sel) => check_selector(sel, p, o, errs),
            None => errs.push(o.error(
                &child_path(p, "selector"),
                "fromSubset needs selector.matchLabels with the host Service's selector labels \
                 (e.g. {app: reviews}): Istio applies the subset's labels within the host's \
                 pods only, and without them a label such as version: v2 would also count \
                 other apps' ready pods",
            )),
        }
        return;
    }
    match (&r.kind, &r.name, &r.selector) {
        (Some(_), Some(name), None) => {
            if !is_dns_subdomain(name, OBJECT_NAME_MAX) {
                errs.push(o.error(
                    &child_path(p, "name"),
                    format!("{:?} is not a valid object name", clip(name)),
                ));
            }
        }
        (None, None, Some(sel)) => check_selector(sel, p, o, errs),
        (None, None, None) => errs.push(o.error(
            p,
            "set kind and name (Deployment or StatefulSet), selector.matchLabels, or \
             fromSubset: true",
        )),
        (_, _, Some(_)) => errs.push(o.error(p, "set either kind and name or selector, not both")),
        (None, Some(_), None) => errs.push(o.error(
            &child_path(p, "kind"),
            "missing kind (Deployment or StatefulSet)",
        )),
        (Some(_), None, None) => errs.push(o.error(&child_path(p, "name"), "missing name")),
    }
}

/// `selector.matchLabels` of the reference at `p`: 1 to [`SELECTOR_LABELS_MAX`] valid labels.
fn check_selector(sel: &PodSelector, p: &str, o: &Origin, errs: &mut Vec<ConfigError>) {
    let sp = child_path(&child_path(p, "selector"), "matchLabels");
    if sel.match_labels.is_empty() {
        errs.push(o.error(&sp, "set at least one label"));
    } else if sel.match_labels.len() > SELECTOR_LABELS_MAX {
        errs.push(o.error(
            &sp,
            format!(
                "{} labels; at most {SELECTOR_LABELS_MAX}",
                sel.match_labels.len()
            ),
        ));
    }
    for (k, v) in &sel.match_labels {
        if !is_label_key(k) {
            errs.push(o.error(
                &child_path(&sp, k),
                format!("{:?} is not a Kubernetes label key", clip(k)),
            ));
        } else if !is_label_value(v) {
            errs.push(o.error(
                &child_path(&sp, k),
                format!("{:?} is not a Kubernetes label value", clip(v)),
            ));
        }
    }
}

/// A label value: at most 63 characters, alphanumerics, '-', '_' and '.', starting and ending
/// alphanumeric (or empty).
fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric()))
}

/// A label key: an optional DNS-subdomain prefix and '/', then a non-empty label-value name.
fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    !name.is_empty()
        && is_label_value(name)
        && prefix.is_none_or(|p| is_dns_subdomain(p, OBJECT_NAME_MAX))
}

/// `rollbackOn`: every matcher sets something, and every regex compiles (anchored, as it is
/// matched).
fn check_rollback_on(rb: &RollbackOn, o: &Origin, errs: &mut Vec<ConfigError>) {
    let mut regex = |p: &str, re: &str| {
        if let Err(e) = crate::alarm::anchored(re) {
            errs.push(o.error(p, format!("invalid regex: {e}")));
        }
    };
    for (i, a) in rb.alarms.iter().enumerate() {
        let ap = index_path("spec.rollbackOn.alarms", i);
        for (field, re) in [
            ("ruleName", &a.rule_name),
            ("name", &a.name),
            ("scope", &a.scope),
            ("message", &a.message),
        ] {
            if let Some(re) = re {
                regex(&child_path(&ap, field), re);
            }
        }
        for (k, re) in &a.tags {
            regex(&child_path(&child_path(&ap, "tags"), k), re);
        }
    }
    for (i, a) in rb.alerts.iter().enumerate() {
        let ap = index_path("spec.rollbackOn.alerts", i);
        for (k, re) in &a.labels {
            regex(&child_path(&child_path(&ap, "labels"), k), re);
        }
    }
    for (i, a) in rb.alarms.iter().enumerate() {
        let empty = a.rule_name.is_none()
            && a.name.is_none()
            && a.scope.is_none()
            && a.message.is_none()
            && a.tags.is_empty();
        if empty {
            errs.push(o.error(
                &index_path("spec.rollbackOn.alarms", i),
                "set at least one of ruleName, name, scope, message or tags",
            ));
        }
    }
    for (i, a) in rb.alerts.iter().enumerate() {
        let p = child_path(&index_path("spec.rollbackOn.alerts", i), "labels");
        if a.labels.is_empty() {
            errs.push(o.error(&p, "set at least one label matcher"));
        }
        for k in a.labels.keys() {
            if !is_label_name(k) {
                errs.push(o.error(
                    &child_path(&p, k),
                    format!("{k:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
                ));
            }
        }
    }
}

/// Prometheus label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn check_templates(ts: &[TemplateRef], p: &str, o: &Origin, errs: &mut Vec<ConfigError>) {
    for (i, t) in ts.iter().enumerate() {
        if t.template_name.is_empty() {
            errs.push(o.error(
                &child_path(&index_path(p, i), "templateName"),
                "missing templateName",
            ));
        }
    }
}

fn check_args(args: &[ArgValue], p: &str, o: &Origin, errs: &mut Vec<ConfigError>) {
    let mut seen = BTreeSet::new();
    for (i, a) in args.iter().enumerate() {
        let ap = index_path(p, i);
        if !seen.insert(a.name.clone()) {
            errs.push(o.error(
                &child_path(&ap, "name"),
                format!("duplicate arg {:?}", a.name),
            ));
        }
        if a.value.is_some() == a.value_from.is_some() {
            errs.push(o.error(&ap, "set exactly one of value or valueFrom"));
        }
    }
}

fn check_managed(name: &str, managed: &[String], p: &str, o: &Origin, errs: &mut Vec<ConfigError>) {
    if !managed.iter().any(|m| m == name) {
        errs.push(o.error(
            p,
            format!("route {name:?} is not listed in spec.trafficRouting.managedRoutes"),
        ));
    }
}

fn check_string_match(s: &StringMatchSpec, p: &str, o: &Origin, errs: &mut Vec<ConfigError>) {
    let n = [s.exact.is_some(), s.prefix.is_some(), s.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if n != 1 {
        errs.push(o.error(p, "set exactly one of exact, prefix or regex"));
    }
    if let Some(re) = &s.regex
        && let Err(e) = regex::Regex::new(re)
    {
        errs.push(o.error(&child_path(p, "regex"), format!("invalid regex: {e}")));
    }
}

#[cfg(test)]
#[path = "canary_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "hostile_tests.rs"]
mod hostile_tests;
