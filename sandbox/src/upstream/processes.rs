//! The control plane's processes: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler, each a `tether-upstream` process inside the node's network namespace.
//!
//! Inside the node namespace, because that is where a control plane node's components live:
//! the API server listens on the node address that the `kubernetes` Service's endpoint names,
//! reaches the kubelet API on the same address, and nothing (etcd's ports, the components'
//! health ports) takes a port on the host. The host and the workstation reach the API server
//! through [`super::relay`]. Processes left by a crashed sandbox are members of the node
//! namespace, so the node's clean-up stops them like the pods' processes.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use crate::node::netns::Netns;

/// How long a component has to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot open {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot enter the node's network namespace: {0}")]
    Netns(#[from] crate::node::netns::NetnsError),
}

/// A running component.
#[derive(Debug)]
pub struct Component {
    pub name: &'static str,
    pub log: PathBuf,
    child: Child,
}

impl Component {
    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Starts `exe <name> <args>` in `netns`, its output appended to `<log_dir>/<name>.log`.
pub fn start(
    exe: &Path,
    name: &'static str,
    args: &[String],
    netns: &Netns,
    log_dir: &Path,
) -> Result<Component, ProcessError> {
    fs::create_dir_all(log_dir).map_err(|source| ProcessError::Log {
        path: log_dir.to_path_buf(),
        source,
    })?;
    let log = log_dir.join(format!("{name}.log"));
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|source| ProcessError::Log {
            path: log.clone(),
            source,
        })?;
    let err = out.try_clone().map_err(|source| ProcessError::Log {
        path: log.clone(),
        source,
    })?;
    let ns = netns.open()?;
    let mut command = Command::new(exe);
    command
        .arg(name)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Not in the terminal's process group: a Ctrl-C meant for `serve` is handled by it,
        // which stops the components in order.
        .process_group(0);
    // SAFETY: between fork and exec the closure only makes two system calls (setns and
    // prctl), which are async-signal-safe, and touches no memory another thread could hold.
    unsafe {
        command.pre_exec(move || {
            move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))?;
            // If the sandbox dies without stopping them, the components stop too (etcd
            // gets to close its files) rather than serve a cluster nobody runs the node of.
            rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
            Ok(())
        });
    }
    let child = command.spawn().map_err(|source| ProcessError::Spawn {
        name: name.to_string(),
        source,
    })?;
    tracing::info!(pid = child.id(), "started {name}; log in {}", log.display());
    Ok(Component { name, log, child })
}

/// Stops components in the order given: SIGTERM, then SIGKILL after [`STOP_GRACE`].
pub fn stop(components: &mut [Component]) {
    for c in components.iter_mut() {
        if c.exited().is_some() {
            continue;
        }
        // Child ids of live children are positive.
        if let Some(pid) = Pid::from_raw(c.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while c.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if c.exited().is_none() {
            tracing::warn!("{} did not stop within {STOP_GRACE:?}; killing it", c.name);
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
    }
}

/// The last lines of a log, for errors.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
