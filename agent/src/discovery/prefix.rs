//! Address arithmetic for discovery: covering prefixes around addresses seen in the cluster,
//! and the Service range an API server names in its "out of range" error.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A covering prefix is never narrower than this, so the next address allocated next to the
/// ones seen is covered too (clusters allocate from blocks of at least this size).
const NARROWEST_V4: u8 = 24;
const NARROWEST_V6: u8 = 64;
/// A covering prefix wider than this would swallow unrelated networks (at worst the whole
/// Internet); addresses that far apart are covered group by group instead.
const WIDEST_V4: u8 = 8;
const WIDEST_V6: u8 = 32;
/// The groups used when one prefix would be too wide.
const GROUP_V4: u8 = 16;
const GROUP_V6: u8 = 48;

/// The smallest prefixes that cover `addrs`: one per address family, widened to at least a
/// /24 (/64), or one per /16 (/48) group when a single prefix would be wider than /8 (/32).
/// Loopback, link-local, multicast and unspecified addresses are never covered: they are not
/// the cluster's to route.
pub fn covering_prefixes(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<IpNet> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for addr in addrs {
        match addr {
            IpAddr::V4(a) if routable_v4(a) => v4.push(u32::from(a)),
            IpAddr::V6(a) if routable_v6(a) => v6.push(u128::from(a)),
            _ => {}
        }
    }
    let mut nets: Vec<IpNet> = cover_v4(&v4).into_iter().map(IpNet::V4).collect();
    nets.extend(cover_v6(&v6).into_iter().map(IpNet::V6));
    nets
}

fn routable_v4(a: Ipv4Addr) -> bool {
    !(a.is_loopback()
        || a.is_link_local()
        || a.is_multicast()
        || a.is_unspecified()
        || a.is_broadcast())
}

fn routable_v6(a: Ipv6Addr) -> bool {
    // fe80::/10 is link-local (Ipv6Addr::is_unicast_link_local is stable since 1.84).
    !(a.is_loopback() || a.is_unicast_link_local() || a.is_multicast() || a.is_unspecified())
}

fn cover_v4(addrs: &[u32]) -> Vec<Ipv4Net> {
    let (Some(&lo), Some(&hi)) = (addrs.iter().min(), addrs.iter().max()) else {
        return Vec::new();
    };
    let common = (lo ^ hi).leading_zeros() as u8;
    if common >= WIDEST_V4 {
        let len = common.min(NARROWEST_V4);
        // `len` is at most 32, the only way Ipv4Net::new fails.
        let net = Ipv4Net::new(Ipv4Addr::from(lo), len).expect("prefix length <= 32");
        return vec![net.trunc()];
    }
    let mut groups: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &a in addrs {
        groups.entry(a >> (32 - GROUP_V4)).or_default().push(a);
    }
    groups.values().flat_map(|g| cover_v4(g)).collect()
}

fn cover_v6(addrs: &[u128]) -> Vec<Ipv6Net> {
    let (Some(&lo), Some(&hi)) = (addrs.iter().min(), addrs.iter().max()) else {
        return Vec::new();
    };
    let common = (lo ^ hi).leading_zeros() as u8;
    if common >= WIDEST_V6 {
        let len = common.min(NARROWEST_V6);
        // `len` is at most 128, the only way Ipv6Net::new fails.
        let net = Ipv6Net::new(Ipv6Addr::from(lo), len).expect("prefix length <= 128");
        return vec![net.trunc()];
    }
    let mut groups: BTreeMap<u128, Vec<u128>> = BTreeMap::new();
    for &a in addrs {
        groups.entry(a >> (128 - GROUP_V6)).or_default().push(a);
    }
    groups.values().flat_map(|g| cover_v6(g)).collect()
}

/// What kube-apiserver says when a Service asks for a ClusterIP outside its range:
/// `... the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is
/// 10.96.0.0/12`. Returns every range named (dual-stack servers can name one per family).
pub fn parse_valid_range(message: &str) -> Vec<IpNet> {
    const MARKER: &str = "The range of valid IPs is ";
    message
        .match_indices(MARKER)
        .filter_map(|(at, _)| {
            let rest = &message[at + MARKER.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/')))
                .unwrap_or(rest.len());
            // A sentence may end right after the CIDR ("... is 10.96.0.0/12.").
            let cidr = rest[..end].trim_end_matches('.');
            cidr.parse::<IpNet>().ok().map(|net| net.trunc())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn nothing_to_cover() {
        assert!(covering_prefixes(Vec::new()).is_empty());
        assert!(covering_prefixes(ips(&["127.0.0.1", "169.254.1.1", "::1", "fe80::1"])).is_empty());
    }

    #[test]
    fn close_addresses_get_a_slash_24_at_least() {
        assert_eq!(
            covering_prefixes(ips(&["10.96.0.1"])),
            nets(&["10.96.0.0/24"])
        );
        assert_eq!(
            covering_prefixes(ips(&["10.96.0.1", "10.96.0.10"])),
            nets(&["10.96.0.0/24"])
        );
    }

    #[test]
    fn spread_addresses_get_the_smallest_covering_prefix() {
        // 10.96.0.1 .. 10.111.255.3: common prefix 10.96.0.0/12.
        assert_eq!(
            covering_prefixes(ips(&["10.96.0.1", "10.100.7.8", "10.111.255.3"])),
            nets(&["10.96.0.0/12"])
        );
        // Pods on two nodes' /24s.
        assert_eq!(
            covering_prefixes(ips(&["10.244.0.5", "10.244.1.9"])),
            nets(&["10.244.0.0/23"])
        );
        // The order of the addresses does not matter.
        assert_eq!(
            covering_prefixes(ips(&["10.244.1.9", "10.244.0.5"])),
            nets(&["10.244.0.0/23"])
        );
    }

    #[test]
    fn unrelated_ranges_are_covered_group_by_group() {
        assert_eq!(
            covering_prefixes(ips(&["10.0.0.1", "172.16.5.4", "172.16.9.1", "10.0.0.200"])),
            nets(&["10.0.0.0/24", "172.16.0.0/20"])
        );
    }

    #[test]
    fn families_are_covered_separately() {
        assert_eq!(
            covering_prefixes(ips(&["fd00:10:96::1", "10.96.0.1", "fd00:10:96::a"])),
            nets(&["10.96.0.0/24", "fd00:10:96::/64"])
        );
        assert_eq!(
            covering_prefixes(ips(&["fd00:10:96::1", "fd00:10:97::1"])),
            nets(&["fd00:10:96::/47"])
        );
        assert_eq!(
            covering_prefixes(ips(&["fd00::1", "2001:db8::1"])),
            nets(&["2001:db8::/64", "fd00::/64"])
        );
    }

    #[test]
    fn the_range_in_a_real_message() {
        let message = r#"Service "tether-cidr-probe" is invalid: spec.clusterIPs: Invalid value: []string{"1.1.1.1"}: failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"#;
        assert_eq!(parse_valid_range(message), nets(&["10.96.0.0/12"]));
    }

    #[test]
    fn ranges_in_other_shapes() {
        assert_eq!(
            parse_valid_range("The range of valid IPs is 10.43.0.0/16."),
            nets(&["10.43.0.0/16"])
        );
        assert_eq!(
            parse_valid_range(
                "a: The range of valid IPs is 10.96.0.0/16, b: The range of valid IPs is fd00:10:96::/112"
            ),
            nets(&["10.96.0.0/16", "fd00:10:96::/112"])
        );
        // A host part in the CIDR is dropped.
        assert_eq!(
            parse_valid_range("The range of valid IPs is 10.96.0.7/16"),
            nets(&["10.96.0.0/16"])
        );
    }

    #[test]
    fn messages_without_a_range() {
        assert!(parse_valid_range("services is forbidden").is_empty());
        assert!(parse_valid_range("The range of valid IPs is ").is_empty());
        assert!(parse_valid_range("The range of valid IPs is bogus/12").is_empty());
    }
}
