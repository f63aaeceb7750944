//! The intercept sidecar: injected into a workload's pods by `tether intercept`, it owns the
//! ports the workload's Service targets and forwards each connection either to the app
//! container on the pod's loopback (dormant) or to the laptop that holds a claim on the port.
//!
//! - Each `--forward LISTEN=APP` listens on every address of the pod at `LISTEN` (where the
//!   Service now sends traffic) and forwards to `127.0.0.1:APP`.
//! - The control port is on the pod's loopback only. Laptops reach it through the API
//!   server's `pods/portforward`, which is authorised with their own credentials, so no token
//!   is asked: anything that can reach the loopback already shares the pod with the app.
//!   Claims and keepalives are [`tether_tunnel::wire::intercept`] messages.
//! - A claimed port's new connections become streams the sidecar opens on the claimant's
//!   session. If the laptop refuses one (nothing listens locally), the connection is reset;
//!   if the session is gone, the connection goes to the app instead, since none of its bytes
//!   have been read yet.
//! - A session whose control stream ends or falls silent for
//!   [`tether_tunnel::wire::intercept::LIVENESS`] loses its claims at once.
//! - A claim may take only some HTTP requests, or mirror them ([`tether_tunnel::wire::route`]).
//!   While such a claim is on a port, each new connection's first bytes are read
//!   ([`sniff`]): HTTP goes through [`http`], which routes request by request, and anything
//!   else goes to the app (or to a global claim), with copies for the mirrors ([`mirror`]).
//!   With no claim, or one global claim, connections are spliced as bytes, as before.
//! - [`claims`] holds the claims, their conflicts and their counters.
//! - With `--replace` the app container does not run; connections no claim takes are reset.

mod claims;
mod http;
mod mirror;
mod sniff;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tether_tunnel::Session;
use tether_tunnel::wire::flow::{FlowReply, FlowRequest};
use tether_tunnel::wire::frame::{MAX_FRAME, expect_frame, read_frame, write_frame};
use tether_tunnel::wire::handshake::{Terms, server_handshake_with};
use tether_tunnel::wire::intercept::{LIVENESS, SidecarRequest};
use tether_tunnel::wire::route::Mode;
use tether_tunnel::{FlowStream, SessionError};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use claims::{Claim, Ports};
use sniff::Protocol;

/// A laptop gets this long to complete the handshake and open its control stream.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes moved per read and write on each direction of a forwarded connection: tokio's
/// default of 8 KiB made the dormant path a fifth as fast as the app itself (652 vs 3310
/// MiB/s in tether-bench-k8s).
const COPY_BUFFER: usize = 256 * 1024;
/// How long the laptop may take to answer a stream with its local dial's result.
pub(crate) const LAPTOP_DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// One port the sidecar took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub listen: u16,
    pub app: u16,
}

impl std::str::FromStr for Forward {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (listen, app) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not LISTEN=APP"))?;
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{p:?} is not a port number"))
        };
        Ok(Forward {
            listen: port(listen)?,
            app: port(app)?,
        })
    }
}

pub struct Config {
    pub control: SocketAddr,
    pub forwards: Vec<Forward>,
    /// The app container does not run: connections no claim takes are reset.
    pub replace: bool,
}

#[derive(Debug, Error)]
pub enum SidecarError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no --forward given: the sidecar would have nothing to do")]
    NoForwards,
    #[error("cannot wait for signals: {0}")]
    Signals(#[source] std::io::Error),
}

pub async fn run(config: Config) -> Result<(), SidecarError> {
    if config.forwards.is_empty() {
        return Err(SidecarError::NoForwards);
    }
    let ports = Arc::new(Ports::new(config.replace));
    let mut listeners = Vec::new();
    for f in &config.forwards {
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, f.listen));
        listeners.push((bind(addr).await?, f.app));
        ports.add(f.listen, f.app);
    }
    let control = bind(config.control).await?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(SidecarError::Signals)?;
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, app) in listeners {
        tasks.spawn(accept_forwarded(listener, app, ports.clone()));
    }
    tasks.spawn(accept_control(control, ports.clone()));
    tracing::info!(control = %config.control, forwards = ?config.forwards, "sidecar ready");
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, SidecarError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SidecarError::Bind { addr, source })
}

async fn accept_forwarded(listener: TcpListener, app: u16, ports: Arc<Ports>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(forward(stream, app, ports.clone()));
            }
            Err(e) => {
                // Typically out of file descriptors; back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Carries one connection where the port's claims say: as bytes to the app or to a global
/// claim's laptop, or through the HTTP router while a filter or a mirror is on the port.
async fn forward(mut stream: TcpStream, app: u16, ports: Arc<Ports>) {
    let claims = ports.claims_of(app);
    let global = claims.iter().find(|c| c.route.is_global()).cloned();
    let routed = claims.iter().any(|c| !c.route.is_global());
    if !routed {
        return match global {
            Some(claim) => to_laptop(stream, Bytes::new(), app, &claim, &ports).await,
            None => to_app(stream, Bytes::new(), app, &[], &ports).await,
        };
    }
    let (protocol, head) = sniff::sniff(&mut stream).await;
    match (protocol, global) {
        (Protocol::Http1 | Protocol::Http2, _) => {
            http::serve(stream, head, protocol, app, ports).await;
        }
        (Protocol::Other, Some(claim)) => {
            ports.count_not_http(app);
            to_laptop(stream, head, app, &claim, &ports).await;
        }
        (Protocol::Other, None) => {
            ports.count_not_http(app);
            // Only a mirror of everything copies what is not HTTP.
            let mirrors: Vec<Claim> = claims
                .iter()
                .filter(|c| c.route.mode == Mode::Mirror && c.route.filter.is_empty())
                .cloned()
                .collect();
            to_app(stream, head, app, &mirrors, &ports).await;
        }
    }
}

/// To the claim's laptop; to the app if its session is gone, since nothing was sent yet.
async fn to_laptop(stream: TcpStream, head: Bytes, app: u16, claim: &Claim, ports: &Arc<Ports>) {
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, app));
    let request = FlowRequest::Tcp { target };
    match tokio::time::timeout(LAPTOP_DIAL_TIMEOUT, claim.session.dial(&request)).await {
        Ok(Ok(mut flow)) => {
            claim.count();
            if flow.write_all(&head).await.is_ok() {
                splice(stream, flow).await;
            }
        }
        Ok(Err(SessionError::Dial { reply, .. })) => {
            tracing::debug!(port = app, ?reply, "the laptop refused the connection");
            reset(stream);
        }
        Err(_) => {
            tracing::debug!(port = app, "the laptop did not answer in time");
            reset(stream);
        }
        Ok(Err(e)) => {
            tracing::debug!(port = app, "session gone ({e}); to the app");
            to_app(stream, head, app, &[], ports).await;
        }
    }
}

async fn to_app(stream: TcpStream, head: Bytes, app: u16, mirrors: &[Claim], ports: &Ports) {
    ports.count_forwarded(app);
    if ports.replaced() {
        // Port `app` on loopback is this sidecar's own listener: there is no app to reach.
        return reset(stream);
    }
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, app));
    match TcpStream::connect(target).await {
        Ok(upstream) => {
            let _ = upstream.set_nodelay(true);
            if !mirrors.is_empty() {
                return mirror::plain(stream, head, upstream, mirrors).await;
            }
            let (mut a, mut b) = (stream, upstream);
            if b.write_all(&head).await.is_ok() {
                let _ = tokio::io::copy_bidirectional_with_sizes(
                    &mut a,
                    &mut b,
                    COPY_BUFFER,
                    COPY_BUFFER,
                )
                .await;
            }
        }
        Err(e) => {
            tracing::debug!(port = app, "the app refused: {e}");
            reset(stream);
        }
    }
}

async fn splice(mut client: TcpStream, mut flow: FlowStream) {
    if let Err(e) =
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut flow, COPY_BUFFER, COPY_BUFFER)
            .await
    {
        tracing::debug!("intercepted connection ended: {e}");
    }
}

/// Closes a connection with RST, as a refused port would.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn accept_control(listener: TcpListener, ports: Arc<Ports>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let ports = ports.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_laptop(stream, &ports).await {
                        tracing::info!(%peer, "laptop session ended: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[derive(Debug, Error)]
enum LaptopError {
    #[error("no handshake within {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    #[error(transparent)]
    Handshake(#[from] tether_tunnel::wire::handshake::HandshakeError),
    #[error(transparent)]
    Wire(#[from] tether_tunnel::wire::WireError),
    #[error("the first stream was {0:?}, not the control stream")]
    NotControl(FlowRequest),
    #[error("the session closed before its control stream opened")]
    NoControl,
    #[error("silent for {LIVENESS:?}")]
    Silent,
}

/// One laptop's session: its control stream's requests until it ends or falls silent.
async fn serve_laptop(mut stream: TcpStream, ports: &Ports) -> Result<(), LaptopError> {
    let _ = stream.set_nodelay(true);
    let (session, mut incoming, mut control) = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let admitted = server_handshake_with(&mut stream, "", Terms::SIDECAR).await?;
        tracing::info!(laptop = %admitted.peer.software, "laptop session started");
        let (session, mut incoming) = Session::server(stream);
        let mut control = incoming.next().await.ok_or(LaptopError::NoControl)?;
        let request =
            FlowRequest::decode(&expect_frame(&mut control, MAX_FRAME, "flow request").await?)?;
        if request != FlowRequest::Control {
            return Err(LaptopError::NotControl(request));
        }
        Ok((session, incoming, control))
    })
    .await
    .map_err(|_| LaptopError::Timeout)??;
    let session_id = ports.next_session.fetch_add(1, Ordering::Relaxed);
    let served = async {
        loop {
            let frame = tokio::time::timeout(LIVENESS, read_frame(&mut control, MAX_FRAME))
                .await
                .map_err(|_| LaptopError::Silent)??;
            let Some(frame) = frame else {
                return Ok(());
            };
            let reply = ports.handle(session_id, &session, SidecarRequest::decode(&frame)?);
            write_frame(&mut control, &reply.encode()).await?;
        }
    };
    // The laptop opens no other streams; refusing them keeps the session's streams few.
    let refuse = async {
        while let Some(mut s) = incoming.next().await {
            let reply = FlowReply::Failed {
                reason: "the sidecar accepts only its control stream".into(),
            };
            let _ = write_frame(&mut s, &reply.encode()).await;
        }
        std::future::pending::<()>().await
    };
    let result = tokio::select! {
        r = served => r,
        () = refuse => Ok(()),
    };
    ports.release_session(session_id);
    result
}
