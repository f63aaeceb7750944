//! Where tunnels come from. The daemon's session loop asks a [`Dialer`] for a fresh byte
//! stream to the manager on the first connect and after every drop; [`open`] then runs the
//! handshake and waits for the manager's first `ClusterInfo`.
//!
//! [`DirectDialer`] dials a manager at a known address (direct mode);
//! [`super::portforward::KubeDialer`] returns a port-forward stream to the manager pod.

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use tether_tunnel::wire::control::{ClusterInfo, ControlMessage};
use tether_tunnel::wire::flow::FlowRequest;
use tether_tunnel::wire::frame::{MAX_FRAME, expect_frame};
use tether_tunnel::wire::handshake::client_handshake;
use tether_tunnel::{FlowStream, Session};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::CliError;

pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream a tunnel can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// One fresh stream to a manager, not yet handshaken.
pub struct Dialed {
    pub io: Box<dyn Io>,
    /// The session token the manager expects on this stream.
    pub token: String,
    /// How the user knows this manager: an address, or namespace/pod.
    pub manager: String,
    /// The address the stream's packets go to on this machine's network, which must never
    /// be routed into the tunnel (none when it is not an IP peer).
    pub peer_ip: Option<IpAddr>,
}

/// Makes a new stream to the manager on each call.
pub trait Dialer: Send {
    fn dial(&mut self) -> impl Future<Output = Result<Dialed, CliError>> + Send;
}

/// A manager at a fixed address and a token read from a file.
pub struct DirectDialer {
    pub address: String,
    pub token_file: PathBuf,
}

impl Dialer for DirectDialer {
    async fn dial(&mut self) -> Result<Dialed, CliError> {
        // Read on every dial: a rotated token is picked up on reconnect.
        let token = read_token(&self.token_file)?;
        let addr = crate::args::resolve_manager(&self.address).map_err(|source| {
            CliError::ManagerAddress {
                address: self.address.clone(),
                source,
            }
        })?;
        let unreachable = |reason: String| CliError::ManagerUnreachable {
            manager: addr.to_string(),
            reason,
        };
        let stream = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable(format!("no answer within {DIAL_TIMEOUT:?}"))),
        };
        let _ = stream.set_nodelay(true);
        Ok(Dialed {
            io: Box::new(stream),
            token,
            manager: addr.to_string(),
            peer_ip: Some(addr.ip()),
        })
    }
}

pub fn read_token(path: &PathBuf) -> Result<String, CliError> {
    let token = std::fs::read_to_string(path).map_err(|source| CliError::TokenFile {
        path: path.clone(),
        source,
    })?;
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(CliError::EmptyToken(path.clone()));
    }
    Ok(token)
}

/// An open tunnel: the session, its control stream and what the manager said first.
pub struct Opened {
    pub session: Session,
    pub control: FlowStream,
    pub cluster: ClusterInfo,
    pub manager: String,
    pub manager_version: String,
    pub peer_ip: Option<IpAddr>,
}

/// Handshake, session and the first `ClusterInfo` over a dialed stream.
pub async fn open(dialed: Dialed) -> Result<Opened, CliError> {
    let Dialed {
        mut io,
        token,
        manager,
        peer_ip,
    } = dialed;
    let unreachable = |reason: String| CliError::ManagerUnreachable {
        manager: manager.clone(),
        reason,
    };
    let accepted = match tokio::time::timeout(DIAL_TIMEOUT, client_handshake(&mut io, &token)).await
    {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(source)) => {
            return Err(CliError::Handshake {
                manager: manager.clone(),
                source,
            });
        }
        Err(_) => return Err(unreachable(format!("no handshake within {DIAL_TIMEOUT:?}"))),
    };
    let session = Session::client(io);
    let no_info = |reason: String| CliError::NoClusterInfo {
        manager: manager.clone(),
        reason,
    };
    let mut control = session
        .open(&FlowRequest::Control)
        .await
        .map_err(|e| no_info(e.to_string()))?;
    let frame = tokio::time::timeout(
        DIAL_TIMEOUT,
        expect_frame(&mut control, MAX_FRAME, "cluster info"),
    )
    .await
    .map_err(|_| no_info(format!("nothing within {DIAL_TIMEOUT:?}")))?
    .map_err(|e| no_info(e.to_string()))?;
    match ControlMessage::decode(&frame) {
        Ok(ControlMessage::ClusterInfo(cluster)) => Ok(Opened {
            session,
            control,
            cluster,
            manager,
            manager_version: accepted.peer.software,
            peer_ip,
        }),
        Ok(other) => Err(no_info(format!("unexpected message {other:?}"))),
        Err(e) => Err(no_info(e.to_string())),
    }
}
