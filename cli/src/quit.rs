//! `tether quit`: stop the running `tether connect`, or undo what a crashed one left.

use std::time::Duration;

use serde_json::json;

use crate::error::CliError;
use crate::output::Printer;
use crate::system::process;
use crate::system::resolv;
use crate::system::state::{Previous, SessionRecord, StateDir};

pub fn run(state_dir: &std::path::Path, printer: Printer) -> Result<(), CliError> {
    let state = StateDir::open(state_dir)?;
    match state.previous()? {
        Previous::None => printer.emit("Not connected.", json!({ "event": "not-connected" })),
        Previous::Running(record) => {
            process::terminate(record.pid).map_err(|source| CliError::Signal {
                pid: record.pid,
                source,
            })?;
            if !process::wait_gone(record.pid, Duration::from_secs(10)) {
                return Err(CliError::QuitTimeout(record.pid));
            }
            printer.emit(
                &format!("Disconnected from {}.", record.manager),
                json!({ "event": "disconnected", "pid": record.pid, "manager": record.manager }),
            );
        }
        Previous::Crashed(record) => undo_leftovers(&state, &record, printer)?,
    }
    Ok(())
}

/// Undoes what a session that died without cleaning up left behind. Its TUN device and
/// routes went with the process; the resolver file is what remains.
pub fn undo_leftovers(
    state: &StateDir,
    record: &SessionRecord,
    printer: Printer,
) -> Result<(), CliError> {
    let restored = resolv::restore(&record.resolv_conf, &record.resolv_backup)?;
    state.remove();
    let text = if restored {
        format!(
            "Cleaned up after a tether session (pid {}) that ended without cleaning up: {} restored.",
            record.pid,
            record.resolv_conf.display()
        )
    } else {
        format!(
            "Cleaned up after a tether session (pid {}) that ended without cleaning up; {} had been changed by another program and was left as it is.",
            record.pid,
            record.resolv_conf.display()
        )
    };
    printer.emit(
        &text,
        json!({ "event": "cleaned-up", "pid": record.pid, "resolv_conf_restored": restored }),
    );
    Ok(())
}
