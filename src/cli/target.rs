//! kubectl's way of naming objects: `NAME` with `-n/--namespace`, `NS/NAME`, the namespace of
//! the kubeconfig's current (or `--context`) context as the default, else `default`; and a
//! Kubernetes client built from `--kubeconfig` / `--context` the way kubectl builds one.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Namespace and cluster selection shared by every command that names objects.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TargetArgs {
    /// Namespace of the object (default: the kubeconfig context's namespace, else `default`).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Path to the kubeconfig file (default: KUBECONFIG, else ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

/// A namespace or name the command line cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// `NS/NAME` malformed, or naming another namespace than `-n`.
    #[error("{0}")]
    Name(String),
    /// The kubeconfig could not be read or lacks the context asked for.
    #[error("{0}")]
    Kubeconfig(String),
}

impl TargetArgs {
    /// The namespace objects without one live in: `-n`, else the context's, else `default`.
    pub fn namespace(&self) -> Result<String, TargetError> {
        if let Some(ns) = &self.namespace {
            return check_segment(ns, "namespace").map(|()| ns.clone());
        }
        let kc = self.read_kubeconfig()?;
        Ok(kc
            .as_ref()
            .map(|kc| context_namespace(kc, self.context.as_deref()))
            .transpose()?
            .flatten()
            .unwrap_or_else(|| "default".to_string()))
    }

    /// `NAME` (in [`Self::namespace`]) or `NS/NAME` → (namespace, name).
    pub fn resolve(&self, name: &str) -> Result<(String, String), TargetError> {
        match split_name(name)? {
            (Some(ns), n) => match &self.namespace {
                Some(flag) if flag != &ns => Err(TargetError::Name(format!(
                    "{name:?} names namespace {ns:?} but -n says {flag:?}"
                ))),
                _ => Ok((ns, n)),
            },
            (None, n) => Ok((self.namespace()?, n)),
        }
    }

    /// The kubeconfig kubectl would read: `--kubeconfig`, else KUBECONFIG, else
    /// ~/.kube/config when it exists; `None` when there is none (in-cluster, or file mode).
    fn read_kubeconfig(&self) -> Result<Option<Kubeconfig>, TargetError> {
        let unreadable = |what: &str, e: &dyn std::fmt::Display| {
            TargetError::Kubeconfig(format!("cannot read the kubeconfig {what}: {e}"))
        };
        if let Some(path) = &self.kubeconfig {
            return Kubeconfig::read_from(path)
                .map(Some)
                .map_err(|e| unreadable(&path.display().to_string(), &e));
        }
        if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) {
            return Kubeconfig::read()
                .map(Some)
                .map_err(|e| unreadable("(KUBECONFIG)", &e));
        }
        let home = std::env::var_os("HOME").map(PathBuf::from);
        match home.map(|h| h.join(".kube").join("config")) {
            Some(p) if p.is_file() => Kubeconfig::read_from(&p)
                .map(Some)
                .map_err(|e| unreadable(&p.display().to_string(), &e)),
            _ if self.context.is_some() => Err(TargetError::Kubeconfig(
                "--context given but there is no kubeconfig (KUBECONFIG, ~/.kube/config or --kubeconfig)"
                    .into(),
            )),
            _ => Ok(None),
        }
    }

    /// A client like kubectl's: the kubeconfig (with `--context`), else the in-cluster
    /// service account.
    pub async fn client(&self) -> Result<kube::Client, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = match self.read_kubeconfig().map_err(|e| e.to_string())? {
            Some(kc) => {
                let opts = KubeConfigOptions {
                    context: self.context.clone(),
                    ..Default::default()
                };
                kube::Config::from_custom_kubeconfig(kc, &opts)
                    .await
                    .map_err(|e| format!("cannot configure the Kubernetes client: {e}"))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| format!("cannot configure the Kubernetes client: {e}"))?,
        };
        kube::Client::try_from(config)
            .map_err(|e| format!("cannot configure the Kubernetes client: {e}"))
    }

    /// Whether `--context` or `--kubeconfig` was given (they only mean something with --kube
    /// or for the default namespace).
    pub fn names_cluster(&self) -> bool {
        self.context.is_some() || self.kubeconfig.is_some()
    }

    /// The kubeconfig path given, for messages.
    pub fn kubeconfig_path(&self) -> Option<&Path> {
        self.kubeconfig.as_deref()
    }
}

/// The namespace of `context` (or the current context) in `kc`; an unknown named context is an
/// error, a context without namespace is `None`.
pub fn context_namespace(
    kc: &Kubeconfig,
    context: Option<&str>,
) -> Result<Option<String>, TargetError> {
    let Some(name) = context.or(kc.current_context.as_deref()) else {
        return Ok(None);
    };
    match kc.contexts.iter().find(|c| c.name == name) {
        Some(c) => Ok(c
            .context
            .as_ref()
            .and_then(|c| c.namespace.clone())
            .filter(|ns| !ns.is_empty())),
        None if context.is_some() => Err(TargetError::Kubeconfig(format!(
            "context {name:?} is not in the kubeconfig"
        ))),
        None => Ok(None),
    }
}

/// `NS/NAME` → (Some(NS), NAME); `NAME` → (None, NAME); anything else is an error.
pub fn split_name(s: &str) -> Result<(Option<String>, String), TargetError> {
    let bad = || TargetError::Name(format!("{s:?}: expected NAME or NAMESPACE/NAME"));
    match s.split_once('/') {
        Some((ns, n)) => {
            check_segment(ns, "namespace").map_err(|_| bad())?;
            check_segment(n, "name").map_err(|_| bad())?;
            Ok((Some(ns.to_string()), n.to_string()))
        }
        None => {
            check_segment(s, "name").map_err(|_| bad())?;
            Ok((None, s.to_string()))
        }
    }
}

/// A Kubernetes object name or namespace: non-empty, at most 253 characters, no `/`, no
/// whitespace or control characters (they would change the API path).
fn check_segment(s: &str, what: &str) -> Result<(), TargetError> {
    if s.is_empty()
        || s.len() > 253
        || s.contains('/')
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Err(TargetError::Name(format!("{s:?} is not a valid {what}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(current: &str) -> Kubeconfig {
        Kubeconfig::from_yaml(&format!(
            r#"apiVersion: v1
kind: Config
current-context: {current}
contexts:
- name: dev
  context: {{cluster: c, user: u, namespace: bookinfo}}
- name: bare
  context: {{cluster: c, user: u}}
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:1"}}}}]
users: [{{name: u, user: {{}}}}]
"#
        ))
        .unwrap()
    }

    #[test]
    fn names_split_into_namespace_and_name() {
        assert_eq!(
            split_name("bookinfo/reviews").unwrap(),
            (Some("bookinfo".into()), "reviews".into())
        );
        assert_eq!(split_name("reviews").unwrap(), (None, "reviews".into()));
        for bad in ["", "/x", "x/", "a/b/c", "a b", "x?y", &"x".repeat(254)] {
            assert!(split_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_context_namespace_is_the_default() {
        let kc = kubeconfig("dev");
        assert_eq!(
            context_namespace(&kc, None).unwrap().as_deref(),
            Some("bookinfo")
        );
        assert_eq!(context_namespace(&kc, Some("bare")).unwrap(), None);
        assert!(context_namespace(&kc, Some("nope")).is_err());
        assert_eq!(context_namespace(&kubeconfig("gone"), None).unwrap(), None);
    }

    #[test]
    fn dash_n_and_a_qualified_name_must_agree() {
        let t = TargetArgs {
            namespace: Some("prod".into()),
            ..Default::default()
        };
        assert_eq!(
            t.resolve("reviews").unwrap(),
            ("prod".into(), "reviews".into())
        );
        assert_eq!(
            t.resolve("prod/reviews").unwrap(),
            ("prod".into(), "reviews".into())
        );
        assert!(t.resolve("dev/reviews").is_err());
    }
}
