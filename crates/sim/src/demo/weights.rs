//! The weights actually routed: read from the VirtualService in the file store, so the
//! simulator follows what the daemon wrote, not what the demo expects it to write.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use crate::sim::blend::{Weights, WeightsProvider};
use skycanary_runtime::traffic::file::FileManifestStore;
use skycanary_runtime::traffic::store::{ManifestStore, ObjectKey};

/// Weight per destination subset (or host, for a host-level split) of the named http route.
/// A single destination without a weight carries 100, as in Istio.
pub fn route_weights(vs: &Value, route: &str) -> Result<Weights, String> {
    let routes = vs
        .pointer("/spec/http")
        .and_then(Value::as_array)
        .ok_or("the VirtualService has no http routes")?;
    let r = routes
        .iter()
        .find(|r| r.get("name").and_then(Value::as_str) == Some(route))
        .ok_or_else(|| format!("no http route named {route:?}"))?;
    let dests = r
        .get("route")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("route {route:?} has no destinations"))?;
    let single = dests.len() == 1;
    let mut out = Weights::new();
    for d in dests {
        let dest = d
            .get("destination")
            .ok_or("a destination without `destination`")?;
        let name = dest
            .get("subset")
            .or_else(|| dest.get("host"))
            .and_then(Value::as_str)
            .ok_or("a destination without subset or host")?;
        let weight = match d.get("weight") {
            Some(w) => w
                .as_f64()
                .ok_or_else(|| format!("weight of {name} is not a number"))?,
            None if single => 100.0,
            None => 0.0,
        };
        *out.entry(name.to_string()).or_default() += weight;
    }
    Ok(out)
}

/// Reads one route's weights through the file store (the daemon's own backend).
#[derive(Clone)]
pub struct VirtualServiceWeights {
    store: FileManifestStore,
    key: ObjectKey,
    route: String,
}

impl VirtualServiceWeights {
    /// The `route` of VirtualService `namespace/name` in `store`.
    pub fn new(store: FileManifestStore, namespace: &str, name: &str, route: &str) -> Self {
        VirtualServiceWeights {
            store,
            key: ObjectKey::virtual_service(namespace, name),
            route: route.to_string(),
        }
    }

    /// Reads the weights now.
    pub async fn read(&self) -> Result<Weights, String> {
        let v = self.store.get(&self.key).await.map_err(|e| e.to_string())?;
        route_weights(&v.object, &self.route)
    }
}

impl WeightsProvider for VirtualServiceWeights {
    fn weights(&self) -> Pin<Box<dyn Future<Output = Result<Weights, String>> + Send + '_>> {
        Box::pin(self.read())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn weights_per_subset() {
        let vs = json!({"spec": {"http": [
            {"name": "canary-header", "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
            {"name": "primary", "route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 70},
                {"destination": {"host": "reviews", "subset": "v3"}, "weight": 30},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0}
            ]}
        ]}});
        let w = route_weights(&vs, "primary").unwrap();
        assert_eq!(
            w,
            Weights::from([("v1".into(), 70.0), ("v2".into(), 0.0), ("v3".into(), 30.0)])
        );
        // A lone destination without weight carries everything; hosts name host-level splits.
        let w = route_weights(&vs, "canary-header").unwrap();
        assert_eq!(w, Weights::from([("v2".into(), 100.0)]));
        let host = json!({"spec": {"http": [{"name": "primary", "route": [
            {"destination": {"host": "reviews-stable"}, "weight": 90},
            {"destination": {"host": "reviews-canary"}, "weight": 10}]}]}});
        assert_eq!(
            route_weights(&host, "primary").unwrap(),
            Weights::from([
                ("reviews-canary".into(), 10.0),
                ("reviews-stable".into(), 90.0)
            ])
        );
    }

    #[test]
    fn malformed_routes_are_errors() {
        assert!(route_weights(&json!({}), "primary").is_err());
        assert!(
            route_weights(&json!({"spec": {"http": []}}), "primary")
                .unwrap_err()
                .contains("no http route named")
        );
        let bad = json!({"spec": {"http": [{"name": "primary", "route": [
            {"destination": {"subset": "v1"}, "weight": "lots"}, {"destination": {"subset": "v2"}}]}]}});
        assert!(
            route_weights(&bad, "primary")
                .unwrap_err()
                .contains("not a number")
        );
    }

    #[tokio::test]
    async fn reads_the_bundled_bookinfo_manifests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("reviews.yaml"),
            super::super::scenario::ISTIO_MANIFESTS,
        )
        .unwrap();
        let store = FileManifestStore::open(dir.path()).unwrap();
        let w = VirtualServiceWeights::new(store, "bookinfo", "reviews", "primary");
        assert_eq!(
            w.read().await.unwrap(),
            Weights::from([("v1".into(), 100.0), ("v2".into(), 0.0)])
        );
        let missing = VirtualServiceWeights::new(
            FileManifestStore::open(dir.path()).unwrap(),
            "bookinfo",
            "ratings",
            "primary",
        );
        assert!(missing.read().await.is_err());
    }
}
