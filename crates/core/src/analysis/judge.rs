//! One measurement's verdict (DESIGN §3): what the provider observed, judged by the conditions.

use std::collections::BTreeMap;

use super::evidence::{ConditionEvidence, ConditionKind, MeasurementEvidence, decisive};
use super::expr::{Bindings, Condition, ConditionLanguage, ResultValue};
use super::spec::{MetricSpec, NoDataPolicy, Phase};

/// What the provider measured.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Data: `result` plus raw-query aliases in `named`; `display` is the short text kept as
    /// the measurement's value, e.g. `"[9950, 9930, 9910]"`.
    Value {
        result: ResultValue,
        named: BTreeMap<String, ResultValue>,
        display: String,
        /// Raw queries: the GraphQL `data` object (expr conditions bind it as `result`).
        data: Option<serde_json::Value>,
    },
    /// No point in the window: the metric's `noData` policy decides, never the conditions.
    NoData { reason: String },
    /// Provider, transport or GraphQL failure.
    Error { message: String },
}

impl Observation {
    /// Shorthand for a value without aliases, displayed as the value itself.
    pub fn value(result: ResultValue) -> Self {
        let display = result.to_string();
        Observation::Value {
            result,
            named: BTreeMap::new(),
            display,
            data: None,
        }
    }

    /// The measurement's `value` text.
    pub fn display(&self) -> Option<String> {
        match self {
            Observation::Value { display, .. } => Some(display.clone()),
            Observation::NoData { .. } | Observation::Error { .. } => None,
        }
    }
}

/// A verdict: the phase, the message that explains it in words, and the same evidence as
/// data (`None` when no value was measured: no data, provider error).
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub phase: Phase,
    pub message: String,
    pub evidence: Option<MeasurementEvidence>,
}

impl Judgement {
    fn without_evidence((phase, message): (Phase, String)) -> Self {
        Judgement {
            phase,
            message,
            evidence: None,
        }
    }
}

/// Judges one observation. The message explains the verdict: values, conditions, outcome;
/// the evidence holds the values, each condition's outcome, which decided, and the threshold
/// of each condition that is a plain comparison.
///
/// NaN: a value holding NaN counts as *no data* (the `noData` policy decides) unless every
/// condition that reads it tests for NaN itself (`isNaN`, `default`, `math::is_nan`).
/// Without this, `failureCondition: result < 9000` would pass a NaN (every comparison with
/// NaN is false), i.e. NaN would look healthy by accident.
pub fn judge(spec: &MetricSpec, obs: &Observation, args: &BTreeMap<String, String>) -> Judgement {
    let (result, named, data) = match obs {
        Observation::Error { message } => {
            return Judgement::without_evidence((
                Phase::Error,
                format!("measurement error: {message}"),
            ));
        }
        Observation::NoData { reason } => {
            return Judgement::without_evidence(no_data(spec.no_data, reason));
        }
        Observation::Value {
            result,
            named,
            data,
            ..
        } => (result, named, data),
    };
    let mut evidence = MeasurementEvidence {
        values: match result {
            ResultValue::Scalar(v) => vec![*v],
            ResultValue::Series(vs) => vs.clone(),
        },
        conditions: Vec::new(),
    };
    let bindings = Bindings {
        result: Some(result.clone()),
        named: named.clone(),
        args: args.clone(),
        data: data.clone(),
    };
    let conditions: Vec<(&str, &Condition)> = [
        ("successCondition", spec.success_condition.as_ref()),
        ("failureCondition", spec.failure_condition.as_ref()),
    ]
    .into_iter()
    .filter_map(|(label, c)| c.map(|c| (label, c)))
    .collect();

    let has_nan = |var: &str| {
        if var == "result" {
            result.has_nan()
        } else {
            named.get(var).is_some_and(ResultValue::has_nan)
        }
    };
    let nan_unhandled = if conditions.is_empty() {
        result.has_nan() || named.values().any(ResultValue::has_nan)
    } else {
        conditions
            .iter()
            .any(|(_, c)| !c.handles_nan() && c.referenced_variables().iter().any(|v| has_nan(v)))
    };
    let with = |(phase, message): (Phase, String), evidence: MeasurementEvidence| Judgement {
        phase,
        message,
        evidence: Some(evidence),
    };
    if nan_unhandled {
        return with(
            no_data(spec.no_data, &format!("value is NaN ({result})")),
            evidence,
        );
    }

    if conditions.is_empty() {
        return with(
            (
                Phase::Successful,
                format!("result={result}, no conditions: Successful"),
            ),
            evidence,
        );
    }

    let eval = |label: &str, c: &Condition| -> Result<bool, String> {
        c.eval(&bindings)
            .map_err(|e| format!("could not evaluate {label} \"{}\": {}", c.expression(), e))
    };
    let success = spec
        .success_condition
        .as_ref()
        .map(|c| eval("successCondition", c));
    let failure = spec
        .failure_condition
        .as_ref()
        .map(|c| eval("failureCondition", c));
    let (s, f) = match (success, failure) {
        (Some(Err(e)), _) | (_, Some(Err(e))) => {
            return with((Phase::Error, format!("{e}: Error")), evidence);
        }
        (Some(Ok(s)), Some(Ok(f))) => (Some(s), Some(f)),
        (Some(Ok(s)), None) => (Some(s), None),
        (None, Some(Ok(f))) => (None, Some(f)),
        (None, None) => (None, None),
    };
    let phase = verdict(s, f);
    let (s_decided, f_decided) = decisive(s, f);

    let mut parts = Vec::new();
    for (kind, condition, holds, decided) in [
        (
            ConditionKind::Success,
            &spec.success_condition,
            s,
            s_decided,
        ),
        (
            ConditionKind::Failure,
            &spec.failure_condition,
            f,
            f_decided,
        ),
    ] {
        let (Some(c), Some(holds)) = (condition, holds) else {
            continue;
        };
        parts.push(describe(c, &bindings, holds));
        let comparison = c.comparison(&bindings);
        evidence.conditions.push(ConditionEvidence {
            kind,
            expression: c.expression().to_string(),
            holds,
            decided,
            operator: comparison.map(|x| x.op),
            threshold: comparison.map(|x| x.threshold),
        });
    }
    with((phase, format!("{}: {phase}", parts.join("; "))), evidence)
}

/// DESIGN §3 truth table; the failure condition wins.
fn verdict(success: Option<bool>, failure: Option<bool>) -> Phase {
    match (success, failure) {
        (_, Some(true)) => Phase::Failed,
        (Some(true), _) => Phase::Successful,
        (Some(false), None) => Phase::Failed,
        (None, Some(false)) => Phase::Successful,
        (Some(false), Some(false)) => Phase::Inconclusive,
        (None, None) => Phase::Successful,
    }
}

fn no_data(policy: NoDataPolicy, reason: &str) -> (Phase, String) {
    let phase = policy.phase();
    (phase, format!("no data: {reason}; noData policy: {phase}"))
}

/// Longest excerpt of a raw query's `data` shown in a verdict message.
const DATA_EXCERPT: usize = 200;

/// `min(result) >= args.min_apdex with result=[9950, 9930], args.min_apdex=9900 → true`
fn describe(c: &Condition, b: &Bindings, value: bool) -> String {
    if c.language() == ConditionLanguage::Expr
        && let Some(d) = &b.data
    {
        let mut text = d.to_string();
        if text.len() > DATA_EXCERPT {
            let mut cut = DATA_EXCERPT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        return format!("{} with result={text} → {value}", c.expression());
    }
    let vars = c.referenced_variables();
    let ordered = vars
        .iter()
        .filter(|v| v.as_str() == "result")
        .chain(vars.iter().filter(|v| v.as_str() != "result"));
    let shown: Vec<String> = ordered
        .map(|v| format!("{v}={}", b.describe(v).unwrap_or_else(|| "?".into())))
        .collect();
    if shown.is_empty() {
        format!("{} → {value}", c.expression())
    } else {
        format!("{} with {} → {value}", c.expression(), shown.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(src: &str) -> Option<Condition> {
        Some(Condition::compile(src).expect("compiles"))
    }

    fn spec(s: Option<&str>, f: Option<&str>) -> MetricSpec {
        let mut m = MetricSpec::new("apdex");
        m.success_condition = s.and_then(cond);
        m.failure_condition = f.and_then(cond);
        m
    }

    fn run(m: &MetricSpec, v: f64) -> Phase {
        judge(
            m,
            &Observation::value(ResultValue::Scalar(v)),
            &BTreeMap::new(),
        )
        .phase
    }

    #[test]
    fn truth_table_both_empty_is_successful() {
        assert_eq!(run(&spec(None, None), 1.0), Phase::Successful);
    }

    #[test]
    fn truth_table_success_only() {
        let m = spec(Some("result > 5"), None);
        assert_eq!(run(&m, 6.0), Phase::Successful);
        assert_eq!(run(&m, 4.0), Phase::Failed);
    }

    #[test]
    fn truth_table_failure_only() {
        let m = spec(None, Some("result < 5"));
        assert_eq!(run(&m, 4.0), Phase::Failed);
        assert_eq!(run(&m, 6.0), Phase::Successful);
    }

    #[test]
    fn truth_table_both_set() {
        let m = spec(Some("result > 5"), Some("result < 3"));
        assert_eq!(run(&m, 6.0), Phase::Successful);
        assert_eq!(run(&m, 2.0), Phase::Failed);
        assert_eq!(run(&m, 4.0), Phase::Inconclusive);
    }

    #[test]
    fn truth_table_failure_wins_when_both_true() {
        let m = spec(Some("result > 5"), Some("result > 5"));
        assert_eq!(run(&m, 6.0), Phase::Failed);
    }

    #[test]
    fn eval_error_or_non_bool_is_error() {
        let m = spec(Some("result + 1"), None);
        let Judgement {
            phase: p,
            message: msg,
            ..
        } = judge(
            &m,
            &Observation::value(ResultValue::Scalar(1.0)),
            &BTreeMap::new(),
        );
        assert_eq!(p, Phase::Error);
        assert!(msg.contains("could not evaluate successCondition \"result + 1\": expected bool"));
        // A failure condition that errors makes the measurement Error even if success holds.
        let m = spec(Some("result > 0"), Some("min(()) > 0"));
        assert_eq!(run(&m, 1.0), Phase::Error);
    }

    #[test]
    fn number_vs_string_comparison_is_error_never_failed() {
        // Argo gives Error here; a silent false would read as a real regression (Failed).
        let m = spec(Some("asFloat(result) == \"1.1\""), None);
        assert_eq!(run(&m, 1.1), Phase::Error);
        let m = spec(None, Some("result != \"1.1\""));
        assert_eq!(run(&m, 1.1), Phase::Error);
    }

    #[test]
    fn no_data_never_reaches_conditions() {
        // A condition that would error if evaluated: the policy decides instead.
        let mut m = spec(Some("result + 1"), None);
        for (policy, phase) in [
            (NoDataPolicy::Inconclusive, Phase::Inconclusive),
            (NoDataPolicy::Failed, Phase::Failed),
            (NoDataPolicy::Successful, Phase::Successful),
            (NoDataPolicy::Error, Phase::Error),
        ] {
            m.no_data = policy;
            let obs = Observation::NoData {
                reason: "no point in window".into(),
            };
            let Judgement {
                phase: p,
                message: msg,
                ..
            } = judge(&m, &obs, &BTreeMap::new());
            assert_eq!(p, phase);
            assert!(msg.contains("no data: no point in window"), "{msg}");
        }
    }

    #[test]
    fn no_data_defaults_to_inconclusive() {
        let obs = Observation::NoData { reason: "x".into() };
        assert_eq!(
            judge(&spec(None, None), &obs, &BTreeMap::new()).phase,
            Phase::Inconclusive
        );
    }

    #[test]
    fn provider_error_is_error() {
        let obs = Observation::Error {
            message: "HTTP 502".into(),
        };
        let Judgement {
            phase: p,
            message: msg,
            ..
        } = judge(&spec(None, None), &obs, &BTreeMap::new());
        assert_eq!(p, Phase::Error);
        // The phase is already Error: no redundant ": Error" suffix.
        assert_eq!(msg, "measurement error: HTTP 502");
    }

    #[test]
    fn nan_is_never_healthy_by_accident() {
        // failureCondition alone: `NaN < 9000` is false, which would read as Successful.
        let m = spec(None, Some("result < 9000"));
        assert_eq!(run(&m, f64::NAN), Phase::Inconclusive);
        // successCondition with `!=`: true for NaN under IEEE; still not healthy.
        let m = spec(Some("result != 0"), None);
        assert_eq!(run(&m, f64::NAN), Phase::Inconclusive);
        // No conditions at all.
        assert_eq!(run(&spec(None, None), f64::NAN), Phase::Inconclusive);
        // The noData policy applies.
        let mut m = spec(None, Some("result < 9000"));
        m.no_data = NoDataPolicy::Failed;
        assert_eq!(run(&m, f64::NAN), Phase::Failed);
    }

    #[test]
    fn nan_reaches_conditions_that_test_for_it() {
        // Argo's documented pattern: the author explicitly accepts NaN.
        let m = spec(Some("isNaN(result) || result >= 0.95"), None);
        assert_eq!(run(&m, f64::NAN), Phase::Successful);
        let m = spec(Some("default(result, 0) >= 0.95"), None);
        assert_eq!(run(&m, f64::NAN), Phase::Failed);
    }

    #[test]
    fn message_explains_the_verdict() {
        let m = spec(Some("min(result) >= args.min_apdex"), None);
        let args: BTreeMap<String, String> = [("min-apdex".to_string(), "9900".to_string())]
            .into_iter()
            .collect();
        let obs = Observation::value(ResultValue::Series(vec![9950.0, 9930.0]));
        let Judgement {
            phase: p,
            message: msg,
            ..
        } = judge(&m, &obs, &args);
        assert_eq!(p, Phase::Successful);
        assert_eq!(
            msg,
            "min(result) >= args.min_apdex with result=[9950, 9930], args.min_apdex=9900 → true: Successful"
        );
        let m = spec(Some("result > 5"), Some("result < 3"));
        let Judgement { message: msg, .. } = judge(
            &m,
            &Observation::value(ResultValue::Scalar(4.0)),
            &BTreeMap::new(),
        );
        assert_eq!(
            msg,
            "result > 5 with result=4 → false; result < 3 with result=4 → false: Inconclusive"
        );
    }

    #[test]
    fn named_aliases_are_bound() {
        let mut m = MetricSpec::new("raw");
        m.success_condition = Some(
            Condition::compile_with_names("service_sla > 9900 && result > 0", &["service_sla"])
                .expect("compiles"),
        );
        let obs = Observation::Value {
            result: ResultValue::Scalar(1.0),
            named: [("service_sla".to_string(), ResultValue::Scalar(9950.0))]
                .into_iter()
                .collect(),
            display: "1".into(),
            data: None,
        };
        assert_eq!(judge(&m, &obs, &BTreeMap::new()).phase, Phase::Successful);
    }
}
