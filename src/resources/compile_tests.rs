use super::*;
use crate::resources::load::load_str;

fn rule(metric_name: &str, limit: u32) -> RetentionRule {
    RetentionRule {
        metric_name: metric_name.into(),
        limit,
    }
}

#[test]
fn retention_limit_zero_is_the_default_and_the_last_matching_rule_wins() {
    assert_eq!(retention_limit(&[], "apdex"), 10);
    assert_eq!(retention_limit(&[rule("apdex", 0)], "apdex"), 10);
    assert_eq!(retention_limit(&[rule("apdex", 3)], "apdex"), 3);
    assert_eq!(retention_limit(&[rule("sla", 3)], "apdex"), 10);
    // Argo fills its map rule by rule, so a later match overrides an earlier one.
    assert_eq!(
        retention_limit(&[rule(".*", 20), rule("apd", 5)], "apdex"),
        5
    );
    assert_eq!(
        retention_limit(&[rule("apd", 5), rule(".*", 0)], "apdex"),
        10
    );
}
