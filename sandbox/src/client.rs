//! kube-rs clients of the upstream API server, one per identity the node acts as.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the kubeconfig {path}: {detail}")]
    Kubeconfig { path: String, detail: String },
    #[error("cannot make a client from {path}: {detail}")]
    Client { path: String, detail: String },
}

/// A client from a kubeconfig file of [`super::certs::Certs::kubeconfig`].
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
