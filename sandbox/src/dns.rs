//! Cluster DNS: what CoreDNS does in a real cluster, answered from the store.
//!
//! - [`zone`]: the snapshot of Services, EndpointSlices and namespaces that answers come from,
//!   rebuilt lazily when the store's resourceVersion has moved since the last query.
//! - [`answer`]: the pure function from a zone and a query to a response (or "forward").
//! - [`wire`]: UDP size limits and truncation, FORMERR for packets that do not parse.
//! - [`upstream`]: names outside the zone go to the host's resolver (first `nameserver` of
//!   /etc/resolv.conf, read at start), SERVFAIL when it fails.
//!
//! [`serve`] runs on sockets the caller binds (in the node namespace at 10.244.0.1:53): UDP,
//! and TCP with 2-byte length framing and several queries per connection.

pub mod answer;
pub mod upstream;
pub mod wire;
pub mod zone;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;

use crate::store::Store;
use answer::Outcome;
use upstream::Upstream;
use zone::Zone;

/// How long a TCP client may stay idle between queries (CoreDNS's read timeout).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What every query handler shares.
struct Resolver {
    store: Arc<Store>,
    upstream: Upstream,
    /// The last zone built and the store resourceVersion it was built at.
    zone: Mutex<(u64, Arc<Zone>)>,
}

impl Resolver {
    /// The zone as of now: the cached one unless the store changed since.
    fn zone(&self) -> Arc<Zone> {
        let rv = self.store.read(|s| s.rv());
        let mut cached = self
            .zone
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cached.0 != rv || cached.0 == 0 {
            let (rv, zone) = self.store.read(|s| (s.rv(), Zone::from_state(s)));
            *cached = (rv, Arc::new(zone));
        }
        cached.1.clone()
    }

    /// The answer to one packet, if it deserves one. `tcp` decides the size limit and how a
    /// forwarded query travels.
    async fn handle(&self, packet: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let query = match Message::from_vec(packet) {
            Ok(q) => q,
            Err(e) => {
                tracing::debug!("malformed DNS query: {e}");
                return wire::formerr(packet);
            }
        };
        let limit = if tcp {
            usize::from(u16::MAX)
        } else {
            wire::udp_limit(&query)
        };
        let zone = self.zone();
        match answer::answer(&zone, &query) {
            Outcome::Reply(resp) => wire::encode(&resp, limit),
            Outcome::Forward => match self.upstream.forward(packet, tcp).await {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    tracing::debug!("forwarding a DNS query: {e}");
                    wire::servfail(&query)
                }
            },
        }
    }
}

/// Serves cluster DNS on non-blocking sockets until the runtime stops, forwarding other names
/// to the host's resolver.
pub async fn serve(store: Arc<Store>, udp: std::net::UdpSocket, tcp: std::net::TcpListener) {
    let upstream = upstream::from_resolv_conf(Path::new("/etc/resolv.conf"));
    if upstream.is_none() {
        tracing::warn!("no nameserver in /etc/resolv.conf: names outside the cluster will fail");
    }
    serve_with(store, udp, tcp, upstream).await
}

/// [`serve`] with a chosen upstream resolver.
pub async fn serve_with(
    store: Arc<Store>,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    upstream: Option<SocketAddr>,
) {
    let resolver = Arc::new(Resolver {
        store,
        upstream: Upstream { addr: upstream },
        zone: Mutex::new((0, Arc::new(Zone::default()))),
    });
    let (udp, tcp) = match (UdpSocket::from_std(udp), TcpListener::from_std(tcp)) {
        (Ok(u), Ok(t)) => (u, t),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cluster DNS cannot use its sockets: {e}");
            return;
        }
    };
    tokio::join!(
        serve_udp(resolver.clone(), Arc::new(udp)),
        serve_tcp(resolver, tcp)
    );
}

async fn serve_udp(resolver: Arc<Resolver>, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier sends surface here; the socket stays usable.
                tracing::debug!("cluster DNS UDP receive: {e}");
                continue;
            }
        };
        let packet = buf[..n].to_vec();
        let resolver = resolver.clone();
        let socket = socket.clone();
        // Each query gets its own task: a forwarded one may wait for the upstream.
        tokio::spawn(async move {
            if let Some(reply) = resolver.handle(&packet, false).await
                && let Err(e) = socket.send_to(&reply, from).await
            {
                tracing::debug!("cluster DNS reply to {from}: {e}");
            }
        });
    }
}

async fn serve_tcp(resolver: Arc<Resolver>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(resolver.clone(), stream));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!("cluster DNS TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers length-prefixed queries on one connection until the client closes it or idles.
async fn serve_connection(resolver: Arc<Resolver>, mut stream: TcpStream) {
    loop {
        let Ok(Ok(len)) = timeout(TCP_IDLE, stream.read_u16()).await else {
            return;
        };
        let mut packet = vec![0u8; usize::from(len)];
        if !matches!(
            timeout(TCP_IDLE, stream.read_exact(&mut packet)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Some(reply) = resolver.handle(&packet, true).await else {
            return;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[path = "dns/serve_tests.rs"]
mod tests;
