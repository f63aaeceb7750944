//! The node's network: a node namespace with the bridge `cbr0` that every pod's veth is a port
//! of, a workstation namespace, and one namespace per pod.
//!
//! Why it is built this way:
//!
//! - The bridge carries the node address ([`NODE_IP`]/24) and a fixed MAC. A Linux bridge with
//!   no MAC of its own takes the lowest MAC among its ports, so it would change whenever a pod
//!   comes or goes and the pods' ARP entries for their gateway would go stale.
//! - Pods route everything through 10.244.0.1 so that traffic to ClusterIPs, NodePorts and
//!   externalIPs enters the node namespace's IP stack, where kube-proxy's rules are
//!   ([`super::proxy`]); nothing depends on `br_netfilter`.
//! - The node namespace routes the Service CIDR onto the bridge: a socket made in the node
//!   namespace needs a route to a ClusterIP before its first packet can reach the `output`
//!   hook that rewrites the destination.
//! - `br_netfilter` is switched off in the node namespace (when the host has it): it would run
//!   the IPv4 hooks on bridged frames, so a pod reaching a Service that lands on itself would
//!   be DNATed at layer 2 and bridged back out of the port it came in on, which a bridge
//!   drops. Without it, Service traffic always takes the routed path described above, the
//!   same on every host.
//! - The node sends no ICMP redirects. It forwards pod-to-Service traffic back onto the bridge
//!   it came from, which is when a router tells the sender to use the next hop directly; the
//!   next hop of a Service is a DNATed pod, and a pod that sent ClusterIP packets there would
//!   have them dropped. Service traffic must always go through the node.
//! - Everything is done with `ip`, one command at a time, and undone by deleting namespaces:
//!   deleting a namespace takes its interfaces with it, which is also how the leftovers of a
//!   crashed sandbox are cleaned up ([`cleanup`]).

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

use super::ipam::{Exhausted, Ipam};
use super::netns::{self, Netns, NetnsError};
use super::{Layout, NODE_IP, lb_link};
use crate::alloc::SERVICE_CIDR;

/// The bridge in the node namespace.
pub const BRIDGE: &str = "cbr0";
/// The bridge's MAC: locally administered, fixed (see the module doc).
const BRIDGE_MAC: &str = "02:74:73:62:00:01";
/// The pods' interface name.
const POD_IF: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    #[error("pod UID {0:?} has no letters or digits to name its interfaces after")]
    BadUid(String),
}

/// A pod's network: its namespace and its address on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNet {
    pub netns: Netns,
    pub ip: Ipv4Addr,
}

/// The node's namespaces and the pods' addresses.
#[derive(Debug)]
pub struct Node {
    layout: Layout,
    node: Netns,
    workstation: Netns,
    /// Pods set up so far; held while a pod is added or removed, so two calls for the same
    /// UID never interleave.
    pods: Mutex<Pods>,
}

#[derive(Debug)]
struct Pods {
    ipam: Ipam,
    nets: BTreeMap<String, PodNet>,
}

impl Node {
    /// Removes leftovers of this sandbox (every namespace with its prefix: members SIGKILLed,
    /// then deleted), then creates the node namespace (bridge `cbr0` with 10.244.0.1/24 up, IP
    /// forwarding on) and the workstation namespace (loopback, and the load-balancer link to
    /// the node: [`lb_link`]).
    pub fn start(layout: &Layout) -> Result<Node, NodeError> {
        let removed = cleanup(layout);
        if removed > 0 {
            tracing::info!("removed {removed} network namespaces left by an earlier run");
        }
        let node = Netns::create(layout.names.node())?;
        let built = build_node(&node).and_then(|()| {
            let ws = Netns::create(layout.names.workstation())?;
            lb_link::build(&node, &ws)?;
            Ok(ws)
        });
        let workstation = match built {
            Ok(ws) => ws,
            Err(e) => {
                cleanup(layout);
                return Err(e);
            }
        };
        Ok(Node {
            layout: layout.clone(),
            node,
            workstation,
            pods: Mutex::new(Pods {
                ipam: Ipam::new(NODE_IP),
                nets: BTreeMap::new(),
            }),
        })
    }

    /// The node namespace.
    pub fn netns(&self) -> &Netns {
        &self.node
    }

    /// The workstation namespace.
    pub fn workstation(&self) -> &Netns {
        &self.workstation
    }

    fn pods(&self) -> MutexGuard<'_, Pods> {
        // Every change to `Pods` is a single insert or remove, so a panic elsewhere while the
        // lock was held leaves it consistent.
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets up the network of pod `uid`: namespace `Names::pod(uid)`, a veth whose node end is
    /// a port of `cbr0` and whose pod end is `eth0` with the next free address, loopback up,
    /// default route via 10.244.0.1. Calling it again for the same UID returns the same
    /// network (and rebuilds it if its namespace has vanished).
    pub fn add_pod(&self, uid: &str) -> Result<PodNet, NodeError> {
        let host_if = host_if(uid)?;
        let mut pods = self.pods();
        if let Some(net) = pods.nets.get(uid)
            && net.netns.exists()
        {
            return Ok(net.clone());
        }
        let ip = pods.ipam.assign(uid)?;
        let netns = Netns::named(self.layout.names.pod(uid));
        match self.build_pod(&netns, &host_if, ip) {
            Ok(()) => {
                let net = PodNet { netns, ip };
                pods.nets.insert(uid.to_string(), net.clone());
                tracing::debug!(uid, %ip, netns = net.netns.name(), "pod network up");
                Ok(net)
            }
            Err(e) => {
                self.teardown(&netns, &host_if);
                pods.nets.remove(uid);
                pods.ipam.release(uid);
                Err(e)
            }
        }
    }

    fn build_pod(&self, pod: &Netns, host_if: &str, ip: Ipv4Addr) -> Result<(), NodeError> {
        let pod = Netns::create(pod.name())?;
        // A veth of the same name may survive a pod namespace that vanished under us.
        let _ = self.node.ip(&["link", "del", host_if]);
        self.node.ip(&[
            "link",
            "add",
            host_if,
            "type",
            "veth",
            "peer",
            "name",
            POD_IF,
            "netns",
            pod.name(),
        ])?;
        self.node
            .ip(&["link", "set", host_if, "master", BRIDGE, "up"])?;
        pod.ip(&["addr", "add", &format!("{ip}/24"), "dev", POD_IF])?;
        pod.ip(&["link", "set", POD_IF, "up"])?;
        pod.ip(&["route", "add", "default", "via", &NODE_IP.to_string()])?;
        Ok(())
    }

    fn teardown(&self, pod: &Netns, host_if: &str) {
        // Deleting the node end first cuts the pod off at once, even while its processes are
        // still dying and keep the namespace alive.
        // The veth is already gone when its pod namespace was deleted before.
        let _ = self.node.ip(&["link", "del", host_if]);
        if let Err(e) = pod.delete() {
            tracing::warn!("{e}");
        }
    }

    /// Removes pod `uid`'s network: kills what still runs in its namespace, deletes the
    /// namespace and the veth, and frees its address.
    pub fn remove_pod(&self, uid: &str) {
        let mut pods = self.pods();
        let netns = pods
            .nets
            .remove(uid)
            .map(|n| n.netns)
            .unwrap_or_else(|| Netns::named(self.layout.names.pod(uid)));
        if let Ok(host_if) = host_if(uid) {
            self.teardown(&netns, &host_if);
        }
        pods.ipam.release(uid);
    }

    /// Removes every namespace of this sandbox (pods, node, workstation).
    pub fn shutdown(&self) {
        let mut pods = self.pods();
        for uid in pods.ipam.uids() {
            pods.ipam.release(&uid);
        }
        pods.nets.clear();
        cleanup(&self.layout);
    }
}

impl crate::kubelet::PodNetwork for Node {
    fn add_pod(&self, uid: &str) -> Result<(Netns, Ipv4Addr), String> {
        Node::add_pod(self, uid)
            .map(|n| (n.netns, n.ip))
            .map_err(|e| e.to_string())
    }

    fn remove_pod(&self, uid: &str) {
        Node::remove_pod(self, uid)
    }
}

/// The node end of a pod's veth: `vp` and up to 12 letters and digits of the UID (interface
/// names are at most 15 bytes, and only need to be unique inside the node namespace).
fn host_if(uid: &str) -> Result<String, NodeError> {
    let short: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(12)
        .collect();
    if short.is_empty() {
        return Err(NodeError::BadUid(uid.to_string()));
    }
    Ok(format!("vp{short}"))
}

fn build_node(node: &Netns) -> Result<(), NodeError> {
    // Before the bridge exists, so it inherits the default too (see the module doc).
    for key in ["all", "default"] {
        node.sysctl(&format!("net.ipv4.conf.{key}.send_redirects"), "0")?;
    }
    node.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    node.ip(&["link", "set", BRIDGE, "address", BRIDGE_MAC])?;
    node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", BRIDGE])?;
    node.ip(&["link", "set", BRIDGE, "up"])?;
    node.ip(&["route", "add", SERVICE_CIDR, "dev", BRIDGE])?;
    node.sysctl("net.ipv4.ip_forward", "1")?;
    // Absent when the host has no br_netfilter: then there is nothing to switch off.
    match node.sysctl("net.bridge.bridge-nf-call-iptables", "0") {
        Err(NetnsError::Socket { source, .. }) if source.kind() == ErrorKind::NotFound => {}
        other => other?,
    }
    Ok(())
}

/// For `down` after a crash: removes every namespace with this layout's prefix (members
/// SIGKILLed first) and returns how many went.
pub fn cleanup(layout: &Layout) -> usize {
    // The dash keeps one sandbox's prefix from matching a longer one.
    let prefix = format!("{}-", layout.names.prefix());
    netns::list_with_prefix(&prefix)
        .into_iter()
        .filter(|ns| match ns.delete() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("{e}");
                false
            }
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_the_kernel_limit() {
        let name = host_if("0b6f1c2e-5a3d-4c8e-9f10-aabbccddeeff").unwrap();
        assert_eq!(name, "vp0b6f1c2e5a3d");
        assert!(name.len() <= 15);
        assert!(matches!(host_if("--"), Err(NodeError::BadUid(_))));
    }
}
