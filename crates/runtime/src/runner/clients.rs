//! SkyWalking clients shared by the analysis runs of one daemon.
//!
//! Each client owns an HTTP connection pool, a TLS verifier with the system's root
//! certificates, and the OAP version it detected. Building one per analysis run cost about a
//! third of a MiB and a root-store load per canary, and one version probe per run; with the
//! cache, runs that connect with the same settings share one client (BENCHMARKS.md, scale).
//! A cache built with [`ClientCache::observed`] gives every client it builds the daemon's
//! request observer, so shared clients still feed the provider metrics of `/metrics`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::plan::RunPlan;
use crate::provider::skywalking::{
    Auth, ClientOptions, ProviderError, ReadCaFile as _, RequestObserver, SkyWalkingClient,
};

/// Clients by connection settings. Cloning shares the cache; a client lives as long as a run
/// holds it.
#[derive(Debug, Clone, Default)]
pub struct ClientCache {
    clients: Arc<Mutex<HashMap<String, Weak<SkyWalkingClient>>>>,
    /// Given to every client the cache builds (one observer per cache, so not in the key).
    observer: Option<Arc<dyn RequestObserver>>,
}

impl ClientCache {
    /// An empty cache whose clients report to nobody.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache whose clients report every request to `observer` (the daemon's
    /// `/metrics`), like [`super::connect_observed`].
    pub fn observed(observer: Arc<dyn RequestObserver>) -> Self {
        ClientCache {
            clients: Arc::default(),
            observer: Some(observer),
        }
    }

    /// One client per planned connection, reusing a live client with the same settings.
    pub fn connect(&self, plan: &RunPlan) -> Result<Vec<Arc<SkyWalkingClient>>, ProviderError> {
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, c| c.strong_count() > 0);
        plan.clients
            .iter()
            .map(|o| {
                // The CA file is read here, at the edge, so a rotated file makes a new client.
                let o = o.clone().read_ca_file()?;
                let key = settings_key(&o);
                if let Some(c) = map.get(&key).and_then(Weak::upgrade) {
                    return Ok(c);
                }
                let mut o = o;
                if let Some(obs) = &self.observer {
                    o.observer = Some(obs.clone());
                }
                let c = Arc::new(SkyWalkingClient::new(o)?);
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

    /// Counts the requests it hears about.
    #[derive(Debug, Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl RequestObserver for Count {
        fn observe(
            &self,
            _address: &str,
            _kind: &str,
            _elapsed: std::time::Duration,
            _error: Option<&ProviderError>,
        ) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn an_observed_cache_gives_its_clients_the_observer() {
        let count = Arc::new(Count::default());
        let cache = ClientCache::observed(count.clone());
        // Nothing listens on port 1: the request fails, and the failure is still observed.
        let mut o = ClientOptions::new("http://127.0.0.1:1");
        o.timeout = std::time::Duration::from_secs(2);
        let a = cache.connect(&plan(vec![o.clone()])).expect("connects");
        let b = cache.connect(&plan(vec![o])).expect("connects");
        assert!(Arc::ptr_eq(&a[0], &b[0]), "still shared");
        assert!(a[0].server_info().await.is_err());
        assert!(b[0].server_info().await.is_err());
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 2);

        let plain = ClientCache::new();
        let c = plain
            .connect(&plan(vec![ClientOptions::new("http://127.0.0.1:1")]))
            .expect("connects");
        assert!(c[0].server_info().await.is_err());
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// A self-signed CA certificate, PEM.
    fn ca_pem() -> String {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("certificate").pem()
    }

    #[test]
    fn the_ca_file_is_read_when_a_client_is_built() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ca.pem");
        let mut o = ClientOptions::new("https://oap:12800");
        o.ca_file = Some(path.clone());
        let cache = ClientCache::new();
        let connect = || cache.connect(&plan(vec![o.clone()]));
        let e = connect().expect_err("no such file").to_string();
        assert!(
            e.contains(&format!("cannot read CA file {}: ", path.display())),
            "{e}"
        );
        std::fs::write(&path, "not a certificate").expect("written");
        let e = connect().expect_err("no certificate").to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        assert!(cache.is_empty());

        std::fs::write(&path, ca_pem()).expect("written");
        let a = connect().expect("connects");
        assert!(Arc::ptr_eq(&a[0], &connect().expect("connects")[0]));
        // A rotated file is read by the next run: it gets a client that trusts the new CA.
        std::fs::write(&path, ca_pem()).expect("written");
        let b = connect().expect("connects");
        assert!(!Arc::ptr_eq(&a[0], &b[0]));
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
