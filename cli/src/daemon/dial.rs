//! Where tunnels come from. The daemon's session loop asks a [`Dialer`] for a fresh byte
//! stream to the manager on the first connect and after every drop; [`open`] then runs the
//! handshake and waits for the manager's first `ClusterInfo`.
//!
//! - [`direct`]: a manager at a known address (direct mode).
//! - [`kubernetes`]: a port-forward stream to the manager pod through the API server.

pub mod direct;
pub mod kubernetes;

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use tether_tunnel::wire::control::{ClusterInfo, ControlMessage};
use tether_tunnel::wire::flow::FlowRequest;
use tether_tunnel::wire::frame::{MAX_FRAME, expect_frame};
use tether_tunnel::wire::handshake::{HandshakeError, client_handshake};
use tether_tunnel::{FlowStream, Session};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::cluster::TransportError;
use crate::cluster::manifests::{TOKEN_KEY, TOKEN_SECRET};

pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no tunnel could be opened.
#[derive(Debug, Error)]
pub enum DialError {
    #[error("cannot read the token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {0} is empty")]
    EmptyToken(PathBuf),
    #[error("cannot resolve the manager address {address}: {source}")]
    ManagerAddress {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the manager at {manager}: {reason}")]
    Unreachable { manager: String, reason: String },
    #[error("the manager at {manager} refused the session: {source}")]
    Handshake {
        manager: String,
        #[source]
        source: HandshakeError,
    },
    #[error("the manager at {manager} did not send the cluster's configuration: {reason}")]
    NoClusterInfo { manager: String, reason: String },
    #[error(
        "cannot read the traffic manager's session token (secret {namespace}/{TOKEN_SECRET}): {}",
        crate::cluster::client::describe(.source)
    )]
    TokenSecret {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "cannot read the traffic manager's session token (secret {namespace}/{TOKEN_SECRET}): it has no {TOKEN_KEY:?} key"
    )]
    NoToken { namespace: String },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

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
    fn dial(&mut self) -> impl Future<Output = Result<Dialed, DialError>> + Send;
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
pub async fn open(dialed: Dialed) -> Result<Opened, DialError> {
    let Dialed {
        mut io,
        token,
        manager,
        peer_ip,
    } = dialed;
    let unreachable = |reason: String| DialError::Unreachable {
        manager: manager.clone(),
        reason,
    };
    let accepted = match tokio::time::timeout(DIAL_TIMEOUT, client_handshake(&mut io, &token)).await
    {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(source)) => {
            return Err(DialError::Handshake {
                manager: manager.clone(),
                source,
            });
        }
        Err(_) => return Err(unreachable(format!("no handshake within {DIAL_TIMEOUT:?}"))),
    };
    // The daemon takes no streams from the manager yet; dropping `incoming` refuses them.
    let (session, incoming) = Session::client(io);
    drop(incoming);
    let no_info = |reason: String| DialError::NoClusterInfo {
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
