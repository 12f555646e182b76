//! A Canary's `rollbackOn.alarms`, compiled once: the webhook matches every alarm against every
//! canary, so compiling the regexes per alarm would cost milliseconds per thousand canaries
//! (see BENCHMARKS.md, `alarm` micro-benchmarks).

use regex::Regex;

use super::skywalking::AlarmMessage;
use crate::resources::canary::AlarmMatcher;

/// One matcher with its regexes compiled; `None` = not constrained.
#[derive(Debug, Clone)]
struct Compiled {
    rule_name: Option<Regex>,
    name: Option<Regex>,
}

/// The compiled `rollbackOn.alarms` of one canary.
#[derive(Debug, Clone, Default)]
pub struct AlarmMatchers(Vec<Compiled>);

impl AlarmMatchers {
    /// Compiles the matchers. A matcher that sets neither regex, or whose regex does not
    /// compile, matches nothing (validation refuses invalid regexes at load time).
    pub fn compile(matchers: &[AlarmMatcher]) -> Self {
        let re = |r: &Option<String>| -> Result<Option<Regex>, regex::Error> {
            r.as_deref().map(Regex::new).transpose()
        };
        AlarmMatchers(
            matchers
                .iter()
                .filter(|m| m.rule_name.is_some() || m.name.is_some())
                .filter_map(|m| {
                    Some(Compiled {
                        rule_name: re(&m.rule_name).ok()?,
                        name: re(&m.name).ok()?,
                    })
                })
                .collect(),
        )
    }

    /// True when no matcher can ever match (the canary does not roll back on alarms).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when one of the matchers matches: every regex it sets must match.
    pub fn matches(&self, msg: &AlarmMessage) -> bool {
        let ok = |re: &Option<Regex>, text: &str| re.as_ref().is_none_or(|r| r.is_match(text));
        self.0
            .iter()
            .any(|m| ok(&m.rule_name, &msg.rule_name) && ok(&m.name, &msg.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(rule: &str, name: &str) -> AlarmMessage {
        serde_json::from_value(serde_json::json!({"ruleName": rule, "name": name}))
            .expect("valid message")
    }

    fn m(rule: Option<&str>, name: Option<&str>) -> AlarmMatcher {
        AlarmMatcher {
            rule_name: rule.map(str::to_string),
            name: name.map(str::to_string),
        }
    }

    #[test]
    fn every_set_regex_must_match() {
        let c = AlarmMatchers::compile(&[m(Some("service_sla_rule"), Some("^reviews\\."))]);
        assert!(c.matches(&msg("service_sla_rule", "reviews.bookinfo")));
        assert!(!c.matches(&msg("service_sla_rule", "ratings.bookinfo")));
        assert!(!c.matches(&msg("service_resp_time_rule", "reviews.bookinfo")));
    }

    #[test]
    fn any_matcher_suffices_and_one_regex_is_enough() {
        let c = AlarmMatchers::compile(&[m(None, Some("^ratings")), m(Some("_sla_"), None)]);
        assert!(c.matches(&msg("x", "ratings.bookinfo")));
        assert!(c.matches(&msg("service_sla_rule", "anything")));
        assert!(!c.matches(&msg("service_resp_time_rule", "reviews")));
    }

    #[test]
    fn empty_and_invalid_matchers_match_nothing() {
        let c = AlarmMatchers::compile(&[m(None, None), m(Some("("), None)]);
        assert!(c.is_empty());
        assert!(!c.matches(&msg("(", "x")));
        assert!(!AlarmMatchers::compile(&[]).matches(&msg("r", "n")));
    }
}
