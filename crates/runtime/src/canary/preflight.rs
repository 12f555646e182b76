//! Can every analysis a Canary will run be planned with what the daemon has (templates, args,
//! the OAP address)? The driver plans each run through [`plan_analysis`]; `run` checks every
//! analysis of every Canary with [`unplannable`] before it starts (and before it accepts a
//! reload), so a missing `--skywalking`, template or arg is refused up front instead of after
//! the first weight change has exposed the canary (issue 14).

use std::collections::BTreeMap;

use crate::provider::skywalking::ClientOptions;
use crate::resources::LoadedTemplate;
use crate::resources::canary::{ArgValue, CanaryDoc, CanaryStep, TemplateRef};
use crate::runner::{self, Defaults, PlanError, RunPlan};

/// Plans one analysis (of a Canary or a ScheduledAnalysis in `namespace`): finds its
/// templates, takes the literal args and plans them together. `valueFrom.secretKeyRef` is not
/// resolved by this version: such an arg is refused, never planned without its value.
pub fn plan_analysis(
    templates: &[LoadedTemplate],
    namespace: &str,
    refs: &[TemplateRef],
    args: &[ArgValue],
    defaults: &Defaults,
) -> Result<RunPlan, PlanError> {
    let mut found: Vec<&LoadedTemplate> = Vec::new();
    for r in refs {
        match templates.iter().find(|t| t.answers(r, namespace)) {
            Some(t) => found.push(t),
            None => return Err(PlanError::TemplateNotFound(r.template_name.clone())),
        }
    }
    let mut given = BTreeMap::new();
    for a in args {
        match (&a.value, &a.value_from) {
            (Some(v), _) => {
                given.insert(a.name.clone(), v.clone());
            }
            (None, Some(_)) => return Err(PlanError::SecretArg(a.name.clone())),
            (None, None) => {}
        }
    }
    Ok(runner::plan_many(&found, &given, defaults)?)
}

/// The analyses of `doc` (the background analysis, then each analysis step), each as (field
/// path, templates, args).
fn analyses(doc: &CanaryDoc) -> Vec<(String, &[TemplateRef], &[ArgValue])> {
    let background = doc
        .spec
        .analysis
        .as_ref()
        .map(|a| ("spec.analysis".to_string(), &a.templates[..], &a.args[..]));
    let steps = doc
        .spec
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            CanaryStep::Analysis(a) => Some((
                format!("spec.steps[{i}].analysis"),
                &a.templates[..],
                &a.args[..],
            )),
            _ => None,
        });
    background.into_iter().chain(steps).collect()
}

/// The OAP connections `doc`'s analyses will query, one per address, in the order the
/// analyses name them. The driver exposes the canary only after each has answered one
/// version probe: traffic that cannot be measured is never shifted (issue 14). Analyses that
/// cannot be planned are left out here (`run` refuses them; a run of one is an Error).
pub fn oap_connections(
    doc: &CanaryDoc,
    namespace: &str,
    templates: &[LoadedTemplate],
    defaults: &Defaults,
) -> Vec<ClientOptions> {
    let mut out: Vec<ClientOptions> = Vec::new();
    for (_, refs, args) in analyses(doc) {
        let Ok(plan) = plan_analysis(templates, namespace, refs, args, defaults) else {
            continue;
        };
        for c in plan.clients {
            if !out.iter().any(|o| o.address == c.address) {
                out.push(c);
            }
        }
    }
    out
}

/// Every analysis of `doc` (the background analysis, then each analysis step) that cannot be
/// planned, as (field path, why). Empty when all can run.
pub fn unplannable(
    doc: &CanaryDoc,
    namespace: &str,
    templates: &[LoadedTemplate],
    defaults: &Defaults,
) -> Vec<(String, String)> {
    analyses(doc)
        .into_iter()
        .filter_map(|(path, refs, args)| {
            plan_analysis(templates, namespace, refs, args, defaults)
                .err()
                .map(|e| (path, e.to_string()))
        })
        .collect()
}
