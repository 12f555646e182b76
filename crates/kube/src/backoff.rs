//! Doubling retry delay, capped; reset after progress. Shared by the watches (as kube-runtime's
//! watcher backoff, hence here) and the runtime's tasks, whose status reads and writes retry
//! with it (`skycanary-runtime`'s `backoff` re-exports it).

use std::time::Duration;

/// Delays `min`, `2 × min`, `4 × min`, ... up to `max`, until [`Backoff::reset`].
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay to wait now; the next one is doubled (capped at `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to `min`, after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// The delays kube-runtime's `WatchStreamExt::backoff` waits after a watch error (it resets
/// the backoff after every successful event); never exhausted, so a watch is retried forever.
impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

impl kube::runtime::utils::Backoff for Backoff {
    fn reset(&mut self) {
        Backoff::reset(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_starts_over_after_a_reset() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        let ms: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [250, 500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(250));
    }
}
