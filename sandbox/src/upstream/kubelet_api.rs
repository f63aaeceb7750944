//! The kubelet API on the node address (`https://10.244.0.1:10250`), which the upstream API
//! server calls for `kubectl logs`, `exec` and `port-forward`: the kubelet's paths mapped onto
//! the sandbox's own pods/log, pods/exec and pods/portforward handlers, served from the
//! node's [`crate::kubelet::mirror`] store.
//!
//! The API server names some parameters the kubelet's way (exec's `input`/`output`/`error`,
//! port-forward's `port`); [`translate`] renames them.
//!
//! Only the API server gets in: TLS requires a client certificate, and it must be the one
//! issued to the API server for the kubelet (see [`super::certs`]); then, as a kubelet does,
//! the API server is asked whether that caller may do what the request does
//! ([`authorize`]).

mod authorize;

use std::sync::Arc;

use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

use crate::api::Body;
use crate::server::Server;

use authorize::{Attributes, Refusal};
pub use authorize::{Authorizer, Caller};

/// The API path a kubelet API path stands for, with the query translated.
pub fn translate(path: &str, query: Option<&str>) -> Option<String> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /exec/NS/POD/CONTAINER and /exec/NS/POD/UID/CONTAINER (the UID form pins the pod).
    let (kind, ns, pod, container) = match parts.as_slice() {
        [
            kind @ ("exec" | "attach" | "containerLogs"),
            ns,
            pod,
            container,
        ]
        | [kind @ ("exec" | "attach"), ns, pod, _, container] => {
            (*kind, *ns, *pod, Some(*container))
        }
        ["portForward", ns, pod] | ["portForward", ns, pod, _] => ("portForward", *ns, *pod, None),
        _ => return None,
    };
    let sub = match kind {
        "exec" => "exec",
        "containerLogs" => "log",
        "portForward" => "portforward",
        _ => return None,
    };
    let mut out = form_urlencoded::Serializer::new(String::new());
    if let Some(c) = container {
        out.append_pair("container", c);
    }
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let k = match (sub, k.as_ref()) {
            ("exec", "input") => "stdin",
            ("exec", "output") => "stdout",
            ("exec", "error") => "stderr",
            // The API server passes a WebSocket client's ports as `port` (the kubelet's name).
            ("portforward", "port") => "ports",
            (_, other) => other,
        };
        out.append_pair(k, &v);
    }
    Some(format!(
        "/api/v1/namespaces/{ns}/pods/{pod}/{sub}?{}",
        out.finish()
    ))
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(bytes::Bytes::from_static(text.as_bytes())).boxed());
    *resp.status_mut() = status;
    resp
}

async fn respond(
    server: Arc<Server>,
    authorizer: Arc<Authorizer>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    if req.uri().path() == "/healthz" {
        return plain(StatusCode::OK, "ok");
    }
    if let Err(refusal) = authorizer
        .check(Attributes::of(req.method(), req.uri().path()))
        .await
    {
        let status = match refusal {
            Refusal::Forbidden { .. } => StatusCode::FORBIDDEN,
            Refusal::Error { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::warn!("kubelet API: {refusal}");
        let mut resp = Response::new(Full::new(bytes::Bytes::from(format!("{refusal}\n"))).boxed());
        *resp.status_mut() = status;
        return resp;
    }
    let Some(target) = translate(req.uri().path(), req.uri().query()) else {
        return plain(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let Ok(uri) = target.parse::<Uri>() else {
        return plain(StatusCode::BAD_REQUEST, "bad request\n");
    };
    *req.uri_mut() = uri;
    // The caller was authenticated by its certificate; the handlers behind expect the
    // token of an authenticated request.
    if let Ok(v) = format!("Bearer {}", server.admin_token).parse() {
        req.headers_mut().insert(http::header::AUTHORIZATION, v);
    }
    server.respond(req).await
}

/// Serves the kubelet API on `listener` until aborted. `apiserver_cert_pem` is the only
/// client certificate accepted; `authorizer` decides each of its requests.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    apiserver_cert_pem: String,
    server: Arc<Server>,
    authorizer: Arc<Authorizer>,
) {
    let allowed: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(apiserver_cert_pem.as_bytes())
            .filter_map(Result::ok)
            .collect();
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        // The API server's streams (port-forward, exec) carry small writes both ways; with
        // Nagle each waits for the peer's delayed ACK (40 ms).
        let _ = tcp.set_nodelay(true);
        let (acceptor, server, allowed) = (acceptor.clone(), server.clone(), allowed.clone());
        let authorizer = authorizer.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, "kubelet API TLS handshake: {e}");
                    return;
                }
            };
            let presented = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            if !presented.is_some_and(|c| allowed.iter().any(|a| a == c)) {
                tracing::warn!(%peer, "kubelet API: a client certificate other than the API server's");
                return;
            }
            let service = service_fn(move |req| {
                let (server, authorizer) = (server.clone(), authorizer.clone());
                async move { Ok::<_, std::convert::Infallible>(respond(server, authorizer, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "kubelet API connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::translate;

    #[test]
    fn kubelet_paths_map_to_pod_subresources() {
        assert_eq!(
            translate(
                "/exec/demo/web-1/web",
                Some("command=env&input=1&output=1&error=1&tty=0")
            )
            .as_deref(),
            Some(
                "/api/v1/namespaces/demo/pods/web-1/exec?container=web&command=env&stdin=1&stdout=1&stderr=1&tty=0"
            )
        );
        assert_eq!(
            translate(
                "/containerLogs/demo/web-1/web",
                Some("follow=true&tailLines=5")
            )
            .as_deref(),
            Some("/api/v1/namespaces/demo/pods/web-1/log?container=web&follow=true&tailLines=5")
        );
        assert_eq!(
            translate("/portForward/demo/web-1", None).as_deref(),
            Some("/api/v1/namespaces/demo/pods/web-1/portforward?")
        );
        assert_eq!(
            translate("/portForward/demo/web-1", Some("port=8080&port=9090")).as_deref(),
            Some("/api/v1/namespaces/demo/pods/web-1/portforward?ports=8080&ports=9090")
        );
        assert_eq!(
            translate("/exec/demo/web-1/0000-uid/web", Some("command=ls")).as_deref(),
            Some("/api/v1/namespaces/demo/pods/web-1/exec?container=web&command=ls")
        );
        assert_eq!(translate("/attach/demo/web-1/web", None), None);
        assert_eq!(translate("/pods", None), None);
        assert_eq!(translate("/configz", None), None);
    }
}
