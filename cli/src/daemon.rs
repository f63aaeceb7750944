//! The tether daemon: the process that owns a session. `tether connect` starts it (as root,
//! through sudo if needed) and returns once it reports "connected"; `tether status` and
//! `tether quit` talk to it over its Unix socket ([`crate::ipc`]).
//!
//! - [`dial`]: where tunnel streams come from (a known address, or a pod port-forward), and
//!   the handshake on them.
//! - [`host`]: the TUN device, routes and DNS settings on this machine.
//! - [`session`]: from the first dial to quit: set the machine up, serve, reconnect.
//! - [`tunnel`]: serving one tunnel, and redialing when it drops.
//! - [`server`]: the socket, status and the start-up events `tether connect` follows.
//!
//! Every change to the machine is recorded in the state directory before it is made and
//! undone on quit, SIGTERM or SIGINT. After SIGKILL the kernel removes the TUN device with
//! its routes and per-link DNS, and the next `tether connect` or `tether quit` restores the
//! resolver file.
//!
//! The daemon's errors are [`DaemonError`]s; what the user reads is made of them at the edge
//! (`crate::error`), both for the `failed` event `tether connect` follows and for the log.

pub mod dial;
pub mod host;
pub mod ingress_hosts;
pub mod intercepts;
pub mod server;
pub mod session;
pub mod tunnel;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tether_tunnel::stack::dns::hosts::{LocalHosts, Precedence};
use thiserror::Error;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::cluster::exec_as::{ExecAs, Invoker};
use crate::cluster::{self, ClusterError, KubeOptions};
use crate::config::{DirectTarget, IngressHosts, SessionSettings};
use crate::error::{self, CliError};
use crate::ipc::{Mode, Reply, SessionState, Status};
use crate::system::leftovers;
use crate::system::resolv::ResolvError;
use crate::system::state::{Previous, StateDir, StateError};
use dial::DialError;
use dial::direct::DirectDialer;
use dial::kubernetes::KubeDialer;
use host::HostError;
use server::{Events, Server};

/// Everything the daemon needs, written by `tether connect` to a file the daemon reads, so
/// that nothing depends on the environment sudo passes on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonConfig {
    pub source: Source,
    pub settings: SessionSettings,
    pub state_dir: PathBuf,
    /// The session ends when this process does (`tether run`).
    #[serde(default)]
    pub owner: Option<u32>,
    /// A rootless run's namespace: the daemon runs as the user and serves its device.
    #[serde(default)]
    pub namespace: Option<crate::namespace::NamespaceLink>,
    /// The daemon's log filter (`TETHER_LOG` of the user who ran connect).
    pub log_filter: String,
}

/// Where the tunnel comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// A manager at a known address.
    Direct(DirectTarget),
    /// The manager in a Kubernetes cluster, through pod port-forwards.
    Kubernetes(KubeSource),
}

/// A cluster as `tether connect` resolved it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KubeSource {
    /// `--kubeconfig`, when given.
    pub kubeconfig: Option<PathBuf>,
    /// Otherwise the user's KUBECONFIG (or their ~/.kube/config), spelled out because sudo
    /// changes the environment and HOME.
    pub kubeconfig_env: Option<String>,
    /// The context `tether connect` resolved, so the daemon uses the same cluster even if
    /// the current context changes meanwhile.
    pub context: String,
    /// The API server's URL, for `tether status`.
    pub server: String,
    /// The namespace short names resolve in.
    pub namespace: String,
    pub manager_namespace: String,
    /// The user who ran `tether connect` when that was not root: credential plugins run as
    /// them.
    pub invoker: Option<Invoker>,
}

impl Source {
    fn mode(&self) -> Mode {
        match self {
            Source::Direct(_) => Mode::Direct,
            Source::Kubernetes(_) => Mode::Kubernetes,
        }
    }
}

/// Why the daemon could not run its session.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("cannot read the daemon configuration {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the daemon configuration {path}: {source}")]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot set up signal handling: {0}")]
    Signals(#[source] std::io::Error),
    /// Another daemon owns this state directory.
    #[error("another tether daemon (pid {pid}, manager {manager}) is running")]
    AlreadyRunning { pid: u32, manager: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Leftovers(#[from] ResolvError),
    #[error("cannot open the daemon socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("cannot reach the rootless run's namespace helper: {0}")]
    Namespace(#[source] std::io::Error),
}

/// Prefix of the daemon's last log line when it fails; `tether connect` quotes what follows
/// when the daemon ends before it could report over the socket.
pub const EXIT_ERROR: &str = "daemon exits with an error: ";

pub fn read_config(path: &Path) -> Result<DaemonConfig, DaemonError> {
    let text = std::fs::read_to_string(path).map_err(|source| DaemonError::ConfigRead {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| DaemonError::ConfigParse {
        path: path.to_owned(),
        source,
    })
}

/// The daemon process: detaches from the terminal, logs to the state directory, and runs
/// the session until quit.
pub fn main(config_path: &Path) -> ExitCode {
    tether_tunnel::heap::tune_for_streaming();
    let config = match read_config(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tether daemon: {}", error::daemon_message(&e));
            return ExitCode::FAILURE;
        }
    };
    if let Source::Kubernetes(KubeSource {
        kubeconfig: None,
        kubeconfig_env: Some(files),
        ..
    }) = &config.source
    {
        // SAFETY: no other thread exists yet (the runtime starts below), so nothing reads
        // the environment concurrently.
        unsafe { std::env::set_var("KUBECONFIG", files) };
    }
    // A session of its own: the terminal's Ctrl-C and hang-up do not reach the daemon.
    let _ = rustix::process::setsid();
    let state = match StateDir::open(&config.state_dir) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("tether daemon: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&state.log_path(), &config.log_filter);
    // One thread: the stack, the session driver and the flow tasks hand each other work
    // constantly, and cross-thread wakeups cost more than a second core gains.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match run(config, &state).await {
            Ok(()) => {
                tracing::info!("daemon exits");
                0
            }
            Err(e) => {
                tracing::error!("{EXIT_ERROR}{}", error::daemon_message(&e));
                error::daemon_exit_code(&e)
            }
        }
    });
    // Flows may still hold tasks; do not wait for them after the session is torn down.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    ExitCode::from(code)
}

fn init_logging(path: &Path, filter: &str) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    match file {
        Ok(file) => {
            chown_to_invoker(path);
            builder.with_writer(Mutex::new(file)).init();
        }
        // stderr is the log file connect opened, or /dev/null: nothing better to do.
        Err(_) => builder.with_writer(std::io::stderr).init(),
    }
}

/// Hands a file tether creates as root to the user who ran `sudo tether ...`, so that their
/// own tether commands can use it.
pub fn chown_to_invoker(path: &Path) {
    let id = |name: &str| std::env::var(name).ok()?.parse::<u32>().ok();
    let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) else {
        return;
    };
    if let Err(e) = std::os::unix::fs::chown(path, Some(uid), Some(gid)) {
        tracing::warn!("cannot hand {} to uid {uid}: {e}", path.display());
    }
}

/// Cancels `stop` on SIGINT or SIGTERM.
fn stop_on_signals(stop: &CancellationToken) -> Result<(), DaemonError> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let on_signal = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
        tracing::info!("signal received, stopping");
        on_signal.cancel();
    });
    Ok(())
}

async fn run(config: DaemonConfig, state: &StateDir) -> Result<(), DaemonError> {
    let stop = CancellationToken::new();
    stop_on_signals(&stop)?;
    if let Some(link) = &config.namespace {
        // SAFETY: `run` passed this descriptor to this process alone; it is taken once.
        let fd = unsafe { std::os::fd::FromRawFd::from_raw_fd(link.dial_fd) };
        crate::namespace::dialer::install(fd).map_err(DaemonError::Namespace)?;
    }
    if let Some(owner) = config.owner {
        let on_gone = stop.clone();
        tokio::spawn(async move {
            crate::system::process::wait_until_gone(owner).await;
            tracing::info!("the process that owns this session ({owner}) is gone; stopping");
            on_gone.cancel();
        });
    }

    // Another daemon's socket must not be taken over, so this check comes first.
    let cleaned = match state.previous()? {
        Previous::Running(record) => {
            return Err(DaemonError::AlreadyRunning {
                pid: record.pid,
                manager: record.manager,
            });
        }
        Previous::Crashed(record) => Some(leftovers::undo(state, &record)?),
        Previous::None => None,
    };

    let events = Events::new();
    let status = Arc::new(Mutex::new(connecting_status(&config, state)));
    let intercepts = Arc::new(intercepts::Intercepts::default());
    let (server, mut quits) = Server::start(
        state,
        events.clone(),
        status.clone(),
        intercepts.clone(),
        stop.clone(),
    )?;
    if let Some(cleaned) = cleaned {
        events.push(Reply::CleanedUp(cleaned));
    }

    let result = serve_source(&config, state, &events, &status, &intercepts, &stop).await;
    intercepts.stop_all().await;
    let failure = match &result {
        Err(e) => Some((error::daemon_message(e), error::daemon_exit_code(e))),
        Ok(()) if !events.connected() => Some((
            CliError::Interrupted.message(),
            CliError::Interrupted.exit_code(),
        )),
        Ok(()) => None,
    };
    if let Some((error, exit_code)) = failure {
        events.push(Reply::Failed { error, exit_code });
    }
    let manager = status
        .lock()
        .map(|s| s.manager.address.clone())
        .unwrap_or_default();
    server.finish(&mut quits, &manager).await;
    result
}

/// The status while the first tunnel is being opened.
fn connecting_status(config: &DaemonConfig, state: &StateDir) -> Status {
    let s = &config.settings;
    let (tun_ip, dns_ip) = host::tun_addresses(s.tun_subnet)
        .unwrap_or((s.tun_subnet.network(), s.tun_subnet.broadcast()));
    let (context, cluster, namespace) = match &config.source {
        Source::Direct(_) => (None, None, None),
        Source::Kubernetes(k) => (
            Some(k.context.clone()),
            Some(k.server.clone()),
            Some(k.namespace.clone()),
        ),
    };
    Status {
        pid: std::process::id(),
        daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
        mode: config.source.mode(),
        context,
        cluster,
        namespace,
        state: SessionState::Connecting,
        manager: Default::default(),
        device: s.tun_name.clone(),
        device_address: ipnet::Ipv4Net::new(tun_ip, s.tun_subnet.prefix_len())
            // The prefix length comes from a valid subnet.
            .expect("a valid prefix length"),
        routes: Vec::new(),
        dns: crate::ipc::DnsStatus {
            mode: match config.namespace {
                Some(_) => crate::system::state::DnsMode::Namespace,
                None => crate::system::dns::detect(s.dns, &s.resolv_conf),
            },
            server: dns_ip,
            domain: String::new(),
            search: Vec::new(),
        },
        connected_since: None,
        reconnects: 0,
        open_flows: 0,
        log: state.log_path(),
        intercepts: Vec::new(),
        rootless: config
            .namespace
            .as_ref()
            .map(|link| crate::ipc::RootlessStatus {
                helper_pid: link.helper_pid,
                host_address: link.host_address,
            }),
        ingress_hosts: Vec::new(),
    }
}

/// Builds the dialer the source calls for and runs the session with it. A stop before the
/// cluster answered ends the attempt without an error.
async fn serve_source(
    config: &DaemonConfig,
    state: &StateDir,
    events: &Events,
    status: &Arc<Mutex<Status>>,
    intercepts: &intercepts::Intercepts,
    stop: &CancellationToken,
) -> Result<(), DaemonError> {
    let precedence = match config.settings.ingress_hosts {
        IngressHosts::Override => Precedence::Override,
        IngressHosts::Auto | IngressHosts::Off => Precedence::PublicFirst,
    };
    let session = session::Session {
        config,
        state,
        events,
        status,
        stop,
        hosts: LocalHosts::new(precedence),
    };
    match &config.source {
        Source::Direct(target) => {
            let dialer = DirectDialer {
                target: target.clone(),
            };
            session.run(dialer).await
        }
        Source::Kubernetes(source) => {
            events.progress(format!(
                "Connecting to the cluster of context {}",
                source.context
            ));
            let options = kube_options(source);
            let cluster = tokio::select! {
                connected = cluster::connect(&options) => connected?,
                _ = stop.cancelled() => return Ok(()),
            };
            intercepts.set_cluster(cluster.clone());
            // Stopped with the session: a child of `stop` also ends when this returns.
            let hosts_done = stop.child_token();
            if config.settings.ingress_hosts != IngressHosts::Off {
                tokio::spawn(ingress_hosts::keep(
                    cluster.clone(),
                    source.namespace.clone(),
                    session.hosts.clone(),
                    status.clone(),
                    hosts_done.clone(),
                ));
            }
            let dialer = KubeDialer::new(cluster, source.manager_namespace.clone()).await;
            let result = session.run(dialer).await;
            hosts_done.cancel();
            result
        }
    }
}

/// The kubeconfig options the daemon's client uses: the context connect resolved, with
/// credential plugins run as the user who ran connect.
fn kube_options(source: &KubeSource) -> KubeOptions {
    let exec_as = match (&source.invoker, std::env::current_exe()) {
        (Some(invoker), Ok(helper)) => Some(ExecAs {
            invoker: invoker.clone(),
            helper,
        }),
        (Some(_), Err(e)) => {
            tracing::warn!("credential plugins run as root: no path to tether: {e}");
            None
        }
        (None, _) => None,
    };
    KubeOptions {
        kubeconfig: source.kubeconfig.clone(),
        context: Some(source.context.clone()),
        namespace: Some(source.namespace.clone()),
        exec_as,
    }
}
