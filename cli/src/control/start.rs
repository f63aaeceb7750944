//! Starting the daemon and following it until traffic flows: the daemon's configuration is
//! written to the state directory (readable by the user only: it holds their environment,
//! for credential plugins), the daemon is started (directly as root, else through sudo),
//! and its start-up events are read from its socket and shown as progress. Ctrl-C or
//! SIGTERM meanwhile stops the daemon again, which undoes whatever it had done.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::daemon::{DaemonConfig, EXIT_ERROR};
use crate::error::CliError;
use crate::ipc::{self, Reply, Request, Status};
use crate::output::{Printer, Progress};
use crate::system::leftovers::Cleanup;
use crate::system::state::{StateDir, StateError};

/// How long the daemon may take to open its socket.
const SOCKET_DEADLINE: Duration = Duration::from_secs(10);

/// Ctrl-C and SIGTERM, while something is under way that they should stop.
pub struct Interrupts {
    sigint: Signal,
    sigterm: Signal,
}

impl Interrupts {
    pub fn new() -> Result<Interrupts, CliError> {
        Ok(Interrupts {
            sigint: signal(SignalKind::interrupt()).map_err(CliError::Signals)?,
            sigterm: signal(SignalKind::terminate()).map_err(CliError::Signals)?,
        })
    }

    /// Completes at the first of either signal.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.sigint.recv() => {}
            _ = self.sigterm.recv() => {}
        }
    }
}

/// Starts the daemon with `config` and returns its status once it is connected.
/// `on_cleanup` hears, as it happens, that the daemon first undid what a crashed one left.
pub async fn start(
    config: &DaemonConfig,
    state: &StateDir,
    printer: &Printer,
    interrupts: &mut Interrupts,
    on_cleanup: &mut dyn FnMut(Cleanup),
) -> Result<Box<Status>, CliError> {
    let config_path = state.config_path();
    // Serializing plain strings, paths and subnets cannot fail.
    let text = serde_json::to_string_pretty(config).expect("the daemon config serializes");
    write_private(&config_path, text.as_bytes()).map_err(|source| StateError::Write {
        path: config_path.clone(),
        source,
    })?;

    let mut progress = printer.progress();
    progress.step("Starting the tether daemon");
    let mut child = spawn(config, &config_path, state, printer)?;
    let socket = state.socket_path();
    let replies = tokio::select! {
        replies = wait_for_socket(&socket, &mut child, state) => replies?,
        () = interrupts.recv() => return Err(interrupt(&socket).await),
    };
    let followed = tokio::select! {
        followed = follow(replies, &mut progress, child, state, on_cleanup) => followed,
        () = interrupts.recv() => return Err(interrupt(&socket).await),
    };
    progress.finish();
    followed
}

/// Reads the daemon's start-up events until it is connected or has failed.
async fn follow(
    mut replies: ipc::Replies,
    progress: &mut Progress,
    mut child: Child,
    state: &StateDir,
    on_cleanup: &mut dyn FnMut(Cleanup),
) -> Result<Box<Status>, CliError> {
    loop {
        match replies.next().await {
            Ok(Some(Reply::Progress { message })) => progress.step(&message),
            Ok(Some(Reply::CleanedUp(cleanup))) => {
                progress.finish();
                on_cleanup(cleanup);
            }
            Ok(Some(Reply::Connected { status })) => return Ok(status),
            Ok(Some(Reply::Failed { error, exit_code })) => {
                // Give the daemon its moment to exit, so a retry does not find it.
                let _ = tokio::task::spawn_blocking(move || child.wait()).await;
                return Err(CliError::DaemonFailed {
                    message: error,
                    exit_code,
                });
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
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

/// Starts `tether daemon`: directly as root or for a rootless run (which hands it the
/// namespace's descriptors), else through sudo. Its stderr goes to the log (panics and
/// early errors land there); the daemon detaches itself from the terminal.
fn spawn(
    config: &DaemonConfig,
    config_path: &Path,
    state: &StateDir,
    printer: &Printer,
) -> Result<Child, CliError> {
    let exe = std::env::current_exe().map_err(CliError::Spawn)?;
    let mut cmd = if let Some(link) = config.namespace.clone() {
        let mut cmd = Command::new(&exe);
        // SAFETY: the closure makes only system calls, on descriptors this process holds
        // until the daemon runs.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                crate::namespace::keep_for_daemon(&link)
            });
        }
        cmd
    } else if crate::system::is_root() {
        Command::new(&exe)
    } else {
        crate::sudo::prepare(
            "create its network device and change routes and DNS",
            printer,
        )?;
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
    socket: &Path,
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
                return Err(CliError::DaemonFailed { message, exit_code });
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
        // The socket appears once the daemon has read its configuration and checked the
        // state directory; there is nothing to wait on until then but the file itself.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The daemon's final error, as it logged it on exit.
fn last_error(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().last()?;
    line.split_once(EXIT_ERROR)
        .map(|(_, message)| message.to_owned())
}

/// The last lines of the daemon's log, for an error message.
fn log_tail(path: &Path) -> String {
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
async fn interrupt(socket: &Path) -> CliError {
    if let Ok(mut replies) = ipc::send(socket, Request::Quit).await {
        let _ = tokio::time::timeout(Duration::from_secs(15), replies.next()).await;
    }
    CliError::Interrupted
}

/// Writes a file only its owner may read, replacing what was there.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
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
