//! `pods/{name}/portforward`: connections to a pod's ports through the API server, dialled
//! as the kubelet does, on the loopback of the pod's network namespace. Three framings reach
//! the same dialler:
//!
//! - WebSocket with `v4.channel.k8s.io` (kube-rs): ports from the query, one connection
//!   each ([`websocket::serve_channels`]);
//! - SPDY/3.1 with `portforward.k8s.io` (kubectl's fallback, older clients): any number of
//!   connections, each an error and a data stream ([`spdy`]);
//! - SPDY tunnelled in WebSocket binary messages, subprotocol
//!   `SPDY/3.1+portforward.k8s.io` (kubectl 1.31 and later try this first).
//!
//! The response to the upgrade is sent at once; the forwarding runs in its own task on the
//! upgraded connection and ends with it.

pub mod spdy;
pub mod websocket;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{Api, Body, Reply};
use crate::error::ApiError;
use crate::node::netns::Netns;
use crate::resources::{self, Shape};

/// kube-rs's framing (and client-go's for exec/attach).
const CHANNEL_V4: &str = "v4.channel.k8s.io";
/// SPDY tunnelled in WebSocket (kubectl 1.31+).
const SPDY_OVER_WEBSOCKET: &str = "SPDY/3.1+portforward.k8s.io";
/// The SPDY stream protocol.
const PORT_FORWARD: &str = "portforward.k8s.io";
/// How long dialling a pod's port may take (loopback: refused or accepted at once).
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Dials ports of one pod.
#[derive(Debug, Clone)]
pub struct Dialer {
    netns: Netns,
    /// `namespace/name` and UID, for error messages.
    pod: String,
    uid: String,
}

/// A connection yet to be made to one port of the pod.
pub struct PodConnection {
    pub port: u16,
    pub dialer: Dialer,
}

impl PodConnection {
    /// Connects to 127.0.0.1:port in the pod's namespace; the error is the text clients
    /// show.
    pub async fn dial(&self) -> Result<TcpStream, String> {
        let netns = self.dialer.netns.clone();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let joined =
            tokio::task::spawn_blocking(move || netns.connect_tcp(addr, DIAL_TIMEOUT)).await;
        let result = match joined {
            Ok(Ok(std)) => TcpStream::from_std(std).map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        result.map_err(|e| {
            format!(
                "error forwarding port {} to pod {}, uid {}: {e}",
                self.port, self.dialer.pod, self.dialer.uid
            )
        })
    }
}

/// The ports a WebSocket request names: `ports=80&ports=443` or `ports=80,443`.
fn query_ports(query: Option<&str>) -> Result<Vec<u16>, ApiError> {
    let mut ports = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key != "ports" {
            continue;
        }
        for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "invalid port {p:?}: ports must be between 1 and 65535"
                    )));
                }
            }
        }
    }
    if ports.is_empty() {
        return Err(ApiError::BadRequest(
            "query parameter \"ports\" is required for a WebSocket port-forward".into(),
        ));
    }
    Ok(ports)
}

/// A request header as text (empty when absent or not text); exec uses it too.
pub(super) fn header_value<'a>(req: &'a hyper::Request<Incoming>, name: &str) -> &'a str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// A 101 answer with the upgrade's headers; exec uses it too.
pub(super) fn switching(headers: &[(&'static str, String)]) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()).boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            resp.headers_mut().insert(*name, v);
        }
    }
    resp
}

/// Answers a port-forward request: an upgrade, or a Status saying why not.
pub fn handle(api: &Api, req: hyper::Request<Incoming>, ns: &str, name: &str) -> Response<Body> {
    match upgrade(api, req, ns, name) {
        Ok(resp) => resp,
        Err(e) => Reply::from(e).into_response(),
    }
}

fn upgrade(
    api: &Api,
    mut req: hyper::Request<Incoming>,
    ns: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    let rt = resources::by_shape(Shape::Pod);
    let pod = api
        .store
        .read(|s| s.get(rt, ns, name).cloned())
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    let phase = pod.value["status"]["phase"].as_str().unwrap_or("Pending");
    if phase != "Running" {
        return Err(ApiError::BadRequest(format!(
            "pod {name} is not running (phase {phase}): port-forward needs a running pod"
        )));
    }
    let dialer = Dialer {
        netns: Netns::named(api.layout.names.pod(pod.uid())),
        pod: format!("{ns}/{name}"),
        uid: pod.uid().to_string(),
    };
    let upgrade_to = header_value(&req, "upgrade").to_ascii_lowercase();
    if upgrade_to == "websocket" {
        let offered: Vec<String> = header_value(&req, "sec-websocket-protocol")
            .split(',')
            .map(|p| p.trim().to_string())
            .collect();
        let key = header_value(&req, "sec-websocket-key");
        if key.is_empty() {
            return Err(ApiError::BadRequest(
                "a WebSocket upgrade needs Sec-WebSocket-Key".into(),
            ));
        }
        let accept = derive_accept_key(key.as_bytes());
        let (protocol, ports) = if offered.iter().any(|p| p == CHANNEL_V4) {
            (CHANNEL_V4, Some(query_ports(req.uri().query())?))
        } else if offered.iter().any(|p| p == SPDY_OVER_WEBSOCKET) {
            (SPDY_OVER_WEBSOCKET, None)
        } else {
            return Err(ApiError::BadRequest(format!(
                "none of the WebSocket subprotocols {offered:?} is supported for port-forward (use {CHANNEL_V4} or {SPDY_OVER_WEBSOCKET})"
            )));
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!("port-forward upgrade: {e}");
                    return;
                }
            };
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            match ports {
                Some(ports) => websocket::serve_channels(ws, ports, dialer).await,
                None => spdy::serve(websocket::byte_stream(ws), dialer).await,
            }
        });
        return Ok(switching(&[
            ("connection", "Upgrade".into()),
            ("upgrade", "websocket".into()),
            ("sec-websocket-accept", accept),
            ("sec-websocket-protocol", protocol.into()),
        ]));
    }
    if upgrade_to.starts_with("spdy/3.1") {
        let versions = header_value(&req, "x-stream-protocol-version");
        if !versions.split(',').any(|v| v.trim() == PORT_FORWARD) {
            return Err(ApiError::BadRequest(format!(
                "port-forward speaks the {PORT_FORWARD} stream protocol; the client offered {versions:?}"
            )));
        }
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => spdy::serve(TokioIo::new(upgraded), dialer).await,
                Err(e) => tracing::debug!("port-forward upgrade: {e}"),
            }
        });
        return Ok(switching(&[
            ("connection", "Upgrade".into()),
            ("upgrade", "SPDY/3.1".into()),
            ("x-stream-protocol-version", PORT_FORWARD.into()),
        ]));
    }
    Err(ApiError::BadRequest(
        "Upgrade request required: port-forward needs a WebSocket or SPDY/3.1 upgrade".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_repeated_or_comma_separated() {
        assert_eq!(
            query_ports(Some("ports=80&ports=443")).unwrap(),
            vec![80, 443]
        );
        assert_eq!(
            query_ports(Some("&ports=80%2C1234")).unwrap(),
            vec![80, 1234]
        );
        assert!(query_ports(Some("ports=0")).is_err());
        assert!(query_ports(Some("ports=x")).is_err());
        assert!(query_ports(None).is_err());
    }
}
