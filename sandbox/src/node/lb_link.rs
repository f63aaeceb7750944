//! The load-balancer link: a veth between the workstation and the node that carries only
//! [`REACHABLE`], the range load-balancer addresses and externalIPs come from, so they answer
//! from the workstation without tether, as a cloud load balancer answers from outside.
//!
//! Why it is built this way:
//!
//! - The design's rule holds: the workstation's only way into pods is the API endpoint. The
//!   workstation routes [`REACHABLE`] to the node and nothing else, and the node's table
//!   [`TABLE`] forwards what comes over the link only when it was sent to an address in
//!   [`REACHABLE`] and kube-proxy DNATed it (a load-balancer address or externalIP: a
//!   ClusterIP or NodePort, which kube-proxy DNATs too, is refused) and lets none of it
//!   reach the node's own sockets (API server, DNS, kubelet API), whatever routes a process in
//!   the workstation adds. Replies need no route in the workstation beyond the link.
//! - The link itself is a /30 inside [`REACHABLE`]: the rest of the range is routed via the
//!   node, not on-link, so the workstation never ARPs for a load-balancer address (the node
//!   owns none of them; kube-proxy only rewrites packets sent to them).
//! - The table is not kube-proxy's, so it survives either control plane's kube-proxy
//!   replacing its own.

use std::net::Ipv4Addr;

use super::netns::{Netns, NetnsError};

/// The range routed from the workstation to the node: load-balancer pools and externalIPs
/// (TEST-NET-2, documentation addresses that no real network uses).
pub const REACHABLE: &str = "198.51.100.0/24";
/// The node's end of the link.
pub const NODE_END_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The workstation's end of the link.
pub const WORKSTATION_END_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The link's prefix length: the two ends only.
const LINK_PREFIX: u8 = 30;
/// The link's interface in the node namespace.
pub const NODE_IF: &str = "lb-ws";
/// The link's interface in the workstation namespace.
pub const WORKSTATION_IF: &str = "lb-node";
/// The node's nftables table that guards the link.
pub const TABLE: &str = "tether-lb-link";

/// Creates the link between `node` and `workstation`, its routes and its guard.
pub fn build(node: &Netns, workstation: &Netns) -> Result<(), NetnsError> {
    node.ip(&[
        "link",
        "add",
        NODE_IF,
        "type",
        "veth",
        "peer",
        "name",
        WORKSTATION_IF,
        "netns",
        workstation.name(),
    ])?;
    node.ip(&[
        "addr",
        "add",
        &format!("{NODE_END_IP}/{LINK_PREFIX}"),
        "dev",
        NODE_IF,
    ])?;
    node.ip(&["link", "set", NODE_IF, "up"])?;
    workstation.ip(&[
        "addr",
        "add",
        &format!("{WORKSTATION_END_IP}/{LINK_PREFIX}"),
        "dev",
        WORKSTATION_IF,
    ])?;
    workstation.ip(&["link", "set", WORKSTATION_IF, "up"])?;
    workstation.ip(&["route", "add", REACHABLE, "via", &NODE_END_IP.to_string()])?;
    node.nft(&guard())
}

/// The node's rules for the link (see the module doc). What they refuse is rejected, not
/// dropped, so a client fails at once as on a network with a firewall. Echo requests to the
/// node's end are let in, so `ping` can tell a broken link from a Service that does not
/// answer.
fn guard() -> String {
    format!(
        "table ip {TABLE} {{\n\
\tchain forward {{\n\t\ttype filter hook forward priority 0; policy accept;\n\
\t\tiifname \"{NODE_IF}\" ct status dnat ct original ip daddr {REACHABLE} accept\n\
\t\tiifname \"{NODE_IF}\" reject with icmp type admin-prohibited\n\t}}\n\
\tchain input {{\n\t\ttype filter hook input priority 0; policy accept;\n\
\t\tiifname \"{NODE_IF}\" ct state established,related accept\n\
\t\tiifname \"{NODE_IF}\" icmp type echo-request accept\n\
\t\tiifname \"{NODE_IF}\" reject with icmp type admin-prohibited\n\t}}\n\
}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_sits_inside_the_reachable_range() {
        let range: ipnet::Ipv4Net = REACHABLE.parse().unwrap();
        let link = ipnet::Ipv4Net::new(NODE_END_IP, LINK_PREFIX).unwrap();
        assert!(range.contains(&link));
        assert!(link.contains(&WORKSTATION_END_IP));
    }

    #[test]
    fn only_dnated_traffic_crosses_the_node() {
        let text = guard();
        assert!(
            text.contains(
                "iifname \"lb-ws\" ct status dnat ct original ip daddr 198.51.100.0/24 accept"
            ),
            "{text}"
        );
        assert_eq!(
            text.matches("reject with icmp type admin-prohibited")
                .count(),
            2,
            "{text}"
        );
    }
}
