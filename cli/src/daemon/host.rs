//! This machine's side of a session: the TUN device, the routes on it and the DNS settings.
//! They are set up once, stay in place while the tunnel reconnects, follow the cluster's
//! `ClusterInfo` updates, and are undone on quit.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use tether_tunnel::stack::dns::hosts::LocalHosts;

use std::os::fd::OwnedFd;

use ipnet::{IpNet, Ipv4Net};
use tether_tunnel::stack::egress::Egress;
use tether_tunnel::stack::{self, StackError};
use tether_tunnel::wire::control::ClusterInfo;
use thiserror::Error;

use crate::subnets::{self, SubnetError};
use crate::system::dns::{DnsError, HostDns};
use crate::system::routes::{RouteError, Routes};

/// Why this machine could not be set up for the session.
#[derive(Debug, Error)]
pub enum HostError {
    #[error(
        "the TUN subnet {0} is too small: it needs two host addresses (the device's and the DNS server's)"
    )]
    TunSubnetTooSmall(Ipv4Net),
    /// Creating the device needs root (or CAP_NET_ADMIN).
    #[error(transparent)]
    Privileges(StackError),
    #[error(transparent)]
    Stack(StackError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Subnet(#[from] SubnetError),
    #[error(transparent)]
    Dns(#[from] DnsError),
}

/// A TUN MTU near the IPv4 maximum: the kernel hands over 64 KiB segments, so each packet
/// carries as much as possible through the userspace stack.
pub const TUN_MTU: u16 = 65_000;

/// Where the device comes from.
pub enum Device {
    /// Made here, with routes to the cluster's subnets on this machine.
    Create,
    /// A rootless run's device, made in its namespace, where it is the only route: what is
    /// not the cluster's is dialled from here, and `host_address` stands for loopback.
    Namespace { fd: OwnedFd, host_address: Ipv4Addr },
}

/// What the routes are made of, besides what the cluster reports.
pub struct RouteFlags {
    pub also_proxy: Vec<IpNet>,
    pub never_proxy: Vec<IpNet>,
}

pub struct Host {
    pub tun: Arc<tun::AsyncDevice>,
    pub tun_name: String,
    pub tun_subnet: Ipv4Net,
    pub tun_ip: Ipv4Addr,
    pub dns_ip: Ipv4Addr,
    /// This machine's routes; none for a namespace's device, whose one route its helper made.
    routes: Option<Routes>,
    /// Subnets routed into the TUN device right now (in a namespace: sent to the tunnel).
    pub routed: Vec<IpNet>,
    /// In a namespace: where the rest goes.
    pub egress: Option<Egress>,
    pub dns: HostDns,
    flags: RouteFlags,
    /// The namespace short names resolve in, if not the manager's own.
    namespace: Option<String>,
    /// What the manager reported last, as received.
    reported: ClusterInfo,
    /// `reported` with the search path of `namespace`.
    pub cluster: ClusterInfo,
    /// Names the DNS server answers itself (Ingress hosts), kept by the daemon.
    pub local_hosts: LocalHosts,
}

/// The device's address and the DNS server's: the first two hosts of the TUN subnet.
pub fn tun_addresses(tun_subnet: Ipv4Net) -> Result<(Ipv4Addr, Ipv4Addr), HostError> {
    let mut hosts = tun_subnet.hosts();
    match (hosts.next(), hosts.next()) {
        (Some(tun_ip), Some(dns_ip)) => Ok((tun_ip, dns_ip)),
        _ => Err(HostError::TunSubnetTooSmall(tun_subnet)),
    }
}

impl Host {
    /// Checks the routes, then creates the device, adds the routes and points DNS at it.
    /// On error, what was done goes with the device when it is dropped; DNS, applied last,
    /// is reverted here.
    #[allow(clippy::too_many_arguments)]
    pub async fn up(
        device: Device,
        tun_name: &str,
        tun_subnet: Ipv4Net,
        flags: RouteFlags,
        mut dns: HostDns,
        namespace: Option<String>,
        reported: ClusterInfo,
        peer_ip: Option<IpAddr>,
    ) -> Result<Host, HostError> {
        let cluster = in_namespace(&reported, namespace.as_deref());
        let (tun_ip, dns_ip) = tun_addresses(tun_subnet)?;
        let wanted = subnets::plan(&cluster.subnets, &flags.also_proxy, &flags.never_proxy);
        let (tun, routes, egress) = match device {
            Device::Namespace { fd, host_address } => {
                // The namespace has nothing but this device: nothing to shadow.
                let tun = stack::tun_device::adopt(fd, TUN_MTU).map_err(HostError::Stack)?;
                (tun, None, Some(Egress::new(wanted.clone(), host_address)))
            }
            Device::Create => {
                let routes = Routes::new()?;
                let existing = routes.existing(tun_name).await?;
                for subnet in &wanted {
                    subnets::check(*subnet, peer_ip, tun_subnet.trunc().into(), &existing)?;
                }
                let tun =
                    stack::tun_device::open(tun_name, tun_ip, tun_subnet.prefix_len(), TUN_MTU)
                        .map_err(|e| match &e {
                            StackError::CreateTun { source, .. } if is_permission_error(source) => {
                                HostError::Privileges(e)
                            }
                            _ => HostError::Stack(e),
                        })?;
                routes.add(tun_name, &wanted).await?;
                (tun, Some(routes), None)
            }
        };
        if let Err(e) = dns.apply(&cluster.dns_domain, &cluster.search).await {
            // A half-written resolver file must not outlive this attempt.
            dns.revert().await;
            return Err(e.into());
        }
        Ok(Host {
            tun: Arc::new(tun),
            tun_name: tun_name.to_owned(),
            tun_subnet,
            tun_ip,
            dns_ip,
            routes,
            routed: wanted,
            egress,
            dns,
            flags,
            namespace,
            reported,
            cluster,
            local_hosts: LocalHosts::default(),
        })
    }

    /// Follows a new `ClusterInfo`: routes added and removed, DNS domain and search path.
    /// A subnet that cannot be routed is left out with a warning rather than ending a
    /// running session.
    pub async fn update(&mut self, reported: ClusterInfo, peer_ip: Option<IpAddr>) {
        if reported == self.reported {
            return;
        }
        let cluster = in_namespace(&reported, self.namespace.as_deref());
        self.reported = reported;
        let wanted = subnets::plan(
            &cluster.subnets,
            &self.flags.also_proxy,
            &self.flags.never_proxy,
        );
        let Some(routes) = &self.routes else {
            if let Some(egress) = &self.egress {
                egress.set_cluster(wanted.clone());
            }
            self.routed = wanted;
            tracing::info!(routes = ?self.routed, "cluster info updated");
            if let Err(e) = self.dns.apply(&cluster.dns_domain, &cluster.search).await {
                tracing::warn!("{e}");
            }
            self.cluster = cluster;
            return;
        };
        let existing = match routes.existing(&self.tun_name).await {
            Ok(existing) => existing,
            Err(e) => {
                tracing::warn!("cannot list this machine's routes, keeping the old ones: {e}");
                return;
            }
        };
        let tun: IpNet = self.tun_subnet.trunc().into();
        let (added, removed) = subnets::diff(&self.routed, &wanted);
        let added: Vec<IpNet> = added
            .into_iter()
            .filter(|s| match subnets::check(*s, peer_ip, tun, &existing) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("not routing a subnet the cluster reported: {e}");
                    false
                }
            })
            .collect();
        if let Err(e) = routes.delete(&self.tun_name, &removed).await {
            tracing::warn!("{e}");
        }
        self.routed.retain(|s| !removed.contains(s));
        for subnet in added {
            match routes.add(&self.tun_name, &[subnet]).await {
                Ok(()) => self.routed.push(subnet),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        tracing::info!(routes = ?self.routed, "cluster info updated");
        if let Err(e) = self.dns.apply(&cluster.dns_domain, &cluster.search).await {
            tracing::warn!("{e}");
        }
        self.cluster = cluster;
    }

    /// Undoes the DNS settings and removes the routes; the device goes when the last handle
    /// is dropped (the process exits right after). False if the session record must stay
    /// so that the next run retries.
    pub async fn down(&mut self) -> bool {
        let dns_done = self.dns.revert().await;
        if let Some(routes) = &self.routes
            && let Err(e) = routes.delete(&self.tun_name, &self.routed).await
        {
            tracing::warn!("{e}");
        }
        self.routed.clear();
        dns_done
    }
}

/// The manager reports the search path of its own pod (`tether.svc.<domain> svc.<domain>
/// <domain>`); short names on the laptop should mean Services of the user's namespace, as
/// they do for a pod there.
fn in_namespace(reported: &ClusterInfo, namespace: Option<&str>) -> ClusterInfo {
    let mut cluster = reported.clone();
    let Some(namespace) = namespace else {
        return cluster;
    };
    let svc = format!("svc.{}", cluster.dns_domain);
    let namespaced = |s: &str| {
        s.strip_suffix(svc.as_str())
            .is_some_and(|head| head.ends_with('.') && !head[..head.len() - 1].contains('.'))
    };
    cluster.search.retain(|s| !namespaced(s));
    cluster.search.insert(0, format!("{namespace}.{svc}"));
    cluster
}

/// tun reports ioctl and open failures as the io error they are.
fn is_permission_error(err: &tun::Error) -> bool {
    matches!(err, tun::Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_the_users_namespace() {
        let reported = ClusterInfo {
            dns_domain: "cluster.local".into(),
            search: [
                "tether.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
            ]
            .map(String::from)
            .to_vec(),
            subnets: vec![],
        };
        assert_eq!(in_namespace(&reported, None), reported);
        let demo = in_namespace(&reported, Some("demo"));
        assert_eq!(
            demo.search,
            [
                "demo.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(in_namespace(&demo, Some("demo")).search, demo.search);
    }
}
