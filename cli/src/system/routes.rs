//! Routes to the cluster's subnets, on the TUN device, through rtnetlink.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
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
    #[error("cannot query network devices: {0}")]
    Query(#[source] rtnetlink::Error),
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

    /// Adds a route to each subnet through `device`.
    pub async fn add(&self, device: &str, subnets: &[IpNet]) -> Result<(), RouteError> {
        let index = self
            .index(device)
            .await?
            .ok_or_else(|| RouteError::NoDevice(device.to_owned()))?;
        for subnet in subnets {
            let route = match subnet.addr() {
                IpAddr::V4(addr) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .destination_prefix(addr, subnet.prefix_len())
                    .output_interface(index)
                    .build(),
                IpAddr::V6(addr) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .destination_prefix(addr, subnet.prefix_len())
                    .output_interface(index)
                    .build(),
            };
            self.handle
                .route()
                .add(route)
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
}
