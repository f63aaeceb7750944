//! `tether run [connect flags] [--intercept W --port P] -- CMD ARGS`: CMD with the cluster
//! (and, with `--intercept`, the workload's traffic and environment), then everything `run`
//! started undone.
//!
//! - A session that already ran is used and left as it was; one that `run` starts is ended
//!   when CMD ends. The same goes for the intercept.
//! - The daemon is told `run`'s pid as the owner of what `run` started, and ends it when
//!   that process is gone: a `run` killed with SIGKILL leaves nothing behind, with no later
//!   command needed.
//! - CMD's stdin, stdout and stderr are its own; tether writes only to stderr (and with
//!   `--quiet` only its errors). SIGTERM and SIGHUP sent to `run` go to CMD. SIGINT too,
//!   unless stdin is a terminal: Ctrl-C there reaches CMD from the terminal directly, and a
//!   second copy would look like a second Ctrl-C.
//! - Not root (or with `--rootless`), CMD runs in a user and network namespace of its own
//!   (`crate::namespace`): no sudo, and nothing on the machine changes.
//! - The exit code is CMD's, 128+N when signal N ended it. `run`'s own failures use the
//!   codes CMD-running tools use: 125 when tether failed before CMD started, 126 when CMD
//!   cannot be executed, 127 when it is not found.

use std::io::IsTerminal;
use std::path::Path;
use std::process::Stdio;

use tokio::signal::unix::{SignalKind, signal};

use crate::args::RunConfig;
use crate::commands::connect::{self, Connection};
use crate::commands::{intercept, leave};
use crate::control;
use crate::error::CliError;
use crate::namespace::{self, Namespace};
use crate::output::{Event, Printer};
use crate::system::state::StateDir;

/// tether failed before CMD started.
pub const EXIT_TETHER: u8 = 125;
/// CMD exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: u8 = 126;
/// CMD was not found.
pub const EXIT_NOT_FOUND: u8 = 127;

pub async fn run(config: RunConfig, state_dir: &Path, printer: &Printer) -> Result<(), CliError> {
    let quiet;
    let printer = if config.quiet {
        quiet = Printer::quiet(printer.output_format());
        &quiet
    } else {
        printer
    };
    let code = match run_command(config, state_dir, printer).await {
        Ok(code) => code,
        Err(e) => {
            printer.error(&e.message(), EXIT_TETHER);
            EXIT_TETHER
        }
    };
    match code {
        0 => Ok(()),
        code => Err(CliError::Exited(code)),
    }
}

/// Everything but the failure before CMD: returns the exit code to leave with.
async fn run_command(
    mut config: RunConfig,
    state_dir: &Path,
    printer: &Printer,
) -> Result<u8, CliError> {
    let me = std::process::id();
    config.connect.owner = Some(me);
    let mut namespace = match rootless(&config, state_dir, printer).await? {
        true => Some(namespace_for(&config, state_dir).await?),
        false => None,
    };
    config.connect.namespace = namespace.as_ref().map(Namespace::link);
    let on_cleanup = &mut |cleanup| printer.event(&Event::CleanedUp(cleanup));
    let started_session = match connect::connect(config.connect, printer, on_cleanup).await? {
        Connection::Started(_) => true,
        Connection::Existing(_) => false,
    };
    let intercepted = match &config.intercept {
        Some(args) => match intercept::intercept(args, Some(me), state_dir, printer).await {
            Ok(done) => {
                for warning in &done.warnings {
                    printer.notice(&format!("warning: {warning}"));
                }
                Some(done)
            }
            Err(e) => {
                undo(started_session, None, state_dir, printer).await;
                return Err(e);
            }
        },
        None => None,
    };
    let env = intercepted.as_ref().map(|i| &i.env);
    let code = match namespace.as_mut() {
        // The helper runs CMD in the namespace and exits with its code.
        Some(namespace) => match namespace.start(env.cloned().unwrap_or_default()).await {
            Ok(helper) => wait_forwarding(helper).await,
            Err(e) => {
                printer.error(&CliError::from(e).message(), EXIT_TETHER);
                EXIT_TETHER
            }
        },
        None => spawn_and_wait(&config.command, env).await,
    };
    undo(
        started_session,
        intercepted.as_ref().map(|i| i.info.name.as_str()),
        state_dir,
        printer,
    )
    .await;
    Ok(code)
}

/// Whether CMD runs in a namespace of its own: as asked, else when tether is not root and
/// the kernel allows it. A session that already runs here is used as it is.
async fn rootless(
    config: &RunConfig,
    state_dir: &Path,
    printer: &Printer,
) -> Result<bool, CliError> {
    let wanted = config
        .rootless
        .unwrap_or_else(|| !crate::system::is_root() && namespace::available());
    if !wanted {
        return Ok(false);
    }
    let state = StateDir::open(state_dir)?;
    if control::query(&state.socket_path()).await.is_none() {
        return Ok(true);
    }
    if config.rootless == Some(true) {
        printer.notice(&format!(
            "a tether session already runs for {}; the command uses it instead of a namespace of its own",
            state_dir.display()
        ));
    }
    Ok(false)
}

/// Starts the namespace's helper; it waits for [`Namespace::start`] to run CMD.
async fn namespace_for(config: &RunConfig, state_dir: &Path) -> Result<Namespace, CliError> {
    let settings = &config.connect.settings;
    let (_, dns_ip) = crate::daemon::host::tun_addresses(settings.tun_subnet)?;
    let namespace = Namespace::create(
        &config.command,
        &settings.tun_name,
        settings.tun_subnet,
        (dns_ip, &settings.resolv_conf),
        state_dir,
    )
    .await?;
    Ok(namespace)
}

/// Ends what `run` started; a failure is a warning, since CMD's exit code is the answer.
async fn undo(started_session: bool, intercept: Option<&str>, state_dir: &Path, printer: &Printer) {
    if let Some(name) = intercept
        && !started_session
        && let Err(e) = leave::leave(name, state_dir).await
    {
        printer.notice(&format!(
            "warning: cannot leave the intercept {name}: {}",
            e.message()
        ));
    }
    if started_session {
        // The intercept ends with the session.
        match control::end_session(state_dir, printer).await {
            Ok(ended) => {
                if let Some(event) = ended.into_event() {
                    tracing::info!("session ended: {event:?}");
                }
            }
            Err(e) => printer.notice(&format!("warning: cannot end the session: {}", e.message())),
        }
    }
}

/// Runs CMD with its own stdio and the extra environment, forwarding signals, and returns
/// its exit code (128+N for signal N).
pub async fn spawn_and_wait(
    command: &[std::ffi::OsString],
    env: Option<&std::collections::BTreeMap<String, String>>,
) -> u8 {
    let Some((program, args)) = command.split_first() else {
        return EXIT_NOT_FOUND;
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if let Some(env) = env {
        cmd.envs(env);
    }
    // CMD does not outlive a `run` that is killed: the daemon undoes the session then, and
    // CMD would be left without the cluster it was promised.
    // SAFETY: the closure makes one async-signal-safe system call.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
                .map_err(std::io::Error::from)
        });
    }
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let name = program.to_string_lossy();
            // execvp reports EACCES when a PATH directory may not be searched and no other
            // directory has the program: that is still "not found" to the user.
            let unsearchable = e.kind() == std::io::ErrorKind::PermissionDenied
                && !name.contains('/')
                && crate::system::find_program(&name).is_none();
            return match e.kind() {
                _ if unsearchable => {
                    eprintln!("tether run: {name}: command not found");
                    EXIT_NOT_FOUND
                }
                std::io::ErrorKind::NotFound => {
                    eprintln!("tether run: {name}: command not found");
                    EXIT_NOT_FOUND
                }
                _ => {
                    eprintln!("tether run: cannot run {name}: {e}");
                    EXIT_NOT_EXECUTABLE
                }
            };
        }
    };
    wait_forwarding(child).await
}

/// Waits for `child`, passing on the signals `run` receives, and returns its exit code.
async fn wait_forwarding(mut child: tokio::process::Child) -> u8 {
    let pid = child.id();
    let forward_int = !std::io::stdin().is_terminal();
    let signals = [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::quit(),
    ];
    let mut streams: Vec<_> = signals.iter().filter_map(|k| signal(*k).ok()).collect();
    loop {
        let any_signal = futures::future::select_all(
            streams
                .iter_mut()
                .enumerate()
                .map(|(i, s)| Box::pin(async move { s.recv().await.map(|_| i) })),
        );
        tokio::select! {
            status = child.wait() => return exit_code(status),
            (received, _, _) = any_signal => {
                let Some(i) = received else { continue };
                let kind = signals[i];
                if kind == SignalKind::interrupt() && !forward_int {
                    continue;
                }
                if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                    let sig = match i {
                        0 => rustix::process::Signal::INT,
                        1 => rustix::process::Signal::TERM,
                        2 => rustix::process::Signal::HUP,
                        _ => rustix::process::Signal::QUIT,
                    };
                    let _ = rustix::process::kill_process(pid, sig);
                }
            }
        }
    }
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => u8::try_from(code).unwrap_or(1),
            (None, Some(sig)) => 128u8.saturating_add(u8::try_from(sig).unwrap_or(0)),
            _ => 1,
        },
        Err(_) => 1,
    }
}
