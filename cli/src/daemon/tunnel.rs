//! The session loop: carry traffic over one tunnel until it drops, then keep the device,
//! routes and DNS in place while dialing a new one (0.2 s doubling to 5 s between tries).
//! While down, new connections into the cluster fail at once (ICMP host unreachable)
//! instead of hanging, and work again as soon as the tunnel is back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tether_tunnel::stack::dns::DnsConfig;
use tether_tunnel::stack::packet::{Inbound, classify, host_unreachable};
use tether_tunnel::stack::{self, StackConfig};
use tether_tunnel::wire::control::ControlMessage;
use tether_tunnel::wire::frame::{MAX_FRAME, expect_frame, write_frame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::dial::{DIAL_TIMEOUT, DialError, Dialer, Opened, open};
use super::host::{Host, TUN_MTU};

const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(15);
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How serving one tunnel ended.
pub enum Ended {
    /// `tether quit` or a signal.
    Stop,
    /// The tunnel dropped; why.
    Lost(String),
}

/// Carries traffic over `opened` until it drops or `stop` fires. `ClusterInfo` updates are
/// applied to `host` as they come; `on_update` is told after each.
pub async fn serve(
    host: &mut Host,
    opened: Opened,
    stop: &CancellationToken,
    mut on_update: impl FnMut(&Host),
) -> Ended {
    let Opened {
        session,
        control,
        peer_ip,
        ..
    } = opened;
    let shutdown = CancellationToken::new();
    let stack = tokio::spawn(stack::run(
        host.tun.clone(),
        session.clone(),
        stack_config(host),
        shutdown.clone(),
    ));
    tokio::pin!(stack);

    let (control_rx, mut control_tx) = tokio::io::split(control);
    // Control reader -> this loop: every message the manager sends, then why reading ended.
    let (messages_tx, mut messages_rx) = mpsc::channel::<Result<ControlMessage, String>>(16);
    let reader = tokio::spawn(read_control(control_rx, messages_tx));

    let mut ping = tokio::time::interval(KEEPALIVE_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut nonce = 0u64;
    let mut last_answer = Instant::now();
    let ended = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ended::Stop,
            finished = &mut stack => break Ended::Lost(match finished {
                Ok(Ok(())) => "the network stack stopped".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => format!("the network stack failed: {e}"),
            }),
            message = messages_rx.recv() => match message {
                Some(Ok(ControlMessage::ClusterInfo(cluster))) => {
                    last_answer = Instant::now();
                    host.update(cluster, peer_ip).await;
                    on_update(host);
                }
                Some(Ok(ControlMessage::Pong { .. })) => last_answer = Instant::now(),
                Some(Ok(ControlMessage::Ping { .. })) => {}
                Some(Err(reason)) => break Ended::Lost(format!("control stream: {reason}")),
                None => break Ended::Lost("control stream ended".to_owned()),
            },
            _ = ping.tick() => {
                if last_answer.elapsed() > KEEPALIVE_TIMEOUT {
                    break Ended::Lost(format!("no keepalive answer within {KEEPALIVE_TIMEOUT:?}"));
                }
                nonce += 1;
                let ping = ControlMessage::Ping { nonce }.encode();
                if let Err(e) = write_frame(&mut control_tx, &ping).await {
                    break Ended::Lost(format!("keepalive failed: {e}"));
                }
            }
        }
    };
    reader.abort();
    shutdown.cancel();
    if !stack.is_finished() {
        // The stack returns promptly once cancelled; do not wait forever regardless.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut stack).await;
    }
    ended
}

fn stack_config(host: &Host) -> StackConfig {
    StackConfig {
        mtu: usize::from(TUN_MTU),
        anchor: host.dns_ip,
        dns: DnsConfig {
            listen: SocketAddr::new(host.dns_ip.into(), 53),
            domain: host.cluster.dns_domain.clone(),
            upstream: host.dns.upstream(),
            hosts: host.local_hosts.clone(),
        },
        udp_idle_timeout: Duration::from_secs(60),
        egress: host.egress.clone(),
    }
}

/// Reads control messages until the stream fails; the failure is the last item sent.
async fn read_control(
    mut control_rx: tokio::io::ReadHalf<tether_tunnel::FlowStream>,
    messages_tx: mpsc::Sender<Result<ControlMessage, String>>,
) {
    loop {
        let message = match expect_frame(&mut control_rx, MAX_FRAME, "control message").await {
            Ok(frame) => ControlMessage::decode(&frame).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let failed = message.is_err();
        if messages_tx.send(message).await.is_err() || failed {
            return;
        }
    }
}

/// Dials until a tunnel is open (Some) or `stop` fires (None), answering packets on the
/// device meanwhile so that nothing waits on a tunnel that is not there.
pub async fn reconnect<D: Dialer>(
    dialer: &mut D,
    tun: &tun::AsyncDevice,
    stop: &CancellationToken,
) -> Option<Opened> {
    let mut delay = BACKOFF_FIRST;
    loop {
        let attempt = async {
            let dialed = dialer.dial().await?;
            open(dialed).await
        };
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = refuse_while_down(tun) => {}
            result = tokio::time::timeout(DIAL_TIMEOUT * 2, attempt) => match result {
                Ok(Ok(opened)) => return Some(opened),
                Ok(Err(e)) => tracing::info!("reconnect failed, next try in {delay:?}: {e}"),
                Err(_) => tracing::info!("reconnect timed out, next try in {delay:?}"),
            },
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = refuse_while_down(tun) => {}
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// Answers every TCP and UDP packet on the device with ICMP host unreachable; returns only
/// if the device fails (after a pause, so a broken device does not spin).
async fn refuse_while_down(tun: &tun::AsyncDevice) {
    let mut buf = vec![0u8; usize::from(TUN_MTU) + 4];
    loop {
        let len = match tun.recv(&mut buf).await {
            Ok(len) => len,
            Err(e) => {
                tracing::warn!("reading the TUN device while reconnecting: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
        };
        let packet = &buf[..len];
        if matches!(
            classify(packet),
            Inbound::TcpSyn { .. } | Inbound::Tcp | Inbound::Udp { .. }
        ) && let Some(reply) = host_unreachable(packet)
            && let Err(e) = tun.send(&reply).await
        {
            tracing::debug!("cannot answer a packet while reconnecting: {e}");
        }
    }
}

/// The first tunnel: one attempt, whose error is the user's answer.
pub async fn first<D: Dialer>(dialer: &mut D) -> Result<Opened, DialError> {
    let dialed = dialer.dial().await?;
    open(dialed).await
}
