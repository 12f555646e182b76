//! Doubling retry delay, capped; reset after progress. Shared by the watches of the cluster
//! source (as kube-runtime's watcher backoff) and the canary driver's status reads and writes.

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

/// Sleeps `delay` while a task cannot start yet (its status is unreadable), keeping its inbox:
/// messages that arrive are put back in the queue through `requeue`, in order, except a stop
/// (`is_stop`, or the channel closing), which ends the wait early. Returns true when stopped.
/// Canary and schedule tasks share it.
pub async fn sleep_holding<M>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<M>,
    requeue: &tokio::sync::mpsc::UnboundedSender<M>,
    delay: Duration,
    is_stop: impl Fn(&M) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + delay;
    let mut held = Vec::new();
    let stopped = loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break false,
            m = rx.recv() => match m {
                None => break true,
                Some(m) if is_stop(&m) => break true,
                Some(m) => held.push(m),
            },
        }
    };
    if !stopped {
        for m in held {
            let _ = requeue.send(m);
        }
    }
    stopped
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

    #[tokio::test(start_paused = true)]
    async fn sleep_holding_keeps_messages_in_order_and_ends_on_stop() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        let stopped = sleep_holding(&mut rx, &tx, Duration::from_secs(1), |m| *m == 0).await;
        assert!(!stopped);
        assert_eq!((rx.recv().await, rx.recv().await), (Some(1), Some(2)));
        tx.send(3).unwrap();
        tx.send(0).unwrap();
        assert!(sleep_holding(&mut rx, &tx, Duration::from_secs(60), |m| *m == 0).await);
    }
}
