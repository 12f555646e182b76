//! OAP release numbers: a template may pin one (`version_override`), and the client derives
//! what the server's schema supports from it.

use std::fmt;
use std::str::FromStr;

use super::ProviderError;

/// `major.minor.patch` of an OAP release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OapVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl OapVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        OapVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses `query { version }` output: `"10.2.0-abc1234"`,
    /// `"8.9.0-abc1234 (buildtime)"`, `"9.4.0"`, `"10.0.0-SNAPSHOT"`, `"v9.5"`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        let core = s
            .split(|c: char| c == '-' || c == '+' || c.is_whitespace())
            .next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        Some(OapVersion::new(major, minor, patch))
    }
}

impl fmt::Display for OapVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for OapVersion {
    type Err = ProviderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OapVersion::parse(s)
            .ok_or_else(|| ProviderError::Config(format!("cannot parse OAP version {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_version_strings() {
        assert_eq!(
            OapVersion::parse("10.2.0-abc1234"),
            Some(OapVersion::new(10, 2, 0))
        );
        assert_eq!(
            OapVersion::parse("8.9.0-abc1234 (20211229104558)"),
            Some(OapVersion::new(8, 9, 0))
        );
        assert_eq!(OapVersion::parse("9.4.0"), Some(OapVersion::new(9, 4, 0)));
        assert_eq!(
            OapVersion::parse("10.0.0-SNAPSHOT"),
            Some(OapVersion::new(10, 0, 0))
        );
        assert_eq!(OapVersion::parse("v9.5"), Some(OapVersion::new(9, 5, 0)));
        assert_eq!(OapVersion::parse(""), None);
        assert_eq!(OapVersion::parse("latest"), None);
        assert!("x.y".parse::<OapVersion>().is_err());
        assert_eq!(OapVersion::new(9, 4, 0).to_string(), "9.4.0");
    }
}
