//! The laptop's userspace network stack.
//!
//! Packets the kernel routes to the TUN device are read by one loop ([`run`]):
//! - TCP goes to smoltcp in any-IP mode; [`tcp`] creates a socket per connection and pumps
//!   its bytes to a tunnel stream.
//! - UDP to the DNS address is answered by [`dns`]; other UDP is relayed by [`udp`].
//! - Everything else is dropped.
//!
//! [`device`] adapts smoltcp to packet queues, [`packet`] parses and builds raw packets and
//! [`tun_device`] opens the TUN device. IPv4 is carried today; addresses are `SocketAddr`
//! throughout so IPv6 fits without changing the types.

pub mod device;
pub mod dns;
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

use crate::session::{FlowStream, Session, SessionError};
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
}

/// Things that happen outside the loop and change its state.
pub enum Event {
    TcpDialed {
        id: u64,
        result: Result<FlowStream, SessionError>,
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
    let mut sockets = SocketSet::new(Vec::new());

    let wake = Arc::new(Notify::new());
    // Dial tasks and UDP flow tasks -> loop: results and endings.
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let mut tcp = TcpFlows::new(session.clone(), events_tx.clone(), wake.clone());
    let mut udp = UdpFlows::new(
        session.clone(),
        tun.clone(),
        events_tx,
        config.udp_idle_timeout,
    );
    let dns = DnsServer::new(config.dns.clone(), session.clone(), tun.clone());
    let session_closed = session.closed();
    tokio::pin!(session_closed);

    loop {
        let delay = iface
            .poll_delay(Instant::now(), &sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(Duration::from_secs(1));
        let mut buf = device.buffer();
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
                handle_packet(
                    buf,
                    read?,
                    &mut device,
                    &mut iface,
                    &mut sockets,
                    &mut tcp,
                    &mut udp,
                    &dns,
                );
                // Drain what else is ready without waiting, so smoltcp sees a batch.
                for _ in 0..READ_BATCH {
                    let mut buf = device.buffer();
                    match tun.recv(&mut buf).now_or_never() {
                        Some(read) => {
                            handle_packet(
                                buf,
                                read?,
                                &mut device,
                                &mut iface,
                                &mut sockets,
                                &mut tcp,
                                &mut udp,
                                &dns,
                            );
                        }
                        None => {
                            device.recycle(buf);
                            break;
                        }
                    }
                }
            }
            Woken::Event(event) => {
                device.recycle(buf);
                if let Some(event) = event {
                    handle_event(event, &mut tcp, &mut udp, &mut sockets);
                }
            }
            Woken::Other => device.recycle(buf),
        }
        while let Ok(event) = events_rx.try_recv() {
            handle_event(event, &mut tcp, &mut udp, &mut sockets);
        }
        iface.poll(Instant::now(), &mut device, &mut sockets);
        tcp.pump(&mut sockets);
        iface.poll(Instant::now(), &mut device, &mut sockets);
        while let Some(packet) = device.tx.pop_front() {
            tun.send(&packet).await?;
        }
    }
}

fn handle_event(
    event: Event,
    tcp: &mut TcpFlows,
    udp: &mut UdpFlows,
    sockets: &mut SocketSet<'static>,
) {
    match event {
        Event::TcpDialed { id, result } => tcp.on_dialed(sockets, id, result),
        Event::UdpClosed { key } => udp.on_closed(key),
    }
}

#[allow(clippy::too_many_arguments)]
fn handle_packet(
    buf: Vec<u8>,
    len: usize,
    device: &mut QueueDevice,
    iface: &mut Interface,
    sockets: &mut SocketSet<'static>,
    tcp: &mut TcpFlows,
    udp: &mut UdpFlows,
    dns: &DnsServer,
) {
    match packet::classify(&buf[..len]) {
        Inbound::TcpSyn { src, dst } => {
            // Process what is queued first: the new listening socket must see only its SYN
            // while it is the one listening on `dst`.
            if !device.rx.is_empty() {
                iface.poll(Instant::now(), device, sockets);
            }
            tcp.on_syn(sockets, src, dst);
            device.rx.push_back((buf, len));
            iface.poll(Instant::now(), device, sockets);
        }
        Inbound::Tcp => device.rx.push_back((buf, len)),
        Inbound::Udp { src, dst, payload } => {
            if dns.listens_on(dst) {
                dns.on_query(src, payload);
            } else {
                udp.on_datagram(src, dst, payload);
            }
            device.recycle(buf);
        }
        Inbound::Drop => device.recycle(buf),
    }
}
