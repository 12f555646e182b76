//! A one-shot barrier between two writes that may be prepared together but must become
//! visible in order: a rollback's VirtualService may be written to a temporary file (and
//! synced) while the status that explains it is being saved, but renamed over the manifest
//! only once that save is over (DESIGN §5: status saved before routing). The write waits on
//! a [`CommitGate`]; the save holds its [`GateOpener`] and opens it when done, or by being
//! dropped (a save that ended in any way, a cancelled one included, never holds a rollback).
//!
//! Usable from async code ([`CommitGate::wait`]) and from the blocking threads the file store
//! writes on ([`CommitGate::wait_blocking`]), so a write need not leave its thread (and the
//! lock it holds) between preparing and committing.

use std::sync::{Arc, Condvar, Mutex};

#[derive(Debug, Default)]
struct Shared {
    open: Mutex<bool>,
    changed: Condvar,
    notify: tokio::sync::Notify,
}

impl Shared {
    fn is_open(&self) -> bool {
        *self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
        self.notify.notify_waiters();
    }
}

/// Waited on by a write before it becomes visible. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CommitGate(Option<Arc<Shared>>);

/// Opens its [`CommitGate`]: explicitly or when dropped.
#[derive(Debug)]
pub struct GateOpener(Arc<Shared>);

impl CommitGate {
    /// A gate that never holds anything (every write outside an overlapped save).
    pub fn open() -> Self {
        CommitGate(None)
    }

    /// A closed gate and the opener that opens it.
    pub fn closed() -> (GateOpener, CommitGate) {
        let shared = Arc::new(Shared::default());
        (GateOpener(shared.clone()), CommitGate(Some(shared)))
    }

    /// Whether a write may become visible now.
    pub fn is_open(&self) -> bool {
        self.0.as_ref().is_none_or(|s| s.is_open())
    }

    /// Waits until the gate is open.
    pub async fn wait(&self) {
        let Some(shared) = &self.0 else { return };
        loop {
            let notified = shared.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so an opening in between is not missed.
            notified.as_mut().enable();
            if shared.is_open() {
                return;
            }
            notified.await;
        }
    }

    /// Blocks the calling thread until the gate is open. For blocking threads only
    /// (`spawn_blocking`), never on an async worker.
    pub fn wait_blocking(&self) {
        let Some(shared) = &self.0 else { return };
        let mut open = shared.open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = shared.changed.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl GateOpener {
    /// Opens the gate (also done by dropping the opener).
    pub fn open(self) {}
}

impl Drop for GateOpener {
    fn drop(&mut self) {
        self.0.open();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn a_closed_gate_holds_async_and_blocking_waiters_until_opened_or_dropped() {
        assert!(CommitGate::open().is_open());
        CommitGate::open().wait().await;

        let (opener, gate) = CommitGate::closed();
        assert!(!gate.is_open());
        let waiting = gate.clone();
        let mut task = tokio::spawn(async move { waiting.wait().await });
        let blocking = gate.clone();
        let mut thread = tokio::task::spawn_blocking(move || blocking.wait_blocking());
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(
            (&mut task).now_or_never().is_none(),
            "waited past a closed gate"
        );
        assert!(
            (&mut thread).now_or_never().is_none(),
            "blocked past a closed gate"
        );
        opener.open();
        task.await.unwrap();
        thread.await.unwrap();
        assert!(gate.is_open());

        // A dropped opener (a save that ended any way) opens it too.
        let (opener, gate) = CommitGate::closed();
        drop(opener);
        gate.wait().await;
        gate.wait_blocking();
    }
}
