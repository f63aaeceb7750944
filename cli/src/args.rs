//! Command-line parsing. clap types stay here; commands receive plain configuration.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "Put this machine inside a Kubernetes cluster: cluster IPs and DNS names work here."
)]
pub struct Cli {
    /// Output format for results.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Where tether keeps its daemon's socket and log and records what it changed on this
    /// machine, so that it can be undone even after a crash [default: /run/tether as root,
    /// else $XDG_RUNTIME_DIR/tether].
    #[arg(long, global = true, env = "TETHER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Connect this machine to the cluster: install or upgrade the traffic manager if needed,
    /// open a tunnel to it through the API server and route cluster addresses and DNS through
    /// it. Returns once traffic flows; the daemon keeps the session up (and reconnects on its
    /// own) until `tether quit`.
    Connect(ConnectArgs),
    /// Show what the daemon is connected to and what it routes.
    Status,
    /// Stop the daemon and undo everything it changed, or undo what a crashed one left.
    Quit,
    /// Remove the traffic manager and everything else tether installed in the cluster
    /// (disconnecting first if connected).
    Uninstall(UninstallArgs),
    /// The daemon itself, started by `tether connect`.
    #[command(hide = true)]
    Daemon(DaemonArgs),
    /// Runs a credential plugin as the user who started tether (used by the daemon).
    #[command(hide = true)]
    ExecAs(ExecAsArgs),
}

/// Which cluster, as kubectl would pick it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KubeArgs {
    /// The kubeconfig file [default: $KUBECONFIG, else ~/.kube/config].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: its current context].
    #[arg(long)]
    pub context: Option<String>,
    /// The namespace short names resolve in (`web` for `web.NAMESPACE`) [default: the
    /// context's namespace, else `default`].
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// The namespace of the traffic manager.
    #[arg(long, default_value = "tether")]
    pub manager_namespace: String,
}

#[derive(clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// The traffic manager's image [default: ghcr.io/tether-dev/tether-agent:<this version>].
    #[arg(long, value_name = "IMAGE")]
    pub manager_image: Option<String>,
    /// Reach a manager at this address instead of through the Kubernetes API (direct mode,
    /// for managers outside a cluster and for tests).
    #[arg(long, value_name = "HOST:PORT", requires = "token_file", conflicts_with_all = ["kubeconfig", "context", "manager_image"])]
    pub manager_address: Option<String>,
    /// File holding the manager's session token (direct mode).
    #[arg(long, value_name = "FILE", requires = "manager_address")]
    pub token_file: Option<PathBuf>,
    /// Also route this subnet to the cluster (repeatable).
    #[arg(long = "also-proxy", value_name = "CIDR")]
    pub also_proxy: Vec<IpNet>,
    /// Never route this subnet to the cluster, even when the cluster reports it (repeatable).
    #[arg(long = "never-proxy", value_name = "CIDR")]
    pub never_proxy: Vec<IpNet>,
    /// Name of the TUN device to create.
    #[arg(long, default_value = "tether0")]
    pub tun_name: String,
    /// Small subnet for the TUN device itself: its first address is the device's, its second
    /// the DNS server's. Pick one that this machine does not use.
    #[arg(long, default_value = "198.18.0.0/30")]
    pub tun_subnet: ipnet::Ipv4Net,
    /// The resolver configuration to point at tether's DNS server while connected (when
    /// systemd-resolved is not used).
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// How cluster names reach tether's DNS server: per-link DNS through systemd-resolved,
    /// a rewrite of the resolver file, or whichever this machine uses (auto).
    #[arg(long, value_enum, default_value_t = DnsModeArg::Auto)]
    pub dns_mode: DnsModeArg,
}

#[derive(clap::Args)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsModeArg {
    Auto,
    Resolved,
    ResolvConf,
}

#[derive(clap::Args)]
pub struct DaemonArgs {
    /// The daemon's configuration, written by `tether connect`.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ExecAsArgs {
    #[arg(long)]
    pub uid: u32,
    #[arg(long)]
    pub gid: u32,
    /// The plugin and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<std::ffi::OsString>,
}

/// The parsed manager address: names are resolved once, at connect time.
pub fn resolve_manager(address: &str) -> std::io::Result<SocketAddr> {
    address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address"))
}
