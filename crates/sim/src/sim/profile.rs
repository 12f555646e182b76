//! OAP version profiles: which protocol features each simulated server exposes.

use std::fmt;
use std::str::FromStr;

/// A simulated OAP release. Each profile exposes exactly that release's schema slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OapProfile {
    /// 8.9: Jetty handler (every error is HTTP 200), v2 metrics only, `Entity.scope` required.
    V8_9,
    /// 9.4: Armeria, `scope` optional, no `isEmptyValue`.
    V9_4,
    /// 9.7: MQE with `{_='0,1'}` labels, `MQEValues.metric` nullable.
    V9_7,
    /// 10.2: `MQEValue.owner`, alarm `name`/`snapshot`, `p=` percentile labels.
    V10_2,
    /// 10.4: `Duration.coldStage`, alarm `recoveryTime`.
    V10_4,
}

/// The profile string could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown OAP profile {0:?} (expected one of 8.9, 9.4, 9.7, 10.2, 10.4)")]
pub struct UnknownProfile(pub String);

impl OapProfile {
    /// Every profile, oldest first (handy for test matrices).
    pub const ALL: [OapProfile; 5] = [
        OapProfile::V8_9,
        OapProfile::V9_4,
        OapProfile::V9_7,
        OapProfile::V10_2,
        OapProfile::V10_4,
    ];

    /// (major, minor) of the release.
    pub fn numbers(self) -> (u32, u32) {
        match self {
            OapProfile::V8_9 => (8, 9),
            OapProfile::V9_4 => (9, 4),
            OapProfile::V9_7 => (9, 7),
            OapProfile::V10_2 => (10, 2),
            OapProfile::V10_4 => (10, 4),
        }
    }

    /// True when this profile is at least `major.minor`.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self.numbers() >= (major, minor)
    }

    /// What `query { version }` answers, in the shape of the real release.
    pub fn version_string(self) -> String {
        let (ma, mi) = self.numbers();
        if self.at_least(9, 1) {
            format!("{ma}.{mi}.0-sim")
        } else {
            format!("{ma}.{mi}.0-sim (simulator)")
        }
    }

    /// 8.x ran on Jetty: all GraphQL errors are HTTP 200 with only a `message`.
    pub fn is_jetty(self) -> bool {
        !self.at_least(9, 0)
    }

    /// MQE `execExpression` exists (9.5+).
    pub fn has_mqe(self) -> bool {
        self.at_least(9, 5)
    }

    /// `KVInt.isEmptyValue` and `readNullableMetricsValue` (9.5+).
    pub fn has_empty_flag(self) -> bool {
        self.at_least(9, 5)
    }

    /// Duration strings are checked against the step (9.3+).
    pub fn checks_duration_format(self) -> bool {
        self.at_least(9, 3)
    }

    /// `start == end` is accepted (9.4+).
    pub fn allows_single_point(self) -> bool {
        self.at_least(9, 4)
    }

    /// The label key used by percentile metrics in MQE selectors.
    pub fn percentile_label_key(self) -> &'static str {
        if self.at_least(10, 0) { "p" } else { "_" }
    }
}

impl FromStr for OapProfile {
    type Err = UnknownProfile;

    /// Accepts "8.9", "v10.4", "10.4.0", "10.4.0-sim".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().trim_start_matches(['v', 'V']);
        let mut parts = t.split(['.', '-', '_']);
        let major = parts.next().unwrap_or("");
        let minor = parts.next().unwrap_or("");
        match (major, minor) {
            ("8", "9") => Ok(OapProfile::V8_9),
            ("9", "4") => Ok(OapProfile::V9_4),
            ("9", "7") => Ok(OapProfile::V9_7),
            ("10", "2") => Ok(OapProfile::V10_2),
            ("10", "4") => Ok(OapProfile::V10_4),
            _ => Err(UnknownProfile(s.to_string())),
        }
    }
}

impl fmt::Display for OapProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ma, mi) = self.numbers();
        write!(f, "{ma}.{mi}")
    }
}
