//! `pods/{name}/exec`: a command run in a running container ([`crate::kubelet::exec`]),
//! its streams carried over the upgraded connection as the kubelet carries them:
//!
//! - WebSocket with `v5.channel.k8s.io` (kubectl 1.30 and later, kube-rs) or
//!   `v4.channel.k8s.io` (older kube-rs and client-go users): every binary message starts with
//!   a channel byte, 0 stdin, 1 stdout, 2 stderr, 3 the ending as a JSON `Status`, 4 terminal
//!   sizes; v5 adds `[255, channel]`, which closes a channel (the end of stdin)
//!   ([`websocket`]);
//! - SPDY/3.1 (kubectl's fallback, and kubectl before 1.30) with the stream protocols
//!   `v4.channel.k8s.io` (JSON `Status`), `v3.channel.k8s.io`, `v2.channel.k8s.io` and
//!   `channel.k8s.io` (the error text alone; v2 and v1 have no terminal sizes): one SPDY stream
//!   per channel, named by its `streamType` header ([`spdy`]).
//!
//! The ending is `Success`, `Failure` with reason `NonZeroExitCode` and an `ExitCode` cause
//! (kubectl exits with that code), or an `InternalError` when the command could not be run.
//!
//! Requests are checked in the order kube-apiserver and the kubelet check them: the pod (404),
//! the container (400), the node, the upgrade, the streams and command, then whether the
//! container runs. Not served: the base64 WebSocket protocols and WebSocket without a
//! subprotocol.

pub mod spdy;
pub mod websocket;

use bytes::Bytes;
use http::{Method, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::portforward::{header_value, switching};
use super::{Api, Body, Reply, logs};
use crate::error::ApiError;
use crate::kubelet::exec::{self, Ending, Session, Streams, Target, TerminalSize};
use crate::resources::{self, Shape};

/// WebSocket subprotocols, in the order this server prefers them.
const WEBSOCKET_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// SPDY stream protocols, newest first.
const SPDY_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// The largest resize message kept while it is incomplete.
const MAX_RESIZE: usize = 4096;

/// Starts the command once the client's streams are ready.
pub type Starter = Box<dyn FnOnce() -> Session + Send + Sync>;

/// How the ending is written on the error channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFormat {
    /// A JSON `metav1.Status`, also for success (v4 and v5).
    Json,
    /// The failure's message as text, nothing for success (v1 to v3).
    Text,
}

/// What a request asks for.
#[derive(Debug, Default, PartialEq)]
struct Options {
    command: Vec<String>,
    container: Option<String>,
    streams: Streams,
}

/// Booleans as the API server parses them (`strconv.ParseBool`).
fn truthy(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

fn options(query: Option<&str>) -> Options {
    let mut o = Options::default();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "command" => o.command.push(value.into_owned()),
            "container" if !value.is_empty() => o.container = Some(value.into_owned()),
            "stdin" => o.streams.stdin = truthy(&value),
            "stdout" => o.streams.stdout = truthy(&value),
            "stderr" => o.streams.stderr = truthy(&value),
            "tty" => o.streams.tty = truthy(&value),
            _ => {}
        }
    }
    // A terminal has one output: the kubelet drops stderr when a TTY is asked for.
    if o.streams.tty {
        o.streams.stderr = false;
    }
    o
}

/// The ending as the error channel carries it; None when nothing is written (success in the
/// text format).
pub fn status_bytes(ending: &Ending, format: StatusFormat) -> Option<Bytes> {
    let status = status(ending);
    match format {
        StatusFormat::Json => Some(Bytes::from(status.to_string())),
        StatusFormat::Text if status["status"] == "Success" => None,
        StatusFormat::Text => Some(Bytes::from(
            status["message"].as_str().unwrap_or_default().to_string(),
        )),
    }
}

/// The `metav1.Status` the kubelet writes when a command has ended.
fn status(ending: &Ending) -> Value {
    match ending {
        Ending::Exited(0) => json!({"metadata": {}, "status": "Success"}),
        Ending::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Ending::Failed(why) => {
            let error = format!("error executing command in container: {why}");
            json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("Internal error occurred: {error}"),
                "reason": "InternalError",
                "details": {"causes": [{"message": error}]},
                "code": 500,
            })
        }
    }
}

/// Terminal sizes from a resize stream: JSON objects one after another, split anywhere.
#[derive(Debug, Default)]
pub struct Resizes {
    pending: Vec<u8>,
}

impl Resizes {
    /// The sizes completed by `bytes`; an incomplete one waits for more.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<TerminalSize> {
        self.pending.extend_from_slice(bytes);
        let mut sizes = Vec::new();
        let mut values =
            serde_json::Deserializer::from_slice(&self.pending).into_iter::<TerminalSize>();
        let consumed = loop {
            match values.next() {
                Some(Ok(size)) => sizes.push(size),
                Some(Err(e)) if e.is_eof() => break values.byte_offset(),
                // Not a size, or only whitespace left: nothing here is worth keeping.
                Some(Err(_)) | None => break self.pending.len(),
            }
        };
        self.pending.drain(..consumed);
        if self.pending.len() > MAX_RESIZE {
            self.pending.clear();
        }
        sizes
    }
}

/// Hands the pending stdin chunk to the command once it has room; its length, or None when
/// the command has closed its stdin (the chunk is dropped). Never resolves without a stdin
/// (before the command has started). Cancel-safe: the chunk is taken only with the room.
pub async fn push_stdin(
    stdin: &Option<mpsc::Sender<Bytes>>,
    pending: &mut Option<Bytes>,
) -> Option<usize> {
    let Some(tx) = stdin else {
        return std::future::pending().await;
    };
    let permit = tx.reserve().await.ok();
    let chunk = pending.take()?;
    let len = chunk.len();
    permit?.send(chunk);
    Some(len)
}

/// Answers an exec request: an upgrade, or a Status saying why not.
pub fn handle(api: &Api, req: hyper::Request<Incoming>, ns: &str, name: &str) -> Response<Body> {
    match upgrade(api, req, ns, name) {
        Ok(resp) => resp,
        Err(e) => Reply::from(e).into_response(),
    }
}

/// The running container a request addresses, and what it asks for.
fn check(
    api: &Api,
    req: &hyper::Request<Incoming>,
    ns: &str,
    name: &str,
) -> Result<(Target, Options), ApiError> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    let opts = options(req.uri().query());
    let rt = resources::by_shape(Shape::Pod);
    let pod = api
        .store
        .read(|s| s.get(rt, ns, name).cloned())
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    let container = logs::container(&pod.value, name, opts.container.as_deref())?;
    if pod.value["spec"]["nodeName"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return Err(ApiError::BadRequest(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    if header_value(req, "upgrade").is_empty() {
        return Err(ApiError::BadRequest("Upgrade request required".into()));
    }
    let s = opts.streams;
    if !s.stdin && !s.stdout && !s.stderr {
        return Err(ApiError::BadRequest(
            "you must specify at least 1 of stdin, stdout, stderr".into(),
        ));
    }
    if opts.command.is_empty() {
        return Err(ApiError::BadRequest(
            "you must specify at least one command for the container".into(),
        ));
    }
    let target = api
        .exec_targets
        .get(pod.uid(), &container)
        .ok_or_else(|| ApiError::BadRequest(format!("container not found ({container:?})")))?;
    Ok((target, opts))
}

/// The first protocol the client offers that the server speaks (the client's order, as
/// client-go's and the kubelet's negotiation go).
fn negotiate<'a>(offered: &str, supported: &[&'a str]) -> Option<&'a str> {
    offered
        .split(',')
        .map(str::trim)
        .find_map(|p| supported.iter().find(|s| **s == p).copied())
}

fn upgrade(
    api: &Api,
    req: hyper::Request<Incoming>,
    ns: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let (target, opts) = check(api, &req, ns, name)?;
    let (streams, command) = (opts.streams, opts.command);
    let starter: Starter = Box::new(move || exec::start(&target, &command, streams));
    let upgrade_to = header_value(&req, "upgrade").to_ascii_lowercase();
    if upgrade_to == "websocket" {
        return upgrade_websocket(req, streams, starter);
    }
    if upgrade_to.starts_with("spdy/3.1") {
        return upgrade_spdy(req, streams, starter);
    }
    Err(ApiError::BadRequest(format!(
        "exec needs a WebSocket or SPDY/3.1 upgrade, not {upgrade_to:?}"
    )))
}

fn upgrade_websocket(
    mut req: hyper::Request<Incoming>,
    streams: Streams,
    starter: Starter,
) -> Result<Response<Body>, ApiError> {
    let offered = header_value(&req, "sec-websocket-protocol");
    let protocol = negotiate(offered, &WEBSOCKET_PROTOCOLS).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "none of the WebSocket subprotocols {offered:?} is supported for exec (use {})",
            WEBSOCKET_PROTOCOLS.join(" or ")
        ))
    })?;
    let key = header_value(&req, "sec-websocket-key");
    if key.is_empty() {
        return Err(ApiError::BadRequest(
            "a WebSocket upgrade needs Sec-WebSocket-Key".into(),
        ));
    }
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let close_signal = protocol == WEBSOCKET_PROTOCOLS[0];
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = TokioIo::new(upgraded);
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                websocket::serve(ws, close_signal, streams, starter).await;
            }
            Err(e) => tracing::debug!("exec upgrade: {e}"),
        }
    });
    Ok(switching(&[
        ("connection", "Upgrade".into()),
        ("upgrade", "websocket".into()),
        ("sec-websocket-accept", accept),
        ("sec-websocket-protocol", protocol.into()),
    ]))
}

fn upgrade_spdy(
    mut req: hyper::Request<Incoming>,
    streams: Streams,
    starter: Starter,
) -> Result<Response<Body>, ApiError> {
    // Go clients send one header per protocol; others may send a list.
    let offered: Vec<&str> = req
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    // A client that names no protocol speaks the first one, channel.k8s.io.
    let protocol = match offered.is_empty() {
        true => SPDY_PROTOCOLS[3],
        false => negotiate(&offered.join(","), &SPDY_PROTOCOLS).ok_or_else(|| {
            // Worded as Go prints the lists.
            ApiError::Forbidden(format!(
                "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]",
                offered.join(" "),
                SPDY_PROTOCOLS.join(" ")
            ))
        })?,
    };
    let version = spdy::Version::of(protocol);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                spdy::serve(TokioIo::new(upgraded), version, streams, starter).await;
            }
            Err(e) => tracing::debug!("exec upgrade: {e}"),
        }
    });
    Ok(switching(&[
        ("connection", "Upgrade".into()),
        ("upgrade", "SPDY/3.1".into()),
        ("x-stream-protocol-version", protocol.into()),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_take_every_command_word_and_drop_stderr_with_a_tty() {
        let o = options(Some(
            "command=sh&command=-c&command=echo+%22a+b%22&container=c&stdin=true&stdout=1&stderr=true&tty=false",
        ));
        assert_eq!(o.command, vec!["sh", "-c", "echo \"a b\""]);
        assert_eq!(o.container.as_deref(), Some("c"));
        let all = Streams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        assert_eq!(o.streams, all);
        let o = options(Some("command=sh&stdout=true&stderr=true&tty=true"));
        assert!(o.streams.tty && o.streams.stdout && !o.streams.stderr);
        assert_eq!(options(None), Options::default());
    }

    #[test]
    fn endings_are_the_kubelets_statuses() {
        let json = |e: &Ending| -> Value {
            serde_json::from_slice(&status_bytes(e, StatusFormat::Json).unwrap()).unwrap()
        };
        assert_eq!(
            json(&Ending::Exited(0)),
            json!({"metadata": {}, "status": "Success"})
        );
        let failed = json(&Ending::Exited(3));
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(
            failed["details"]["causes"],
            json!([{"reason": "ExitCode", "message": "3"}])
        );
        let internal = json(&Ending::Failed("exec: \"x\": not found".into()));
        assert_eq!(
            (internal["reason"].as_str(), internal["code"].as_u64()),
            (Some("InternalError"), Some(500))
        );
        assert_eq!(status_bytes(&Ending::Exited(0), StatusFormat::Text), None);
        let text = status_bytes(&Ending::Exited(2), StatusFormat::Text).unwrap();
        assert_eq!(
            text,
            "command terminated with non-zero exit code: exit status 2"
        );
    }

    #[test]
    fn resizes_are_decoded_across_pieces() {
        let mut r = Resizes::default();
        assert_eq!(r.push(br#"{"Width":80,"#), vec![]);
        let sizes = r.push(
            br#""Height":24}
{"Width":100,"Height":50}{"Wid"#,
        );
        assert_eq!(
            sizes,
            vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 50
                }
            ]
        );
        assert_eq!(r.push(br#"th":1,"Height":2}"#).len(), 1);
        assert_eq!(r.push(b"garbage"), vec![]);
        assert!(r.pending.is_empty());
    }

    #[test]
    fn protocols_are_chosen_in_the_clients_order() {
        assert_eq!(
            negotiate("v4.channel.k8s.io, v5.channel.k8s.io", &WEBSOCKET_PROTOCOLS),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            negotiate("v5.channel.k8s.io", &WEBSOCKET_PROTOCOLS),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(
            negotiate("base64.channel.k8s.io", &WEBSOCKET_PROTOCOLS),
            None
        );
        assert_eq!(
            negotiate(
                "v5.channel.k8s.io,v4.channel.k8s.io,v3.channel.k8s.io",
                &SPDY_PROTOCOLS
            ),
            Some("v4.channel.k8s.io")
        );
    }
}
