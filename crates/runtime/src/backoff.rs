//! Retrying without losing messages: [`sleep_holding`] waits out a task's retry delay (a
//! [`Backoff`], shared with the watches) while keeping its inbox.

use std::time::Duration;

/// The doubling, capped retry delay, in the `skycanary-kube` crate (kube-runtime's watcher
/// backoff implements it there).
pub use skycanary_kube::backoff::Backoff;

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
