//! Errors as the user sees them: what failed, the likely cause, and what to do next.
//!
//! The engine's modules each have their own error enum ([`DaemonError`], [`DialError`],
//! [`HostError`], [`SubnetError`], the cluster module's, the system module's) that says what
//! failed and keeps its source. [`CliError`] gathers them with the failures of the commands
//! themselves, and [`CliError::message`] adds the next step: the flag to use, the command to
//! run. The daemon reports its failures through the same functions, so `tether connect`
//! prints the same words whether the daemon failed before or after it could answer.

use std::path::PathBuf;

use thiserror::Error;

use crate::cluster::{ClusterError, InstallError, TransportError};
use crate::daemon::DaemonError;
use crate::daemon::dial::DialError;
use crate::daemon::host::HostError;
use crate::subnets::SubnetError;
use crate::system::resolv::ResolvError;
use crate::system::state::StateError;

#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Subnet(#[from] SubnetError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Resolv(#[from] ResolvError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A rootless run could not make its namespace; the message names the fixes.
    #[error(transparent)]
    Namespace(#[from] crate::namespace::NamespaceError),
    #[error("tether is already connected here (daemon pid {pid}, manager {manager})")]
    AlreadyConnected { pid: u32, manager: String },
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
    Signals(#[source] std::io::Error),
    #[error("cannot start the tether daemon: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the tether daemon exited before it was connected ({status}). Its log: {log}{tail}")]
    DaemonDied {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("the tether daemon did not open its socket {0} within 10 seconds")]
    DaemonSilent(PathBuf),
    #[error("lost contact with the tether daemon ({reason}). Its log: {log}")]
    DaemonLost { reason: String, log: PathBuf },
    /// The daemon failed and said why in words already made for the user.
    #[error("{message}")]
    DaemonFailed { message: String, exit_code: u8 },
    #[error("not connected: `tether {0}` works through a connection. Run `tether connect` first.")]
    NotConnected(&'static str),
    #[error("cannot write {path}: {source}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Env(#[from] crate::cluster::env::EnvError),
    #[error(transparent)]
    Agent(#[from] crate::cluster::agent::AgentError),
    #[error(transparent)]
    Config(Box<crate::config::file::FileError>),
    #[error("{0:?} is not a Deployment: give NAME or deploy/NAME")]
    NotADeployment(String),
    /// Arguments clap accepts but that cannot be run.
    #[error("{0}")]
    BadUsage(String),
    /// `tether doctor`'s argument names no Service or Deployment.
    #[error("{0}")]
    BadTarget(String),
    #[error(transparent)]
    Doctor(#[from] crate::doctor::DoctorError),
    #[error("--port {0:?} is not LOCAL[:SERVICE_PORT] with LOCAL a port number")]
    BadPort(String),
    #[error("{0}")]
    BadFilter(String),
    #[error("sudo is not installed")]
    SudoMissing,
    #[error("sudo cannot run: {0}")]
    SudoStart(#[source] std::io::Error),
    #[error("sudo did not allow it ({0})")]
    SudoRefused(std::process::ExitStatus),
    /// A command run on this one's behalf (through sudo) failed and said why itself.
    #[error("")]
    Exited(u8),
}

const SUDO_HINT: &str =
    "tether needs root to create its network device and change routes and DNS, and";

impl CliError {
    /// The whole message: what failed and what to do about it.
    pub fn message(&self) -> String {
        match self {
            CliError::Daemon(e) => daemon_message(e),
            CliError::Host(e) => host_message(e),
            CliError::Subnet(e) => subnet_message(e),
            CliError::AlreadyConnected { .. } => {
                format!("{self}. Run `tether quit` to stop it first.")
            }
            CliError::DaemonLost { .. } => format!("{self}; `tether quit` stops it."),
            CliError::SudoMissing => {
                format!("{SUDO_HINT} sudo is not installed. Run tether connect as root.")
            }
            CliError::SudoStart(e) => {
                format!("{SUDO_HINT} sudo cannot run: {e}. Run tether connect as root.")
            }
            CliError::SudoRefused(status) => format!(
                "{SUDO_HINT} sudo did not allow it ({status}); ask an administrator for sudo rights. Run tether connect as root."
            ),
            other => other.to_string(),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Daemon(e) => daemon_exit_code(e),
            CliError::AlreadyConnected { .. } => 3,
            CliError::Cluster(_)
            | CliError::Transport(_)
            | CliError::Agent(_)
            | CliError::Doctor(_) => 4,
            // The cluster could not run the manager: a cluster problem, like the others.
            CliError::Install(
                crate::cluster::InstallError::Rollout { .. }
                | crate::cluster::InstallError::Forbidden { .. },
            ) => 4,
            CliError::NotConnected(_) => 6,
            CliError::NotADeployment(_)
            | CliError::BadTarget(_)
            | CliError::BadUsage(_)
            | CliError::BadPort(_)
            | CliError::BadFilter(_)
            | CliError::Config(_) => 2,
            CliError::Interrupted => 130,
            CliError::DaemonFailed { exit_code, .. } | CliError::Exited(exit_code) => *exit_code,
            _ => 1,
        }
    }
}

pub fn daemon_message(e: &DaemonError) -> String {
    match e {
        DaemonError::Dial(e) => dial_message(e),
        DaemonError::Host(e) => host_message(e),
        DaemonError::AlreadyRunning { pid, manager } => CliError::AlreadyConnected {
            pid: *pid,
            manager: manager.clone(),
        }
        .message(),
        other => other.to_string(),
    }
}

pub fn daemon_exit_code(e: &DaemonError) -> u8 {
    match e {
        DaemonError::AlreadyRunning { .. } => 3,
        DaemonError::Cluster(_)
        | DaemonError::Dial(
            DialError::Unreachable { .. } | DialError::Handshake { .. } | DialError::Transport(_),
        ) => 4,
        _ => 1,
    }
}

fn dial_message(e: &DialError) -> String {
    let hint = match e {
        DialError::TokenFile { .. } => {
            "Pass the file that holds the manager's token with --token-file."
        }
        DialError::EmptyToken(_) => "It must hold the manager's session token.",
        DialError::ManagerAddress { .. } => "Use HOST:PORT, e.g. 10.0.0.5:8022.",
        DialError::Unreachable { .. } => {
            "Check that tether-agent manager runs there and that this machine can reach that address."
        }
        DialError::TokenSecret { .. } | DialError::NoToken { .. } => {
            "Run `tether connect` again to repair the install, or ask for read access to that secret."
        }
        DialError::Handshake { .. } | DialError::NoClusterInfo { .. } | DialError::Transport(_) => {
            return e.to_string();
        }
    };
    format!("{e}. {hint}")
}

fn host_message(e: &HostError) -> String {
    match e {
        HostError::TunSubnetTooSmall(subnet) => format!(
            "--tun-subnet {subnet} is too small: it needs two host addresses (the device's and the DNS server's), e.g. a /30."
        ),
        HostError::Privileges(e) => {
            format!("{e}. Run tether as root (it creates a TUN device and changes routes and DNS).")
        }
        HostError::Route(e) => format!(
            "{e}. If a route to that subnet already exists on this machine, keep it out of the tunnel with --never-proxy."
        ),
        HostError::Subnet(e) => subnet_message(e),
        HostError::Stack(_) | HostError::Dns(_) => e.to_string(),
    }
}

fn subnet_message(e: &SubnetError) -> String {
    match e {
        SubnetError::RoutesManager { .. } => {
            format!("{e}. Leave it out with --never-proxy or remove it from --also-proxy.")
        }
        SubnetError::OverlapsRoute { existing, .. } => format!(
            "{e}. Keep it out of the tunnel with --never-proxy {existing} (or leave it out of --also-proxy)."
        ),
        SubnetError::OverlapsTun { .. } => format!("{e}. Choose another --tun-subnet."),
        SubnetError::Ipv6(_) => format!("{e}."),
    }
}

/// Exit codes of intercept failures: 2 for what the user asked that cannot be (a workload,
/// Service, port or name that does not fit), 5 when someone else holds the port, 4 when the
/// cluster refused or failed, 130 when cancelled.
pub fn intercept_exit_code(e: &crate::daemon::intercepts::InterceptError) -> u8 {
    use crate::daemon::intercepts::InterceptError as E;
    match e {
        E::NotKubernetes(_)
        | E::NameTaken(_)
        | E::UnknownIntercept { .. }
        | E::UnknownWorkload { .. }
        | E::Target(_)
        | E::OtherPorts { .. }
        | E::NotHttp { .. }
        | E::Refused { .. }
        | E::ReplaceOverSidecar { .. } => 2,
        E::Replaced { .. } => 5,
        E::Held { .. } => 5,
        E::Cancelled { .. } => 130,
        E::Read { .. } | E::Agent(_) | E::Access(_) | E::ClaimTimeout { .. } => 4,
    }
}
