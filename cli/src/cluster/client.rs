//! The connection to the user's cluster, found the way kubectl finds it.
//!
//! The kubeconfig comes from `--kubeconfig`, else from `KUBECONFIG` (several files merged by
//! kubectl's rules: the first file to set a value wins), else `~/.kube/config`. The context is
//! `--context` or the kubeconfig's current context. Credentials are whatever kube-rs supports
//! for that user: tokens, client certificates, exec plugins (EKS, GKE, ...).
//!
//! [`connect`] asks the server for `/version` with a short deadline, so that a wrong context or
//! a cluster that is down fails at once with the context and server named, not later in the
//! middle of an install.

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};
use thiserror::Error;

/// How long the API server has to answer `/version` before it counts as unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which cluster to use; every field left `None` means "what kubectl would use".
#[derive(Debug, Clone, Default)]
pub struct KubeOptions {
    /// One kubeconfig file, instead of `KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig, instead of its current context.
    pub context: Option<String>,
    /// The namespace for namespaced commands, instead of the context's.
    pub namespace: Option<String>,
    /// Run the kubeconfig's credential plugin as another user (the daemon, started through
    /// sudo, runs it as the user who ran `tether connect`).
    pub exec_as: Option<super::exec_as::ExecAs>,
}

/// The cluster a command's flags name, with credential plugins run as this process's user.
impl From<&crate::config::KubeTarget> for KubeOptions {
    fn from(target: &crate::config::KubeTarget) -> Self {
        KubeOptions {
            kubeconfig: target.kubeconfig.clone(),
            context: target.context.clone(),
            namespace: target.namespace.clone(),
            exec_as: None,
        }
    }
}

/// A cluster whose API server answered.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    /// The kubeconfig context in use.
    pub context: String,
    /// The API server's URL, as the kubeconfig names it.
    pub server: String,
    /// `--namespace`, else the context's namespace, else `default`.
    pub namespace: String,
    /// The server's version, as `/version` reports it (e.g. `v1.33.1`).
    pub server_version: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("context", &self.context)
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .field("server_version", &self.server_version)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error(
        "cannot read the kubeconfig: {0}. Point KUBECONFIG or --kubeconfig at a kubeconfig file (the one kubectl uses)."
    )]
    Kubeconfig(#[source] KubeconfigError),
    #[error(
        "the kubeconfig has no current context. Pick one with --context, or set it with `kubectl config use-context NAME`."
    )]
    NoCurrentContext,
    #[error(
        "the kubeconfig has no context {context:?} (it has: {available}). Check --context, or list them with `kubectl config get-contexts`."
    )]
    NoSuchContext { context: String, available: String },
    #[error(
        "the kubeconfig's context {context:?} cannot be used: {source}. Check it with `kubectl config view --minify --context {context}`."
    )]
    BadContext {
        context: String,
        #[source]
        source: KubeconfigError,
    },
    #[error(
        "cannot set up a client for context {context:?}: {reason}. Check its certificates with `kubectl config view --minify --raw --context {context}`."
    )]
    ClientSetup { context: String, reason: String },
    #[error(
        "cannot reach the cluster of context {context:?} at {server}: {reason}. Check that the cluster runs and that this machine can reach it (VPN, proxy), e.g. with `kubectl --context {context} version`."
    )]
    Unreachable {
        context: String,
        server: String,
        reason: String,
    },
    #[error(
        "the TLS connection to the cluster of context {context:?} at {server} failed: {reason}. The kubeconfig's certificate authority does not match the server; refresh the kubeconfig from your cluster provider."
    )]
    Tls {
        context: String,
        server: String,
        reason: String,
    },
    #[error(
        "the cluster of context {context:?} at {server} rejected the credentials ({code} {reason}). Log in again or refresh the kubeconfig's credentials (e.g. `aws eks update-kubeconfig`, `gcloud container clusters get-credentials`)."
    )]
    Unauthorized {
        context: String,
        server: String,
        code: u16,
        reason: String,
    },
    #[error(
        "cannot get credentials for context {context:?}: {reason}. The kubeconfig's credential plugin or token failed; run `kubectl --context {context} version` to see why."
    )]
    Credentials { context: String, reason: String },
    #[error(
        "the API server of context {context:?} at {server} answered /version with an error: {reason}"
    )]
    Server {
        context: String,
        server: String,
        reason: String,
    },
}

/// Loads the kubeconfig, builds a client for the chosen context and checks that the server
/// answers within [`PROBE_TIMEOUT`].
pub async fn connect(opts: &KubeOptions) -> Result<Cluster, ClusterError> {
    let kubeconfig = match &opts.kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    }
    .map_err(ClusterError::Kubeconfig)?;
    let (context, server) = pick_context(&kubeconfig, opts.context.as_deref())?;
    let options = KubeConfigOptions {
        context: Some(context.clone()),
        ..Default::default()
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|source| ClusterError::BadContext {
            context: context.clone(),
            source,
        })?;
    config.connect_timeout = Some(PROBE_TIMEOUT);
    let plugin = config
        .auth_info
        .exec
        .as_ref()
        .and_then(|e| e.command.clone());
    if let (Some(exec_as), Some(exec)) = (&opts.exec_as, config.auth_info.exec.as_mut()) {
        super::exec_as::wrap(exec, &exec_as.invoker, &exec_as.helper);
    }
    let namespace = opts
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    // kube-rs runs a credential plugin as the client is built.
    let client =
        build_client(config).map_err(|e| match credential_error(&e, plugin.as_deref()) {
            Some(reason) => ClusterError::Credentials {
                context: context.clone(),
                reason,
            },
            None => ClusterError::ClientSetup {
                context: context.clone(),
                reason: chain(&e),
            },
        })?;
    tracing::debug!(%context, %server, "probing the API server");
    let version = match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
        Err(_) => {
            return Err(ClusterError::Unreachable {
                context,
                server,
                reason: format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
            });
        }
        Ok(Err(e)) => return Err(classify(e, context, server, plugin.as_deref())),
        Ok(Ok(info)) => info,
    };
    Ok(Cluster {
        client,
        context,
        server,
        namespace,
        server_version: version.git_version,
    })
}

/// `--namespace`, else the context's namespace, else `default`, read from the kubeconfig
/// alone (for commands that print and need no API server).
pub fn namespace_of(opts: &KubeOptions) -> Result<String, ClusterError> {
    if let Some(ns) = &opts.namespace {
        return Ok(ns.clone());
    }
    let kubeconfig = match &opts.kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    }
    .map_err(ClusterError::Kubeconfig)?;
    let (context, _) = pick_context(&kubeconfig, opts.context.as_deref())?;
    Ok(kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref()?.namespace.clone())
        .unwrap_or_else(|| "default".to_owned()))
}

/// The context to use (`wanted`, else the current one) and its server's URL, for messages
/// (kube-rs resolves the same cluster itself).
fn pick_context(
    kubeconfig: &Kubeconfig,
    wanted: Option<&str>,
) -> Result<(String, String), ClusterError> {
    let context = wanted
        .map(str::to_owned)
        .or_else(|| kubeconfig.current_context.clone())
        .filter(|c| !c.is_empty())
        .ok_or(ClusterError::NoCurrentContext)?;
    let Some(named) = kubeconfig.contexts.iter().find(|c| c.name == context) else {
        let available: Vec<&str> = kubeconfig
            .contexts
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        return Err(ClusterError::NoSuchContext {
            context,
            available: if available.is_empty() {
                "none".into()
            } else {
                available.join(", ")
            },
        });
    };
    let server = named
        .context
        .as_ref()
        .and_then(|c| kubeconfig.clusters.iter().find(|n| n.name == c.cluster))
        .and_then(|n| n.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .unwrap_or_else(|| "(no server in the kubeconfig)".into());
    Ok((context, server))
}

/// The API client: kube-rs's default stack (timeouts, retries of 429/503/504, credentials,
/// extra headers), built here so that its TCP connections have Nagle's algorithm off.
///
/// kube-rs's own client leaves Nagle on. The tunnel's port-forward writes many small frames
/// (yamux headers, window updates, single requests); with Nagle on, each one sent while an
/// earlier one is unacknowledged waits for the peer's delayed ACK, up to 40 ms per round
/// trip. Go turns Nagle off on every socket, so kubectl and the API server already run
/// without it. One client serves everything, so a credential plugin runs once, not once per
/// client.
///
/// With a proxy in the kubeconfig, kube-rs's own client, which knows how to go through it.
fn build_client(config: Config) -> Result<Client, kube::Error> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use kube::client::ConfigExt;
    use kube::client::retry::RetryPolicy;
    use tower::ServiceBuilder;
    use tower::retry::RetryLayer;

    if config.proxy_url.is_some() {
        return Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http_client =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok(Client::new(service, config.default_namespace))
}

/// Sorts a failed `/version` request into what the user has to fix.
fn classify(
    error: kube::Error,
    context: String,
    server: String,
    plugin: Option<&str>,
) -> ClusterError {
    match &error {
        kube::Error::Api(status) if matches!(status.code, 401 | 403) => {
            ClusterError::Unauthorized {
                context,
                server,
                code: status.code,
                reason: if status.message.is_empty() {
                    status.reason.clone()
                } else {
                    status.message.clone()
                },
            }
        }
        kube::Error::Api(status) => ClusterError::Server {
            context,
            server,
            reason: format!("{} {}", status.code, status.message),
        },
        kube::Error::Auth(_) => ClusterError::Credentials {
            context,
            reason: credential_error(&error, plugin).unwrap_or_else(|| chain(&error)),
        },
        _ => {
            let reason = chain(&error);
            if is_tls_failure(&error) {
                ClusterError::Tls {
                    context,
                    server,
                    reason,
                }
            } else {
                ClusterError::Unreachable {
                    context,
                    server,
                    reason,
                }
            }
        }
    }
}

/// Whether a failed request failed in the TLS handshake: a rustls error somewhere in the
/// chain of causes, itself or inside the io::Error hyper-rustls wraps it in.
fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<rustls::Error>() {
            return true;
        }
        // An io::Error's `source` skips the error it wraps; look at that one too.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && is_tls_failure(inner)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// A failed credential in words, or None when the error is not about credentials. kube-rs's
/// own text quotes the plugin's whole command line with its environment (tokens, and the
/// user's environment under `tether exec-as`), which must not reach a terminal or a log.
fn credential_error(error: &kube::Error, plugin: Option<&str>) -> Option<String> {
    use kube::client::AuthError;
    let kube::Error::Auth(auth) = error else {
        return None;
    };
    let plugin = plugin.unwrap_or("the credential plugin");
    Some(match auth {
        AuthError::AuthExecRun { out, .. } => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stderr = stderr.trim();
            // The end of a long message says what went wrong.
            let start = stderr.char_indices().rev().nth(499).map_or(0, |(i, _)| i);
            if stderr.is_empty() {
                format!("`{plugin}` failed ({})", out.status)
            } else {
                format!("`{plugin}` failed ({}): {}", out.status, &stderr[start..])
            }
        }
        AuthError::AuthExecStart(e) => format!("`{plugin}` could not be started: {e}"),
        other => chain(other),
    })
}

/// A kube error in words: an API error as its code and message (kube's own text adds a
/// debug dump of the Status), anything else as its chain of causes.
pub(crate) fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        other => chain(other),
    }
}

/// The innermost causes of an error, which name the real problem ("connection refused")
/// where the outer layers only say which layer failed.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        // hyper and tower repeat their source's text in their own; keep each cause once.
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod unit {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("client error: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn tls_failures_are_told_apart_by_type_not_text() {
        let bad_cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = Outer(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            bad_cert,
        ));
        assert!(is_tls_failure(&wrapped));
        // Words alone do not make a TLS failure.
        let refused = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "tls handshake certificate",
        ));
        assert!(!is_tls_failure(&refused));
    }

    #[test]
    fn a_missing_context_lists_the_ones_there_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: a\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\n- name: b\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: u\n  user: {token: t}\n",
        )
        .unwrap();
        let opts = KubeOptions {
            kubeconfig: Some(path),
            context: Some("nope".into()),
            ..KubeOptions::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(connect(&opts)).unwrap_err();
        assert!(
            matches!(&err, ClusterError::NoSuchContext { available, .. } if available == "a, b"),
            "{err}"
        );
    }
}
