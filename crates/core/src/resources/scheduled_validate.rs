//! Semantic checks of a ScheduledAnalysis: every problem, located by file, line and field.
//! References to templates and canaries are checked by the loader, which sees all files.

use std::collections::BTreeSet;

use super::canary_validate::{check_name, check_namespace};
use super::cron::{CronSchedule, parse_time_zone};
use super::duration::{duration_from_secs, parse_duration};
use super::error::{ConfigError, Origin};
use super::scheduled::*;
use super::yaml::{child_path, index_path};

/// Longest ScheduledAnalysis name: its runs are named `<name>-<timestamp>`.
pub const SCHEDULED_NAME_MAX: usize = 52;

/// Checks one ScheduledAnalysis on its own.
pub fn validate_scheduled(s: &ScheduledAnalysisDoc, o: &Origin) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    // Run names are `<name>-<timestamp>`: keep them valid object names.
    check_name(&s.metadata.name, SCHEDULED_NAME_MAX, o, &mut errs);
    check_namespace(s.metadata.namespace.as_deref(), o, &mut errs);
    let spec = &s.spec;
    match parse_time_zone(spec.time_zone.as_deref()) {
        Err(e) => errs.push(o.error("spec.timeZone", e.to_string())),
        Ok(_) => {
            if let Err(e) = CronSchedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
                errs.push(o.error("spec.schedule", e.to_string()));
            }
        }
    }
    if let Some(d) = spec.starting_deadline_seconds {
        if d < 1 {
            errs.push(o.error(
                "spec.startingDeadlineSeconds",
                format!("must be at least 1, got {d}"),
            ));
        } else if let Err(e) = duration_from_secs(d) {
            // It is added to fire times: bounded like every other duration.
            errs.push(o.error("spec.startingDeadlineSeconds", e));
        }
    }
    if spec.templates.is_empty() {
        errs.push(o.error("spec.templates", "at least one template is needed"));
    }
    for (i, t) in spec.templates.iter().enumerate() {
        if t.template_name.is_empty() {
            errs.push(o.error(
                &child_path(&index_path("spec.templates", i), "templateName"),
                "missing templateName",
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, a) in spec.args.iter().enumerate() {
        let ap = index_path("spec.args", i);
        if a.name.is_empty() {
            errs.push(o.error(&child_path(&ap, "name"), "missing arg name"));
        } else if !seen.insert(a.name.clone()) {
            errs.push(o.error(
                &child_path(&ap, "name"),
                format!("duplicate arg {:?}", a.name),
            ));
        }
        if a.value.is_some() == a.value_from.is_some() {
            errs.push(o.error(&ap, "set exactly one of value or valueFrom"));
        }
    }
    for (field, actions) in [
        ("spec.onFailure", &spec.on_failure),
        ("spec.onInconclusive", &spec.on_inconclusive),
        ("spec.onError", &spec.on_error),
    ] {
        if let Some(a) = actions {
            check_actions(a, field, o, &mut errs);
        }
    }
    if let Some(subs) = &spec.notifications {
        super::notifications::check_subscriptions(
            subs,
            super::notifications::SubscriberKind::ScheduledAnalysis,
            "spec.notifications",
            o,
            &mut errs,
        );
    }
    errs
}

fn check_actions(a: &ActionsSpec, p: &str, o: &Origin, errs: &mut Vec<ConfigError>) {
    if a.rollback.is_none() && a.webhook.is_none() {
        errs.push(o.error(p, "set rollback and/or webhook"));
    }
    if let Some(r) = &a.rollback {
        let rp = child_path(&child_path(p, "rollback"), "canary");
        let parts: Vec<&str> = r.canary.split('/').collect();
        if r.canary.is_empty() || parts.len() > 2 || parts.iter().any(|s| s.is_empty()) {
            errs.push(o.error(
                &rp,
                format!(
                    "{:?}: expected NAME or NAMESPACE/NAME of a Canary",
                    r.canary
                ),
            ));
        }
    }
    if let Some(w) = &a.webhook {
        let wp = child_path(p, "webhook");
        match url::Url::parse(&w.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            Ok(_) => errs.push(o.error(
                &child_path(&wp, "url"),
                format!("{:?}: only http:// and https:// URLs with a host", w.url),
            )),
            Err(e) => errs.push(o.error(
                &child_path(&wp, "url"),
                format!("{:?} is not a URL: {e}", w.url),
            )),
        }
        for (i, h) in w.headers.iter().enumerate() {
            let hp = index_path(&child_path(&wp, "headers"), i);
            if http::header::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
                errs.push(o.error(
                    &child_path(&hp, "name"),
                    format!("{:?} is not a valid header name", h.name),
                ));
            }
            if http::header::HeaderValue::from_str(&h.value).is_err() {
                errs.push(o.error(
                    &child_path(&hp, "value"),
                    "not a valid header value (control characters?)",
                ));
            }
        }
        if let Some(t) = &w.timeout {
            match parse_duration(t) {
                Ok(d) if d.is_zero() => {
                    errs.push(o.error(&child_path(&wp, "timeout"), "must be greater than 0"))
                }
                Ok(_) => {}
                Err(e) => errs.push(o.error(&child_path(&wp, "timeout"), e)),
            }
        }
    }
}

#[cfg(test)]
#[path = "scheduled_tests.rs"]
mod tests;
