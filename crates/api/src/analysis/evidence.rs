//! A measurement's evidence as data: the numbers measured, each condition that judged them,
//! which of them decided, and, where a condition is a plain comparison, its operator and
//! threshold. Consumers (the canary machine, reports, `/metrics`, events) read these fields
//! instead of parsing the judge's message back. Status data (a measurement keeps it), so it
//! lives here; the judge that fills it is in `skycanary-core`.

use serde::{Deserialize, Serialize};

/// Which of a metric's two conditions.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ConditionKind {
    /// Judged by the metric's `successCondition`: it must hold for a pass.
    #[schemars(description = "`successCondition`.")]
    Success,
    /// Judged by the metric's `failureCondition`: it holding is a failure.
    #[schemars(description = "`failureCondition`.")]
    Failure,
}

impl ConditionKind {
    /// `success` / `failure`, as in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionKind::Success => "success",
            ConditionKind::Failure => "failure",
        }
    }
}

/// A comparison operator, oriented as `measured OP threshold` (`9900 <= min(result)` is `>=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CompareOp {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl CompareOp {
    /// The operator's text.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
        }
    }

    /// The same comparison read from the other side (`a < b` is `b > a`).
    pub fn mirrored(self) -> CompareOp {
        match self {
            CompareOp::Lt => CompareOp::Gt,
            CompareOp::Le => CompareOp::Ge,
            CompareOp::Gt => CompareOp::Lt,
            CompareOp::Ge => CompareOp::Le,
            CompareOp::Eq | CompareOp::Ne => self,
        }
    }

    /// True for `>` and `>=`: the measured value must stay above the threshold for the
    /// condition to hold.
    pub fn is_lower_bound(self) -> bool {
        matches!(self, CompareOp::Gt | CompareOp::Ge)
    }
}

impl std::fmt::Display for CompareOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition that is one comparison of the measured value with a constant or an arg:
/// `measured op threshold`, read from the compiled expression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Oriented with the measured side on the left.
    pub op: CompareOp,
    /// The constant side's value (finite).
    pub threshold: f64,
}

/// One condition as the judge evaluated it.
// The field docs are the CRDs' descriptions, unchanged since this type left the core: the
// `decisive` they name is `skycanary_core::analysis::evidence::decisive`, which rustdoc cannot
// link here.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionEvidence {
    /// Success or failure condition.
    pub kind: ConditionKind,
    /// The expression evaluated (`{{args.x}}` shown as `args.x` in evalexpr).
    pub expression: String,
    /// What it evaluated to.
    pub holds: bool,
    /// True when this condition's outcome decided the phase (see [`decisive`]).
    pub decided: bool,
    /// The comparison operator, when the condition is a plain comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<CompareOp>,
    /// The threshold, when the condition is a plain comparison with a numeric constant side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

/// The typed evidence of one measurement that produced a value.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeasurementEvidence {
    /// The measured numbers: one for a single value, the window's points for a series. A
    /// number JSON cannot hold (NaN, ±∞) is written as `null` and read back as NaN.
    #[serde(with = "nan_as_null", default)]
    #[schemars(with = "Vec<Option<f64>>")]
    pub values: Vec<f64>,
    /// The conditions evaluated, success first; empty when none ran (no conditions, a NaN
    /// kept from them, an evaluation error).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ConditionEvidence>,
}

impl MeasurementEvidence {
    /// The conditions that decided the phase.
    pub fn decided(&self) -> impl Iterator<Item = &ConditionEvidence> {
        self.conditions.iter().filter(|c| c.decided)
    }

    /// The deciding expressions, joined with `; ` (`None` when no condition decided).
    pub fn decided_expression(&self) -> Option<String> {
        let exprs: Vec<&str> = self.decided().map(|c| c.expression.as_str()).collect();
        (!exprs.is_empty()).then(|| exprs.join("; "))
    }

    /// The first deciding condition that has a threshold.
    pub fn decided_threshold(&self) -> Option<(CompareOp, f64)> {
        self.decided()
            .find_map(|c| Some((c.operator?, c.threshold?)))
    }

    /// The threshold of the `kind` condition, when it is a plain comparison.
    pub fn threshold(&self, kind: ConditionKind) -> Option<(CompareOp, f64)> {
        self.conditions
            .iter()
            .filter(|c| c.kind == kind)
            .find_map(|c| Some((c.operator?, c.threshold?)))
    }

    /// The newest finite value (a series' last point), for a gauge.
    pub fn last_value(&self) -> Option<f64> {
        self.values.iter().rev().copied().find(|v| v.is_finite())
    }
}

/// Serde for `Vec<f64>` where non-finite numbers are `null` (JSON has no NaN).
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let shown: Vec<Option<f64>> = values.iter().map(|v| v.is_finite().then_some(*v)).collect();
        shown.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let read: Vec<Option<f64>> = Vec::deserialize(d)?;
        Ok(read.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_values_round_trip_as_null() {
        let ev = MeasurementEvidence {
            values: vec![1.5, f64::NAN, f64::INFINITY],
            conditions: Vec::new(),
        };
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(json, r#"{"values":[1.5,null,null]}"#);
        let back: MeasurementEvidence = serde_json::from_str(&json).unwrap();
        assert_eq!(back.values[0], 1.5);
        assert!(back.values[1].is_nan() && back.values[2].is_nan());
        assert_eq!(back.last_value(), Some(1.5));
    }

    #[test]
    fn operators_serialize_as_written() {
        let c = ConditionEvidence {
            kind: ConditionKind::Failure,
            expression: "result < 5".into(),
            holds: true,
            decided: true,
            operator: Some(CompareOp::Lt),
            threshold: Some(5.0),
        };
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["operator"], "<");
        assert_eq!(json["kind"], "failure");
        assert_eq!(CompareOp::Le.mirrored(), CompareOp::Ge);
        assert_eq!(CompareOp::Ne.mirrored(), CompareOp::Ne);
    }
}
