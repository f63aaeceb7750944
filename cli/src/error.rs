//! Errors as the user sees them: what failed, the likely cause, and what to do next.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use tether_tunnel::stack::StackError;
use tether_tunnel::wire::handshake::HandshakeError;
use thiserror::Error;

use crate::system::resolv::ResolvError;
use crate::system::routes::RouteError;
use crate::system::state::StateError;

#[derive(Debug, Error)]
pub enum CliError {
    #[error(
        "cannot read the token file {path}: {source}. Pass the file that holds the manager's token with --token-file."
    )]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {0} is empty. It must hold the manager's session token.")]
    EmptyToken(PathBuf),
    #[error(
        "cannot resolve the manager address {address}: {source}. Use HOST:PORT, e.g. 10.0.0.5:8022."
    )]
    ManagerAddress {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot reach the manager at {addr}: {reason}. Check that tether-agent manager runs there and that this machine can reach that address."
    )]
    ManagerUnreachable { addr: SocketAddr, reason: String },
    #[error("the manager at {addr} refused the session: {source}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: HandshakeError,
    },
    #[error("the manager at {addr} did not send the cluster's configuration: {reason}")]
    NoClusterInfo { addr: SocketAddr, reason: String },
    #[error(
        "tether connect is already running here (pid {pid}, manager {manager}). Run `tether quit` to stop it first."
    )]
    AlreadyConnected { pid: u32, manager: String },
    #[error(
        "cannot route {subnet}: it contains the manager's address {manager}, so the tunnel would be routed into itself. Remove it from --also-proxy."
    )]
    RoutesManager { subnet: IpNet, manager: SocketAddr },
    #[error(
        "cannot route {subnet}: it overlaps tether's own device subnet {tun}. Choose another --tun-subnet."
    )]
    OverlapsTun { subnet: IpNet, tun: IpNet },
    #[error(
        "--tun-subnet {0} is too small: it needs two host addresses (the device's and the DNS server's), e.g. a /30."
    )]
    TunSubnetTooSmall(ipnet::Ipv4Net),
    #[error("cannot route {0}: IPv6 subnets are not carried yet.")]
    Ipv6(IpNet),
    #[error("{0}. Run tether as root (it creates a TUN device and changes routes and DNS).")]
    Privileges(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Resolv(#[from] ResolvError),
    #[error(
        "{0}. If a route to that subnet already exists on this machine, leave the subnet out of --also-proxy."
    )]
    Route(#[from] RouteError),
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error(
        "lost the tunnel to the manager at {addr}: {reason}. Everything tether changed has been undone; run tether connect again."
    )]
    SessionLost { addr: SocketAddr, reason: String },
    #[error("tether connect (pid {0}) did not stop within 10 seconds after SIGTERM")]
    QuitTimeout(u32),
    #[error("cannot signal tether connect (pid {pid}): {source}")]
    Signal {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted before the tunnel was up; nothing on this machine was changed")]
    Interrupted,
    #[error("cannot set up signal handling: {0}")]
    Signals(std::io::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::AlreadyConnected { .. } => 3,
            CliError::ManagerUnreachable { .. } | CliError::Handshake { .. } => 4,
            CliError::SessionLost { .. } => 5,
            CliError::Interrupted => 130,
            _ => 1,
        }
    }
}
