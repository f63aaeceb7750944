//! TCP flows: smoltcp terminates the laptop's connection, a flow task carries the bytes over
//! a tunnel stream, and the pump moves bytes between the two without unbounded buffering.
//!
//! A new connection's SYN-ACK is held back (`pause_synack`) until the manager has dialled the
//! target: a refused port becomes an immediate RST on the laptop, and an unreachable target
//! fails instead of hanging.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::{IpAddress, IpListenEndpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::dns::DnsServer;
use super::egress::{self, Egress};
use super::packet;
use super::{ByteStream, Event};
use crate::session::{Session, SessionError};
use crate::wire::flow::{FlowReply, FlowRequest};

/// Socket buffers per connection: enough for the bandwidth-delay product of a local tunnel.
const SOCKET_BUFFER: usize = 512 * 1024;
/// Largest chunk moved between the socket and the flow task at once.
const CHUNK: usize = 64 * 1024;
/// Connections waiting for the manager's dial at once. Each holds socket buffers, so a scan
/// of many addresses is slowed down (SYNs past the limit are dropped and retransmitted by
/// the laptop's kernel) instead of growing memory without bound.
const MAX_DIALING: usize = 512;
/// Enough of a SYN to quote in an ICMP error: a maximal IPv4 header and 8 bytes.
const SYN_QUOTE: usize = 68;
/// Chunks buffered per direction between the stack and a flow task.
const PIPE_DEPTH: usize = 8;

type FlowKey = (SocketAddr, SocketAddr);

struct Pipes {
    // Stack -> flow task: bytes the laptop sent; dropped to forward the laptop's FIN.
    to_tunnel: Option<mpsc::Sender<Bytes>>,
    // Flow task -> stack: bytes from the cluster; closed when the cluster side sent FIN.
    from_tunnel: mpsc::Receiver<Bytes>,
    pending: Option<Bytes>,
    fin_sent: bool,
    // Set by the flow task when the tunnel stream failed: the laptop gets a RST.
    reset: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

enum Phase {
    Dialing,
    Open(Pipes),
    /// Aborted: the RST goes out on the next poll, then the socket is removed.
    Aborting,
}

struct TcpFlow {
    key: FlowKey,
    /// The start of the SYN (IP header and 8 bytes), quoted if an ICMP error is sent.
    syn: Vec<u8>,
    handle: SocketHandle,
    phase: Phase,
}

pub struct TcpFlows {
    session: Session,
    /// Connections to the DNS server's address are served locally (DNS over TCP).
    dns: DnsServer,
    /// Destinations outside the cluster, dialled from here (rootless runs).
    egress: Option<Egress>,
    events_tx: mpsc::UnboundedSender<Event>,
    wake: Arc<Notify>,
    flows: HashMap<u64, TcpFlow>,
    by_key: HashMap<FlowKey, u64>,
    next_id: u64,
    /// Flows in `Phase::Dialing`.
    dialing: usize,
}

impl TcpFlows {
    pub fn new(
        session: Session,
        dns: DnsServer,
        egress: Option<Egress>,
        events_tx: mpsc::UnboundedSender<Event>,
        wake: Arc<Notify>,
    ) -> Self {
        TcpFlows {
            session,
            dns,
            egress,
            events_tx,
            wake,
            flows: HashMap::new(),
            by_key: HashMap::new(),
            next_id: 0,
            dialing: 0,
        }
    }

    /// A SYN for `src -> dst`: unless the connection is already known, create a listening
    /// socket for it (SYN-ACK paused) and ask the manager to dial `dst`. Returns false when
    /// the SYN must be dropped instead of reaching smoltcp.
    pub fn on_syn(
        &mut self,
        sockets: &mut SocketSet<'static>,
        src: SocketAddr,
        dst: SocketAddr,
        packet: &[u8],
    ) -> bool {
        if self.by_key.contains_key(&(src, dst)) {
            return true;
        }
        if self.dialing >= MAX_DIALING {
            return false;
        }
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        );
        socket.pause_synack(true);
        socket.set_nagle_enabled(false);
        socket.set_ack_delay(None);
        let endpoint = IpListenEndpoint {
            addr: Some(IpAddress::from(dst.ip())),
            port: dst.port(),
        };
        if socket.listen(endpoint).is_err() {
            // Port 0 cannot be listened on; smoltcp answers such a SYN with a RST.
            return true;
        }
        self.dialing += 1;
        let handle = sockets.add(socket);
        let id = self.next_id;
        self.next_id += 1;
        self.flows.insert(
            id,
            TcpFlow {
                key: (src, dst),
                syn: packet[..packet.len().min(SYN_QUOTE)].to_vec(),
                handle,
                phase: Phase::Dialing,
            },
        );
        self.by_key.insert((src, dst), id);
        let events_tx = self.events_tx.clone();
        if self.dns.listens_on(dst) {
            // The resolver retries over TCP when a UDP answer was truncated.
            let (local, served) = tokio::io::duplex(CHUNK);
            tokio::spawn(self.dns.clone().serve_tcp(served));
            let result: Result<Box<dyn ByteStream>, SessionError> = Ok(Box::new(local));
            let _ = events_tx.send(Event::TcpDialed { id, result });
            return true;
        }
        if let Some(target) = self.egress.as_ref().and_then(|e| e.local_target(dst)) {
            tokio::spawn(async move {
                let result = egress::dial_tcp(target).await;
                let _ = events_tx.send(Event::TcpDialed { id, result });
            });
            return true;
        }
        let session = self.session.clone();
        tokio::spawn(async move {
            let result = session
                .dial(&FlowRequest::Tcp { target: dst })
                .await
                .map(|stream| Box::new(stream) as Box<dyn ByteStream>);
            let _ = events_tx.send(Event::TcpDialed { id, result });
        });
        true
    }

    /// The manager's dial result for flow `id`. Returns a packet for the laptop when the
    /// failure is reported with ICMP rather than a RST.
    pub fn on_dialed(
        &mut self,
        sockets: &mut SocketSet<'static>,
        id: u64,
        result: Result<Box<dyn ByteStream>, SessionError>,
    ) -> Option<Vec<u8>> {
        let flow = self.flows.get_mut(&id)?;
        if matches!(flow.phase, Phase::Dialing) {
            self.dialing -= 1;
        }
        let socket = sockets.get_mut::<tcp::Socket>(flow.handle);
        match result {
            Ok(stream) => {
                socket.pause_synack(false);
                let (to_tunnel, to_tunnel_rx) = mpsc::channel(PIPE_DEPTH);
                let (from_tunnel_tx, from_tunnel) = mpsc::channel(PIPE_DEPTH);
                let reset = Arc::new(AtomicBool::new(false));
                let task = tokio::spawn(carry(
                    stream,
                    to_tunnel_rx,
                    from_tunnel_tx,
                    self.wake.clone(),
                    reset.clone(),
                ));
                flow.phase = Phase::Open(Pipes {
                    to_tunnel: Some(to_tunnel),
                    from_tunnel,
                    pending: None,
                    fin_sent: false,
                    reset,
                    task,
                });
            }
            Err(e) => {
                tracing::debug!(src = %flow.key.0, dst = %flow.key.1, "dial failed: {e}");
                flow.phase = Phase::Aborting;
                // Unreachable or silent targets look like a network without a route; an
                // actively refused port (or anything else) gets a RST.
                let unreachable = matches!(
                    e,
                    SessionError::Dial {
                        reply: FlowReply::Unreachable | FlowReply::TimedOut,
                        ..
                    }
                );
                if unreachable && let Some(icmp) = packet::host_unreachable(&flow.syn) {
                    // The socket is removed without a RST: the ICMP error ends the attempt.
                    return Some(icmp);
                }
                socket.abort();
            }
        }
        None
    }

    /// Moves bytes between sockets and flow tasks, and retires finished connections.
    pub fn pump(&mut self, sockets: &mut SocketSet<'static>) {
        let mut finished = Vec::new();
        for (id, flow) in self.flows.iter_mut() {
            let socket = sockets.get_mut::<tcp::Socket>(flow.handle);
            let done = match &mut flow.phase {
                Phase::Dialing => socket.state() == State::Closed,
                Phase::Aborting => true,
                Phase::Open(pipes) => pump_one(socket, pipes),
            };
            if done {
                finished.push(*id);
            }
        }
        for id in finished {
            if let Some(flow) = self.flows.remove(&id) {
                self.by_key.remove(&flow.key);
                match flow.phase {
                    Phase::Open(pipes) => pipes.task.abort(),
                    Phase::Dialing => self.dialing -= 1,
                    Phase::Aborting => {}
                }
                sockets.remove(flow.handle);
            }
        }
    }
}

/// Returns true once the connection is over on both sides.
fn pump_one(socket: &mut tcp::Socket<'_>, pipes: &mut Pipes) -> bool {
    if pipes.reset.load(Ordering::Acquire) {
        socket.abort();
        return true;
    }
    // Laptop -> tunnel, only as far as the pipe has room: the socket's window closes
    // when the cluster side is slow, which is the backpressure the laptop sees.
    if let Some(tx) = &pipes.to_tunnel {
        while socket.can_recv() {
            let Ok(permit) = tx.try_reserve() else {
                break;
            };
            let chunk = socket.recv(|data| {
                let n = data.len().min(CHUNK);
                (n, Bytes::copy_from_slice(&data[..n]))
            });
            match chunk {
                Ok(chunk) if !chunk.is_empty() => permit.send(chunk),
                _ => break,
            }
        }
        let laptop_closed = matches!(
            socket.state(),
            State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed
        );
        if laptop_closed && !socket.can_recv() {
            pipes.to_tunnel = None;
        }
    }
    // Tunnel -> laptop.
    let mut tunnel_done = false;
    while socket.can_send() {
        if pipes.pending.is_none() {
            match pipes.from_tunnel.try_recv() {
                Ok(chunk) => pipes.pending = Some(chunk),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    tunnel_done = true;
                    break;
                }
            }
        }
        let Some(chunk) = pipes.pending.as_mut() else {
            break;
        };
        match socket.send_slice(chunk) {
            Ok(n) if n == chunk.len() => pipes.pending = None,
            Ok(n) => {
                let _ = chunk.split_to(n);
                break;
            }
            Err(_) => break,
        }
    }
    if tunnel_done && pipes.pending.is_none() && !pipes.fin_sent {
        socket.close();
        pipes.fin_sent = true;
    }
    matches!(socket.state(), State::Closed | State::TimeWait)
}

/// The flow task: copies between the pipes and the tunnel stream until both directions end.
async fn carry(
    stream: Box<dyn ByteStream>,
    mut to_tunnel_rx: mpsc::Receiver<Bytes>,
    from_tunnel_tx: mpsc::Sender<Bytes>,
    wake: Arc<Notify>,
    reset: Arc<AtomicBool>,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let up = async {
        while let Some(chunk) = to_tunnel_rx.recv().await {
            writer.write_all(&chunk).await?;
            // The pipe has room again: let the stack read more from the socket.
            wake.notify_one();
        }
        writer.shutdown().await
    };
    let down_wake = wake.clone();
    let down_reset = reset.clone();
    // Owns the sender so that the cluster's FIN reaches the laptop as soon as it arrives,
    // whatever the other direction is doing.
    let down = async move {
        let mut buf = BytesMut::with_capacity(CHUNK);
        let result = loop {
            buf.reserve(CHUNK);
            match reader.read_buf(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => {
                    // Flag the reset before the pipe closes, so the laptop sees RST, not FIN.
                    down_reset.store(true, Ordering::Release);
                    break Err(e);
                }
            }
            if from_tunnel_tx.send(buf.split().freeze()).await.is_err() {
                break Ok(());
            }
            down_wake.notify_one();
        };
        drop(from_tunnel_tx);
        down_wake.notify_one();
        result
    };
    if let Err(e) = tokio::try_join!(up, down) {
        tracing::debug!("tunnel stream failed: {e}");
        reset.store(true, Ordering::Release);
    }
    wake.notify_one();
}
