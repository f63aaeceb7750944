//! Undoing what a daemon that died without cleaning up (SIGKILL, a crash) left behind. Its
//! TUN device, routes and per-link DNS went with the process; a rewritten resolver file, the
//! session record and the socket remain. `tether quit` and the next daemon's start both
//! call this.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::resolv::{self, ResolvError};
use super::state::{DnsMode, SessionRecord, StateDir};

/// What was undone after the daemon `pid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleanup {
    pub pid: u32,
    pub resolv_conf: PathBuf,
    /// False when another program had rewritten the resolver file since; it is then left
    /// as it is.
    pub resolv_conf_restored: bool,
}

pub fn undo(state: &StateDir, record: &SessionRecord) -> Result<Cleanup, ResolvError> {
    let restored = match record.dns_mode {
        DnsMode::ResolvConf => resolv::restore(&record.resolv_conf, &record.resolv_backup)?,
        // The namespace, and the device and resolver file seen in it, went with its processes.
        DnsMode::Resolved | DnsMode::Namespace => true,
    };
    let _ = std::fs::remove_file(state.socket_path());
    state.remove();
    let cleanup = Cleanup {
        pid: record.pid,
        resolv_conf: record.resolv_conf.clone(),
        resolv_conf_restored: restored,
    };
    tracing::info!(
        ?cleanup,
        "cleaned up after a daemon that ended without cleaning up"
    );
    Ok(cleanup)
}
