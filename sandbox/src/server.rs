//! The HTTPS server: TLS, HTTP/1.1 (with upgrades, for port-forward and exec), bearer-token
//! authentication, request bodies collected up to the size etcd would accept, then
//! [`crate::api`].

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::api::{self, Api, Body, Reply};
use crate::auth::Tokens;
use crate::error::ApiError;
use crate::resources::{self, Shape};

/// The largest request body accepted (etcd's default request limit).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Paths anyone may read without a token (kube-apiserver's anonymous health endpoints).
fn anonymous_allowed(path: &str) -> bool {
    ["/healthz", "/livez", "/readyz"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

#[derive(Debug)]
pub struct Server {
    pub api: Api,
    pub admin_token: String,
    /// The node's token (its kubelet is a client of this API server like any other).
    pub node_token: Option<String>,
    /// Service-account tokens (TokenRequest's).
    pub tokens: Arc<Tokens>,
}

impl Server {
    fn authenticated(&self, req: &Request<Incoming>) -> Option<bool> {
        let value = req.headers().get(header::AUTHORIZATION)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .trim();
        let is = |t: &str| bool::from(token.as_bytes().ct_eq(t.as_bytes()));
        let pods = resources::by_shape(Shape::Pod);
        let pod_exists = |ns: &str, name: &str, uid: &str| {
            self.api
                .store
                .read(|s| s.get(pods, ns, name).is_some_and(|p| p.uid() == uid))
        };
        Some(
            is(&self.admin_token)
                || self.node_token.as_deref().is_some_and(is)
                || self.tokens.check(token, pod_exists).is_some(),
        )
    }

    pub async fn respond(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let allowed = match self.authenticated(&req) {
            Some(ok) => ok,
            None => anonymous_allowed(req.uri().path()),
        };
        if !allowed {
            return Reply::from(ApiError::Unauthorized).into_response();
        }
        match upgrade_target(req.uri().path()) {
            Some((Upgrade::PortForward, ns, name)) => {
                return api::portforward::handle(&self.api, req, &ns, &name);
            }
            Some((Upgrade::Exec, ns, name)) => {
                return api::exec::handle(&self.api, req, &ns, &name);
            }
            None => {}
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                let err =
                    ApiError::BadRequest(format!("Request entity too large: limit is {MAX_BODY}"));
                let mut resp = Reply::from(err).into_response();
                *resp.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
                return resp;
            }
            // The client went away mid-body; nobody reads this answer.
            Err(_) => Bytes::new(),
        };
        tracing::debug!(method = %parts.method, uri = %parts.uri, "request");
        let api_req = api::Request::new(&parts, body);
        self.api.handle(api_req)
    }
}

/// The pod subresources that upgrade the connection.
enum Upgrade {
    PortForward,
    Exec,
}

/// The pod a `pods/{name}/portforward` or `pods/{name}/exec` path names: such requests
/// upgrade the connection, so they need the request itself rather than its collected body.
fn upgrade_target(path: &str) -> Option<(Upgrade, String, String)> {
    let api::route::Route::Objects(t) = api::route::parse(path).ok()? else {
        return None;
    };
    let kind = match t.subresource.as_deref() {
        Some("portforward") => Upgrade::PortForward,
        Some("exec") => Upgrade::Exec,
        _ => return None,
    };
    Some((kind, t.namespace?, t.name?))
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, tls: Arc<ServerConfig>, server: Arc<Server>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("accept: {e}");
                continue;
            }
        };
        // As Go does on every socket: small writes (watch events, port-forward frames) go
        // out at once instead of waiting for the peer's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let server = server.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, "TLS handshake: {e}");
                    return;
                }
            };
            let service = service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, std::convert::Infallible>(server.respond(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
}
