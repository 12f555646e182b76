//! Which language a template's conditions are written in: data a template names and a
//! compiled condition reports; the parsers for each are `skycanary_core::analysis`'s.

use std::fmt;

/// The language a template's conditions are written in (`conditionLanguage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionLanguage {
    /// Argo Rollouts' language (expr), with Argo's bindings; default of `argoproj.io` templates.
    Expr,
    /// evalexpr 11.3 with skycanary's bindings; default of `skycanary.io` templates.
    Evalexpr,
}

impl fmt::Display for ConditionLanguage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConditionLanguage::Expr => "expr",
            ConditionLanguage::Evalexpr => "evalexpr",
        })
    }
}
