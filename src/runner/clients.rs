//! SkyWalking clients shared by the analysis runs of one daemon.
//!
//! Each client owns an HTTP connection pool, a TLS verifier with the system's root
//! certificates, and the OAP version it detected. Building one per analysis run cost about a
//! third of a MiB and a root-store load per canary, and one version probe per run; with the
//! cache, runs that connect with the same settings share one client (BENCHMARKS.md, scale).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::plan::RunPlan;
use crate::provider::skywalking::{Auth, ClientOptions, ProviderError, SkyWalkingClient};

/// Clients by connection settings. Cloning shares the cache; a client lives as long as a run
/// holds it.
#[derive(Debug, Clone, Default)]
pub struct ClientCache {
    clients: Arc<Mutex<HashMap<String, Weak<SkyWalkingClient>>>>,
}

impl ClientCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// One client per planned connection, reusing a live client with the same settings.
    pub fn connect(&self, plan: &RunPlan) -> Result<Vec<Arc<SkyWalkingClient>>, ProviderError> {
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, c| c.strong_count() > 0);
        plan.clients
            .iter()
            .map(|o| {
                let key = settings_key(o);
                if let Some(c) = map.get(&key).and_then(Weak::upgrade) {
                    return Ok(c);
                }
                let c = Arc::new(SkyWalkingClient::new(o.clone())?);
                map.insert(key, Arc::downgrade(&c));
                Ok(c)
            })
            .collect()
    }

    /// Live clients (for tests and diagnostics).
    pub fn len(&self) -> usize {
        let map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|c| c.strong_count() > 0).count()
    }

    /// True when no client is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every setting that changes how a client talks to its OAP.
fn settings_key(o: &ClientOptions) -> String {
    let auth = match &o.auth {
        None => String::new(),
        Some(Auth::Basic { user, pass }) => format!("basic:{user}:{pass}"),
        Some(Auth::Bearer(t)) => format!("bearer:{t}"),
    };
    format!(
        "{}|{:?}|{auth}|{:?}|{:?}|{:?}|{:?}",
        o.address, o.timeout, o.headers, o.ca_pem, o.timezone, o.version_override
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::RunSpec;

    fn plan(opts: Vec<ClientOptions>) -> RunPlan {
        RunPlan {
            name: "t".into(),
            spec: RunSpec::default(),
            metrics: Vec::new(),
            clients: opts,
            args: Default::default(),
        }
    }

    #[test]
    fn same_settings_share_a_client_while_a_run_holds_it() {
        let cache = ClientCache::new();
        let a = ClientOptions::new("http://oap:12800");
        let a1 = cache.connect(&plan(vec![a.clone()])).expect("connects");
        let a2 = cache.connect(&plan(vec![a.clone()])).expect("connects");
        assert!(Arc::ptr_eq(&a1[0], &a2[0]));
        assert_eq!(cache.len(), 1);
        drop((a1, a2));
        assert!(cache.is_empty(), "released with the last run");
    }

    #[test]
    fn different_settings_get_their_own_client() {
        let cache = ClientCache::new();
        let a = ClientOptions::new("http://oap:12800");
        let mut b = a.clone();
        b.auth = Some(Auth::Bearer("t".into()));
        let mut c = a.clone();
        c.timeout = std::time::Duration::from_secs(2);
        let other = ClientOptions::new("http://oap-2:12800");
        let got = cache
            .connect(&plan(vec![a, b, c, other]))
            .expect("connects");
        for i in 0..got.len() {
            for j in (i + 1)..got.len() {
                assert!(!Arc::ptr_eq(&got[i], &got[j]), "{i} and {j}");
            }
        }
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn invalid_settings_are_refused() {
        let cache = ClientCache::new();
        assert!(
            cache
                .connect(&plan(vec![ClientOptions::new("oap:12800")]))
                .is_err()
        );
        assert!(cache.is_empty());
    }
}
