//! The demo workloads the kubelet runs inside pods (`tether-sandbox workload KIND`): small
//! servers that say which pod answered, so tests can tell where traffic went.
//!
//! - [`http`]: `http-echo`, an HTTP/1.1 server (identity text, `/healthz`, `/bytes?n=N`,
//!   `POST /echo`), logging one line per request to stdout (what `kubectl logs` shows).
//! - [`echo`]: `tcp-echo` and `udp-echo`, plain echo servers.
//! - [`ingress`]: `ingress-nginx`, an ingress controller that configures and runs nginx.
//!
//! Each listens on 0.0.0.0 (the pod's own network namespace) and exits with success on
//! SIGTERM or SIGINT, as a well-behaved container does when the kubelet stops it.

pub mod echo;
pub mod http;
pub mod ingress;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

/// Which workload to run.
// The names are the subcommand's words (`http-echo`...).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    HttpEcho,
    TcpEcho,
    UdpEcho,
    IngressNginx,
}

impl Kind {
    pub fn default_port(self) -> u16 {
        match self {
            Kind::HttpEcho => 8080,
            Kind::TcpEcho => 9000,
            Kind::UdpEcho => 9001,
            Kind::IngressNginx => 80,
        }
    }
}

/// What `tether-sandbox workload` was asked to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub kind: Kind,
    /// `--port` or `$PORT`; else the kind's default.
    pub port: Option<u16>,
    /// `--unready` or `$UNREADY`: `/healthz` answers 503 (a pod that fails readiness).
    pub unready: bool,
    /// What `ingress-nginx` serves (its port is `port`).
    pub ingress: ingress::Config,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot watch for termination signals: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Ingress(#[from] ingress::IngressError),
}

/// Who is answering: the pod's name and address as the kubelet passes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub hostname: String,
    pub pod_ip: Option<String>,
}

impl Identity {
    /// `$POD_NAME`, else `$HOSTNAME`, else the UTS hostname; `$POD_IP` when set.
    pub fn from_env() -> Self {
        let var = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        let hostname = var("POD_NAME")
            .or_else(|| var("HOSTNAME"))
            .unwrap_or_else(|| {
                rustix::system::uname()
                    .nodename()
                    .to_string_lossy()
                    .into_owned()
            });
        Identity {
            hostname,
            pod_ip: var("POD_IP"),
        }
    }
}

/// Runs a workload in the foreground until SIGTERM or SIGINT.
pub fn run(cfg: &Config) -> Result<(), WorkloadError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(WorkloadError::Runtime)?;
    let result = runtime.block_on(async {
        let addr = SocketAddr::from((
            Ipv4Addr::UNSPECIFIED,
            cfg.port.unwrap_or(cfg.kind.default_port()),
        ));
        let listen = |source| WorkloadError::Listen { addr, source };
        let mut term = signal(SignalKind::terminate()).map_err(WorkloadError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(WorkloadError::Signals)?;
        let stopped = async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        let identity = Arc::new(Identity::from_env());
        match cfg.kind {
            Kind::HttpEcho => {
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(listen)?;
                println!("http-echo {} listening on {addr}", identity.hostname);
                tokio::select! {
                    _ = http::serve(listener, identity, cfg.unready) => {}
                    _ = stopped => {}
                }
            }
            Kind::TcpEcho => {
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(listen)?;
                println!("tcp-echo {} listening on {addr}", identity.hostname);
                tokio::select! {
                    _ = echo::serve_tcp(listener) => {}
                    _ = stopped => {}
                }
            }
            Kind::IngressNginx => {
                let ingress = ingress::Config {
                    port: addr.port(),
                    ..cfg.ingress.clone()
                };
                ingress::serve(&ingress, stopped).await?;
            }
            Kind::UdpEcho => {
                let socket = tokio::net::UdpSocket::bind(addr).await.map_err(listen)?;
                println!("udp-echo {} listening on {addr}", identity.hostname);
                tokio::select! {
                    _ = echo::serve_udp(socket) => {}
                    _ = stopped => {}
                }
            }
        }
        println!("stopping");
        Ok(())
    });
    // Open connections are dropped rather than waited for: the process is going away.
    runtime.shutdown_background();
    result
}
