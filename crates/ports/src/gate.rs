//! A one-shot barrier between two writes that may be prepared together but must become
//! visible in order: a rollback's VirtualService may be written to a temporary file (and
//! synced) while the status that explains it is being saved, but renamed over the manifest
//! only once that save is over (DESIGN §5: status saved before routing). The write waits on
//! a [`CommitGate`]; the save holds its [`GateOpener`] and opens it when done, or by being
//! dropped (a save that ended in any way, a cancelled one included, never holds a rollback).
//!
//! The opener also tells how the save ended ([`GateOpener::saved`]): a write that knows the
//! status explaining it is on disk may leave its own bookkeeping (the file store's rollback
//! marker) to finish after it becomes visible.
//!
//! Usable from async code ([`CommitGate::wait`]) and from the blocking threads the file store
//! writes on ([`CommitGate::wait_blocking`]), so a write need not leave its thread (and the
//! lock it holds) between preparing and committing.

use std::sync::{Arc, Condvar, Mutex};

#[derive(Debug, Default, Clone, Copy)]
struct State {
    open: bool,
    /// Opened by a save that landed.
    saved: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    notify: tokio::sync::Notify,
}

impl Shared {
    fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self, saved: bool) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.open {
                return;
            }
            *state = State { open: true, saved };
        }
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
        self.0.as_ref().is_none_or(|s| s.state().open)
    }

    /// Whether the gate was opened by a save that landed ([`GateOpener::saved`]). False while
    /// closed, after a failed or dropped save, and for [`CommitGate::open`] (no save overlaps
    /// the write: nothing is known about it).
    pub fn saved(&self) -> bool {
        self.0.as_ref().is_some_and(|s| {
            let state = s.state();
            state.open && state.saved
        })
    }

    /// Waits until the gate is open.
    pub async fn wait(&self) {
        let Some(shared) = &self.0 else { return };
        loop {
            let notified = shared.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so an opening in between is not missed.
            notified.as_mut().enable();
            if shared.state().open {
                return;
            }
            notified.await;
        }
    }

    /// Blocks the calling thread until the gate is open. For blocking threads only
    /// (`spawn_blocking`), never on an async worker.
    pub fn wait_blocking(&self) {
        let Some(shared) = &self.0 else { return };
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        while !state.open {
            state = shared
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl GateOpener {
    /// Opens the gate after a save that did not land (also done by dropping the opener).
    pub fn open(self) {}

    /// Opens the gate after a save that landed: the status is on disk.
    pub fn saved(self) {
        self.0.open(true);
    }
}

impl Drop for GateOpener {
    fn drop(&mut self) {
        self.0.open(false);
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

        assert!(!gate.saved(), "opened without a landed save");

        // A dropped opener (a save that ended any way) opens it too.
        let (opener, gate) = CommitGate::closed();
        drop(opener);
        gate.wait().await;
        gate.wait_blocking();
        assert!(!gate.saved());
    }

    #[tokio::test]
    async fn only_a_landed_save_opens_the_gate_as_saved() {
        assert!(!CommitGate::open().saved(), "no save overlapped the write");
        let (opener, gate) = CommitGate::closed();
        assert!(!gate.saved(), "closed");
        let blocking = gate.clone();
        let thread = tokio::task::spawn_blocking(move || {
            blocking.wait_blocking();
            blocking.saved()
        });
        opener.saved();
        gate.wait().await;
        assert!(gate.saved());
        assert!(thread.await.unwrap(), "the blocked writer sees the outcome");
    }
}
