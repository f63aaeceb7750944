//! `tether quit`: ask the daemon to undo everything and exit, or undo what a crashed one
//! left behind.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::error::CliError;
use crate::ipc::{self, Reply, Request};
use crate::output::Printer;
use crate::system::process;
use crate::system::resolv;
use crate::system::state::{DnsMode, Previous, SessionRecord, StateDir};

pub async fn run(state_dir: &Path, printer: Printer) -> Result<(), CliError> {
    let state = StateDir::open(state_dir)?;
    let socket = state.socket_path();
    match state.previous()? {
        Previous::Running(record) => {
            stop(&socket, record.pid).await?;
            printer.emit(
                &format!(
                    "Disconnected from {}; this machine is as it was.",
                    record.manager
                ),
                json!({ "event": "disconnected", "pid": record.pid, "manager": record.manager }),
            );
        }
        Previous::Crashed(record) => {
            if !crate::sudo::is_root() {
                let code =
                    crate::sudo::rerun(state_dir, "undo what a crashed tether daemon changed")?;
                return if code == 0 {
                    Ok(())
                } else {
                    Err(CliError::Exited(code))
                };
            }
            let cleaned = undo_leftovers(&state, &record).await?;
            print_cleaned(&cleaned, printer);
        }
        Previous::None => {
            // A daemon still connecting has not written its record yet.
            if let Ok(mut replies) = ipc::send(&socket, Request::Status).await
                && let Ok(Some(Reply::Status { status })) = replies.next().await
            {
                stop(&socket, status.pid).await?;
                printer.emit(
                    "Disconnected.",
                    json!({ "event": "disconnected", "pid": status.pid }),
                );
            } else {
                printer.emit("Not connected.", json!({ "event": "not-connected" }));
            }
        }
    }
    Ok(())
}

/// Asks the daemon `pid` to quit over its socket (SIGTERM if the socket does not answer)
/// and waits until it is gone.
async fn stop(socket: &Path, pid: u32) -> Result<(), CliError> {
    let asked = match ipc::send(socket, Request::Quit).await {
        Ok(mut replies) => {
            // The answer comes once everything is undone; the end of the stream is fine too.
            let _ = tokio::time::timeout(Duration::from_secs(15), replies.next()).await;
            true
        }
        Err(e) => {
            tracing::info!("the daemon's socket does not answer ({e}); sending SIGTERM");
            false
        }
    };
    if !asked {
        process::terminate(pid).map_err(|source| CliError::Signal { pid, source })?;
    }
    if !process::wait_gone(pid, Duration::from_secs(10)) {
        return Err(CliError::QuitTimeout(pid));
    }
    Ok(())
}

pub fn print_cleaned(reply: &Reply, printer: Printer) {
    if let Reply::CleanedUp {
        text,
        pid,
        resolv_conf_restored,
    } = reply
    {
        printer.emit(
            text,
            json!({ "event": "cleaned-up", "pid": pid, "resolv_conf_restored": resolv_conf_restored }),
        );
    }
}

/// Undoes what a daemon that died without cleaning up left behind. Its TUN device, routes
/// and per-link DNS went with the process; a rewritten resolver file and the socket remain.
pub async fn undo_leftovers(state: &StateDir, record: &SessionRecord) -> Result<Reply, CliError> {
    let restored = match record.dns_mode {
        DnsMode::ResolvConf => resolv::restore(&record.resolv_conf, &record.resolv_backup)?,
        DnsMode::Resolved => true,
    };
    let _ = std::fs::remove_file(state.socket_path());
    state.remove();
    let text = if restored {
        format!(
            "Cleaned up after a tether daemon (pid {}) that ended without cleaning up: {} restored.",
            record.pid,
            record.resolv_conf.display()
        )
    } else {
        format!(
            "Cleaned up after a tether daemon (pid {}) that ended without cleaning up; {} had been changed by another program and was left as it is.",
            record.pid,
            record.resolv_conf.display()
        )
    };
    tracing::info!("{text}");
    Ok(Reply::CleanedUp {
        text,
        pid: record.pid,
        resolv_conf_restored: restored,
    })
}
