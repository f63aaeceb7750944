//! What the commands do with the local daemon, shared by all of them: ask its status, start
//! one and follow it until traffic flows ([`start`]), and end a session: stop a running
//! daemon, or undo what a crashed one left ([`end_session`]). Nothing here prints results;
//! progress and notices go to stderr through the [`Printer`].

pub mod start;

use std::path::Path;
use std::time::Duration;

use crate::error::CliError;
use crate::ipc::{self, Reply, Request, Status};
use crate::output::{Event, Printer};
use crate::system::leftovers::{self, Cleanup};
use crate::system::process;
use crate::system::state::{Previous, StateDir};

/// How long a daemon may take to undo everything after `quit`.
const QUIT_DEADLINE: Duration = Duration::from_secs(15);
/// How long a daemon may take to exit once it answered (or was sent SIGTERM).
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// The daemon's status, or None when no daemon answers on `socket`.
pub async fn query(socket: &Path) -> Option<Status> {
    let mut replies = ipc::send(socket, Request::Status).await.ok()?;
    match replies.next().await {
        Ok(Some(Reply::Status { status })) => Some(*status),
        _ => None,
    }
}

/// How a session ended.
#[derive(Debug)]
pub enum Ended {
    /// A daemon ran and undid everything; `manager` is unknown if it was still connecting.
    Disconnected { pid: u32, manager: Option<String> },
    /// A daemon had died without cleaning up; what it left was undone.
    CleanedUp(Cleanup),
    /// There was no session.
    NotConnected,
    /// Cleaning up needed root and was done by this command run again through sudo, which
    /// printed its own result.
    AsRoot,
}

impl Ended {
    /// How it reads for the user; None when the command run as root already said it.
    pub fn into_event(self) -> Option<Event> {
        match self {
            Ended::Disconnected { pid, manager } => Some(Event::Disconnected { pid, manager }),
            Ended::CleanedUp(cleanup) => Some(Event::CleanedUp(cleanup)),
            Ended::NotConnected => Some(Event::NotConnected),
            Ended::AsRoot => None,
        }
    }
}

/// Ends whatever session the state directory holds.
pub async fn end_session(state_dir: &Path, printer: &Printer) -> Result<Ended, CliError> {
    let state = StateDir::open(state_dir)?;
    let socket = state.socket_path();
    match state.previous()? {
        Previous::Running(record) => {
            stop(&socket, record.pid).await?;
            Ok(Ended::Disconnected {
                pid: record.pid,
                manager: Some(record.manager),
            })
        }
        Previous::Crashed(record) => {
            if !crate::system::is_root() {
                let why = "undo what a crashed tether daemon changed";
                return match crate::sudo::rerun(state_dir, why, printer)? {
                    0 => Ok(Ended::AsRoot),
                    code => Err(CliError::Exited(code)),
                };
            }
            Ok(Ended::CleanedUp(leftovers::undo(&state, &record)?))
        }
        // A daemon still connecting has not written its record yet.
        Previous::None => match query(&socket).await {
            Some(status) => {
                stop(&socket, status.pid).await?;
                Ok(Ended::Disconnected {
                    pid: status.pid,
                    manager: None,
                })
            }
            None => Ok(Ended::NotConnected),
        },
    }
}

/// Asks the daemon `pid` to quit over its socket (SIGTERM if the socket does not answer)
/// and waits until it is gone.
pub async fn stop(socket: &Path, pid: u32) -> Result<(), CliError> {
    match ipc::send(socket, Request::Quit).await {
        Ok(mut replies) => {
            // The answer comes once everything is undone; the end of the stream is fine too.
            let _ = tokio::time::timeout(QUIT_DEADLINE, replies.next()).await;
        }
        Err(e) => {
            tracing::info!("the daemon's socket does not answer ({e}); sending SIGTERM");
            process::terminate(pid).map_err(|source| CliError::Signal { pid, source })?;
        }
    }
    if !process::wait_gone(pid, EXIT_DEADLINE).await {
        return Err(CliError::QuitTimeout(pid));
    }
    Ok(())
}
