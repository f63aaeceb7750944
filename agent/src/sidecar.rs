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

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_tunnel::Session;
use tether_tunnel::wire::flow::{FlowReply, FlowRequest};
use tether_tunnel::wire::frame::{MAX_FRAME, expect_frame, read_frame, write_frame};
use tether_tunnel::wire::handshake::{Terms, server_handshake_with};
use tether_tunnel::wire::intercept::{
    Holder, LIVENESS, PortStatus, SidecarReply, SidecarRequest, SidecarStatus,
};
use tether_tunnel::{FlowStream, SessionError};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};

/// A laptop gets this long to complete the handshake and open its control stream.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes moved per read and write on each direction of a forwarded connection: tokio's
/// default of 8 KiB made the dormant path a fifth as fast as the app itself (652 vs 3310
/// MiB/s in tether-bench-k8s).
const COPY_BUFFER: usize = 256 * 1024;
/// How long the laptop may take to answer a stream with its local dial's result.
const LAPTOP_DIAL_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A claim: the session the port's connections go to.
#[derive(Clone)]
struct Claim {
    session_id: u64,
    holder: Holder,
    session: Session,
}

struct Port {
    listen: u16,
    claim: Option<Claim>,
    intercepted: AtomicU64,
    forwarded: AtomicU64,
}

/// The ports, by app port.
#[derive(Default)]
struct Ports {
    by_app: Mutex<BTreeMap<u16, Port>>,
    next_session: AtomicU64,
}

impl Ports {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, Port>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.by_app.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn claim_of(&self, app: u16) -> Option<Claim> {
        self.lock().get(&app).and_then(|p| p.claim.clone())
    }

    fn count(&self, app: u16, intercepted: bool) {
        if let Some(p) = self.lock().get(&app) {
            let counter = if intercepted {
                &p.intercepted
            } else {
                &p.forwarded
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn handle(&self, session_id: u64, session: &Session, request: SidecarRequest) -> SidecarReply {
        let mut ports = self.lock();
        match request {
            SidecarRequest::Claim { port, holder } => {
                let known: Vec<u16> = ports.keys().copied().collect();
                let Some(p) = ports.get_mut(&port) else {
                    return SidecarReply::NoSuchPort { port, ports: known };
                };
                match &p.claim {
                    Some(c) if c.session_id != session_id => SidecarReply::Held {
                        port,
                        by: c.holder.clone(),
                    },
                    _ => {
                        tracing::info!(port, %holder, "port claimed");
                        p.claim = Some(Claim {
                            session_id,
                            holder,
                            session: session.clone(),
                        });
                        SidecarReply::Claimed { port }
                    }
                }
            }
            SidecarRequest::Release { port } => {
                if let Some(p) = ports.get_mut(&port)
                    && p.claim.as_ref().is_some_and(|c| c.session_id == session_id)
                {
                    tracing::info!(port, "port released");
                    p.claim = None;
                }
                SidecarReply::Released { port }
            }
            SidecarRequest::Status => SidecarReply::Status(SidecarStatus {
                ports: ports
                    .iter()
                    .map(|(app, p)| PortStatus {
                        listen: p.listen,
                        app: *app,
                        holder: p.claim.as_ref().map(|c| c.holder.clone()),
                        intercepted: p.intercepted.load(Ordering::Relaxed),
                        forwarded: p.forwarded.load(Ordering::Relaxed),
                    })
                    .collect(),
            }),
            SidecarRequest::Ping { nonce } => SidecarReply::Pong { nonce },
        }
    }

    /// Gives every port of a session that ended back to the app.
    fn release_session(&self, session_id: u64) {
        for (app, p) in self.lock().iter_mut() {
            if p.claim.as_ref().is_some_and(|c| c.session_id == session_id) {
                tracing::info!(port = app, "the laptop went away; port back to the app");
                p.claim = None;
            }
        }
    }
}

pub async fn run(config: Config) -> Result<(), SidecarError> {
    if config.forwards.is_empty() {
        return Err(SidecarError::NoForwards);
    }
    let ports = Arc::new(Ports::default());
    let mut listeners = Vec::new();
    for f in &config.forwards {
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, f.listen));
        listeners.push((bind(addr).await?, f.app));
        ports.lock().insert(
            f.app,
            Port {
                listen: f.listen,
                claim: None,
                intercepted: AtomicU64::new(0),
                forwarded: AtomicU64::new(0),
            },
        );
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

/// Carries one connection to the laptop that holds its port, else to the app.
async fn forward(stream: TcpStream, app: u16, ports: Arc<Ports>) {
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, app));
    if let Some(claim) = ports.claim_of(app) {
        let request = FlowRequest::Tcp { target };
        match tokio::time::timeout(LAPTOP_DIAL_TIMEOUT, claim.session.dial(&request)).await {
            Ok(Ok(flow)) => {
                ports.count(app, true);
                return splice(stream, flow).await;
            }
            Ok(Err(SessionError::Dial { reply, .. })) => {
                tracing::debug!(port = app, ?reply, "the laptop refused the connection");
                return reset(stream);
            }
            Err(_) => {
                tracing::debug!(port = app, "the laptop did not answer in time");
                return reset(stream);
            }
            // The session died between the lookup and the dial: nothing was read from the
            // client yet, so the app can still take it.
            Ok(Err(e)) => tracing::debug!(port = app, "session gone ({e}); to the app"),
        }
    }
    ports.count(app, false);
    match TcpStream::connect(target).await {
        Ok(upstream) => {
            let _ = upstream.set_nodelay(true);
            let (mut a, mut b) = (stream, upstream);
            let _ =
                tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, COPY_BUFFER, COPY_BUFFER)
                    .await;
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
