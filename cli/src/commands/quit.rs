//! `tether quit`: ask the daemon to undo everything and exit, or undo what a crashed one
//! left behind.

use std::path::Path;

use crate::control;
use crate::error::CliError;
use crate::output::Printer;

pub async fn run(state_dir: &Path, printer: &Printer) -> Result<(), CliError> {
    let ended = control::end_session(state_dir, printer).await?;
    if let Some(event) = ended.into_event() {
        printer.event(&event);
    }
    Ok(())
}
