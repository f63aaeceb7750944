//! `tether connect`: in Kubernetes mode, find the cluster and make sure the traffic manager
//! is installed (with the user's own credentials, before anything needs root); then start
//! the daemon (as root, through sudo if needed), follow its progress over the socket, and
//! return once traffic flows. Ctrl-C while it connects stops the daemon again; once
//! connected, the daemon runs until `tether quit`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use tokio::signal::unix::{SignalKind, signal};

use crate::args::DnsModeArg;
use crate::cluster::exec_as::Invoker;
use crate::cluster::progress::Renderer;
use crate::cluster::{self, InstallOptions, KubeOptions};
use crate::daemon::{DaemonConfig, Source};
use crate::error::CliError;
use crate::ipc::{self, Reply, Request};
use crate::output::Printer;
use crate::status;
use crate::system::state::{Previous, StateDir};

/// How long the daemon may take to open its socket.
const SOCKET_DEADLINE: Duration = Duration::from_secs(10);

/// What to connect to.
pub enum Target {
    /// A manager at a known address.
    Direct(Source),
    /// The cluster the kubeconfig names; the manager is installed there if needed.
    Kubernetes {
        options: KubeOptions,
        install: InstallOptions,
    },
}

pub struct ConnectConfig {
    pub target: Target,
    pub also_proxy: Vec<IpNet>,
    pub never_proxy: Vec<IpNet>,
    pub tun_name: String,
    pub tun_subnet: Ipv4Net,
    pub resolv_conf: PathBuf,
    pub dns_mode: DnsModeArg,
    pub state_dir: PathBuf,
}

pub async fn run(config: ConnectConfig, printer: Printer) -> Result<(), CliError> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(CliError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(CliError::Signals)?;
    let state = StateDir::open(&config.state_dir)?;
    let socket = state.socket_path();

    // Already connected (or connecting): report that connection.
    let running = match state.previous()? {
        Previous::Running(record) => Some((record.pid, record.manager)),
        Previous::Crashed(_) | Previous::None => None,
    };
    if let Some(current) = status::query(&socket).await {
        printer.emit(
            &status::render(&current),
            status::to_json(&current, "already-connected"),
        );
        return Err(CliError::AlreadyConnected {
            pid: current.pid,
            manager: current.manager.address,
        });
    }
    if let Some((pid, manager)) = running {
        return Err(CliError::AlreadyConnected { pid, manager });
    }
    // Obvious mistakes are refused before anything starts (the daemon checks again).
    crate::daemon::host::tun_addresses(config.tun_subnet)?;
    let target = tokio::select! {
        target = resolve(config.target) => target?,
        _ = sigint.recv() => return Err(CliError::Interrupted),
        _ = sigterm.recv() => return Err(CliError::Interrupted),
    };

    let daemon_config = DaemonConfig {
        source: target.source,
        context: target.context,
        cluster: target.cluster,
        namespace: target.namespace,
        also_proxy: config.also_proxy,
        never_proxy: config.never_proxy,
        tun_name: config.tun_name,
        tun_subnet: config.tun_subnet,
        resolv_conf: config.resolv_conf,
        dns_mode: config.dns_mode,
        state_dir: config.state_dir.clone(),
        log_filter: std::env::var("TETHER_LOG").unwrap_or_else(|_| "info".to_owned()),
    };
    let config_path = state.config_path();
    // Serializing plain strings, paths and subnets cannot fail.
    let text = serde_json::to_string_pretty(&daemon_config).expect("config serializes");
    // The user's environment is in it (for credential plugins): readable by them only.
    write_private(&config_path, text.as_bytes()).map_err(|source| {
        crate::system::state::StateError::Write {
            path: config_path.clone(),
            source,
        }
    })?;

    let progress = printer.progress();
    progress.step("Starting the tether daemon");
    let mut child = spawn_daemon(&config_path, &state)?;
    let mut replies = tokio::select! {
        replies = wait_for_socket(&socket, &mut child, &state) => replies?,
        _ = sigint.recv() => return Err(interrupt(&socket).await),
        _ = sigterm.recv() => return Err(interrupt(&socket).await),
    };
    loop {
        let reply = tokio::select! {
            reply = replies.next() => reply,
            _ = sigint.recv() => return Err(interrupt(&socket).await),
            _ = sigterm.recv() => return Err(interrupt(&socket).await),
        };
        match reply {
            Ok(Some(Reply::Progress { message })) => progress.step(&message),
            Ok(Some(cleaned @ Reply::CleanedUp { .. })) => {
                progress.finish();
                crate::quit::print_cleaned(&cleaned, printer);
            }
            Ok(Some(Reply::Connected { status })) => {
                progress.finish();
                printer.emit(
                    &connected_text(&status),
                    status::to_json(&status, "connected"),
                );
                return Ok(());
            }
            Ok(Some(Reply::Failed { error, exit_code })) => {
                progress.finish();
                // Give the daemon its moment to exit, so a retry does not find it.
                let _ = tokio::task::spawn_blocking(move || child.wait()).await;
                return Err(CliError::Daemon {
                    message: error,
                    exit_code,
                });
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                progress.finish();
                let reason = match child.try_wait() {
                    Ok(Some(status)) => format!("it exited ({status})"),
                    _ => "its socket closed".to_owned(),
                };
                return Err(CliError::DaemonLost {
                    reason,
                    log: state.log_path(),
                });
            }
        }
    }
}

/// A target as the daemon gets it: in Kubernetes mode, the cluster answered and a Ready
/// manager runs there.
struct Resolved {
    source: Source,
    context: Option<String>,
    cluster: Option<String>,
    namespace: Option<String>,
}

async fn resolve(target: Target) -> Result<Resolved, CliError> {
    let (options, install) = match target {
        Target::Direct(source) => {
            return Ok(Resolved {
                source,
                context: None,
                cluster: None,
                namespace: None,
            });
        }
        Target::Kubernetes { options, install } => (options, install),
    };
    let cluster = cluster::connect(&options).await?;
    // Like the daemon's steps: on stderr, so JSON results on stdout stay clean.
    let mut renderer = Renderer::new();
    let manager = cluster::ensure_manager(&cluster, &install, &mut |p| renderer.show(p)).await;
    renderer.finish();
    let manager = manager?;
    tracing::info!(?manager, context = %cluster.context, "manager ready");
    let kubeconfig_env = match &options.kubeconfig {
        Some(_) => None,
        None => std::env::var("KUBECONFIG").ok().or_else(|| {
            let home = std::env::var_os("HOME")?;
            Some(
                PathBuf::from(home)
                    .join(".kube/config")
                    .to_string_lossy()
                    .into_owned(),
            )
        }),
    };
    Ok(Resolved {
        source: Source::Kubernetes {
            kubeconfig: options.kubeconfig.map(crate::absolute),
            kubeconfig_env,
            context: cluster.context.clone(),
            namespace: cluster.namespace.clone(),
            manager_namespace: manager.namespace,
            // The daemon runs as root through sudo; its credential plugins run as the user.
            invoker: (!crate::sudo::is_root()).then(Invoker::current),
        },
        context: Some(cluster.context),
        cluster: Some(cluster.server),
        namespace: Some(cluster.namespace),
    })
}

fn connected_text(s: &ipc::Status) -> String {
    let to = match (&s.context, &s.cluster) {
        (Some(context), Some(server)) => format!(
            "the cluster of context {context} ({server}) through the manager {}",
            s.manager.address
        ),
        _ => format!("the manager at {}", s.manager.address),
    };
    format!(
        "Connected to {to} (tether-agent {}).\n  \
         device {} {}, routing {}\n  \
         DNS {} ({}), cluster domain {}, search {}\n\
         `tether status` shows the connection, `tether quit` ends it.",
        s.manager.version,
        s.device,
        s.device_address,
        if s.routes.is_empty() {
            "nothing".to_owned()
        } else {
            s.routes.join(", ")
        },
        s.dns.server,
        s.dns.mode,
        s.dns.domain,
        s.dns.search.join(" "),
    )
}

/// Starts `tether daemon`: directly as root, else through sudo. Its stderr goes to the log
/// (panics and early errors land there); the daemon detaches itself from the terminal.
fn spawn_daemon(config_path: &std::path::Path, state: &StateDir) -> Result<Child, CliError> {
    let exe = std::env::current_exe().map_err(CliError::Spawn)?;
    let mut cmd = if crate::sudo::is_root() {
        Command::new(&exe)
    } else {
        crate::sudo::prepare("create its network device and change routes and DNS")?;
        let mut cmd = crate::sudo::command(&exe);
        // Out of the terminal's process group, so Ctrl-C here is not relayed by sudo; the
        // daemon starts its own session anyway.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.log_path())
        .map_err(CliError::Spawn)?;
    cmd.arg("daemon")
        .arg("--config")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(CliError::Spawn)
}

/// Waits until the daemon accepts a `watch` request, or says why it will not.
async fn wait_for_socket(
    socket: &std::path::Path,
    child: &mut Child,
    state: &StateDir,
) -> Result<ipc::Replies, CliError> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            // It may have failed before this process could listen: its last words are in
            // the log, its exit code says what kind of failure it was.
            if let (Some(code), Some(message)) = (status.code(), last_error(&state.log_path()))
                && let Ok(exit_code) = u8::try_from(code)
                && exit_code != 0
            {
                return Err(CliError::Daemon { message, exit_code });
            }
            return Err(CliError::DaemonDied {
                status: status.to_string(),
                log: state.log_path(),
                tail: log_tail(&state.log_path()),
            });
        }
        if let Ok(replies) = ipc::send(socket, Request::Watch).await {
            return Ok(replies);
        }
        if start.elapsed() > SOCKET_DEADLINE {
            return Err(CliError::DaemonSilent(socket.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The daemon's final error, as it logged it on exit.
fn last_error(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().last()?;
    line.split_once(crate::daemon::EXIT_ERROR)
        .map(|(_, message)| message.to_owned())
}

/// The last lines of the daemon's log, for an error message.
fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(5)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!("\n{}", tail.join("\n"))
    }
}

/// Ctrl-C while connecting: stop the daemon, which undoes whatever it did so far.
async fn interrupt(socket: &std::path::Path) -> CliError {
    if let Ok(mut replies) = ipc::send(socket, Request::Quit).await {
        let _ = tokio::time::timeout(Duration::from_secs(15), replies.next()).await;
    }
    CliError::Interrupted
}

/// Writes a file only its owner may read, replacing what was there.
fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)
}
