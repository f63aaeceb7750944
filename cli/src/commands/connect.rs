//! `tether connect`: in Kubernetes mode, find the cluster and make sure the traffic manager
//! is installed (with the user's own credentials, before anything needs root); then start
//! the daemon (as root, through sudo if needed), follow its progress, and return once
//! traffic flows. Ctrl-C while it connects stops the daemon again; once connected, the
//! daemon runs until `tether quit`.

use std::path::PathBuf;

use crate::cluster::exec_as::Invoker;
use crate::cluster::{self, InstallOptions, KubeOptions};
use crate::config::{ConnectConfig, Target};
use crate::control;
use crate::control::start::{self, Interrupts};
use crate::daemon::host;
use crate::daemon::{DaemonConfig, KubeSource, Source};
use crate::error::CliError;
use crate::ipc::Status;
use crate::output::{Event, Printer};
use crate::system::leftovers::Cleanup;
use crate::system::state::{Previous, StateDir};

/// How `connect` left things.
#[derive(Debug)]
pub enum Connection {
    /// This call started a session.
    Started(Box<Status>),
    /// A session was already running; it is left as it is.
    Existing(Box<Status>),
}

/// Connects unless a session already runs, and says which. `on_cleanup` hears, as it
/// happens, that what a crashed daemon had left was undone first.
pub async fn connect(
    config: ConnectConfig,
    printer: &Printer,
    on_cleanup: &mut dyn FnMut(Cleanup),
) -> Result<Connection, CliError> {
    let mut interrupts = Interrupts::new()?;
    let state = StateDir::open(&config.state_dir)?;
    let running = match state.previous()? {
        Previous::Running(record) => Some((record.pid, record.manager)),
        Previous::Crashed(_) | Previous::None => None,
    };
    // A daemon that is still connecting answers but has no record yet.
    if let Some(current) = control::query(&state.socket_path()).await {
        return Ok(Connection::Existing(Box::new(current)));
    }
    if let Some((pid, manager)) = running {
        return Err(CliError::AlreadyConnected { pid, manager });
    }
    // Obvious mistakes are refused before anything starts (the daemon checks again).
    host::tun_addresses(config.settings.tun_subnet)?;
    let rootless = config.namespace.is_some();
    let source = tokio::select! {
        source = resolve(config.target, rootless, printer) => source?,
        () = interrupts.recv() => return Err(CliError::Interrupted),
    };
    let daemon = DaemonConfig {
        source,
        settings: config.settings,
        state_dir: config.state_dir,
        owner: config.owner,
        namespace: config.namespace,
        log_filter: std::env::var("TETHER_LOG").unwrap_or_else(|_| "info".to_owned()),
    };
    let status = start::start(&daemon, &state, printer, &mut interrupts, on_cleanup).await?;
    Ok(Connection::Started(status))
}

pub async fn run(config: ConnectConfig, printer: &Printer) -> Result<(), CliError> {
    let on_cleanup = &mut |cleanup| printer.event(&Event::CleanedUp(cleanup));
    match connect(config, printer, on_cleanup).await? {
        Connection::Started(status) => {
            printer.event(&Event::Connected(status));
            Ok(())
        }
        Connection::Existing(status) => {
            let error = CliError::AlreadyConnected {
                pid: status.pid,
                manager: status.manager.address.clone(),
            };
            printer.event(&Event::AlreadyConnected(status));
            Err(error)
        }
    }
}

/// The source as the daemon gets it: in Kubernetes mode, the cluster answered and a Ready
/// manager runs there.
async fn resolve(target: Target, rootless: bool, printer: &Printer) -> Result<Source, CliError> {
    let target = match target {
        Target::Direct(direct) => return Ok(Source::Direct(direct)),
        Target::Kubernetes(target) => target,
    };
    let cluster = cluster::connect(&KubeOptions::from(&target)).await?;
    // Like the daemon's steps: on stderr, so results on stdout stay clean.
    let mut progress = printer.progress();
    let install = InstallOptions {
        namespace: target.manager_namespace.clone(),
        image: target.manager_image.clone(),
        timeout: target.timeout,
    };
    let manager = cluster::ensure_manager(&cluster, &install, &mut |p| progress.install(p)).await;
    progress.finish();
    let manager = manager?;
    tracing::info!(?manager, context = %cluster.context, "manager ready");
    Ok(Source::Kubernetes(KubeSource {
        kubeconfig_env: match &target.kubeconfig {
            Some(_) => None,
            None => user_kubeconfig(),
        },
        kubeconfig: target.kubeconfig,
        context: cluster.context,
        server: cluster.server,
        namespace: cluster.namespace,
        manager_namespace: manager.namespace,
        // The daemon runs as root through sudo; its credential plugins run as the user. A
        // rootless daemon is the user already.
        invoker: (!crate::system::is_root() && !rootless).then(Invoker::current),
    }))
}

/// The user's KUBECONFIG, else their ~/.kube/config, spelled out for the daemon.
fn user_kubeconfig() -> Option<String> {
    std::env::var("KUBECONFIG").ok().or_else(|| {
        let home = std::env::var_os("HOME")?;
        Some(
            PathBuf::from(home)
                .join(".kube/config")
                .to_string_lossy()
                .into_owned(),
        )
    })
}
