//! UDP flows: each (laptop address, cluster address) pair becomes one tunnel stream of
//! datagram frames, closed after a period without traffic in either direction.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Event;
use super::egress::{self, Egress};
use super::packet::udp_packet;
use crate::session::Session;
use crate::wire::datagram::{read_datagram, write_datagram};
use crate::wire::flow::FlowRequest;

/// Datagrams queued per flow before new ones are dropped, as a congested network would.
const QUEUE: usize = 256;

type FlowKey = (SocketAddr, SocketAddr);

pub struct UdpFlows {
    session: Session,
    tun: Arc<tun::AsyncDevice>,
    events_tx: mpsc::UnboundedSender<Event>,
    idle_timeout: Duration,
    /// Destinations outside the cluster, relayed from here (rootless runs).
    egress: Option<Egress>,
    // Stack -> flow task, per flow: datagrams from the laptop.
    flows: HashMap<FlowKey, mpsc::Sender<Bytes>>,
}

impl UdpFlows {
    pub fn new(
        session: Session,
        tun: Arc<tun::AsyncDevice>,
        events_tx: mpsc::UnboundedSender<Event>,
        idle_timeout: Duration,
        egress: Option<Egress>,
    ) -> Self {
        UdpFlows {
            session,
            tun,
            events_tx,
            idle_timeout,
            egress,
            flows: HashMap::new(),
        }
    }

    pub fn on_datagram(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let key = (src, dst);
        let datagram = Bytes::copy_from_slice(payload);
        if let Some(tx) = self.flows.get(&key) {
            match tx.try_send(datagram) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => return,
                // The flow ended (idle or failed): start a new one below.
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    self.flows.remove(&key);
                    self.start(key, d);
                    return;
                }
            }
        }
        self.start(key, datagram);
    }

    /// A flow task ended; forget it unless a newer flow took its place.
    pub fn on_closed(&mut self, key: (SocketAddr, SocketAddr)) {
        if self.flows.get(&key).is_some_and(|tx| tx.is_closed()) {
            self.flows.remove(&key);
        }
    }

    fn start(&mut self, key: FlowKey, first: Bytes) {
        let (tx, rx) = mpsc::channel(QUEUE);
        // A fresh channel has room for the first datagram.
        let _ = tx.try_send(first);
        self.flows.insert(key, tx);
        let session = self.session.clone();
        let tun = self.tun.clone();
        let events_tx = self.events_tx.clone();
        let idle = self.idle_timeout;
        let local = self.egress.as_ref().and_then(|e| e.local_target(key.1));
        tokio::spawn(async move {
            let ended = match local {
                Some(target) => egress::relay_udp(tun, key, target, rx, idle)
                    .await
                    .map_err(Into::into),
                None => relay(session, tun, key, rx, idle).await,
            };
            if let Err(e) = ended {
                tracing::debug!(src = %key.0, dst = %key.1, "UDP flow ended: {e}");
            }
            let _ = events_tx.send(Event::UdpClosed { key });
        });
    }
}

async fn relay(
    session: Session,
    tun: Arc<tun::AsyncDevice>,
    (src, dst): FlowKey,
    mut from_laptop: mpsc::Receiver<Bytes>,
    idle: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let stream = session.dial(&FlowRequest::Udp { target: dst }).await?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    // Replies count as activity too: a flow that only receives stays open.
    let activity = tokio::sync::Notify::new();
    let replies = async {
        let mut buf = vec![0u8; 65535];
        while let Some(payload) = read_datagram(&mut reader, &mut buf).await? {
            if let Some(packet) = udp_packet(dst, src, payload) {
                tun.send(&packet).await?;
            }
            activity.notify_one();
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    let requests = async {
        loop {
            tokio::select! {
                datagram = from_laptop.recv() => match datagram {
                    Some(d) => write_datagram(&mut writer, &d).await?,
                    None => return Ok(()),
                },
                _ = activity.notified() => {}
                _ = tokio::time::sleep(idle) => return Ok(()),
            }
        }
    };
    tokio::select! {
        r = replies => r,
        r = requests => r,
    }
}
