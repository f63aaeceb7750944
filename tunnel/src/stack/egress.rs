//! Traffic that is not the cluster's, when the stack is the only route of a whole network
//! (a rootless `tether run`'s namespace): it is dialled from this process's own network, as
//! the user's machine would dial it, in the way slirp4netns and pasta do.
//!
//! One address stands for this machine's loopback, so that services listening on the
//! user's 127.0.0.1 stay reachable from inside, where 127.0.0.1 is the namespace's own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use ipnet::IpNet;
use tokio::sync::mpsc;

use super::ByteStream;
use super::packet::udp_packet;
use crate::session::SessionError;
use crate::wire::flow::FlowReply;

/// How long a connection to a destination outside the cluster may take to open, as long as
/// the manager's dials may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where traffic outside the cluster goes.
#[derive(Debug, Clone)]
pub struct Egress {
    /// The subnets that go through the tunnel, as they change with the cluster's reports.
    cluster: Arc<RwLock<Vec<IpNet>>>,
    /// The address that stands for this machine's loopback.
    host_loopback: Ipv4Addr,
}

impl Egress {
    pub fn new(cluster: Vec<IpNet>, host_loopback: Ipv4Addr) -> Self {
        Egress {
            cluster: Arc::new(RwLock::new(cluster)),
            host_loopback,
        }
    }

    /// Follows the cluster's subnets; the stack sees the change at its next connection.
    pub fn set_cluster(&self, subnets: Vec<IpNet>) {
        if let Ok(mut cluster) = self.cluster.write() {
            *cluster = subnets;
        }
    }

    pub fn host_loopback(&self) -> Ipv4Addr {
        self.host_loopback
    }

    /// Where a flow to `dst` is dialled from here, or `None` when it is the cluster's.
    pub fn local_target(&self, dst: SocketAddr) -> Option<SocketAddr> {
        if dst.ip() == IpAddr::V4(self.host_loopback) {
            return Some(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), dst.port()));
        }
        let cluster = self.cluster.read().ok()?;
        (!cluster.iter().any(|net| net.contains(&dst.ip()))).then_some(dst)
    }
}

/// Opens a TCP connection to `target` from this process's network; errors are reported as
/// the manager reports its own, so the laptop sees the same RST or ICMP error.
pub async fn dial_tcp(target: SocketAddr) -> Result<Box<dyn ByteStream>, SessionError> {
    let failed = |reply| SessionError::Dial { target, reply };
    match tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(Box::new(stream))
        }
        Ok(Err(e)) => Err(failed(FlowReply::from_io_error(&e))),
        Err(_) => Err(failed(FlowReply::TimedOut)),
    }
}

/// Relays one UDP flow (`src` inside, `dst` as it was addressed) through a socket of this
/// process connected to `target`, until neither side sent anything for `idle`.
pub async fn relay_udp(
    tun: Arc<tun::AsyncDevice>,
    (src, dst): (SocketAddr, SocketAddr),
    target: SocketAddr,
    mut from_inside: mpsc::Receiver<Bytes>,
    idle: Duration,
) -> std::io::Result<()> {
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(any).await?;
    socket.connect(target).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        tokio::select! {
            datagram = from_inside.recv() => match datagram {
                // A refused datagram is as lost as one a network dropped.
                Some(d) => { let _ = socket.send(&d).await; }
                None => return Ok(()),
            },
            received = socket.recv(&mut buf) => match received {
                Ok(n) => {
                    if let Some(packet) = udp_packet(dst, src, &buf[..n]) {
                        tun.send(&packet).await?;
                    }
                }
                // ICMP port unreachable for an earlier datagram: nothing to relay.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            },
            _ = tokio::time::sleep(idle) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_subnets_stay_in_the_tunnel_and_the_rest_is_dialled_here() {
        let egress = Egress::new(
            vec!["10.96.0.0/16".parse().unwrap()],
            Ipv4Addr::new(198, 18, 0, 5),
        );
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(egress.local_target(at("10.96.1.2:80")), None);
        assert_eq!(
            egress.local_target(at("192.0.2.7:80")),
            Some(at("192.0.2.7:80"))
        );
        assert_eq!(
            egress.local_target(at("198.18.0.5:8080")),
            Some(at("127.0.0.1:8080"))
        );
        egress.set_cluster(vec!["192.0.2.0/24".parse().unwrap()]);
        assert_eq!(egress.local_target(at("192.0.2.7:80")), None);
        assert_eq!(
            egress.local_target(at("10.96.1.2:80")),
            Some(at("10.96.1.2:80"))
        );
    }
}
