//! The phase of a measurement, a metric and a run: Argo's `AnalysisPhase`, as status holds it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Phase of a measurement, a metric or a run (Argo's `AnalysisPhase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Phase {
    Pending,
    Running,
    Successful,
    Failed,
    Error,
    Inconclusive,
}

impl Phase {
    /// Completed phases are final: nothing measures or reassesses them again.
    pub fn is_completed(self) -> bool {
        matches!(
            self,
            Phase::Successful | Phase::Failed | Phase::Error | Phase::Inconclusive
        )
    }

    /// Rank in the worst-of order `Successful < Running < Pending < Inconclusive < Error < Failed`.
    pub fn severity(self) -> u8 {
        match self {
            Phase::Successful => 0,
            Phase::Running => 1,
            Phase::Pending => 2,
            Phase::Inconclusive => 3,
            Phase::Error => 4,
            Phase::Failed => 5,
        }
    }

    /// The worse of two phases.
    pub fn worst(self, other: Phase) -> Phase {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    /// A completed phase other than Successful stops the run.
    pub fn is_unsuccessful_end(self) -> bool {
        matches!(self, Phase::Failed | Phase::Error | Phase::Inconclusive)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Successful => "Successful",
            Phase::Failed => "Failed",
            Phase::Error => "Error",
            Phase::Inconclusive => "Inconclusive",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_of_order() {
        use Phase::*;
        let order = [Successful, Running, Pending, Inconclusive, Error, Failed];
        for (i, a) in order.iter().enumerate() {
            for b in &order[i..] {
                assert_eq!(a.worst(*b), *b);
                assert_eq!(b.worst(*a), *b);
            }
        }
        assert!(!Pending.is_completed() && !Running.is_completed());
        assert!(Successful.is_completed() && Inconclusive.is_completed());
    }

    #[test]
    fn phase_serializes_as_argo_strings() {
        let s = serde_json::to_string(&Phase::Inconclusive).unwrap_or_default();
        assert_eq!(s, "\"Inconclusive\"");
    }
}
