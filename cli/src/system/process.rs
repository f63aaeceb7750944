//! Liveness of other tether processes.

use std::time::{Duration, Instant};

/// True when `pid` runs a tether binary (a reused pid of another program does not count).
pub fn is_tether(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|comm| comm.trim() == "tether")
        .unwrap_or(false)
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
