//! Liveness of other tether processes.

use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, pidfd_open};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// True when `pid` runs a tether binary: a reused pid of another program does not count,
/// nor does a process that has exited but is not yet reaped by its parent (a zombie).
pub fn is_tether(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: `pid (comm) state ...`; comm may contain spaces, so split at the last ')'.
    let Some((head, tail)) = stat.rsplit_once(')') else {
        return false;
    };
    let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
    let state = tail.split_whitespace().next().unwrap_or("");
    comm == "tether" && state != "Z" && state != "X"
}

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: u32) -> std::io::Result<()> {
    let pid = to_pid(pid).ok_or_else(|| std::io::Error::other("not a process id"))?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).map_err(Into::into)
}

/// Waits until the tether process `pid` is gone, up to `deadline`; true if it ended.
///
/// A pidfd works for any process, not only children, and becomes readable when the process
/// exits: no polling of /proc.
pub async fn wait_gone(pid: u32, deadline: Duration) -> bool {
    let Some(raw) = to_pid(pid) else {
        return true;
    };
    let fd = match pidfd_open(raw, PidfdFlags::empty()) {
        Ok(fd) => fd,
        // ESRCH: it is gone already.
        Err(_) => return !is_tether(pid),
    };
    // Checked after opening: the pidfd pins this process, so a pid reused later cannot be
    // mistaken for it.
    if !is_tether(pid) {
        return true;
    }
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same descriptor
    // until the AsyncFd is dropped.
    match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
        Ok(fd) => tokio::time::timeout(deadline, fd.readable()).await.is_ok() || !is_tether(pid),
        Err(e) => {
            tracing::warn!("cannot wait on the pidfd of {pid}: {e}");
            false
        }
    }
}

/// Waits for as long as it takes until the tether process `pid` is gone.
pub async fn wait_until_gone(pid: u32) {
    // A day at a time: a deadline that far out is still a valid instant.
    while !wait_gone(pid, Duration::from_secs(86_400)).await {
        if !is_tether(pid) {
            return;
        }
    }
}

fn to_pid(pid: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(pid).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_that_is_not_tether_counts_as_gone() {
        // This test binary is not named `tether`.
        assert!(!is_tether(std::process::id()));
        assert!(wait_gone(std::process::id(), Duration::from_millis(1)).await);
        assert!(wait_gone(u32::MAX, Duration::from_millis(1)).await);
    }
}
