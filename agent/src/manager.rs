//! The traffic manager: accepts tunnel connections, authenticates them with the handshake,
//! and serves each session's flows (see [`flows`]).

mod flows;
mod resolv;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tether_tunnel::session;
use tether_tunnel::wire::control::ClusterInfo;
use tether_tunnel::wire::handshake::server_handshake;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use resolv::ResolvConf;

/// A client gets this long to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Unauthenticated connections handled at once; more wait, so a flood costs little.
const MAX_PENDING_HANDSHAKES: usize = 64;

pub struct Config {
    pub listen: SocketAddr,
    pub token: String,
    pub subnets: Vec<IpNet>,
    pub resolv_conf: PathBuf,
}

#[derive(Debug, Error)]
pub enum ManagerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source} (the manager resolves names with its nameservers)")]
    ResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for signals: {0}")]
    Signals(std::io::Error),
}

/// What every session shares.
pub struct Shared {
    token: String,
    cluster: ClusterInfo,
    nameservers: Vec<SocketAddr>,
}

pub async fn run(config: Config) -> Result<(), ManagerError> {
    let text = std::fs::read_to_string(&config.resolv_conf).map_err(|source| {
        ManagerError::ResolvConf {
            path: config.resolv_conf.clone(),
            source,
        }
    })?;
    let resolv = ResolvConf::parse(&text);
    let shared = Arc::new(Shared {
        token: config.token,
        cluster: ClusterInfo {
            dns_domain: resolv.cluster_domain(),
            search: resolv.search.clone(),
            subnets: config.subnets,
        },
        nameservers: resolv.nameservers,
    });
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ManagerError::Bind {
            addr: config.listen,
            source,
        })?;
    tracing::info!(
        listen = %config.listen,
        domain = %shared.cluster.dns_domain,
        nameservers = ?shared.nameservers,
        "manager ready"
    );
    let handshakes = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ManagerError::Signals)?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    let handshakes = handshakes.clone();
                    tokio::spawn(async move { serve_connection(stream, peer, shared, handshakes).await });
                }
                Err(e) => {
                    // Typically out of file descriptors; back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = sigterm.recv() => {
                tracing::info!("SIGTERM: shutting down");
                return Ok(());
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted: shutting down");
                return Ok(());
            }
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    handshakes: Arc<Semaphore>,
) {
    let _ = stream.set_nodelay(true);
    let admitted = {
        // The semaphore is never closed, so acquiring only waits.
        let Ok(_permit) = handshakes.acquire().await else {
            return;
        };
        tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            server_handshake(&mut stream, &shared.token),
        )
        .await
    };
    let admitted = match admitted {
        Ok(Ok(admitted)) => admitted,
        Ok(Err(e)) => {
            tracing::warn!(%peer, "connection dropped: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "connection dropped: no handshake within {HANDSHAKE_TIMEOUT:?}");
            return;
        }
    };
    tracing::info!(%peer, client = %admitted.peer.software, "session started");
    let result = session::serve(stream, |flow| {
        tokio::spawn(flows::handle(flow, shared.clone()));
    })
    .await;
    match result {
        Ok(()) => tracing::info!(%peer, "session ended"),
        Err(e) => tracing::info!(%peer, "session ended: {e}"),
    }
}
