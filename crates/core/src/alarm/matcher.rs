//! `rollbackOn` matchers compiled once per Canary, and the pure decision whether an alarm or
//! alert matches them. Regexes are fully anchored, like Prometheus label matchers, so
//! `reviews` never matches `reviews-v2`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use regex::Regex;

use super::alertmanager::Alert;
use super::skywalking::Alarm;
use skycanary_api::resources::canary::{AlarmMatcher, AlertMatcher, RollbackOn};

pub use super::anchored;

/// One `rollbackOn` criterion, compiled. Most criteria are plain names (`reviews\\.bookinfo`,
/// a rule name): those are compared as strings, which costs no regex automaton per canary —
/// at 1,000 canaries compiled regexes alone took ~28 MiB. The rest share one compiled regex
/// per distinct pattern through a [`PatternCache`].
#[derive(Debug, Clone)]
enum Pattern {
    /// Invalid regex (validation refuses those at load time; one that slipped through matches
    /// nothing rather than everything).
    Never,
    /// The pattern can only match this exact text.
    Exact(Box<str>),
    /// Anything else, fully anchored.
    Regex(Arc<Regex>),
}

impl Pattern {
    fn new(re: &str, cache: &mut PatternCache) -> Self {
        if let Some(text) = exact_text(re) {
            return Pattern::Exact(text.into());
        }
        if let Some(r) = cache.0.get(re) {
            return Pattern::Regex(r.clone());
        }
        match anchored(re) {
            Ok(r) => {
                let r = Arc::new(r);
                cache.0.insert(re.to_string(), r.clone());
                Pattern::Regex(r)
            }
            Err(_) => Pattern::Never,
        }
    }

    fn is_match(&self, text: &str) -> bool {
        match self {
            Pattern::Never => false,
            Pattern::Exact(t) => **t == *text,
            Pattern::Regex(r) => r.is_match(text),
        }
    }
}

/// The only text a fully anchored `re` can match, when it is a literal (optionally written
/// with its own `^`/`$`): `svc\\.bench` → `svc.bench`. `None` for anything with classes,
/// repetition, alternation or flags, and for an invalid regex.
fn exact_text(re: &str) -> Option<String> {
    use regex_syntax::hir::{HirKind, Look};
    let hir = regex_syntax::Parser::new().parse(re).ok()?;
    let parts = match hir.kind() {
        HirKind::Concat(parts) => parts.as_slice(),
        _ => std::slice::from_ref(&hir),
    };
    let mut text = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        match part.kind() {
            HirKind::Literal(lit) => text.extend_from_slice(&lit.0),
            // `^` first and `$` last are what anchoring adds anyway.
            HirKind::Look(Look::Start) if i == 0 => {}
            HirKind::Look(Look::End) if i == parts.len() - 1 => {}
            HirKind::Empty => {}
            _ => return None,
        }
    }
    String::from_utf8(text).ok()
}

/// Compiled regexes by pattern text, so canaries with the same criterion (a shared rule-name
/// regex, say) hold one automaton between them.
#[derive(Debug, Default)]
pub struct PatternCache(HashMap<String, Arc<Regex>>);

/// One compiled [`AlarmMatcher`].
#[derive(Debug, Clone)]
struct CompiledAlarm {
    rule_name: Option<Pattern>,
    name: Option<Pattern>,
    scope: Option<Pattern>,
    message: Option<Pattern>,
    tags: Vec<(String, Pattern)>,
}

impl CompiledAlarm {
    fn is_empty(&self) -> bool {
        self.rule_name.is_none()
            && self.name.is_none()
            && self.scope.is_none()
            && self.message.is_none()
            && self.tags.is_empty()
    }

    fn matches(&self, a: &Alarm) -> bool {
        // A criterion on a field the alarm does not carry cannot be satisfied.
        let field = |p: &Option<Pattern>, v: Option<&str>| match p {
            None => true,
            Some(p) => v.is_some_and(|v| p.is_match(v)),
        };
        !self.is_empty()
            && field(&self.rule_name, a.rule_name.as_deref())
            && field(&self.name, a.name.as_deref())
            && field(&self.message, a.message.as_deref())
            && self
                .scope
                .as_ref()
                .is_none_or(|p| a.scope_spellings().iter().any(|s| p.is_match(s)))
            && self.tags.iter().all(|(k, p)| {
                let mut values = a.tags.iter().filter(|(tk, _)| tk == k).peekable();
                if values.peek().is_none() {
                    p.is_match("")
                } else {
                    values.any(|(_, v)| p.is_match(v))
                }
            })
    }
}

/// The compiled `rollbackOn.alarms` of one Canary.
#[derive(Debug, Clone, Default)]
pub struct AlarmMatchers(Vec<CompiledAlarm>);

impl AlarmMatchers {
    /// Compiles the matchers (an invalid regex matches nothing).
    pub fn compile(matchers: &[AlarmMatcher], cache: &mut PatternCache) -> Self {
        let opt = |r: &Option<String>, cache: &mut PatternCache| {
            r.as_deref().map(|r| Pattern::new(r, cache))
        };
        AlarmMatchers(
            matchers
                .iter()
                .map(|m| CompiledAlarm {
                    rule_name: opt(&m.rule_name, cache),
                    name: opt(&m.name, cache),
                    scope: opt(&m.scope, cache),
                    message: opt(&m.message, cache),
                    tags: m
                        .tags
                        .iter()
                        .map(|(k, v)| (k.clone(), Pattern::new(v, cache)))
                        .collect(),
                })
                .collect(),
        )
    }

    /// True when any matcher matches the alarm (an empty matcher matches nothing).
    pub fn matches(&self, alarm: &Alarm) -> bool {
        self.0.iter().any(|m| m.matches(alarm))
    }
}

/// The compiled `rollbackOn.alerts` of one Canary.
#[derive(Debug, Clone, Default)]
pub struct AlertMatchers(Vec<Vec<(String, Pattern)>>);

impl AlertMatchers {
    /// Compiles the matchers (an invalid regex matches nothing).
    pub fn compile(matchers: &[AlertMatcher], cache: &mut PatternCache) -> Self {
        AlertMatchers(
            matchers
                .iter()
                .map(|m| {
                    m.labels
                        .iter()
                        .map(|(k, v)| (k.clone(), Pattern::new(v, cache)))
                        .collect()
                })
                .collect(),
        )
    }

    /// True when every label regex of some matcher matches (a missing label reads as "").
    pub fn matches(&self, alert: &Alert) -> bool {
        self.0
            .iter()
            .any(|m| !m.is_empty() && m.iter().all(|(k, p)| p.is_match(label(&alert.labels, k))))
    }
}

fn label<'a>(labels: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    labels.get(key).map_or("", String::as_str)
}

/// Everything in a Canary's `rollbackOn`, compiled.
#[derive(Debug, Clone, Default)]
pub struct RollbackRules {
    /// SkyWalking alarm matchers.
    pub alarms: AlarmMatchers,
    /// Alertmanager alert matchers.
    pub alerts: AlertMatchers,
}

impl RollbackRules {
    /// Compiles a Canary's `rollbackOn` (none: nothing matches).
    pub fn compile(rb: Option<&RollbackOn>) -> Self {
        Self::compile_cached(rb, &mut PatternCache::default())
    }

    /// [`RollbackRules::compile`] sharing regexes with every other canary compiled through
    /// the same `cache`.
    pub fn compile_cached(rb: Option<&RollbackOn>, cache: &mut PatternCache) -> Self {
        match rb {
            None => RollbackRules::default(),
            Some(rb) => RollbackRules {
                alarms: AlarmMatchers::compile(&rb.alarms, cache),
                alerts: AlertMatchers::compile(&rb.alerts, cache),
            },
        }
    }

    /// True when there is nothing to match (polling can skip such a canary).
    pub fn is_empty(&self) -> bool {
        self.alarms.0.is_empty() && self.alerts.0.is_empty()
    }

    /// True when some SkyWalking alarm matcher is set.
    pub fn has_alarms(&self) -> bool {
        !self.alarms.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm() -> Alarm {
        Alarm {
            rule_name: Some("service_resp_time_rule".into()),
            name: Some("reviews.bookinfo".into()),
            scope: Some("SERVICE".into()),
            scope_id: Some(1),
            message: Some("Response time of service reviews.bookinfo is more than 1000ms".into()),
            tags: vec![("level".into(), "WARNING".into())],
            ..Alarm::default()
        }
    }

    fn m(f: impl FnOnce(&mut AlarmMatcher)) -> AlarmMatchers {
        let mut a = AlarmMatcher::default();
        f(&mut a);
        AlarmMatchers::compile(&[a], &mut PatternCache::default())
    }

    #[test]
    fn literal_patterns_are_compared_as_text() {
        for (re, text) in [
            ("reviews", Some("reviews")),
            ("reviews\\.bookinfo", Some("reviews.bookinfo")),
            ("^svc-00001\\.bench$", Some("svc-00001.bench")),
            ("", Some("")),
            ("r.views", None),
            ("reviews|ratings", None),
            ("(?i)reviews", None),
            ("reviews$x", None),
            ("a^b", None),
            ("reviews+", None),
            ("[r]eviews", Some("reviews")),
            ("([", None),
        ] {
            assert_eq!(exact_text(re).as_deref(), text, "{re}");
        }
        // Exact and regex patterns decide alike.
        let mut cache = PatternCache::default();
        for re in [
            "reviews\\.bookinfo",
            "^reviews\\.bookinfo$",
            "reviews.bookinfo",
        ] {
            let p = Pattern::new(re, &mut cache);
            assert!(p.is_match("reviews.bookinfo"), "{re}");
            assert!(!p.is_match("reviews.bookinfo2"), "{re}");
            assert!(!p.is_match("xreviews.bookinfo"), "{re}");
        }
        assert!(matches!(
            Pattern::new("reviews\\.b", &mut cache),
            Pattern::Exact(_)
        ));
        assert!(matches!(Pattern::new("([", &mut cache), Pattern::Never));
        assert!(!Pattern::new("([", &mut cache).is_match("(["));
    }

    #[test]
    fn canaries_with_the_same_regex_share_one_automaton() {
        let mut cache = PatternCache::default();
        let (Pattern::Regex(a), Pattern::Regex(b)) = (
            Pattern::new("service_.*_rule", &mut cache),
            Pattern::new("service_.*_rule", &mut cache),
        ) else {
            panic!("not compiled as regexes");
        };
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.0.len(), 1);
    }

    #[test]
    fn regexes_are_fully_anchored() {
        assert!(m(|a| a.name = Some("reviews.*".into())).matches(&alarm()));
        assert!(m(|a| a.name = Some("reviews\\.bookinfo".into())).matches(&alarm()));
        assert!(!m(|a| a.name = Some("reviews".into())).matches(&alarm()));
        assert!(!m(|a| a.name = Some("bookinfo".into())).matches(&alarm()));
        assert!(
            !m(|a| a.name = Some("a|reviews".into())).matches(&Alarm {
                name: Some("xreviews".into()),
                ..alarm()
            }),
            "alternation stays inside the anchors"
        );
    }

    #[test]
    fn every_criterion_must_match() {
        let both = m(|a| {
            a.rule_name = Some("service_(sla|resp_time)_rule".into());
            a.name = Some("reviews\\..*".into());
        });
        assert!(both.matches(&alarm()));
        assert!(!both.matches(&Alarm {
            rule_name: Some("endpoint_sla_rule".into()),
            ..alarm()
        }));
        assert!(!both.matches(&Alarm {
            name: Some("ratings.bookinfo".into()),
            ..alarm()
        }));
    }

    #[test]
    fn scope_matches_either_spelling() {
        assert!(m(|a| a.scope = Some("SERVICE".into())).matches(&alarm()));
        assert!(m(|a| a.scope = Some("Service".into())).matches(&alarm()));
        assert!(!m(|a| a.scope = Some("Endpoint".into())).matches(&alarm()));
        let polled = Alarm {
            scope: Some("ServiceInstance".into()),
            scope_id: None,
            ..alarm()
        };
        assert!(m(|a| a.scope = Some("SERVICE_INSTANCE".into())).matches(&polled));
        assert!(!m(|a| a.scope = Some("Service".into())).matches(&polled));
        let only_id = Alarm {
            scope: None,
            scope_id: Some(3),
            ..alarm()
        };
        assert!(m(|a| a.scope = Some("Endpoint".into())).matches(&only_id));
    }

    #[test]
    fn tags_match_by_key_and_missing_tags_read_as_empty() {
        let mut tags = BTreeMap::new();
        tags.insert("level".to_string(), "WARNING|CRITICAL".to_string());
        let by_tag = m(|a| a.tags = tags.clone());
        assert!(by_tag.matches(&alarm()));
        assert!(!by_tag.matches(&Alarm {
            tags: vec![("level".into(), "INFO".into())],
            ..alarm()
        }));
        assert!(!by_tag.matches(&Alarm {
            tags: Vec::new(),
            ..alarm()
        }));
        let mut optional = BTreeMap::new();
        optional.insert("team".to_string(), "|reviews".to_string());
        assert!(m(|a| a.tags = optional.clone()).matches(&alarm()));
        assert!(
            m(|a| a.tags = tags.clone()).matches(&Alarm {
                tags: vec![
                    ("level".into(), "INFO".into()),
                    ("level".into(), "CRITICAL".into())
                ],
                ..alarm()
            }),
            "any value of a repeated key"
        );
    }

    #[test]
    fn absent_fields_do_not_match_criteria_on_them() {
        let polled = Alarm {
            rule_name: None,
            ..alarm()
        };
        assert!(!m(|a| a.rule_name = Some(".*".into())).matches(&polled));
        assert!(m(|a| a.message = Some("Response time .*".into())).matches(&polled));
        let unnamed = Alarm {
            name: None,
            ..alarm()
        };
        assert!(!m(|a| a.name = Some(".*".into())).matches(&unnamed));
    }

    #[test]
    fn empty_and_invalid_matchers_match_nothing() {
        assert!(!m(|_| {}).matches(&alarm()));
        assert!(!m(|a| a.name = Some("(".into())).matches(&alarm()));
        assert!(!AlarmMatchers::default().matches(&alarm()));
        assert!(
            !AlertMatchers::compile(&[AlertMatcher::default()], &mut PatternCache::default())
                .matches(&Alert::default())
        );
    }

    #[test]
    fn alert_labels_follow_prometheus_rules() {
        let alert = Alert {
            labels: [
                ("alertname", "HighErrorRate"),
                ("service", "reviews-v2"),
                ("severity", "page"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Alert::default()
        };
        let matcher = |pairs: &[(&str, &str)]| {
            AlertMatchers::compile(
                &[AlertMatcher {
                    labels: pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                }],
                &mut PatternCache::default(),
            )
        };
        assert!(
            matcher(&[("alertname", "HighErrorRate"), ("service", "reviews.*")]).matches(&alert)
        );
        assert!(
            !matcher(&[("alertname", "HighErrorRate"), ("service", "reviews")]).matches(&alert)
        );
        assert!(!matcher(&[("alertname", "HighLatency")]).matches(&alert));
        assert!(matcher(&[("alertname", "HighErrorRate"), ("team", "")]).matches(&alert));
        assert!(!matcher(&[("team", ".+")]).matches(&alert));
    }

    #[test]
    fn rollback_rules_compile_both_kinds() {
        let rb = RollbackOn {
            alarms: vec![AlarmMatcher {
                name: Some("reviews.*".into()),
                ..AlarmMatcher::default()
            }],
            alerts: Vec::new(),
        };
        let r = RollbackRules::compile(Some(&rb));
        assert!(r.has_alarms() && !r.is_empty());
        assert!(r.alarms.matches(&alarm()));
        assert!(RollbackRules::compile(None).is_empty());
    }
}
