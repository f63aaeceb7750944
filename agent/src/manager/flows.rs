//! One handler per flow kind: the manager's half of every tunnel stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tether_tunnel::FlowStream;
use tether_tunnel::dns_client;
use tether_tunnel::wire::control::ControlMessage;
use tether_tunnel::wire::datagram::{read_datagram, write_datagram};
use tether_tunnel::wire::flow::{FlowReply, FlowRequest};
use tether_tunnel::wire::frame::{MAX_FRAME, expect_frame, read_frame, write_frame};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::Shared;

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// Copy buffers per direction of a TCP flow.
const COPY_BUFFER: usize = 256 * 1024;

pub async fn handle(mut stream: FlowStream, shared: Arc<Shared>) {
    let request = match expect_frame(&mut stream, MAX_FRAME, "flow request").await {
        Ok(bytes) => FlowRequest::decode(&bytes),
        Err(e) => Err(e),
    };
    let result = match request {
        Ok(FlowRequest::Control) => control(stream, &shared).await,
        Ok(FlowRequest::Tcp { target }) => tcp(stream, target).await,
        Ok(FlowRequest::Udp { target }) => udp(stream, target).await,
        Ok(FlowRequest::Dns) => dns(stream, &shared).await,
        Err(e) => {
            tracing::warn!("dropping a stream with a bad flow request: {e}");
            return;
        }
    };
    if let Err(e) = result {
        tracing::debug!("flow ended with an error: {e}");
    }
}

type FlowResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Pings answered before the control stream's writer catches up; more wait for it.
const PENDING_PONGS: usize = 8;

/// The control stream: the cluster's current ClusterInfo first, then every change of it, and
/// a Pong for every Ping.
async fn control(stream: FlowStream, shared: &Shared) -> FlowResult {
    let mut cluster_rx = shared.cluster_tx.subscribe();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let first = ControlMessage::ClusterInfo(cluster_rx.borrow_and_update().clone());
    write_frame(&mut writer, &first.encode()).await?;
    // The reader -> the writer: nonces of pings to answer.
    let (pongs_tx, mut pongs_rx) = mpsc::channel(PENDING_PONGS);
    let reads = async move {
        while let Some(frame) = read_frame(&mut reader, MAX_FRAME).await? {
            match ControlMessage::decode(&frame)? {
                ControlMessage::Ping { nonce } => {
                    if pongs_tx.send(nonce).await.is_err() {
                        break;
                    }
                }
                other => tracing::debug!("ignoring control message {other:?}"),
            }
        }
        FlowResult::Ok(())
    };
    let writes = async {
        loop {
            tokio::select! {
                nonce = pongs_rx.recv() => match nonce {
                    Some(nonce) => {
                        write_frame(&mut writer, &ControlMessage::Pong { nonce }.encode()).await?;
                    }
                    // The client closed its side: the session is ending.
                    None => return FlowResult::Ok(()),
                },
                // The sender lives in Shared, which outlives every session.
                Ok(()) = cluster_rx.changed() => {
                    let info = ControlMessage::ClusterInfo(cluster_rx.borrow_and_update().clone());
                    write_frame(&mut writer, &info.encode()).await?;
                }
            }
        }
    };
    // Ends at the first error either way; otherwise when the client closes its side and
    // the pongs owed are written.
    tokio::try_join!(reads, writes)?;
    Ok(())
}

async fn tcp(mut stream: FlowStream, target: SocketAddr) -> FlowResult {
    let dialed = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(target)).await;
    let mut upstream = match dialed {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => {
            tracing::debug!(%target, "dial failed: {e}");
            write_frame(&mut stream, &FlowReply::from_io_error(&e).encode()).await?;
            return Ok(());
        }
        Err(_) => {
            write_frame(&mut stream, &FlowReply::TimedOut.encode()).await?;
            return Ok(());
        }
    };
    let _ = upstream.set_nodelay(true);
    write_frame(&mut stream, &FlowReply::Ready.encode()).await?;
    tokio::io::copy_bidirectional_with_sizes(&mut stream, &mut upstream, COPY_BUFFER, COPY_BUFFER)
        .await?;
    Ok(())
}

async fn udp(mut stream: FlowStream, target: SocketAddr) -> FlowResult {
    let socket = match connect_udp(target).await {
        Ok(socket) => socket,
        Err(e) => {
            write_frame(&mut stream, &FlowReply::from_io_error(&e).encode()).await?;
            return Ok(());
        }
    };
    write_frame(&mut stream, &FlowReply::Ready.encode()).await?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let requests = async {
        let mut buf = vec![0u8; 65535];
        while let Some(datagram) = read_datagram(&mut reader, &mut buf).await? {
            // A full socket buffer or an ICMP error loses a datagram, as UDP may.
            let _ = socket.send(datagram).await;
        }
        FlowResult::Ok(())
    };
    let replies = async {
        let mut buf = vec![0u8; 65535];
        let result: FlowResult = loop {
            match socket.recv(&mut buf).await {
                Ok(n) => write_datagram(&mut writer, &buf[..n]).await?,
                // ECONNREFUSED after an ICMP port unreachable: the next datagram may succeed.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(e) => break Err(e.into()),
            }
        };
        result
    };
    tokio::select! {
        r = requests => r?,
        r = replies => r?,
    }
    let _ = writer.shutdown().await;
    Ok(())
}

async fn connect_udp(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(dns_client::any_addr_for(target)).await?;
    socket.connect(target).await?;
    Ok(socket)
}

async fn dns(mut stream: FlowStream, shared: &Shared) -> FlowResult {
    let query = expect_frame(&mut stream, MAX_FRAME, "DNS query").await?;
    for server in &shared.nameservers {
        // The complete answer (TCP after a truncated UDP one): the laptop truncates again
        // for its own UDP clients, and answers TCP clients in full.
        match dns_client::complete(*server, &query, DNS_TIMEOUT).await {
            Ok(answer) => {
                write_frame(&mut stream, &answer).await?;
                stream.shutdown().await?;
                return Ok(());
            }
            Err(e) => tracing::debug!(%server, "DNS query failed: {e}"),
        }
    }
    // No answer: the laptop turns the closed stream into SERVFAIL.
    Err("no nameserver answered".into())
}
