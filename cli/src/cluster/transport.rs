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

use bytes::Bytes;
use futures::{SinkExt, StreamExt, ready};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

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

/// The tunnel byte stream to the manager: the port-forward's WebSocket, read and written
/// here without an intermediate task (kube-rs's `Portforwarder` copies every chunk through a
/// pipe and a task of its own, which costs throughput and latency on a busy tunnel).
///
/// The `v4.channel.k8s.io` framing for one port: every binary message starts with a channel
/// byte, 0 for data and 1 for errors, and the first message on each channel from the server
/// starts with the port number (two bytes, little-endian). Dropping the stream closes the
/// connection.
pub struct ManagerStream {
    ws: WebSocketStream<TokioIo<Upgraded>>,
    pod: PodRef,
    port: u16,
    /// Data received and not yet read.
    pending: Bytes,
    /// Whether the port prefix of the data and error channels has been seen.
    data_started: bool,
    error_started: bool,
    /// The server closed the WebSocket: reads return end of stream from now on.
    closed: bool,
}

/// Channels of the first (only) port of the port-forward.
const DATA_CHANNEL: u8 = 0;
const ERROR_CHANNEL: u8 = 1;
/// `v5.channel.k8s.io` (which kube-rs also offers) adds this channel: a message on it closes
/// the channel its payload names.
const CLOSE_CHANNEL: u8 = 255;
/// The largest chunk sent in one WebSocket message; a bigger write is taken in parts.
const MAX_MESSAGE: usize = 256 * 1024;

impl ManagerStream {
    fn new(ws: WebSocketStream<TokioIo<Upgraded>>, pod: PodRef, port: u16) -> ManagerStream {
        ManagerStream {
            ws,
            pod,
            port,
            pending: Bytes::new(),
            data_started: false,
            error_started: false,
            closed: false,
        }
    }

    /// What a message brings for the reader: data, nothing (a port prefix, a control
    /// message), or the error the server reported for the port.
    fn receive(&mut self, message: Message) -> io::Result<Bytes> {
        let mut payload = match message {
            Message::Binary(payload) => payload,
            Message::Close(_) => {
                self.closed = true;
                return Ok(Bytes::new());
            }
            // Pings are answered by tungstenite; text is not part of the protocol.
            _ => return Ok(Bytes::new()),
        };
        if payload.is_empty() {
            return Ok(Bytes::new());
        }
        let channel = payload.split_to(1)[0];
        if channel == CLOSE_CHANNEL {
            if payload.first() == Some(&DATA_CHANNEL) {
                self.closed = true;
            }
            return Ok(Bytes::new());
        }
        let started = match channel {
            DATA_CHANNEL => &mut self.data_started,
            ERROR_CHANNEL => &mut self.error_started,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the port-forward used channel {other}, which was not asked for"),
                ));
            }
        };
        if !*started {
            if payload.len() < 2 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the port-forward's first message on a channel has no port number",
                ));
            }
            let port = u16::from_le_bytes([payload[0], payload[1]]);
            if port != self.port {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the port-forward answered for port {port}, not {}",
                        self.port
                    ),
                ));
            }
            *started = true;
            payload = payload.slice(2..);
        }
        if channel == ERROR_CHANNEL && !payload.is_empty() {
            // The server reports a dead port (e.g. nothing listens on it) here.
            let message = String::from_utf8_lossy(&payload).trim().to_owned();
            tracing::warn!(pod = %self.pod, port = self.port, "the port-forward failed: {message}");
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, message));
        }
        Ok(if channel == DATA_CHANNEL {
            payload
        } else {
            Bytes::new()
        })
    }
}

fn ws_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the port-forward is closed")
        }
        other => io::Error::other(other),
    }
}

impl AsyncRead for ManagerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.ws.poll_next_unpin(cx)) {
                None => this.closed = true,
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
                Some(Ok(message)) => this.pending = this.receive(message)?,
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ManagerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.ws.poll_ready_unpin(cx)).map_err(ws_error)?;
        let n = buf.len().min(MAX_MESSAGE);
        let mut message = Vec::with_capacity(n + 1);
        message.push(DATA_CHANNEL);
        message.extend_from_slice(&buf[..n]);
        this.ws
            .start_send_unpin(Message::binary(message))
            .map_err(ws_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ws.poll_flush_unpin(cx).map_err(ws_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The v4 protocol has no half-close: ending the writing side ends the connection.
        self.ws.poll_close_unpin(cx).map_err(ws_error)
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
    let stream = forward(cluster, &pod).await?;
    Ok((stream, pod))
}

/// Opens a port-forward to the tunnel port of `pod`.
pub async fn forward(cluster: &Cluster, pod: &PodRef) -> Result<ManagerStream, TransportError> {
    forward_port(cluster, pod, TUNNEL_PORT).await
}

/// Opens a port-forward to `port` of `pod`.
pub async fn forward_port(
    cluster: &Cluster,
    pod: &PodRef,
    port: u16,
) -> Result<ManagerStream, TransportError> {
    tracing::debug!(%pod, port, "opening a port-forward to the manager");
    let failed = |e: kube::Error| match e {
        kube::Error::Api(s) if s.code == 403 => TransportError::Forbidden {
            pod: pod.clone(),
            message: s.message,
        },
        e => TransportError::PortForward {
            pod: pod.clone(),
            reason: describe_error(&e),
        },
    };
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{}/pods", pod.namespace))
        .portforward(&pod.name, &[port])
        .map_err(|e| failed(kube::Error::BuildRequest(e)))?;
    let connection = cluster.client.connect(request).await.map_err(failed)?;
    Ok(ManagerStream::new(
        connection.into_stream(),
        pod.clone(),
        port,
    ))
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
