//! The traffic manager: accepts tunnel connections, authenticates them with the handshake,
//! and serves each session's flows (see [`flows`]).
//!
//! What sessions are told to route is kept in a watch channel: the `--subnet` values, plus
//! (with `--discover`) what [`crate::discovery`] finds and keeps current. Every session's
//! control stream sends the current value first and every later change.

mod flows;
mod resolv;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tether_tunnel::Session;
use tether_tunnel::resolv::ResolvConf;
use tether_tunnel::wire::control::ClusterInfo;
use tether_tunnel::wire::handshake::server_handshake;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::discovery::{self, Discovered, Discovery};
use crate::health::{self, Readiness};
use resolv::cluster_domain;

/// A client gets this long to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Unauthenticated connections handled at once; more wait, so a flood costs little.
const MAX_PENDING_HANDSHAKES: usize = 64;

pub struct Config {
    pub listen: SocketAddr,
    pub token: String,
    /// Always routed, whatever discovery finds.
    pub subnets: Vec<IpNet>,
    pub resolv_conf: PathBuf,
    /// Discover (and watch) the Service and pod CIDRs through the Kubernetes API.
    pub discover: bool,
    /// Where to serve `/readyz` and `/livez`.
    pub health_listen: Option<SocketAddr>,
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
    #[error("cannot configure a Kubernetes client (needed by --discover): {0}")]
    Kube(#[source] kube::Error),
}

/// What every session shares.
pub struct Shared {
    token: String,
    /// Discovery -> every session's control stream: what to route, as of now.
    cluster_tx: watch::Sender<ClusterInfo>,
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
    let base = ClusterInfo {
        dns_domain: cluster_domain(&resolv.search),
        search: resolv.search.clone(),
        subnets: config.subnets.clone(),
    };
    let (cluster_tx, _) = watch::channel(base);
    let shared = Arc::new(Shared {
        token: config.token,
        cluster_tx,
        nameservers: resolv.nameservers,
    });
    let readiness = Readiness::default();
    let health = match config.health_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let listener = bind(config.listen).await?;
    // Dropping the handle would not stop the task; aborting it on return does.
    let _health = health.map(|l| AbortOnDrop(tokio::spawn(health::serve(l, readiness.clone()))));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ManagerError::Signals)?;
    let _discovery = if config.discover {
        let client = kube::Client::try_default()
            .await
            .map_err(ManagerError::Kube)?;
        let namespace = discovery::own_namespace(&client);
        // Discovery -> the forwarder below: every new answer.
        let (found_tx, mut found_rx) = watch::channel(None);
        let task = AbortOnDrop(tokio::spawn(
            Discovery::new(client, namespace).run(found_tx),
        ));
        // Sessions wait in the listen backlog until the first answer: their first
        // ClusterInfo must already hold the cluster's subnets.
        tokio::select! {
            found = found_rx.wait_for(Option::is_some) => {
                // The sender lives in the discovery task, which only ends when found_rx is
                // dropped; it is held here.
                let found = found.expect("discovery runs while found_rx lives").clone();
                publish(&shared, &config.subnets, found.as_ref());
            }
            _ = sigterm.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let forwarder = {
            let shared = shared.clone();
            let always = config.subnets.clone();
            tokio::spawn(async move {
                while found_rx.changed().await.is_ok() {
                    let found = found_rx.borrow_and_update().clone();
                    publish(&shared, &always, found.as_ref());
                }
            })
        };
        Some((task, AbortOnDrop(forwarder)))
    } else {
        None
    };
    readiness.set_ready();
    {
        let cluster = shared.cluster_tx.borrow();
        tracing::info!(
            listen = %config.listen,
            domain = %cluster.dns_domain,
            subnets = ?cluster.subnets,
            nameservers = ?shared.nameservers,
            "manager ready"
        );
    }
    let handshakes = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
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

async fn bind(addr: SocketAddr) -> Result<TcpListener, ManagerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ManagerError::Bind { addr, source })
}

/// Tells every session about `found` (with the `--subnet` values) if it changes what they
/// route.
fn publish(shared: &Shared, always: &[IpNet], found: Option<&Discovered>) {
    let mut subnets = always.to_vec();
    for net in found.map(Discovered::subnets).unwrap_or_default() {
        if !subnets.contains(&net) {
            subnets.push(net);
        }
    }
    shared.cluster_tx.send_if_modified(|info| {
        let changed = info.subnets != subnets;
        info.subnets = subnets;
        changed
    });
}

/// Aborts a background task when the manager returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
    // The handle keeps the session open until the laptop goes away; the manager opens no
    // streams of its own yet.
    let (_session, mut incoming) = Session::server(stream);
    while let Some(flow) = incoming.next().await {
        tokio::spawn(flows::handle(flow, shared.clone()));
    }
    match incoming.finish().await {
        Ok(()) => tracing::info!(%peer, "session ended"),
        Err(e) => tracing::info!(%peer, "session ended: {e}"),
    }
}
