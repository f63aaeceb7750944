//! `tether status`: what the daemon is connected to, what it routes, and how the tunnel
//! has fared.

use std::path::Path;

use crate::control;
use crate::error::CliError;
use crate::ipc::Status;
use crate::output::{Event, Printer};
use crate::system::state::StateDir;

/// The running daemon's status, or None when none answers.
pub async fn status(state_dir: &Path) -> Result<Option<Status>, CliError> {
    let state = StateDir::open(state_dir)?;
    Ok(control::query(&state.socket_path()).await)
}

pub async fn run(state_dir: &Path, printer: &Printer) -> Result<(), CliError> {
    printer.event(&match status(state_dir).await? {
        Some(status) => Event::Status(Box::new(status)),
        None => Event::NotConnected,
    });
    Ok(())
}
