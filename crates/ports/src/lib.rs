//! The interfaces between skycanary's runtime and its adapters, below both: the manifest store
//! the router writes Istio objects through (`manifest`: Kubernetes in `skycanary-kube`, files
//! in the runtime) with the gate that orders a routing write after a status save (`gate`), and
//! the injected clocks (`clock`) the tasks and the Lease share. No I/O: tokio only for the
//! gate's waiters and the clocks' sleeps.

pub mod clock;
pub mod gate;
pub mod manifest;

pub use clock::{Clock, ScaledClock, SystemClock, WallScaledClock};
pub use gate::{CommitGate, GateOpener};
pub use manifest::{ManifestStore, ManifestStoreError, ObjectKey, ObjectKind, Versioned};
