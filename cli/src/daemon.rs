//! The tether daemon: the process that owns a session. `tether connect` starts it (as root,
//! through sudo if needed) and returns once it reports "connected"; `tether status` and
//! `tether quit` talk to it over its Unix socket ([`crate::ipc`]).
//!
//! - [`dialer`]: where tunnel streams come from, and the handshake on them.
//! - [`portforward`]: the Kubernetes dialer: pod port-forwards to the manager.
//! - [`host`]: the TUN device, routes and DNS settings on this machine.
//! - [`tunnel`]: the session loop: serve a tunnel, reconnect when it drops.
//! - [`server`]: the socket, status and the start-up events `tether connect` follows.
//!
//! Every change to the machine is recorded in the state directory before it is made and
//! undone on quit, SIGTERM or SIGINT. After SIGKILL the kernel removes the TUN device with
//! its routes and per-link DNS, and the next `tether connect` or `tether quit` restores the
//! resolver file.

pub mod dialer;
pub mod host;
pub mod portforward;
pub mod server;
pub mod tunnel;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::args::DnsModeArg;
use crate::cluster::exec_as::{ExecAs, Invoker};
use crate::cluster::{self, KubeOptions};
use crate::error::CliError;
use crate::ipc::{DnsStatus, ManagerStatus, Reply, Status};
use crate::system::dns::{HostDns, detect};
use crate::system::state::{Previous, SessionRecord, StateDir};
use dialer::{Dialer, DirectDialer, Opened};
use host::{Host, RouteFlags};
use portforward::KubeDialer;
use server::{Events, Server};
use tunnel::Ended;

/// Everything the daemon needs, written by `tether connect` to a file the daemon reads, so
/// that nothing depends on the environment sudo passes on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonConfig {
    pub source: Source,
    /// Shown by `tether status`: the kubeconfig context, cluster and namespace in use.
    pub context: Option<String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub also_proxy: Vec<IpNet>,
    pub never_proxy: Vec<IpNet>,
    pub tun_name: String,
    pub tun_subnet: Ipv4Net,
    pub resolv_conf: PathBuf,
    pub dns_mode: DnsModeArg,
    pub state_dir: PathBuf,
    /// The daemon's log filter (`TETHER_LOG` of the user who ran connect).
    pub log_filter: String,
}

/// Where the tunnel comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// A manager at a known address.
    Direct {
        manager: String,
        token_file: PathBuf,
    },
    /// The manager in a Kubernetes cluster, through pod port-forwards.
    Kubernetes {
        /// `--kubeconfig`, when given.
        kubeconfig: Option<PathBuf>,
        /// Otherwise the user's KUBECONFIG (or their ~/.kube/config), spelled out because
        /// sudo changes the environment and HOME.
        kubeconfig_env: Option<String>,
        /// The context `tether connect` resolved, so the daemon uses the same cluster even
        /// if the current context changes meanwhile.
        context: String,
        /// The namespace short names resolve in.
        namespace: String,
        manager_namespace: String,
        /// The user who ran `tether connect` when that was not root: credential plugins
        /// run as them.
        #[serde(default)]
        invoker: Option<Invoker>,
    },
}

impl Source {
    fn mode(&self) -> &'static str {
        match self {
            Source::Direct { .. } => "direct",
            Source::Kubernetes { .. } => "kubernetes",
        }
    }
}

/// Prefix of the daemon's last log line when it fails; `tether connect` quotes what follows
/// when the daemon ends before it could report over the socket.
pub const EXIT_ERROR: &str = "daemon exits with an error: ";

pub fn read_config(path: &Path) -> Result<DaemonConfig, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::DaemonConfig {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| CliError::DaemonConfig {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The daemon process: detaches from the terminal, logs to the state directory, and runs
/// the session until quit.
pub fn main(config_path: &Path) -> ExitCode {
    tether_tunnel::heap::tune_for_streaming();
    let config = match read_config(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tether daemon: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Source::Kubernetes {
        kubeconfig: None,
        kubeconfig_env: Some(files),
        ..
    } = &config.source
    {
        // SAFETY: no other thread exists yet (the runtime starts below), so nothing reads
        // the environment concurrently.
        unsafe { std::env::set_var("KUBECONFIG", files) };
    }
    // A session of its own: the terminal's Ctrl-C and hang-up do not reach the daemon.
    // SAFETY: setsid has no memory-safety preconditions.
    unsafe { libc::setsid() };
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
        let result = run(config, &state).await;
        match &result {
            Ok(()) => tracing::info!("daemon exits"),
            Err(e) => tracing::error!("{EXIT_ERROR}{e}"),
        }
        result.map_or_else(|e| e.exit_code(), |()| 0)
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

async fn run(config: DaemonConfig, state: &StateDir) -> Result<(), CliError> {
    let stop = CancellationToken::new();
    let mut sigint = signal(SignalKind::interrupt()).map_err(CliError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(CliError::Signals)?;
    let on_signal = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
        tracing::info!("signal received, stopping");
        on_signal.cancel();
    });

    // Another daemon's socket must not be taken over, so this check comes first.
    let cleaned = match state.previous()? {
        Previous::Running(record) => {
            return Err(CliError::AlreadyConnected {
                pid: record.pid,
                manager: record.manager,
            });
        }
        Previous::Crashed(record) => Some(crate::quit::undo_leftovers(state, &record).await?),
        Previous::None => None,
    };

    let events = Events::new();
    let status = Arc::new(Mutex::new(Status {
        pid: std::process::id(),
        mode: config.source.mode().to_owned(),
        context: config.context.clone(),
        cluster: config.cluster.clone(),
        namespace: config.namespace.clone(),
        state: "connecting".to_owned(),
        device: config.tun_name.clone(),
        device_address: config.tun_subnet.to_string(),
        log: state.log_path(),
        ..Status::default()
    }));
    let (server, mut quits) = Server::start(state, events.clone(), status.clone(), stop.clone())?;
    if let Some(cleaned) = cleaned {
        events.push(cleaned);
    }

    let result = match &config.source {
        Source::Direct {
            manager,
            token_file,
        } => {
            let dialer = DirectDialer {
                address: manager.clone(),
                token_file: token_file.clone(),
            };
            session(&config, state, dialer, &events, &status, &stop).await
        }
        Source::Kubernetes {
            kubeconfig,
            context,
            namespace,
            manager_namespace,
            invoker,
            ..
        } => {
            let exec_as = match (invoker, std::env::current_exe()) {
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
            let options = KubeOptions {
                kubeconfig: kubeconfig.clone(),
                context: Some(context.clone()),
                namespace: Some(namespace.clone()),
                exec_as,
            };
            events.progress(format!("Connecting to the cluster of context {context}"));
            let connected = tokio::select! {
                connected = cluster::connect(&options) => connected.map_err(CliError::from),
                _ = stop.cancelled() => Err(CliError::Interrupted),
            };
            match connected {
                Ok(cluster) => {
                    let dialer = KubeDialer::new(cluster, manager_namespace.clone()).await;
                    session(&config, state, dialer, &events, &status, &stop).await
                }
                Err(CliError::Interrupted) => Ok(()),
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = &result {
        events.push(Reply::Failed {
            error: e.to_string(),
            exit_code: e.exit_code(),
        });
    } else if !events.connected() {
        events.push(Reply::Failed {
            error: CliError::Interrupted.to_string(),
            exit_code: CliError::Interrupted.exit_code(),
        });
    }
    let manager = status
        .lock()
        .map(|s| s.manager.address.clone())
        .unwrap_or_default();
    server.finish(&mut quits, &manager).await;
    result
}

/// From the first dial to quit: set up the machine once connected, then serve and reconnect.
async fn session<D: Dialer>(
    config: &DaemonConfig,
    state: &StateDir,
    mut dialer: D,
    events: &Events,
    status: &Arc<Mutex<Status>>,
    stop: &CancellationToken,
) -> Result<(), CliError> {
    // Until something is changed, a stop simply ends the attempt.
    let tun_addresses = host::tun_addresses(config.tun_subnet)?;
    let what = match &config.source {
        Source::Direct { manager, .. } => format!("the manager at {manager}"),
        Source::Kubernetes {
            manager_namespace, ..
        } => format!("the traffic manager in namespace {manager_namespace} (port-forward)"),
    };
    events.progress(format!("Connecting to {what}"));
    let opened = tokio::select! {
        opened = tunnel::first(&mut dialer) => opened?,
        _ = stop.cancelled() => return Ok(()),
    };
    events.progress(format!(
        "Setting up {} with routes and DNS",
        config.tun_name
    ));

    let dns_mode = detect(config.dns_mode, &config.resolv_conf);
    let dns = HostDns::new(
        dns_mode,
        &config.tun_name,
        tun_addresses.1,
        &config.resolv_conf,
        &state.backup_path(),
    )?;
    let mut record = SessionRecord {
        pid: std::process::id(),
        tun_name: config.tun_name.clone(),
        resolv_conf: config.resolv_conf.clone(),
        resolv_backup: state.backup_path(),
        manager: opened.manager.clone(),
        dns_mode,
    };
    state.write(&record)?;
    let host = Host::up(
        &config.tun_name,
        config.tun_subnet,
        RouteFlags {
            also_proxy: config.also_proxy.clone(),
            never_proxy: config.never_proxy.clone(),
        },
        dns,
        search_namespace(&config.source),
        opened.cluster.clone(),
        opened.peer_ip,
    )
    .await;
    let mut host = match host {
        Ok(host) => host,
        Err(e) => {
            state.remove();
            return Err(e);
        }
    };

    let set_connected = |host: &Host, opened: &Opened, reconnected: bool| {
        if let Ok(mut s) = status.lock() {
            s.state = "connected".to_owned();
            s.manager = ManagerStatus {
                address: opened.manager.clone(),
                version: opened.manager_version.clone(),
            };
            s.connected_since = Some(jiff::Timestamp::now().to_string());
            if reconnected {
                s.reconnects += 1;
            }
            fill_from_host(&mut s, host);
        }
    };
    set_connected(&host, &opened, false);
    if let Ok(s) = status.lock() {
        events.push(Reply::Connected {
            status: Box::new(s.clone()),
        });
    }
    tracing::info!(manager = %opened.manager, routes = ?host.routed, "connected");

    let mut opened = opened;
    loop {
        let ended = tunnel::serve(&mut host, opened, stop, |host| {
            if let Ok(mut s) = status.lock() {
                fill_from_host(&mut s, host);
            }
        })
        .await;
        match ended {
            Ended::Stop => break,
            Ended::Lost(reason) => tracing::warn!("tunnel lost: {reason}; reconnecting"),
        }
        if let Ok(mut s) = status.lock() {
            s.state = "reconnecting".to_owned();
            s.connected_since = None;
        }
        let Some(again) = tunnel::reconnect(&mut dialer, &host.tun, stop).await else {
            break;
        };
        host.update(again.cluster.clone(), again.peer_ip).await;
        set_connected(&host, &again, true);
        tracing::info!(manager = %again.manager, "reconnected");
        if record.manager != again.manager {
            // quit names the manager it disconnects from: the current one, not the first.
            record.manager = again.manager.clone();
            if let Err(e) = state.write(&record) {
                tracing::warn!("cannot record the new manager: {e}");
            }
        }
        opened = again;
    }

    if host.down().await {
        state.remove();
    }
    Ok(())
}

/// The namespace whose Services short names mean, when it is not the manager's.
fn search_namespace(source: &Source) -> Option<String> {
    match source {
        Source::Direct { .. } => None,
        Source::Kubernetes { namespace, .. } => Some(namespace.clone()),
    }
}

fn fill_from_host(status: &mut Status, host: &Host) {
    status.device = host.tun_name.clone();
    status.device_address = format!("{}/{}", host.tun_ip, host.tun_subnet.prefix_len());
    status.routes = host.routed.iter().map(ToString::to_string).collect();
    status.dns = DnsStatus {
        mode: host.dns.mode.as_str().to_owned(),
        server: host.dns_ip.to_string(),
        domain: host.cluster.dns_domain.clone(),
        search: host.cluster.search.clone(),
    };
}
