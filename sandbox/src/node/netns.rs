//! Named network namespaces (`/run/netns/NAME`, the convention `ip netns` uses), and the few
//! ways the sandbox acts inside one without ever moving its own threads: a short-lived thread
//! that enters the namespace to create a socket (a socket stays in the namespace it was made
//! in), commands run with `ip -n`/`ip netns exec`, and the members of a namespace found through
//! `/proc/PID/ns/net`, which is how leftovers of a crashed sandbox are found and stopped.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// Where `ip netns` keeps its bind mounts.
pub const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("{action} failed: {detail}")]
    Command { action: String, detail: String },
    #[error("cannot enter network namespace {name}: {source}")]
    Enter {
        name: String,
        source: std::io::Error,
    },
    #[error("{what} in network namespace {name}: {source}")]
    Socket {
        what: String,
        name: String,
        source: std::io::Error,
    },
}

/// A named network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A handle on a namespace by name; it may or may not exist.
    pub fn named(name: impl Into<String>) -> Self {
        Netns { name: name.into() }
    }

    /// Creates the namespace (removing a stale one of the same name first) with loopback up.
    pub fn create(name: impl Into<String>) -> Result<Self, NetnsError> {
        let ns = Netns::named(name);
        if ns.exists() {
            ns.delete()?;
        }
        run(Command::new("ip").args(["netns", "add", &ns.name]), None)?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    /// Stops every process still inside the namespace (SIGKILL), then removes it.
    pub fn delete(&self) -> Result<(), NetnsError> {
        if !self.exists() {
            return Ok(());
        }
        for pid in self.members() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        run(
            Command::new("ip").args(["netns", "delete", &self.name]),
            None,
        )
    }

    /// Runs `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<(), NetnsError> {
        run(
            Command::new("ip").arg("-n").arg(&self.name).args(args),
            None,
        )
    }

    /// Loads an nftables script (`nft -f -`) inside the namespace.
    pub fn nft(&self, script: &str) -> Result<(), NetnsError> {
        run(
            Command::new("ip").args(["netns", "exec", &self.name, "nft", "-f", "-"]),
            Some(script),
        )
    }

    /// Sets a sysctl inside the namespace (`net.*` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetnsError> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.enter(|| std::fs::write(&path, value)).and_then(|r| {
            r.map_err(|source| NetnsError::Socket {
                what: format!("cannot set {key}"),
                name: self.name.clone(),
                source,
            })
        })
    }

    /// Opens the namespace file, for `setns` in a child before `exec`.
    pub fn open(&self) -> Result<OwnedFd, NetnsError> {
        std::fs::File::open(self.path())
            .map(OwnedFd::from)
            .map_err(|source| NetnsError::Enter {
                name: self.name.clone(),
                source,
            })
    }

    /// Runs `f` on a new thread that has entered the namespace. Sockets `f` creates stay in
    /// the namespace after the thread ends; the calling thread never changes namespace.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let fd = self.open()?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    move_into_link_name_space(fd.as_fd(), Some(LinkNameSpaceType::Network))?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the thread panicked")))
        })
        .map_err(|source| NetnsError::Enter {
            name: self.name.clone(),
            source,
        })
    }

    fn socket<T: Send>(
        &self,
        what: impl FnOnce() -> String,
        f: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> Result<T, NetnsError> {
        self.enter(f)?.map_err(|source| NetnsError::Socket {
            what: what(),
            name: self.name.clone(),
            source,
        })
    }

    /// A non-blocking TCP listener inside the namespace (ready for tokio's `from_std`).
    pub fn bind_tcp(&self, addr: SocketAddr) -> Result<TcpListener, NetnsError> {
        self.socket(
            || format!("cannot listen on {addr}"),
            move || {
                let l = TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Ok(l)
            },
        )
    }

    /// A non-blocking UDP socket inside the namespace.
    pub fn bind_udp(&self, addr: SocketAddr) -> Result<UdpSocket, NetnsError> {
        self.socket(
            || format!("cannot bind {addr}"),
            move || {
                let s = UdpSocket::bind(addr)?;
                s.set_nonblocking(true)?;
                Ok(s)
            },
        )
    }

    /// A non-blocking TCP connection made from inside the namespace.
    pub fn connect_tcp(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<TcpStream, NetnsError> {
        self.socket(
            || format!("cannot connect to {addr}"),
            move || {
                let s = TcpStream::connect_timeout(&addr, timeout)?;
                s.set_nonblocking(true)?;
                // The kubelet's port-forward connections are Go sockets, without Nagle.
                s.set_nodelay(true)?;
                Ok(s)
            },
        )
    }

    /// PIDs of the processes whose network namespace is this one.
    pub fn members(&self) -> Vec<i32> {
        let Ok(target) = std::fs::metadata(self.path()) else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    .is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino())
            })
            .filter(|pid| *pid != std::process::id() as i32)
            .collect()
    }
}

/// Names of the existing namespaces that start with `prefix`.
pub fn list_with_prefix(prefix: &str) -> Vec<Netns> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut found: Vec<Netns> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .map(Netns::named)
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<(), NetnsError> {
    let action = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let failed = |detail: String| NetnsError::Command {
        action: action.clone(),
        detail,
    };
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| failed(e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| failed(format!("writing its input: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
