//! Liveness of other tether processes.

use std::time::{Duration, Instant};

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
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: kill has no memory-safety preconditions; it only sends a signal.
    if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits until `pid` is gone, up to `deadline`; true if it exited.
pub fn wait_gone(pid: u32, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if !is_tether(pid) {
            return true;
        }
        // No pidfd for a process we did not start, so poll /proc; the check is cheap.
        std::thread::sleep(Duration::from_millis(20));
    }
    !is_tether(pid)
}
