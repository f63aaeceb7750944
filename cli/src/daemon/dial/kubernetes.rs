//! Tunnels to a manager in a Kubernetes cluster: each dial is a pod port-forward through the
//! API server to the newest Ready manager pod (opened by [`crate::cluster::transport`]),
//! with the session token read from the manager's Secret.
//!
//! A port-forward can outlive its pod for a while (the API server keeps the WebSocket open
//! until the kubelet tears the stream down), so every stream also watches its pod: once the
//! pod is being deleted or is gone, the stream fails at once and the session loop redials,
//! which then waits for the replacement pod to be Ready.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::runtime::wait::await_condition;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::{DialError, Dialed, Dialer};
use crate::cluster::Cluster;
use crate::cluster::manifests::{self, TOKEN_SECRET};
use crate::cluster::transport::{self, ManagerStream, PodRef};

/// How long a redial waits for a Ready manager pod (a replaced pod takes a few seconds);
/// below the session loop's per-attempt limit so the wait's own error is what gets logged.
const READY_WAIT: Duration = Duration::from_secs(15);

pub struct KubeDialer {
    pub cluster: Cluster,
    /// The manager's namespace.
    pub namespace: String,
    /// The API server's address, which must never be routed into the tunnel.
    pub api_ip: Option<IpAddr>,
    /// The pod of the last stream, avoided on redial while another one is Ready.
    previous: Option<PodRef>,
}

impl KubeDialer {
    pub async fn new(cluster: Cluster, namespace: String) -> KubeDialer {
        let api_ip = api_server_ip(&cluster.server).await;
        KubeDialer {
            cluster,
            namespace,
            api_ip,
            previous: None,
        }
    }

    async fn token(&self) -> Result<String, DialError> {
        let secrets: Api<Secret> = Api::namespaced(self.cluster.client.clone(), &self.namespace);
        let secret = secrets
            .get(TOKEN_SECRET)
            .await
            .map_err(|source| DialError::TokenSecret {
                namespace: self.namespace.clone(),
                source,
            })?;
        manifests::token_of(&secret).ok_or_else(|| DialError::NoToken {
            namespace: self.namespace.clone(),
        })
    }
}

impl Dialer for KubeDialer {
    async fn dial(&mut self) -> Result<Dialed, DialError> {
        // Read on every dial: a reinstalled manager may have a new token.
        let token = self.token().await?;
        let (stream, pod) = match &self.previous {
            None => transport::open(&self.cluster, &self.namespace).await?,
            Some(previous) => {
                let pod = transport::wait_for_ready_pod(
                    &self.cluster,
                    &self.namespace,
                    Some(previous),
                    READY_WAIT,
                )
                .await?;
                (transport::forward(&self.cluster, &pod).await?, pod)
            }
        };
        tracing::info!(%pod, "port-forward to the manager open");
        self.previous = Some(pod.clone());
        Ok(Dialed {
            io: Box::new(PodStream::new(stream, &self.cluster, &pod)),
            token,
            manager: pod.to_string(),
            peer_ip: self.api_ip,
        })
    }
}

/// A port-forward stream that fails once its pod is deleted.
struct PodStream {
    inner: ManagerStream,
    gone: Pin<Box<WaitForCancellationFutureOwned>>,
    // Cancels the pod watch when the stream is dropped.
    _watch: tokio_util::sync::DropGuard,
}

impl PodStream {
    fn new(inner: ManagerStream, cluster: &Cluster, pod: &PodRef) -> PodStream {
        let gone = CancellationToken::new();
        let stop_watch = CancellationToken::new();
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &pod.namespace);
        let (name, uid) = (pod.name.clone(), pod.uid.clone());
        let (on_gone, stopped) = (gone.clone(), stop_watch.clone());
        let pod_name = pod.to_string();
        tokio::spawn(async move {
            let deleted = await_condition(pods, &name, move |p: Option<&Pod>| match p {
                None => true,
                Some(p) => {
                    p.metadata.deletion_timestamp.is_some()
                        || p.metadata.uid.as_deref() != Some(uid.as_str())
                }
            });
            tokio::select! {
                _ = stopped.cancelled() => {}
                result = deleted => match result {
                    Ok(_) => {
                        tracing::info!(pod = %pod_name, "the manager pod is going away");
                        on_gone.cancel();
                    }
                    // Without the watch, the keepalive still notices a dead tunnel.
                    Err(e) => tracing::warn!(pod = %pod_name, "cannot watch the manager pod: {e}"),
                },
            }
        });
        PodStream {
            inner,
            gone: Box::pin(gone.cancelled_owned()),
            _watch: stop_watch.drop_guard(),
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.gone.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the manager pod is being deleted",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for PodStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PodStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The API server's IP, from the kubeconfig's server URL (resolving a host name once).
async fn api_server_ip(server: &str) -> Option<IpAddr> {
    let uri: http::Uri = server.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    let port = uri.port_u16().unwrap_or(443);
    let mut addrs = tokio::net::lookup_host((host, port)).await.ok()?;
    addrs.next().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_api_servers_address_comes_from_its_url() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(
            api_server_ip("https://127.0.0.1:6443").await,
            ip("127.0.0.1")
        );
        assert_eq!(api_server_ip("https://[fd00::1]:6443").await, ip("fd00::1"));
        assert_eq!(api_server_ip("https://10.1.2.3").await, ip("10.1.2.3"));
        assert_eq!(api_server_ip("not a url").await, None);
    }
}
