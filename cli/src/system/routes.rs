//! Routes to the cluster's subnets on the TUN device, and the routes this machine already
//! has (so that tether never shadows one of them), through rtnetlink.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RouteError {
    #[error("cannot open a netlink socket: {0}")]
    Netlink(std::io::Error),
    #[error("network device {0} not found")]
    NoDevice(String),
    #[error("cannot add a route to {subnet} on {device}: {source}")]
    Add {
        subnet: IpNet,
        device: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot remove the route to {subnet} on {device}: {source}")]
    Delete {
        subnet: IpNet,
        device: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot query network devices or routes: {0}")]
    Query(#[source] rtnetlink::Error),
}

/// A route this machine has that is not tether's: its destination and the device it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingRoute {
    pub subnet: IpNet,
    pub device: String,
}

pub struct Routes {
    handle: Handle,
}

impl Routes {
    pub fn new() -> Result<Self, RouteError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(RouteError::Netlink)?;
        tokio::spawn(connection);
        Ok(Routes { handle })
    }

    async fn index(&self, device: &str) -> Result<Option<u32>, RouteError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(device.to_owned())
            .execute();
        match links.try_next().await {
            Ok(link) => Ok(link.map(|l| l.header.index)),
            // The kernel answers ENODEV for an unknown name.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(RouteError::Query(e)),
        }
    }

    async fn device_index(&self, device: &str) -> Result<u32, RouteError> {
        self.index(device)
            .await?
            .ok_or_else(|| RouteError::NoDevice(device.to_owned()))
    }

    /// Brings `device` up (the loopback of a new network namespace starts down).
    pub async fn link_up(&self, device: &str) -> Result<(), RouteError> {
        let index = self.device_index(device).await?;
        self.handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(RouteError::Query)
    }

    /// Adds a route to each subnet through `device`.
    pub async fn add(&self, device: &str, subnets: &[IpNet]) -> Result<(), RouteError> {
        let index = self.device_index(device).await?;
        for subnet in subnets {
            self.handle
                .route()
                .add(message(*subnet, index))
                .execute()
                .await
                .map_err(|source| RouteError::Add {
                    subnet: *subnet,
                    device: device.to_owned(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Removes the routes to `subnets` through `device`; one that is already gone is fine.
    pub async fn delete(&self, device: &str, subnets: &[IpNet]) -> Result<(), RouteError> {
        let index = self.device_index(device).await?;
        for subnet in subnets {
            match self
                .handle
                .route()
                .del(message(*subnet, index))
                .execute()
                .await
            {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => {}
                Err(source) => {
                    return Err(RouteError::Delete {
                        subnet: *subnet,
                        device: device.to_owned(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// The unicast routes of the main table, except default routes and those on `ours`.
    pub async fn existing(&self, ours: &str) -> Result<Vec<ExistingRoute>, RouteError> {
        let ours = self.index(ours).await?;
        let mut names = std::collections::HashMap::new();
        let mut links = self.handle.link().get().execute();
        while let Some(link) = links.try_next().await.map_err(RouteError::Query)? {
            let name = link.attributes.iter().find_map(|a| match a {
                rtnetlink::packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            names.insert(link.header.index, name.unwrap_or_default());
        }
        let mut found = Vec::new();
        for query in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let mut routes = self.handle.route().get(query).execute();
            while let Some(route) = routes.try_next().await.map_err(RouteError::Query)? {
                let Some((subnet, oif)) = describe(&route) else {
                    continue;
                };
                if subnet.prefix_len() == 0 || (oif.is_some() && oif == ours) {
                    continue;
                }
                let device = oif
                    .and_then(|i| names.get(&i).cloned())
                    .unwrap_or_else(|| "?".to_owned());
                found.push(ExistingRoute { subnet, device });
            }
        }
        Ok(found)
    }
}

fn message(subnet: IpNet, index: u32) -> RouteMessage {
    match subnet.addr() {
        IpAddr::V4(addr) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(addr, subnet.prefix_len())
            .output_interface(index)
            .build(),
        IpAddr::V6(addr) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(addr, subnet.prefix_len())
            .output_interface(index)
            .build(),
    }
}

/// The destination and output device of a main-table unicast route.
fn describe(route: &RouteMessage) -> Option<(IpNet, Option<u32>)> {
    let table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || route.header.kind != RouteType::Unicast {
        return None;
    }
    let prefix = route.header.destination_prefix_length;
    let addr: IpAddr = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
            _ => None,
        })
        .or_else(|| (prefix == 0).then_some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))?;
    let oif = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    });
    Some((IpNet::new(addr, prefix).ok()?.trunc(), oif))
}
