//! A measurement's evidence: the data types are status, in `skycanary-api` (re-exported here
//! under their old paths); which conditions decided a phase is the judge's rule, kept here.

pub use skycanary_api::analysis::evidence::*;

/// Which conditions decided a phase (DESIGN §3 truth table): a failure condition that holds
/// decides alone; a success condition that holds decides (with a failure condition that did
/// not hold beside it); a success condition that does not hold decides a Failed without a
/// failure condition; when neither holds (Inconclusive) both took part.
pub fn decisive(success: Option<bool>, failure: Option<bool>) -> (bool, bool) {
    match (success, failure) {
        (_, Some(true)) => (false, true),
        (Some(_), f) => (true, f.is_some()),
        (None, Some(false)) => (false, true),
        (None, None) => (false, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisive_follows_the_truth_table() {
        // Failure holds: Failed, the failure condition alone.
        assert_eq!(decisive(Some(true), Some(true)), (false, true));
        assert_eq!(decisive(Some(false), Some(true)), (false, true));
        assert_eq!(decisive(None, Some(true)), (false, true));
        // Success holds: Successful, with the failure condition that did not hold.
        assert_eq!(decisive(Some(true), Some(false)), (true, true));
        assert_eq!(decisive(Some(true), None), (true, false));
        // Success alone does not hold: Failed by it.
        assert_eq!(decisive(Some(false), None), (true, false));
        // Neither holds: Inconclusive, both.
        assert_eq!(decisive(Some(false), Some(false)), (true, true));
        // Failure alone does not hold: Successful by it.
        assert_eq!(decisive(None, Some(false)), (false, true));
        assert_eq!(decisive(None, None), (false, false));
    }
}
