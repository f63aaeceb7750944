//! Container processes. Each container is one process forked from the sandbox that, before it
//! runs its program, joins the pod's network namespace (the file is opened before the fork),
//! unshares a mount and a UTS namespace (so the pod's files can be mounted over the host's and
//! the hostname set, without the host seeing either), and starts its own session, so a signal
//! to its process group reaches whatever it started. A dedicated thread waits for each process,
//! so none is left a zombie.
//!
//! Exec probes (and `kubectl exec`, in [`super::exec`]) enter the namespaces of the running
//! container through `/proc/PID/ns`.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal};

use super::files::MountPlan;
use crate::node::netns::Netns;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} contains a NUL byte")]
    Nul(String),
    #[error(transparent)]
    Netns(#[from] crate::node::netns::NetnsError),
}

/// Everything one container start needs.
#[derive(Debug, Clone)]
pub struct Launch {
    pub exe: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub netns: Netns,
    pub hostname: String,
    pub mounts: MountPlan,
    pub working_dir: Option<String>,
    /// Where stdout and stderr go (appended).
    pub log: PathBuf,
}

fn cstr(s: &OsStr) -> Result<CString, ProcessError> {
    CString::new(s.as_bytes()).map_err(|_| ProcessError::Nul(s.to_string_lossy().into_owned()))
}

pub(super) fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Starts a container's process; `on_exit` runs on the waiting thread when it has ended.
/// Returns its PID, which is also its process group.
pub fn spawn(
    launch: &Launch,
    on_exit: impl FnOnce(std::io::Result<ExitStatus>) + Send + 'static,
) -> Result<i32, ProcessError> {
    let net_fd: OwnedFd = launch.netns.open()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .map_err(|source| ProcessError::Open {
            path: launch.log.clone(),
            source,
        })?;
    let log2 = log.try_clone().map_err(|source| ProcessError::Open {
        path: launch.log.clone(),
        source,
    })?;
    let binds: Vec<(CString, CString)> = launch
        .mounts
        .binds
        .iter()
        .map(|(s, d)| Ok((cstr(s.as_os_str())?, cstr(d.as_os_str())?)))
        .collect::<Result<_, ProcessError>>()?;
    let run_dir = cstr(launch.mounts.run_dir.as_os_str())?;
    let run_targets: Vec<CString> = launch
        .mounts
        .run_targets
        .iter()
        .map(|t| cstr(t.as_os_str()))
        .collect::<Result<_, _>>()?;
    let hostname = launch.hostname.clone().into_bytes();
    let workdir = launch
        .working_dir
        .as_deref()
        .filter(|w| !w.is_empty())
        .map(|w| cstr(OsStr::new(w)))
        .transpose()?;

    let mut cmd = Command::new(&launch.exe);
    cmd.args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: the closure runs between fork and exec in the single-threaded child and only
    // makes system calls on memory prepared before the fork (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            check(libc::setsid())?;
            check(libc::setns(net_fd.as_raw_fd(), libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            // Mounts made for this container must not propagate back to the host.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ))?;
            for (src, dst) in &binds {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
            for target in &run_targets {
                check(libc::mount(
                    run_dir.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
            check(libc::sethostname(hostname.as_ptr().cast(), hostname.len()))?;
            // After the mounts, so a working directory under /run is the pod's.
            if let Some(w) = &workdir {
                check(libc::chdir(w.as_ptr()))?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        exe: launch.exe.clone(),
        source,
    })?;
    let pid = child.id() as i32;
    let waiter = std::thread::Builder::new()
        .name(format!("wait-{pid}"))
        .spawn(move || on_exit(child.wait()));
    if let Err(e) = waiter {
        // Without a waiting thread nobody could reap it: stop it now.
        signal_group(pid, Signal::KILL);
        return Err(ProcessError::Spawn {
            exe: launch.exe.clone(),
            source: e,
        });
    }
    Ok(pid)
}

/// Sends a signal to a container's process group (an already gone group is fine).
pub fn signal_group(pid: i32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// The outcome of a command run inside a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutcome {
    Exited(i32),
    /// Killed by a signal (the exit code a shell would show is 128 + signal).
    Signaled(i32),
    TimedOut,
}

/// The namespaces of a running container process that a command run in the container
/// enters, opened before the fork.
pub(super) struct Namespaces {
    net: OwnedFd,
    uts: OwnedFd,
    mnt: OwnedFd,
}

impl Namespaces {
    pub fn of(pid: i32) -> Result<Self, ProcessError> {
        let open = |ns: &str| {
            let path = PathBuf::from(format!("/proc/{pid}/ns/{ns}"));
            File::open(&path)
                .map(OwnedFd::from)
                .map_err(|source| ProcessError::Open { path, source })
        };
        Ok(Namespaces {
            net: open("net")?,
            uts: open("uts")?,
            mnt: open("mnt")?,
        })
    }

    /// Moves the calling process into them. Only between fork and exec: system calls on
    /// descriptors opened before the fork.
    pub fn enter(&self) -> std::io::Result<()> {
        // SAFETY: setns on open namespace descriptors; no memory is touched.
        unsafe {
            check(libc::setns(self.net.as_raw_fd(), libc::CLONE_NEWNET))?;
            check(libc::setns(self.uts.as_raw_fd(), libc::CLONE_NEWUTS))?;
            // Entering a mount namespace also moves the root and working directory to its
            // root.
            check(libc::setns(self.mnt.as_raw_fd(), libc::CLONE_NEWNS))?;
        }
        Ok(())
    }
}

/// Runs a command in the namespaces (network, UTS, mount) of the running process `pid`,
/// with stdio discarded, and waits up to `timeout` (then kills it).
pub fn exec_in(
    pid: i32,
    exe: &Path,
    args: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<ExecOutcome, ProcessError> {
    let namespaces = Namespaces::of(pid)?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: as in `spawn`: system calls only, on file descriptors opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::setsid())?;
            namespaces.enter()
        });
    }
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        exe: exe.to_path_buf(),
        source,
    })?;
    let child_pid = child.id() as i32;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // The thread owns the reaping, so a timed-out command is still waited for.
    let _ = std::thread::Builder::new()
        .name(format!("exec-{child_pid}"))
        .spawn(move || {
            let _ = done_tx.send(child.wait());
        });
    match done_rx.recv_timeout(timeout) {
        Ok(Ok(status)) => Ok(outcome(status)),
        Ok(Err(source)) => Err(ProcessError::Spawn {
            exe: exe.to_path_buf(),
            source,
        }),
        Err(_) => {
            signal_group(child_pid, Signal::KILL);
            Ok(ExecOutcome::TimedOut)
        }
    }
}

pub fn outcome(status: ExitStatus) -> ExecOutcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExecOutcome::Exited(code),
        (None, Some(sig)) => ExecOutcome::Signaled(sig),
        (None, None) => ExecOutcome::Exited(-1),
    }
}
