//! The API server's addresses outside the node namespace: the host's and the workstation's
//! 127.0.0.1, relayed byte for byte (TLS stays end to end) to the API server in the node
//! namespace, so kubectl on the host and in `tether-sandbox shell` reach it as with the
//! builtin control plane.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::node::netns::Netns;

/// Accepts on `listener` and relays each connection to `target` in `netns`.
pub async fn run(listener: TcpListener, netns: Netns, target: SocketAddr) {
    loop {
        let (mut inbound, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("relay accept: {e}");
                continue;
            }
        };
        let netns = netns.clone();
        tokio::spawn(async move {
            let connected = tokio::task::spawn_blocking(move || {
                netns.connect_tcp(target, Duration::from_secs(5))
            })
            .await;
            let outbound = match connected {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "relay to {target}: {e}");
                    return;
                }
                Err(_) => return,
            };
            let _ = outbound.set_nonblocking(true);
            let Ok(mut outbound) = tokio::net::TcpStream::from_std(outbound) else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}
