//! Alarm matching: `rollbackOn` patterns are fully anchored, like Prometheus label matchers, so
//! `reviews` never matches `reviews-v2`; validation and matching compile them the same way.

use regex::Regex;

/// Compiles `re` so it must match the whole text.
pub fn anchored(re: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{re})$"))
}

#[cfg(test)]
mod tests {
    use super::anchored;

    #[test]
    fn a_pattern_matches_the_whole_text_only() {
        let re = anchored("reviews|ratings").unwrap();
        assert!(re.is_match("reviews"));
        assert!(re.is_match("ratings"));
        assert!(!re.is_match("reviews-v2"));
        assert!(!re.is_match("my-ratings"));
        assert!(anchored("(").is_err());
    }
}
