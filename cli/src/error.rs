//! Errors as the user sees them: what failed, the likely cause, and what to do next.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use tether_tunnel::stack::StackError;
use tether_tunnel::wire::handshake::HandshakeError;
use thiserror::Error;

use crate::cluster::{ClusterError, InstallError, TransportError};
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
        "cannot reach the manager at {manager}: {reason}. Check that tether-agent manager runs there and that this machine can reach that address."
    )]
    ManagerUnreachable { manager: String, reason: String },
    #[error("the manager at {manager} refused the session: {source}")]
    Handshake {
        manager: String,
        #[source]
        source: HandshakeError,
    },
    #[error("the manager at {manager} did not send the cluster's configuration: {reason}")]
    NoClusterInfo { manager: String, reason: String },
    #[error(
        "tether is already connected here (daemon pid {pid}, manager {manager}). Run `tether quit` to stop it first."
    )]
    AlreadyConnected { pid: u32, manager: String },
    #[error(
        "cannot route {subnet}: it contains {manager}, the address the tunnel itself goes to, so the tunnel would be routed into itself. Leave it out with --never-proxy or remove it from --also-proxy."
    )]
    RoutesManager { subnet: IpNet, manager: IpAddr },
    #[error(
        "cannot route {subnet}: it overlaps {existing}, which this machine already routes via {device}. Keep it out of the tunnel with --never-proxy {existing} (or leave it out of --also-proxy)."
    )]
    OverlapsRoute {
        subnet: IpNet,
        existing: IpNet,
        device: String,
    },
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
        "{0}. If a route to that subnet already exists on this machine, keep it out of the tunnel with --never-proxy."
    )]
    Route(#[from] RouteError),
    #[error("cannot configure systemd-resolved for {link}: {reason}")]
    Resolved { link: String, reason: String },
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error("the tether daemon (pid {0}) did not stop within 10 seconds")]
    QuitTimeout(u32),
    #[error("cannot signal the tether daemon (pid {pid}): {source}")]
    Signal {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted before the tunnel was up; nothing on this machine was changed")]
    Interrupted,
    #[error("cannot set up signal handling: {0}")]
    Signals(std::io::Error),
    #[error("cannot start the tether daemon: {0}")]
    Spawn(std::io::Error),
    #[error("the tether daemon exited before it was connected ({status}). Its log: {log}{tail}")]
    DaemonDied {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("the tether daemon did not open its socket {0} within 10 seconds")]
    DaemonSilent(PathBuf),
    #[error(
        "lost contact with the tether daemon ({reason}). Its log: {log}; `tether quit` stops it."
    )]
    DaemonLost { reason: String, log: PathBuf },
    #[error("{message}")]
    Daemon { message: String, exit_code: u8 },
    #[error(
        "tether needs root to create its network device and change routes and DNS, and sudo {0}. Run tether connect as root."
    )]
    Sudo(String),
    /// A command run on this one's behalf (through sudo) failed and said why itself.
    #[error("")]
    Exited(u8),
    #[error("cannot read the daemon configuration {path}: {reason}")]
    DaemonConfig { path: PathBuf, reason: String },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(
        "cannot read the traffic manager's session token (secret {namespace}/tether-manager-token): {reason}. Run `tether connect` again to repair the install, or ask for read access to that secret."
    )]
    ManagerToken { namespace: String, reason: String },
    #[error("cannot open the daemon socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::AlreadyConnected { .. } => 3,
            CliError::ManagerUnreachable { .. }
            | CliError::Handshake { .. }
            | CliError::Cluster(_)
            | CliError::Transport(_) => 4,
            CliError::Interrupted => 130,
            CliError::Daemon { exit_code, .. } | CliError::Exited(exit_code) => *exit_code,
            _ => 1,
        }
    }
}
