//! Request-by-request routing of one HTTP connection, while a filtered claim or a mirror is
//! on its port.
//!
//! hyper serves the client's connection (HTTP/1.1 with keep-alive and upgrades, or HTTP/2
//! with prior knowledge, which is what h2c and gRPC clients send). Each request is matched
//! against the port's claims as they are when it arrives, and sent on over a connection of
//! the same protocol: to the app on the pod's loopback, or to the laptop whose filter it
//! matches, through that laptop's session. Those upstream connections are kept for the
//! client connection's lifetime, so a keep-alive client costs one app connection, as it did
//! without the sidecar.
//!
//! Header case is kept on HTTP/1 both ways. A request for a laptop whose session ended
//! meanwhile goes to the app instead; one the laptop refuses (nothing listens there) is
//! answered with 502 by the sidecar.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tether_tunnel::SessionError;
use tether_tunnel::wire::flow::FlowRequest;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::claims::{Claim, Ports};
use super::sniff::{Protocol, Rewound};
use super::{COPY_BUFFER, LAPTOP_DIAL_TIMEOUT, mirror};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the router passes on: the client's, the app's, the laptop's, a copy's.
pub type Body = BoxBody<Bytes, BoxError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Upstream {
    App,
    /// A claim's laptop, by session.
    Laptop(u64),
}

type Sent =
    Pin<Box<dyn Future<Output = Result<Response<Incoming>, TrySendError<Request<Body>>>> + Send>>;

/// A client connection to one upstream.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

impl Sender {
    async fn ready(&mut self) -> bool {
        match self {
            Sender::H1(s) => s.ready().await.is_ok(),
            Sender::H2(s) => s.ready().await.is_ok(),
        }
    }

    fn send(&mut self, request: Request<Body>) -> Sent {
        match self {
            Sender::H1(s) => Box::pin(s.try_send_request(request)),
            Sender::H2(s) => Box::pin(s.try_send_request(request)),
        }
    }
}

/// Opens an HTTP client connection of `protocol` over `io`.
pub async fn handshake<T>(io: T, protocol: Protocol) -> Result<SenderHandle, hyper::Error>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let io = TokioIo::new(io);
    let sender = if protocol == Protocol::Http2 {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream HTTP/2 connection ended: {e}");
            }
        });
        Sender::H2(sender)
    } else {
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .preserve_header_case(true)
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream HTTP/1 connection ended: {e}");
            }
        });
        Sender::H1(sender)
    };
    Ok(SenderHandle(sender))
}

/// An upstream connection as the mirrors use it: one request at a time, kept for the next
/// copy while the laptop keeps it open.
pub struct SenderHandle(Sender);

impl SenderHandle {
    /// Whether the connection can take a request now (`false`: the other end closed it).
    pub async fn ready(&mut self) -> bool {
        self.0.ready().await
    }

    pub async fn send(&mut self, request: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        if !self.0.ready().await {
            return Err("the connection closed before the request".into());
        }
        Ok(self
            .0
            .send(request)
            .await
            .map_err(TrySendError::into_error)?)
    }
}

/// Why a request could not be sent on.
enum Failed {
    /// The laptop's session ended before anything was sent: the app can take it.
    Gone(Box<Request<Body>>),
    /// The laptop's session ended (before a request was at stake).
    Dead,
    Refused(String),
    Upstream(String),
}

struct Conn {
    app: u16,
    ports: Arc<Ports>,
    protocol: Protocol,
    senders: Mutex<HashMap<Upstream, Sender>>,
}

/// Serves one client connection whose first bytes (`head`) said it speaks HTTP.
pub async fn serve(
    stream: TcpStream,
    head: Bytes,
    protocol: Protocol,
    app: u16,
    ports: Arc<Ports>,
) {
    let conn = Arc::new(Conn {
        app,
        ports,
        protocol,
        senders: Mutex::new(HashMap::new()),
    });
    let io = TokioIo::new(Rewound::new(head, stream));
    let service = hyper::service::service_fn(move |request| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(conn.route(request).await) }
    });
    let served = match protocol {
        Protocol::Http2 => {
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await
        }
        _ => {
            hyper::server::conn::http1::Builder::new()
                .preserve_header_case(true)
                .serve_connection(io, service)
                .with_upgrades()
                .await
        }
    };
    if let Err(e) = served {
        tracing::debug!(port = app, "HTTP connection ended: {e}");
    }
}

impl Conn {
    fn app_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.app))
    }

    async fn route(&self, mut request: Request<Incoming>) -> Response<Body> {
        let claims = self.ports.claims_of(self.app);
        let path = request.uri().path();
        let matches = |c: &&Claim| c.matcher.matches(request.headers(), path);
        let steal = claims.iter().filter(|c| c.steals()).find(matches).cloned();
        let mirrors: Vec<Claim> = claims
            .iter()
            .filter(|c| c.mirrors())
            .filter(matches)
            .cloned()
            .collect();
        let upgrade = (self.protocol == Protocol::Http1
            && request.headers().contains_key(header::UPGRADE))
        .then(|| hyper::upgrade::on(&mut request));
        let mut request = request.map(|b| b.map_err(BoxError::from).boxed());
        if !mirrors.is_empty() {
            request = mirror::tee(request, &mirrors, self.protocol, self.app_addr());
        }
        let sent = match &steal {
            Some(claim) => match self
                .send(Upstream::Laptop(claim.session_id), Some(claim), request)
                .await
            {
                Ok(response) => {
                    claim.count();
                    Ok(response)
                }
                Err(Failed::Gone(request)) => {
                    tracing::debug!(port = self.app, "the laptop's session is gone; to the app");
                    self.to_app(*request).await
                }
                Err(e) => Err(e),
            },
            None => self.to_app(request).await,
        };
        match sent {
            Ok(mut response) => {
                if let Some(ours) = upgrade
                    && response.status() == StatusCode::SWITCHING_PROTOCOLS
                {
                    let theirs = hyper::upgrade::on(&mut response);
                    tokio::spawn(splice_upgraded(ours, theirs));
                }
                response.map(|b| b.map_err(BoxError::from).boxed())
            }
            Err(Failed::Refused(reason) | Failed::Upstream(reason)) => bad_gateway(&reason),
            Err(Failed::Gone(_) | Failed::Dead) => bad_gateway("the intercepting laptop went away"),
        }
    }

    async fn to_app(&self, request: Request<Body>) -> Result<Response<Incoming>, Failed> {
        self.ports.count_forwarded(self.app);
        if self.ports.replaced() {
            return Err(Failed::Upstream(
                "the app container is replaced by an intercept and no claim matches this request"
                    .into(),
            ));
        }
        self.send(Upstream::App, None, request).await
    }

    /// A connection to `upstream` from the pool, or a new one.
    fn pooled(&self, upstream: Upstream) -> Option<Sender> {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        match senders.get(&upstream)? {
            // HTTP/2 multiplexes: the pool keeps its handle.
            Sender::H2(s) => Some(Sender::H2(s.clone())),
            // HTTP/1 carries one request at a time: whoever sends holds it.
            Sender::H1(_) => senders.remove(&upstream),
        }
    }

    fn put_back(&self, upstream: Upstream, sender: Sender) {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        senders.insert(upstream, sender);
    }

    async fn connect(&self, upstream: Upstream, claim: Option<&Claim>) -> Result<Sender, Failed> {
        let handshaken = match (upstream, claim) {
            (Upstream::Laptop(_), Some(claim)) => {
                let request = FlowRequest::Tcp {
                    target: self.app_addr(),
                };
                let flow =
                    match tokio::time::timeout(LAPTOP_DIAL_TIMEOUT, claim.session.dial(&request))
                        .await
                    {
                        Ok(Ok(flow)) => flow,
                        Ok(Err(SessionError::Dial { reply, .. })) => {
                            return Err(Failed::Refused(format!(
                                "{} refused the connection on the laptop ({reply:?})",
                                claim.holder
                            )));
                        }
                        Ok(Err(_)) => return Err(Failed::Dead),
                        Err(_) => {
                            return Err(Failed::Refused(format!(
                                "{} did not answer within {LAPTOP_DIAL_TIMEOUT:?}",
                                claim.holder
                            )));
                        }
                    };
                handshake(flow, self.protocol).await
            }
            _ => {
                let stream = TcpStream::connect(self.app_addr()).await.map_err(|e| {
                    Failed::Upstream(format!("the app on port {} refused: {e}", self.app))
                })?;
                let _ = stream.set_nodelay(true);
                handshake(stream, self.protocol).await
            }
        };
        handshaken
            .map(|h| h.0)
            .map_err(|e| Failed::Upstream(format!("no HTTP connection upstream: {e}")))
    }

    async fn send(
        &self,
        upstream: Upstream,
        claim: Option<&Claim>,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, Failed> {
        // A pooled connection the other end closed while idle is replaced once.
        for attempt in 0..2 {
            let pooled = match self.pooled(upstream) {
                Some(mut s) => s.ready().await.then_some(s),
                None => None,
            };
            let mut sender = match pooled {
                Some(s) => s,
                None => match self.connect(upstream, claim).await {
                    Ok(mut s) => {
                        if !s.ready().await {
                            return Err(Failed::Upstream("the upstream connection closed".into()));
                        }
                        s
                    }
                    Err(Failed::Dead) => return Err(Failed::Gone(Box::new(request))),
                    Err(e) => return Err(e),
                },
            };
            let sent = sender.send(request);
            self.put_back(upstream, sender);
            match sent.await {
                Ok(response) => return Ok(response),
                Err(mut e) => {
                    let reason = e.error().to_string();
                    match e.take_message() {
                        Some(back) if attempt == 0 => {
                            self.senders
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&upstream);
                            request = back;
                        }
                        _ => return Err(Failed::Upstream(reason)),
                    }
                }
            }
        }
        Err(Failed::Upstream(
            "the upstream connection closed twice".into(),
        ))
    }
}

fn bad_gateway(reason: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("tether sidecar: {reason}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Joins the two halves of an upgraded connection (WebSocket and the like).
async fn splice_upgraded(ours: hyper::upgrade::OnUpgrade, theirs: hyper::upgrade::OnUpgrade) {
    let (Ok(ours), Ok(theirs)) = tokio::join!(ours, theirs) else {
        return;
    };
    let (mut a, mut b) = (TokioIo::new(ours), TokioIo::new(theirs));
    let _ =
        tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, COPY_BUFFER, COPY_BUFFER).await;
}
