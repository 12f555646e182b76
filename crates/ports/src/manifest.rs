//! Where VirtualServices and DestinationRules live: a Kubernetes API server or a directory of
//! manifests. Both offer the same optimistic-concurrency contract, so the router's
//! read → plan → write-with-version → retry-on-conflict logic is written once.

use std::future::Future;

use serde_json::Value;

use crate::gate::CommitGate;
/// The objects' identities, plain data in the `skycanary-core` crate (the routing model names
/// them too).
pub use skycanary_core::traffic::key::{ObjectKey, ObjectKind};

/// An object and the version it was read at (`metadata.resourceVersion` in Kubernetes; a
/// content hash for files).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    /// The whole object as JSON (apiVersion, kind, metadata, spec, ...).
    pub object: Value,
    /// Opaque version to pass back to [`ManifestStore::replace`].
    pub version: String,
}

/// Why a manifest store read or write failed. `Conflict` is the one the router retries.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestStoreError {
    /// The object does not exist.
    #[error("{0} not found")]
    NotFound(ObjectKey),
    /// The object changed since it was read.
    #[error("{0} was modified concurrently (version conflict)")]
    Conflict(ObjectKey),
    /// The object is defined more than once (file store).
    #[error("{key} is defined more than once: {locations}")]
    Duplicate {
        /// The object.
        key: ObjectKey,
        /// Where (files and lines).
        locations: String,
    },
    /// The object was not found, but a manifest that may define it cannot be read (file store).
    #[error("{key} not found; a manifest that may define it cannot be read: {problems}")]
    Unreadable {
        /// The object.
        key: ObjectKey,
        /// The unreadable files or documents (`file:line: why`).
        problems: String,
    },
    /// The server or the file rejected the content.
    #[error("{key} rejected: {message}")]
    Invalid {
        /// The object.
        key: ObjectKey,
        /// What the API server or the file loader said.
        message: String,
    },
    /// Transport, permission or file-system failure.
    #[error("{0}")]
    Backend(String),
}

/// Read and optimistically replace Istio objects.
pub trait ManifestStore: Send + Sync {
    /// Short description for messages (`kube (networking.istio.io/v1)`, `manifests ./deploy`).
    fn describe(&self) -> String;

    /// Reads one object.
    fn get(
        &self,
        key: &ObjectKey,
    ) -> impl Future<Output = Result<Versioned, ManifestStoreError>> + Send;

    /// Replaces the object if it is still at `expected_version`; returns the new version.
    /// A concurrent change yields [`ManifestStoreError::Conflict`] and writes nothing.
    fn replace(
        &self,
        key: &ObjectKey,
        object: &Value,
        expected_version: &str,
    ) -> impl Future<Output = Result<String, ManifestStoreError>> + Send;

    /// [`replace`](Self::replace), made visible only once `gate` is open; a store may prepare
    /// what stays invisible until then (the file store: its temporary file and its sidecar
    /// state) meanwhile. By default it waits, then replaces.
    fn replace_after(
        &self,
        key: &ObjectKey,
        object: &Value,
        expected_version: &str,
        gate: &CommitGate,
    ) -> impl Future<Output = Result<String, ManifestStoreError>> + Send {
        async move {
            gate.wait().await;
            self.replace(key, object, expected_version).await
        }
    }

    /// Prepares, invisibly, the write [`replace_after`](Self::replace_after) would make with
    /// these arguments, so that write, if it comes while the object is unchanged, only has to
    /// make it visible (the file store: the rollback's text in a synced unnamed file). A hint
    /// that changes nothing anyone can read; failures are the store's to log. By default
    /// nothing is prepared (and [`prepares_ahead`](Self::prepares_ahead) says so, so callers
    /// do not read objects for nothing).
    fn stand_by(
        &self,
        key: &ObjectKey,
        object: &Value,
        expected_version: &str,
    ) -> impl Future<Output = ()> + Send {
        let _ = (key, object, expected_version);
        async {}
    }

    /// Whether [`stand_by`](Self::stand_by) prepares anything.
    fn prepares_ahead(&self) -> bool {
        false
    }

    /// True when an object reads back exactly as it was replaced (no server-side defaulting
    /// or mutation, as an API server's admission may do): a caller may take what it wrote
    /// instead of reading it again.
    fn reads_back_as_written(&self) -> bool {
        false
    }

    /// Waits until every write this store has answered is durable. A store may answer a gated
    /// write ([`replace_after`](Self::replace_after)) once it is visible and finish making it
    /// durable in the background (the file store: the directory's `fsync` after the rename);
    /// a status that records such a write as applied is saved only after this returns, so a
    /// power loss before then leaves the status that re-sends the write. By default writes
    /// are durable when answered.
    fn sync_written(&self) -> impl Future<Output = Result<(), ManifestStoreError>> + Send {
        async { Ok(()) }
    }
}
