//! The node: real Linux networking for the sandbox's pods, all inside network namespaces the
//! sandbox owns (the host's own namespace is never changed).
//!
//! - [`netns`]: named namespaces and acting inside them.
//! - [`network`]: the [`Node`](network::Node): node namespace with the bridge `cbr0`, workstation namespace,
//!   and one namespace per pod with a veth to the bridge; [`ipam`] hands out pod addresses.
//! - [`lb_link`]: the one link from the workstation to the node, for load-balancer addresses
//!   and externalIPs only.
//! - [`proxy`]: kube-proxy, nftables rules in the node namespace for Services.
//!
//! Every namespace of one sandbox starts with the prefix [`Names`] derives from its state
//! directory, so two sandboxes never collide and the leftovers of a crashed one are found by
//! name.

pub mod ipam;
pub mod lb_link;
pub mod netns;
pub mod network;
pub mod proxy;
#[cfg(test)]
mod tests;

pub use network::cleanup;

use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::path::Path;

/// The node's address: the bridge in the node namespace, the pods' gateway, where NodePorts
/// answer and where the API server and cluster DNS listen for pods.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The port the API server listens on at [`NODE_IP`] (the `kubernetes` Service's targetPort).
pub const API_PORT: u16 = 6443;

/// Names of one sandbox's namespaces.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Derives the prefix from the state directory (canonicalised when it exists), so each
    /// state directory has its own names. Namespace names are kept short and in `[a-z0-9-]`.
    pub fn for_state_dir(dir: &Path) -> Self {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let mut h = std::collections::hash_map::DefaultHasher::new();
        dir.hash(&mut h);
        Names {
            prefix: format!("tsb{:06x}", h.finish() & 0xff_ffff),
        }
    }

    /// What every namespace name of this sandbox starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The node namespace: bridge, kube-proxy rules, API and DNS listeners for pods.
    pub fn node(&self) -> String {
        format!("{}-node", self.prefix)
    }

    /// The workstation namespace `tether-sandbox shell` opens: loopback, with the API server
    /// listening on its 127.0.0.1 at the same port as on the host, and the load-balancer link
    /// ([`lb_link`]).
    pub fn workstation(&self) -> String {
        format!("{}-ws", self.prefix)
    }

    /// A pod's namespace, from the pod's UID.
    pub fn pod(&self, uid: &str) -> String {
        let short: String = uid.chars().filter(|c| *c != '-').take(12).collect();
        format!("{}-p{short}", self.prefix)
    }
}

/// Where the node keeps things: namespace names and per-pod directories (logs, the files
/// mounted into containers).
#[derive(Debug, Clone)]
pub struct Layout {
    pub names: Names,
    pub state_dir: std::path::PathBuf,
}

impl Layout {
    pub fn new(state_dir: &Path) -> Self {
        Layout {
            names: Names::for_state_dir(state_dir),
            state_dir: state_dir.to_path_buf(),
        }
    }

    /// A pod's directory: `pods/NAMESPACE_NAME_UID` under the state directory, as the
    /// kubelet names `/var/log/pods` entries.
    pub fn pod_dir(&self, namespace: &str, name: &str, uid: &str) -> std::path::PathBuf {
        self.state_dir
            .join("pods")
            .join(format!("{namespace}_{name}_{uid}"))
    }
}
