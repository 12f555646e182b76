//! Where the canary tasks' drift notices come from ([`DriftSignals`]): in cluster mode a watch
//! of the VirtualServices (`skycanary-kube`'s `watch`), in file mode a poll of the manifests directory every
//! [`MANIFEST_POLL`]. Both only say which VirtualService may have changed; each canary task
//! re-reads its own and decides ([`crate::traffic::drift::detect_drift`]), so a late or
//! repeated notice costs a read, never a wrong verdict.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use kube::Client;
use skycanary_kube::watch::virtual_service_changes;

use crate::traffic::drift::DriftSignals;
use crate::traffic::file::FileManifestStore;
use crate::traffic::kube::IstioApiVersion;
use crate::traffic::store::{ObjectKey, ObjectKind};

/// How often file mode looks for changed manifests: a foreign edit is seen within this (plus
/// one canary task's re-read). One poll lists the directory and stats its files; only changed
/// files are read again.
pub const MANIFEST_POLL: Duration = Duration::from_millis(500);

/// The keys whose version differs between two polls (new and removed ones included), in
/// key order.
pub fn changed_keys(
    before: &BTreeMap<ObjectKey, String>,
    now: &BTreeMap<ObjectKey, String>,
) -> Vec<ObjectKey> {
    let mut out: Vec<ObjectKey> = now
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(before.keys().filter(|k| !now.contains_key(*k)).cloned());
    out.sort();
    out
}

/// The VirtualServices of one poll and their change tokens; a key defined twice gets its tokens
/// joined, so a change of either shows.
fn virtual_service_tokens(store: &FileManifestStore) -> Option<BTreeMap<ObjectKey, String>> {
    let versions = match store.change_tokens() {
        Ok(v) => v,
        Err(e) => {
            // The directory itself is unreadable: nothing to compare; the next poll retries.
            tracing::debug!("drift poll: {e}");
            return None;
        }
    };
    let mut out: BTreeMap<ObjectKey, String> = BTreeMap::new();
    for (key, version) in versions {
        if key.kind != ObjectKind::VirtualService {
            continue;
        }
        out.entry(key)
            .and_modify(|v| {
                v.push(',');
                v.push_str(&version);
            })
            .or_insert(version);
    }
    Some(out)
}

/// File mode: polls `store` every `every` and signals each VirtualService whose document
/// changed. The first poll signals every one (a change made before it was not seen by
/// anyone). Runs until the task is aborted.
pub async fn poll_manifests(store: FileManifestStore, signals: DriftSignals, every: Duration) {
    let mut known = BTreeMap::new();
    loop {
        let s = store.clone();
        if let Ok(Some(now)) = tokio::task::spawn_blocking(move || virtual_service_tokens(&s)).await
        {
            for key in changed_keys(&known, &now) {
                signals.changed(key);
            }
            known = now;
        }
        tokio::time::sleep(every).await;
    }
}

/// Cluster mode: signals every VirtualService of `namespace` (None: all namespaces) that is
/// added, modified or deleted, and every one listed by each (re)list
/// ([`skycanary_kube::watch::virtual_service_changes`]: resumed, relisted on 410 Expired,
/// backed off on errors). Runs until the task is aborted.
pub async fn watch_virtual_services(
    client: Client,
    version: IstioApiVersion,
    namespace: Option<String>,
    signals: DriftSignals,
) {
    let changes = virtual_service_changes(client, version, namespace);
    let mut changes = std::pin::pin!(changes);
    while let Some(key) = changes.next().await {
        signals.changed(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(pairs: &[(&str, &str)]) -> BTreeMap<ObjectKey, String> {
        pairs
            .iter()
            .map(|(n, v)| (ObjectKey::virtual_service("ns", *n), v.to_string()))
            .collect()
    }

    fn names(keys: &[ObjectKey]) -> Vec<&str> {
        keys.iter().map(|k| k.name.as_str()).collect()
    }

    #[test]
    fn changed_keys_are_the_new_the_modified_and_the_removed_ones() {
        let before = versions(&[("a", "1"), ("b", "1"), ("c", "1")]);
        let now = versions(&[("a", "1"), ("b", "2"), ("d", "1")]);
        assert_eq!(names(&changed_keys(&before, &now)), ["b", "c", "d"]);
        assert!(changed_keys(&now, &now).is_empty());
        // The first poll: everything is new.
        assert_eq!(
            names(&changed_keys(&BTreeMap::new(), &now)),
            ["a", "b", "d"]
        );
    }

    #[test]
    fn a_rewrite_back_to_the_text_of_the_last_poll_is_a_change() {
        // Our correction, then someone's revert to the very text the last poll saw, both
        // between two polls: the content is as before, the file is not.
        let dir = tempfile::tempdir().unwrap();
        let doc = |w: i64| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: a, namespace: ns}}\nspec:\n  http:\n  - route:\n    - destination: {{host: a}}\n      weight: {w}\n"
            )
        };
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, doc(100)).unwrap();
        let store = FileManifestStore::open(dir.path()).unwrap();
        let before = virtual_service_tokens(&store).unwrap();
        assert!(changed_keys(&before, &virtual_service_tokens(&store).unwrap()).is_empty());
        std::fs::write(&path, doc(90)).unwrap();
        // Past the file system's timestamp granularity (a few ms), not a timing assertion.
        std::thread::sleep(Duration::from_millis(30));
        std::fs::write(&path, doc(100)).unwrap();
        let after = virtual_service_tokens(&store).unwrap();
        assert_eq!(names(&changed_keys(&before, &after)), ["a"]);
    }

    #[tokio::test]
    async fn a_poll_signals_the_changed_virtual_service_only() {
        let dir = tempfile::tempdir().unwrap();
        let doc = |name: &str, w: i64| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  http:\n  - route:\n    - destination: {{host: a}}\n      weight: {w}\n"
            )
        };
        std::fs::write(dir.path().join("a.yaml"), doc("a", 100)).unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            format!("{}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: b, namespace: ns}}\nspec: {{host: b}}\n", doc("b", 100)),
        )
        .unwrap();
        let store = FileManifestStore::open(dir.path()).unwrap();
        let signals = DriftSignals::polled();
        let mut rx = signals.subscribe();
        let poller = tokio::spawn(poll_manifests(
            store,
            signals.clone(),
            Duration::from_millis(20),
        ));
        // Bounded: a notice that never comes fails the test instead of hanging it.
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("a notice")
                .unwrap()
        };
        let mut first = vec![next().await, next().await];
        first.sort();
        assert_eq!(names(&first), ["a", "b"], "VirtualServices only, each once");
        std::fs::write(dir.path().join("b.yaml"), doc("b", 90)).unwrap();
        assert_eq!(next().await, ObjectKey::virtual_service("ns", "b"));
        // Written back to the text of the first poll (someone reverts our write to what it
        // was): a change all the same.
        std::fs::write(dir.path().join("b.yaml"), doc("b", 100)).unwrap();
        assert_eq!(next().await, ObjectKey::virtual_service("ns", "b"));
        poller.abort();
    }
}
