//! The byte stream to the manager's tunnel port, through the API server's pod port-forward.
//!
//! The manager binds its tunnel port on the pod's loopback, so a port-forward (which the API
//! server authorises with the user's own credentials) is the only way in. One port-forward
//! WebSocket carries one TCP connection, which is all the session needs: it multiplexes its
//! streams on top.
//!
//! Reconnecting is the caller's policy; [`wait_for_ready_pod`] is the building block: it
//! waits, with a deadline, for a Ready manager pod to connect to again.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::time::Instant;

use super::client::{Cluster, describe as describe_error};
use super::manifests::{self, TUNNEL_PORT};
use super::rollout::{is_ready, listed, pod_problem};

/// The pod a stream leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    /// Tells a pod from a later one with the same name (StatefulSet-style reuse).
    pub uid: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Error)]
pub enum TransportError {
    #[error(
        "no Ready traffic manager pod in namespace {namespace}{detail}. Run `tether connect` to install it, or see `kubectl -n {namespace} get pods -l {selector}`."
    )]
    NoReadyManager {
        namespace: String,
        /// ": pod x is ..." when a manager pod exists but has a problem.
        detail: String,
        selector: String,
    },
    #[error(
        "your credentials may not port-forward to the manager pod {pod}: {message}. Ask a cluster admin for `create` on pods/portforward in that namespace."
    )]
    Forbidden { pod: PodRef, message: String },
    #[error("cannot port-forward to the manager pod {pod}: {reason}")]
    PortForward { pod: PodRef, reason: String },
    #[error("cannot list the manager pods in namespace {namespace}: {reason}")]
    List { namespace: String, reason: String },
    #[error(
        "no Ready traffic manager pod in namespace {namespace} within {} s (last seen: {status})",
        .waited.as_secs()
    )]
    WaitTimeout {
        namespace: String,
        waited: Duration,
        status: String,
    },
}

/// The tunnel byte stream to the manager. Dropping it ends the port-forward.
pub struct ManagerStream {
    io: DuplexStream,
    // Owns the WebSocket task; aborted on drop so nothing outlives the stream.
    forwarder: kube::api::Portforwarder,
}

impl Drop for ManagerStream {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

impl AsyncRead for ManagerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ManagerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Opens a port-forward to the tunnel port of the newest Ready manager pod in `namespace`.
pub async fn open(
    cluster: &Cluster,
    namespace: &str,
) -> Result<(ManagerStream, PodRef), TransportError> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&manifests::pod_selector()))
        .await
        .map_err(|e| TransportError::List {
            namespace: namespace.into(),
            reason: describe_error(&e),
        })?;
    let Some(pod) = choose(list.items.iter(), None) else {
        return Err(TransportError::NoReadyManager {
            namespace: namespace.into(),
            detail: describe(list.items.iter()).map_or_else(String::new, |d| format!(": {d}")),
            selector: manifests::pod_selector(),
        });
    };
    let pod = pod_ref(pod);
    let stream = forward(&pods, &pod).await?;
    Ok((stream, pod))
}

/// Opens a port-forward to the tunnel port of `pod`.
pub async fn forward(pods: &Api<Pod>, pod: &PodRef) -> Result<ManagerStream, TransportError> {
    tracing::debug!(%pod, port = TUNNEL_PORT, "opening a port-forward to the manager");
    let mut forwarder = pods
        .portforward(&pod.name, &[TUNNEL_PORT])
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => TransportError::Forbidden {
                pod: pod.clone(),
                message: s.message,
            },
            e => TransportError::PortForward {
                pod: pod.clone(),
                reason: describe_error(&e),
            },
        })?;
    // Both were created for TUNNEL_PORT by the call above and are taken only here.
    let io = forwarder
        .take_stream(TUNNEL_PORT)
        .expect("the port-forward has a stream for the port it was opened for");
    if let Some(error) = forwarder.take_error(TUNNEL_PORT) {
        let pod = pod.clone();
        // The server reports a dead port (e.g. nothing listens on it) on the error channel;
        // the stream then just ends, so this log is where the reason shows.
        tokio::spawn(async move {
            if let Some(message) = error.await {
                tracing::warn!(%pod, "the manager's tunnel port failed: {message}");
            }
        });
    }
    Ok(ManagerStream { io, forwarder })
}

/// Waits until a Ready, not terminating manager pod exists in `namespace` and returns it,
/// preferring one other than `previous` when there are several (after a rollout the old pod
/// goes away). With only `previous` Ready — the same pod again, e.g. after a network blip or
/// a container restart — that one is returned.
pub async fn wait_for_ready_pod(
    cluster: &Cluster,
    namespace: &str,
    previous: Option<&PodRef>,
    timeout: Duration,
) -> Result<PodRef, TransportError> {
    let deadline = Instant::now() + timeout;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
    let (store, writer) = reflector::store();
    let mut events = reflector::reflector(
        writer,
        watcher(
            pods,
            watcher::Config::default().labels(&manifests::pod_selector()),
        ),
    )
    .default_backoff()
    .boxed();
    let mut status = "watching the manager pods".to_string();
    loop {
        if let Some(pod) = ready_in(&store, previous).filter(|_| listed(&store)) {
            return Ok(pod);
        }
        match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) | Ok(None) => {
                return Err(TransportError::WaitTimeout {
                    namespace: namespace.into(),
                    waited: timeout,
                    status,
                });
            }
            Ok(Some(Err(e))) => status = format!("watch error: {e}"),
            Ok(Some(Ok(_))) => {
                let state = store.state();
                status =
                    describe(state.iter().map(|p| &**p)).unwrap_or_else(|| "no manager pod".into());
            }
        }
    }
}

fn ready_in(store: &Store<Pod>, previous: Option<&PodRef>) -> Option<PodRef> {
    let state = store.state();
    choose(state.iter().map(|p| &**p), previous).map(pod_ref)
}

/// The newest Ready pod, not `avoid` if another is Ready.
fn choose<'a>(pods: impl Iterator<Item = &'a Pod>, avoid: Option<&PodRef>) -> Option<&'a Pod> {
    let mut ready: Vec<&Pod> = pods.filter(|p| is_ready(p)).collect();
    ready.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.clone()));
    ready
        .iter()
        .find(|p| avoid.is_none_or(|a| p.metadata.uid.as_deref() != Some(a.uid.as_str())))
        .or(ready.first())
        .copied()
}

/// What is wrong with the manager pods, for messages.
fn describe<'a>(mut pods: impl Iterator<Item = &'a Pod>) -> Option<String> {
    pods.next().map(|p| {
        let name = p.name_any();
        if p.metadata.deletion_timestamp.is_some() {
            return format!("pod {name} is terminating");
        }
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        match pod_problem(p) {
            Some(problem) => format!("pod {name}: {}", problem.text),
            None => format!(
                "pod {name} is {} and not Ready",
                phase.unwrap_or_else(|| "Pending".into())
            ),
        }
    })
}

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn pod(name: &str, created: &str, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "tether", "uid": name, "creationTimestamp": created},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    #[test]
    fn the_newest_ready_pod_is_chosen_and_a_previous_one_avoided() {
        let pods = [
            pod("old", "2025-01-01T00:00:00Z", true),
            pod("new", "2025-01-02T00:00:00Z", true),
            pod("newest", "2025-01-03T00:00:00Z", false),
        ];
        assert_eq!(choose(pods.iter(), None).unwrap().name_any(), "new");
        let new = pod_ref(&pods[1]);
        assert_eq!(choose(pods.iter(), Some(&new)).unwrap().name_any(), "old");
        // The same pod again when it is the only Ready one.
        let old = pod_ref(&pods[0]);
        assert_eq!(
            choose(pods[..1].iter(), Some(&old)).unwrap().name_any(),
            "old"
        );
    }
}
