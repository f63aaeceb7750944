//! The laptop's userspace network stack.
//!
//! Packets the kernel routes to the TUN device are read by one loop ([`run`]):
//! - TCP goes to smoltcp in any-IP mode; [`tcp`] creates a socket per connection and pumps
//!   its bytes to a tunnel stream.
//! - UDP to the DNS address is answered by [`dns`]; other UDP is relayed by [`udp`].
//! - Everything else is dropped.
//!
//! When the stack is a whole network's only route (a rootless run's namespace), [`egress`]
//! dials what is not the cluster's from this process's own network instead.
//!
//! [`device`] adapts smoltcp to packet queues, [`packet`] parses and builds raw packets and
//! [`tun_device`] opens the TUN device. IPv4 is carried today; addresses are `SocketAddr`
//! throughout so IPv6 fits without changing the types.

pub mod device;
pub mod dns;
pub mod egress;
pub mod packet;
pub mod tcp;
pub mod tun_device;
pub mod udp;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpCidr};
use thiserror::Error;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::session::{Session, SessionError};
use device::QueueDevice;
use dns::{DnsConfig, DnsServer};
use packet::Inbound;
use tcp::TcpFlows;
use udp::UdpFlows;

/// Why the stack stopped.
#[derive(Debug, Error)]
pub enum StackError {
    #[error("the tunnel session closed")]
    SessionClosed,
    #[error("TUN device I/O failed: {0}")]
    Tun(#[from] std::io::Error),
    #[error("could not create the TUN device {name}: {source}")]
    CreateTun {
        name: String,
        #[source]
        source: tun::Error,
    },
}

/// Settings of the stack.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The TUN device's MTU; a large one means fewer, larger packets.
    pub mtu: usize,
    /// An address of the TUN subnet that smoltcp uses as its own (any-IP needs one).
    pub anchor: Ipv4Addr,
    pub dns: DnsConfig,
    /// UDP flows without traffic for this long are closed.
    pub udp_idle_timeout: Duration,
    /// Where destinations outside the cluster go; `None` when only the cluster's subnets
    /// are routed here.
    pub egress: Option<egress::Egress>,
}

/// A byte stream that carries one TCP connection's payload: a tunnel stream, or a local
/// service such as DNS over TCP.
pub trait ByteStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ByteStream for T {}

/// Things that happen outside the loop and change its state.
pub enum Event {
    TcpDialed {
        id: u64,
        result: Result<Box<dyn ByteStream>, SessionError>,
    },
    UdpClosed {
        key: (SocketAddr, SocketAddr),
    },
}

/// What woke the loop.
enum Woken {
    Read(std::io::Result<usize>),
    Event(Option<Event>),
    Other,
}

/// Packets read from the TUN device per loop iteration before smoltcp runs.
const READ_BATCH: usize = 64;

/// Runs the stack until `shutdown` fires (Ok) or the session ends (Err).
pub async fn run(
    tun: Arc<tun::AsyncDevice>,
    session: Session,
    config: StackConfig,
    shutdown: CancellationToken,
) -> Result<(), StackError> {
    let mut device = QueueDevice::new(config.mtu);
    let mut iface = Interface::new(
        Config::new(HardwareAddress::Ip),
        &mut device,
        Instant::now(),
    );
    iface.set_any_ip(true);
    iface.update_ip_addrs(|addrs| {
        // Capacity is at least one address in every smoltcp configuration.
        let _ = addrs.push(IpCidr::new(config.anchor.into(), 32));
    });
    // Route table capacity is at least one; the default route only tells smoltcp that every
    // destination is reachable on this device.
    let _ = iface.routes_mut().add_default_ipv4_route(config.anchor);
    let wake = Arc::new(Notify::new());
    // Dial tasks and UDP flow tasks -> loop: results and endings.
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let dns = DnsServer::new(config.dns.clone(), session.clone(), tun.clone());
    let mut stack = Stack {
        iface,
        sockets: SocketSet::new(Vec::new()),
        tcp: TcpFlows::new(
            session.clone(),
            dns.clone(),
            config.egress.clone(),
            events_tx.clone(),
            wake.clone(),
        ),
        udp: UdpFlows::new(
            session.clone(),
            tun.clone(),
            events_tx,
            config.udp_idle_timeout,
            config.egress,
        ),
        dns,
        device,
    };
    let session_closed = session.closed();
    tokio::pin!(session_closed);

    loop {
        let delay = stack
            .iface
            .poll_delay(Instant::now(), &stack.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(Duration::from_secs(1));
        let mut buf = stack.device.buffer();
        let woken = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            _ = &mut session_closed => return Err(StackError::SessionClosed),
            event = events_rx.recv() => Woken::Event(event),
            read = tun.recv(&mut buf) => Woken::Read(read),
            _ = wake.notified() => Woken::Other,
            _ = tokio::time::sleep(delay) => Woken::Other,
        };
        match woken {
            Woken::Read(read) => {
                stack.on_packet(buf, read?);
                // Drain what else is ready without waiting, so smoltcp sees a batch.
                for _ in 0..READ_BATCH {
                    let mut buf = stack.device.buffer();
                    match tun.recv(&mut buf).now_or_never() {
                        Some(read) => stack.on_packet(buf, read?),
                        None => {
                            stack.device.recycle(buf);
                            break;
                        }
                    }
                }
            }
            Woken::Event(event) => {
                stack.device.recycle(buf);
                if let Some(event) = event {
                    stack.on_event(event);
                }
            }
            Woken::Other => stack.device.recycle(buf),
        }
        while let Ok(event) = events_rx.try_recv() {
            stack.on_event(event);
        }
        stack.poll();
        stack.tcp.pump(&mut stack.sockets);
        stack.poll();
        while let Some((packet, len)) = stack.device.tx.pop_front() {
            tun.send(&packet[..len]).await?;
            stack.device.recycle(packet);
        }
    }
}

/// The loop's state: smoltcp and the flows it feeds.
struct Stack {
    device: QueueDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    tcp: TcpFlows,
    udp: UdpFlows,
    dns: DnsServer,
}

impl Stack {
    fn poll(&mut self) {
        self.iface
            .poll(Instant::now(), &mut self.device, &mut self.sockets);
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::TcpDialed { id, result } => {
                if let Some(packet) = self.tcp.on_dialed(&mut self.sockets, id, result) {
                    let len = packet.len();
                    self.device.tx.push_back((packet, len));
                }
            }
            Event::UdpClosed { key } => self.udp.on_closed(key),
        }
    }

    /// One packet from the TUN device: `len` bytes of `buf`.
    fn on_packet(&mut self, buf: Vec<u8>, len: usize) {
        match packet::classify(&buf[..len]) {
            Inbound::TcpSyn { src, dst } => {
                // Process what is queued first: the new listening socket must see only its
                // SYN while it is the one listening on `dst`.
                if !self.device.rx.is_empty() {
                    self.poll();
                }
                if self.tcp.on_syn(&mut self.sockets, src, dst, &buf[..len]) {
                    self.device.rx.push_back((buf, len));
                    self.poll();
                } else {
                    self.device.recycle(buf);
                }
            }
            Inbound::Tcp => self.device.rx.push_back((buf, len)),
            Inbound::Udp { src, dst, payload } => {
                if self.dns.listens_on(dst) {
                    self.dns.on_query(src, payload);
                } else {
                    self.udp.on_datagram(src, dst, payload);
                }
                self.device.recycle(buf);
            }
            Inbound::Drop => self.device.recycle(buf),
        }
    }
}
