//! Which subnets go into the tunnel: what the cluster reports plus `--also-proxy`, minus
//! `--never-proxy`, and never one that would take over a route this machine already has.
//!
//! Pure functions over `ipnet` values, so every rule is unit-tested without a network.

use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

use crate::system::routes::ExistingRoute;

/// A subnet that cannot be routed into the tunnel.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SubnetError {
    #[error(
        "cannot route {subnet}: it contains {manager}, the address the tunnel itself goes to, so the tunnel would be routed into itself"
    )]
    RoutesManager { subnet: IpNet, manager: IpAddr },
    #[error(
        "cannot route {subnet}: it overlaps {existing}, which this machine already routes via {device}"
    )]
    OverlapsRoute {
        subnet: IpNet,
        existing: IpNet,
        device: String,
    },
    #[error("cannot route {subnet}: it overlaps tether's own device subnet {tun}")]
    OverlapsTun { subnet: IpNet, tun: IpNet },
    #[error("cannot route {0}: IPv6 subnets are not carried yet")]
    Ipv6(IpNet),
}

/// `net` without the addresses of `hole`: `net` itself when they do not overlap, nothing
/// when `hole` covers it, else the halves of `net` down to `hole`'s size that miss it.
pub fn subtract(net: IpNet, hole: IpNet) -> Vec<IpNet> {
    let (net, hole) = (net.trunc(), hole.trunc());
    if !overlaps(net, hole) {
        return vec![net];
    }
    if hole.contains(&net) {
        return Vec::new();
    }
    // `net` strictly contains `hole`: split in halves, keep the one without the hole and
    // recurse into the other.
    let mut out = Vec::new();
    let mut rest = net;
    while rest != hole {
        // A strictly larger network always has a prefix one longer.
        let halves: Vec<IpNet> = match rest.subnets(rest.prefix_len() + 1) {
            Ok(halves) => halves.collect(),
            Err(_) => break,
        };
        for half in halves {
            if half.contains(&hole) {
                rest = half;
            } else {
                out.push(half);
            }
        }
    }
    out.sort();
    out
}

pub fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The subnets to route: `discovered` and `also`, without duplicates, minus `never`.
pub fn plan(discovered: &[IpNet], also: &[IpNet], never: &[IpNet]) -> Vec<IpNet> {
    let mut subnets: Vec<IpNet> = Vec::new();
    for subnet in discovered.iter().chain(also) {
        let mut pieces = vec![subnet.trunc()];
        for hole in never {
            pieces = pieces
                .into_iter()
                .flat_map(|p| subtract(p, *hole))
                .collect();
        }
        for piece in pieces {
            if !subnets.iter().any(|s| s.contains(&piece)) {
                subnets.retain(|s| !piece.contains(s));
                subnets.push(piece);
            }
        }
    }
    subnets
}

/// Refuses subnets tether cannot route: IPv6 (not carried yet), one holding the address the
/// tunnel itself uses, one overlapping the TUN subnet, one overlapping a route this machine
/// already has.
pub fn check(
    subnet: IpNet,
    tunnel_peer: Option<IpAddr>,
    tun: IpNet,
    existing: &[ExistingRoute],
) -> Result<(), SubnetError> {
    if matches!(subnet, IpNet::V6(_)) {
        return Err(SubnetError::Ipv6(subnet));
    }
    if let Some(peer) = tunnel_peer
        && subnet.contains(&peer)
    {
        return Err(SubnetError::RoutesManager {
            subnet,
            manager: peer,
        });
    }
    if overlaps(subnet, tun) {
        return Err(SubnetError::OverlapsTun { subnet, tun });
    }
    if let Some(route) = existing.iter().find(|r| overlaps(subnet, r.subnet)) {
        return Err(SubnetError::OverlapsRoute {
            subnet,
            existing: route.subnet,
            device: route.device.clone(),
        });
    }
    Ok(())
}

/// What changes between two route sets: (to add, to remove).
pub fn diff(old: &[IpNet], new: &[IpNet]) -> (Vec<IpNet>, Vec<IpNet>) {
    let added = new.iter().filter(|n| !old.contains(n)).copied().collect();
    let removed = old.iter().filter(|o| !new.contains(o)).copied().collect();
    (added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn subtracting() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(
            subtract(n("10.96.0.0/12"), n("10.0.0.0/8")),
            Vec::<IpNet>::new()
        );
        assert_eq!(
            subtract(n("10.96.0.0/12"), n("192.168.0.0/16")),
            nets(&["10.96.0.0/12"])
        );
        assert_eq!(
            subtract(n("10.96.0.0/16"), n("10.96.0.0/18")),
            nets(&["10.96.64.0/18", "10.96.128.0/17"])
        );
        assert_eq!(
            subtract(n("10.0.0.0/30"), n("10.0.0.2/32")),
            nets(&["10.0.0.0/31", "10.0.0.3/32"])
        );
    }

    #[test]
    fn planning() {
        let discovered = nets(&["10.96.0.0/12", "10.244.0.0/16"]);
        assert_eq!(
            plan(&discovered, &nets(&["10.96.1.0/24", "172.16.0.0/16"]), &[]),
            nets(&["10.96.0.0/12", "10.244.0.0/16", "172.16.0.0/16"])
        );
        assert_eq!(
            plan(&discovered, &[], &nets(&["10.244.0.0/16", "10.96.0.0/13"])),
            nets(&["10.104.0.0/13"])
        );
    }

    #[test]
    fn checking() {
        let tun: IpNet = "198.18.0.0/30".parse().unwrap();
        let existing = vec![ExistingRoute {
            subnet: "10.96.0.0/24".parse().unwrap(),
            device: "eth1".into(),
        }];
        let ok = |s: &str| {
            check(
                s.parse().unwrap(),
                Some([172, 30, 0, 1].into()),
                tun,
                &existing,
            )
        };
        assert!(ok("10.244.0.0/16").is_ok());
        let err = ok("10.96.0.0/12").unwrap_err();
        let message = crate::error::CliError::from(err.clone()).message();
        assert!(
            message.contains("10.96.0.0/12") && message.contains("10.96.0.0/24"),
            "{message}"
        );
        assert!(
            message.contains("eth1") && message.contains("--never-proxy 10.96.0.0/24"),
            "{message}"
        );
        assert_eq!(
            err,
            SubnetError::OverlapsRoute {
                subnet: "10.96.0.0/12".parse().unwrap(),
                existing: "10.96.0.0/24".parse().unwrap(),
                device: "eth1".into()
            }
        );
        assert!(matches!(
            ok("172.30.0.0/16"),
            Err(SubnetError::RoutesManager { .. })
        ));
        assert!(matches!(
            ok("198.18.0.0/16"),
            Err(SubnetError::OverlapsTun { .. })
        ));
        assert!(matches!(ok("fd00::/64"), Err(SubnetError::Ipv6(_))));
    }

    #[test]
    fn diffing() {
        let (added, removed) = diff(
            &nets(&["10.0.0.0/8", "10.1.0.0/16"]),
            &nets(&["10.1.0.0/16", "10.2.0.0/16"]),
        );
        assert_eq!(added, nets(&["10.2.0.0/16"]));
        assert_eq!(removed, nets(&["10.0.0.0/8"]));
    }
}
