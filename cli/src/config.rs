//! Plain configuration, as the commands and the daemon take it: no clap types, every default
//! filled in. [`crate::args`] builds these from the command line; the daemon gets
//! [`SessionSettings`] inside its [`crate::daemon::DaemonConfig`] file unchanged.

pub mod file;

use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

/// The manager's namespace unless `--manager-namespace` says otherwise.
pub const DEFAULT_MANAGER_NAMESPACE: &str = "tether";

/// What `tether connect` connects to, and how.
pub struct ConnectConfig {
    pub target: Target,
    pub settings: SessionSettings,
    pub state_dir: PathBuf,
    /// A process whose end ends the session (`tether run`'s own pid), so that a crash of
    /// that process leaves nothing behind.
    pub owner: Option<u32>,
    /// A rootless run's namespace, whose device the daemon serves instead of making one.
    pub namespace: Option<crate::namespace::NamespaceLink>,
}

/// Where the manager is.
pub enum Target {
    /// A manager at a known address.
    Direct(DirectTarget),
    /// The cluster the kubeconfig names; the manager is installed there if needed.
    Kubernetes(KubeTarget),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectTarget {
    /// `HOST:PORT`, resolved on every dial.
    pub manager: String,
    pub token_file: PathBuf,
}

/// A cluster as kubectl would pick it; `None` means "what kubectl would use".
#[derive(Debug, Clone, Default)]
pub struct KubeTarget {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub manager_namespace: String,
    /// The manager's image; `None` is this version's default image.
    pub manager_image: Option<String>,
    /// How long `connect` waits for a Ready manager.
    pub timeout: std::time::Duration,
}

/// How long `connect` waits for a Ready manager unless `--timeout` says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How this machine is set up while connected: the same for every kind of target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSettings {
    pub also_proxy: Vec<IpNet>,
    pub never_proxy: Vec<IpNet>,
    pub tun_name: String,
    pub tun_subnet: Ipv4Net,
    pub resolv_conf: PathBuf,
    pub dns: DnsPreference,
    /// Whether the hosts of Ingress rules resolve here, and against public DNS.
    #[serde(default)]
    pub ingress_hosts: IngressHosts,
}

/// What the hosts named in the cluster's Ingress rules resolve to on this machine.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IngressHosts {
    /// To the ingress controller's address, unless public DNS resolves the host.
    #[default]
    Auto,
    /// To the ingress controller's address, whatever public DNS says.
    Override,
    /// Not at all (`--no-ingress-hosts`).
    Off,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            also_proxy: Vec::new(),
            never_proxy: Vec::new(),
            tun_name: "tether0".to_owned(),
            tun_subnet: Ipv4Net::new(std::net::Ipv4Addr::new(198, 18, 0, 0), 30)
                // 30 is a valid IPv4 prefix length.
                .expect("a /30"),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            dns: DnsPreference::Auto,
            ingress_hosts: IngressHosts::Auto,
        }
    }
}

/// How the user wants cluster names to reach tether's DNS server.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsPreference {
    /// systemd-resolved when this machine uses it, else the resolver file.
    Auto,
    Resolved,
    ResolvConf,
}

/// The state directory unless `--state-dir` or `TETHER_STATE_DIR` says otherwise: root's
/// runtime directory, or the user's.
pub fn default_state_dir() -> PathBuf {
    if crate::system::is_root() {
        PathBuf::from("/run/tether")
    } else {
        std::env::var_os("XDG_RUNTIME_DIR")
            .map_or_else(std::env::temp_dir, PathBuf::from)
            .join("tether")
    }
}
