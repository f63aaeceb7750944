//! `http-echo`: an HTTP/1.1 server that names the pod that answered.
//!
//! - any path: a few `key: value` lines (hostname, pod IP, method, path, client address, and
//!   the Host and X-Forwarded-* headers it got);
//! - `GET /healthz`: 200, or 503 when started unready (a pod that fails readiness);
//! - `GET /bytes?n=N`: N bytes of `x`, streamed without buffering (for benchmarks);
//! - `POST /echo`: the request body, streamed back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Identity;

type ResponseBody = BoxBody<Bytes, hyper::Error>;

/// What `/bytes` sends, a slice of this at a time.
static FILLER: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// `n` bytes of filler, produced as the connection takes them.
struct Filler {
    left: u64,
}

impl Body for Filler {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.left)
            .unwrap_or(FILLER.len())
            .min(FILLER.len());
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

fn text(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The body of an ordinary request: who answered, and what it was asked.
pub fn describe(identity: &Identity, method: &Method, path: &str, client: SocketAddr) -> String {
    let mut out = format!("hostname: {}\n", identity.hostname);
    if let Some(ip) = &identity.pod_ip {
        out.push_str(&format!("pod-ip: {ip}\n"));
    }
    out.push_str(&format!(
        "method: {method}\npath: {path}\nclient: {client}\n"
    ));
    out
}

/// The headers a proxy in front sets or keeps (`host`, `x-forwarded-*`), one line each, so
/// a test can see what the ingress controller passed on.
fn forwarding(headers: &http::HeaderMap) -> String {
    let mut out = String::new();
    for name in [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    ] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            out.push_str(&format!("{name}: {v}\n"));
        }
    }
    out
}

/// The `n` of a `/bytes` query string.
fn bytes_wanted(query: Option<&str>) -> Option<u64> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "n")
        .and_then(|(_, v)| v.parse().ok())
}

fn handle(
    req: Request<Incoming>,
    client: SocketAddr,
    identity: &Identity,
    unready: bool,
) -> Response<ResponseBody> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let method = req.method().clone();
    let resp = match (&method, req.uri().path()) {
        (&Method::GET, "/healthz") if unready => {
            text(StatusCode::SERVICE_UNAVAILABLE, "unready\n".into())
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/bytes") => match bytes_wanted(req.uri().query()) {
            Some(n) => {
                let mut resp = Response::new(Filler { left: n }.boxed());
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/octet-stream"),
                );
                resp
            }
            None => text(StatusCode::BAD_REQUEST, "usage: /bytes?n=COUNT\n".into()),
        },
        (&Method::POST, "/echo") => {
            let (parts, body) = req.into_parts();
            let mut resp = Response::new(body.boxed());
            for h in [header::CONTENT_TYPE, header::CONTENT_LENGTH] {
                if let Some(v) = parts.headers.get(&h) {
                    resp.headers_mut().insert(h, v.clone());
                }
            }
            resp
        }
        _ => {
            let mut body = describe(identity, &method, &path, client);
            body.push_str(&forwarding(req.headers()));
            text(StatusCode::OK, body)
        }
    };
    println!("{client} {method} {path} {}", resp.status().as_u16());
    resp
}

/// Serves HTTP/1.1 on a listener until the task is dropped.
pub async fn serve(listener: TcpListener, identity: Arc<Identity>, unready: bool) {
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                println!("accept: {e}");
                // Out of descriptors and the like: back off rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let identity = identity.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let resp = handle(req, client, &identity, unready);
                async move { Ok::<_, Infallible>(resp) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                println!("{client}: {e}");
            }
        });
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
