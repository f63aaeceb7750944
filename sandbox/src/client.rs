//! kube-rs clients of the API server, one per identity the sandbox acts as (the node's,
//! and upstream also the admin's).

use std::path::Path;

use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the kubeconfig {path}: {detail}")]
    Kubeconfig { path: String, detail: String },
    #[error("cannot make a client from {path}: {detail}")]
    Client { path: String, detail: String },
}

/// A client from a kubeconfig file (upstream: [`crate::upstream::certs::Certs::kubeconfig`]).
pub async fn from_kubeconfig(path: &Path) -> Result<kube::Client, ClientError> {
    let shown = path.display().to_string();
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| ClientError::Kubeconfig {
        path: shown.clone(),
        detail: e.to_string(),
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| ClientError::Kubeconfig {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
    kube::Client::try_from(config).map_err(|e| ClientError::Client {
        path: shown,
        detail: e.to_string(),
    })
}

/// A client of `server` (an `https://` URL) trusting the CA `ca_pem`, with a bearer token.
pub async fn with_token(
    server: &str,
    ca_pem: &str,
    token: &str,
) -> Result<kube::Client, ClientError> {
    let shown = format!("the client of {server}");
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: node\n  user:\n    token: {token}\ncontexts:\n- name: node\n  context:\n    cluster: sandbox\n    user: node\ncurrent-context: node\n"
    );
    let kubeconfig = Kubeconfig::from_yaml(&yaml).map_err(|e| ClientError::Kubeconfig {
        path: shown.clone(),
        detail: e.to_string(),
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| ClientError::Kubeconfig {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
    kube::Client::try_from(config).map_err(|e| ClientError::Client {
        path: shown,
        detail: e.to_string(),
    })
}
