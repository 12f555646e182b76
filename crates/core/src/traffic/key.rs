//! Which Istio object: the identity the stores read and write by, and the routing model
//! (`spec.rs`) names a Canary's VirtualServices and DestinationRule with. Plain data; the
//! stores themselves are in the runtime (`traffic::store`).

use std::fmt;

/// The Istio kinds the traffic layer touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// `networking.istio.io` VirtualService.
    VirtualService,
    /// `networking.istio.io` DestinationRule.
    DestinationRule,
}

impl ObjectKind {
    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::VirtualService => "VirtualService",
            ObjectKind::DestinationRule => "DestinationRule",
        }
    }
}

/// Identifies one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// VirtualService or DestinationRule.
    pub kind: ObjectKind,
    /// Its namespace (`default` when a file mode manifest names none).
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ObjectKey {
    /// A VirtualService key.
    pub fn virtual_service(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            kind: ObjectKind::VirtualService,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A DestinationRule key.
    pub fn destination_rule(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            kind: ObjectKind::DestinationRule,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}
