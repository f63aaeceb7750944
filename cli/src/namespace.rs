//! Rootless `tether run`: CMD runs in a user, network and mount namespace of its own, whose
//! only route is a TUN device, and nothing on the machine changes.
//!
//! Three processes take part:
//! - `run` checks what the kernel allows ([`preflight`]), starts the [`helper`] and, once
//!   the helper has handed over the namespace's TUN device, starts the daemon as the user,
//!   giving it the device and the helper's [`dialer`] socket;
//! - the helper (`tether namespace-helper`) makes the namespaces before it has any thread,
//!   sets up loopback, the device, a default route and a resolver file bind-mounted over
//!   /etc/resolv.conf, then runs CMD there and exits with CMD's code;
//! - the daemon stays in the user's own network: it serves the device with its stack, which
//!   sends the cluster's subnets through the tunnel and dials everything else itself
//!   (`tether_tunnel::stack::egress`), and reaches servers inside the namespace (an
//!   intercept's local port) through the helper, which connects there and passes the socket.
//!
//! The processes talk over socket pairs ([`channel`]). When CMD and its children are gone,
//! the namespace is gone, and with the daemon's end the device is too.

pub mod channel;
pub mod dialer;
pub mod helper;
pub mod preflight;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use channel::Channel;
pub use preflight::available;

/// Why a rootless run could not start. Each message names the cause and the fixes.
#[derive(Debug, Error)]
pub enum NamespaceError {
    #[error(
        "rootless run needs unprivileged user namespaces, and this machine disables them ({setting} = {value}). Run as root instead (`tether run --no-rootless`, which asks sudo), or have an administrator allow them: `sudo sysctl -w {setting}={allow}`"
    )]
    UserNamespacesOff {
        setting: &'static str,
        value: String,
        allow: &'static str,
    },
    #[error(
        "rootless run could not create a user namespace: {0}. A security policy (AppArmor, SELinux, seccomp in a container) may forbid them; run as root instead (`tether run --no-rootless`, which asks sudo)"
    )]
    UserNamespaceRefused(String),
    #[error(
        "rootless run needs /dev/net/tun, and this machine has none. Load the module (`sudo modprobe tun`), or run as root (`tether run --no-rootless`)"
    )]
    TunMissing,
    #[error(
        "rootless run needs to open /dev/net/tun, which uid {uid} may not (mode {mode:04o}, owner uid {owner}). Either run as root (`sudo tether run ...`, or `tether run --no-rootless ...`, which asks sudo), or have an administrator allow it once: `sudo chmod 0666 /dev/net/tun` (desktop distributions ship it so; a device made by a user is only ever in a namespace of their own)"
    )]
    TunDenied { uid: u32, mode: u32, owner: u32 },
    #[error("cannot set up the rootless run's namespace: {0}")]
    Setup(String),
    #[error("cannot start the rootless run's namespace helper: {0}")]
    Helper(#[source] std::io::Error),
}

/// What the daemon of a rootless run is given, as numbers of descriptors it inherited.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamespaceLink {
    /// The namespace's TUN device.
    pub tun_fd: i32,
    /// The helper's dial service ([`dialer`]).
    pub dial_fd: i32,
    /// The file bind-mounted over /etc/resolv.conf in the namespace.
    pub resolv_conf: PathBuf,
    /// The address that stands for this machine's loopback inside.
    pub host_address: Ipv4Addr,
    /// The helper, the namespace's first process.
    pub helper_pid: u32,
}

/// What the helper reports once, before CMD runs.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "kebab-case")]
enum Report {
    /// The namespace is ready; the message carries its TUN device.
    Ready,
    Failed {
        failure: Failure,
    },
}

/// A helper failure in the words of [`NamespaceError`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
enum Failure {
    UserNamespace(String),
    TunMissing,
    TunDenied,
    Setup(String),
}

/// `run`'s word to the helper: start CMD, with this environment added.
#[derive(Debug, Serialize, Deserialize)]
struct Start {
    env: BTreeMap<String, String>,
}

/// The address that stands for this machine's loopback: the first host of the /30 after
/// the TUN subnet (198.18.0.5 with the default 198.18.0.0/30), so nothing the cluster or
/// the namespace uses.
pub fn host_address(tun_subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(tun_subnet.broadcast()).wrapping_add(2))
}

/// The file the namespace sees as /etc/resolv.conf.
fn resolv_conf_path(state_dir: &Path) -> PathBuf {
    state_dir.join("namespace-resolv.conf")
}

/// A namespace whose helper waits to run CMD. Dropping it ends the helper (if CMD has not
/// been started) and removes the resolver file.
pub struct Namespace {
    child: Option<tokio::process::Child>,
    control: Channel,
    link: NamespaceLink,
    // Kept open until the daemon inherited them.
    inherited: Option<(OwnedFd, OwnedFd)>,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // The namespace's mount holds the file as long as anything runs there.
        let _ = std::fs::remove_file(&self.link.resolv_conf);
    }
}

impl Namespace {
    /// Starts the helper for `command` and waits until its namespace is set up.
    pub async fn create(
        command: &[OsString],
        tun_name: &str,
        tun_subnet: Ipv4Net,
        dns: (Ipv4Addr, &Path),
        state_dir: &Path,
    ) -> Result<Namespace, NamespaceError> {
        preflight::check()?;
        let (tun_ip, _) = crate::daemon::host::tun_addresses(tun_subnet)
            .map_err(|e| NamespaceError::Setup(e.to_string()))?;
        let resolv_conf = resolv_conf_path(state_dir);
        // Until the daemon knows the cluster's search path: tether's server, the machine's
        // options. Created here so the helper has something to mount.
        let (dns_ip, machine_resolv) = dns;
        let original = std::fs::read_to_string(machine_resolv).unwrap_or_default();
        let initial = crate::system::resolv::render_for_namespace(&original, dns_ip, &[]);
        std::fs::write(&resolv_conf, initial).map_err(NamespaceError::Helper)?;

        let (control, helper_control) = channel::pair().map_err(NamespaceError::Helper)?;
        let (dial, helper_dial) = channel::pair().map_err(NamespaceError::Helper)?;
        let exe = std::env::current_exe().map_err(NamespaceError::Helper)?;
        let mut cmd = tokio::process::Command::new(exe);
        let (control_fd, dial_fd) = (helper_control.as_raw_fd(), helper_dial.as_raw_fd());
        cmd.arg("namespace-helper")
            .arg("--control-fd")
            .arg(control_fd.to_string())
            .arg("--dial-fd")
            .arg(dial_fd.to_string())
            .arg("--tun-name")
            .arg(tun_name)
            .arg("--tun-address")
            .arg(
                Ipv4Net::new(tun_ip, tun_subnet.prefix_len())
                    .map_or_else(|_| tun_subnet.to_string(), |net| net.to_string()),
            )
            .arg("--resolv-conf")
            .arg(&resolv_conf)
            .arg("--")
            .args(command)
            .env("TETHER_HOST", host_address(tun_subnet).to_string())
            .kill_on_drop(true);
        // SAFETY: the closure makes only system calls on descriptors that outlive the spawn.
        unsafe {
            cmd.pre_exec(move || {
                channel::keep_on_exec(control_fd)?;
                channel::keep_on_exec(dial_fd)?;
                // The helper forwards this to CMD: a `run` that is killed leaves no CMD.
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::TERM,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(NamespaceError::Helper)?;
        drop((helper_control, helper_dial));
        let control = Channel::new(control).map_err(NamespaceError::Helper)?;
        let report = control
            .recv::<Report>()
            .await
            .map_err(NamespaceError::Helper)?;
        let tun = match report {
            Some((Report::Ready, Some(tun))) => tun,
            Some((Report::Failed { failure }, _)) => return Err(failure.into_error()),
            Some((Report::Ready, None)) | None => {
                return Err(NamespaceError::Setup(
                    "the helper ended before the namespace was ready".to_owned(),
                ));
            }
        };
        let link = NamespaceLink {
            tun_fd: tun.as_raw_fd(),
            dial_fd: dial.as_raw_fd(),
            resolv_conf,
            host_address: host_address(tun_subnet),
            helper_pid: child.id().unwrap_or_default(),
        };
        Ok(Namespace {
            child: Some(child),
            control,
            link,
            inherited: Some((tun, dial)),
        })
    }

    /// What the daemon is told; its descriptors stay open in this process until
    /// [`start`](Self::start).
    pub fn link(&self) -> NamespaceLink {
        self.link.clone()
    }

    /// Lets the helper run CMD with `env` added; returns the helper, whose exit code is
    /// CMD's. Once only.
    pub async fn start(
        &mut self,
        env: BTreeMap<String, String>,
    ) -> Result<tokio::process::Child, NamespaceError> {
        self.inherited = None;
        self.control
            .send(&Start { env }, None)
            .await
            .map_err(NamespaceError::Helper)?;
        self.child.take().ok_or_else(|| {
            NamespaceError::Setup("the namespace's command was started already".to_owned())
        })
    }
}

impl Failure {
    fn into_error(self) -> NamespaceError {
        match self {
            Failure::UserNamespace(detail) => NamespaceError::UserNamespaceRefused(detail),
            Failure::TunMissing => NamespaceError::TunMissing,
            Failure::TunDenied => match preflight::check() {
                Err(e) => e,
                Ok(()) => NamespaceError::Setup("/dev/net/tun: permission denied".to_owned()),
            },
            Failure::Setup(detail) => NamespaceError::Setup(detail),
        }
    }
}

/// Keeps the daemon's descriptors open across its exec: the numbers in `link` are those
/// of this process, and so of the child.
pub fn keep_for_daemon(link: &NamespaceLink) -> std::io::Result<()> {
    channel::keep_on_exec(link.tun_fd)?;
    channel::keep_on_exec(link.dial_fd)
}
