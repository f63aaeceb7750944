//! `tether leave NAME`: end an intercept. The sidecars stay, dormant, so the pods are not
//! restarted; `tether uninstall --agent` takes them out.

use std::path::Path;

use crate::control;
use crate::error::CliError;
use crate::ipc::{self, InterceptInfo, Reply, Request};
use crate::output::{Event, Printer};
use crate::system::state::StateDir;

pub async fn leave(name: &str, state_dir: &Path) -> Result<InterceptInfo, CliError> {
    let state = StateDir::open(state_dir)?;
    let socket = state.socket_path();
    let Some(status) = control::query(&socket).await else {
        return Err(CliError::NotConnected("leave"));
    };
    let lost = |reason: String| CliError::DaemonLost {
        reason,
        log: status.log.clone(),
    };
    let request = Request::Leave { name: name.into() };
    let mut replies = ipc::send(&socket, request)
        .await
        .map_err(|e| lost(e.to_string()))?;
    match replies.next().await.map_err(|e| lost(e.to_string()))? {
        Some(Reply::Left { intercept }) => Ok(*intercept),
        Some(Reply::Failed { error, exit_code }) => Err(CliError::DaemonFailed {
            message: error,
            exit_code,
        }),
        _ => Err(lost("no answer to leave (an older daemon?)".into())),
    }
}

pub async fn run(name: &str, state_dir: &Path, printer: &Printer) -> Result<(), CliError> {
    let info = leave(name, state_dir).await?;
    printer.event(&Event::Left {
        intercept: Box::new(info),
    });
    Ok(())
}
