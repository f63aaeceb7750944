//! `tether namespace-helper`: the first process of a rootless run's namespace.
//!
//! It must make the namespaces while it has one thread (the kernel refuses a new user
//! namespace to a threaded process), so `main` calls it before any runtime starts. Inside,
//! it maps the user to themselves (so CMD runs as the same uid, with no capabilities once
//! it is executed), brings loopback up, creates the TUN device with a default route,
//! mounts the resolver file over /etc/resolv.conf, and passes the device to `run`. Then it
//! answers the daemon's dial requests and, on `run`'s word, runs CMD and exits with its code.

use std::net::Ipv4Addr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ipnet::{IpNet, Ipv4Net};
use rustix::mount::{MountPropagationFlags, mount_bind, mount_change};
use rustix::thread::{UnshareFlags, unshare_unsafe};
use tether_tunnel::stack::StackError;

use super::channel::Channel;
use super::{Failure, Report, Start, dialer};
use crate::commands::run::{EXIT_TETHER, spawn_and_wait};
use crate::daemon::host::TUN_MTU;
use crate::system::routes::Routes;

#[derive(clap::Args, Debug)]
pub struct HelperArgs {
    #[arg(long)]
    pub control_fd: i32,
    #[arg(long)]
    pub dial_fd: i32,
    #[arg(long)]
    pub tun_name: String,
    #[arg(long)]
    pub tun_address: Ipv4Net,
    #[arg(long)]
    pub resolv_conf: PathBuf,
    #[arg(last = true, required = true)]
    pub command: Vec<std::ffi::OsString>,
}

pub fn main(args: HelperArgs) -> ExitCode {
    // SAFETY: `run` passed these descriptors for this process alone.
    let (control, dial) = unsafe {
        (
            OwnedFd::from_raw_fd(args.control_fd),
            OwnedFd::from_raw_fd(args.dial_fd),
        )
    };
    for fd in [&control, &dial] {
        // CMD inherits neither.
        let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
    }
    let entered = enter(&args.resolv_conf);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return ExitCode::from(EXIT_TETHER),
    };
    let code = runtime.block_on(async move {
        let Ok(control) = Channel::new(control) else {
            return EXIT_TETHER;
        };
        let tun = match entered {
            Ok(()) => set_up_network(&args.tun_name, args.tun_address).await,
            Err(failure) => Err(failure),
        };
        let tun = match tun {
            Ok(tun) => tun,
            Err(failure) => {
                let _ = control.send(&Report::Failed { failure }, None).await;
                return EXIT_TETHER;
            }
        };
        if control.send(&Report::Ready, Some(&tun)).await.is_err() {
            return EXIT_TETHER;
        }
        // The daemon holds the device from now on; it goes when the daemon does.
        drop(tun);
        if let Ok(dial) = Channel::new(dial) {
            tokio::spawn(dialer::serve(dial));
        }
        match control.recv::<Start>().await {
            Ok(Some((start, _))) => spawn_and_wait(&args.command, Some(&start.env)).await,
            // `run` failed before CMD: it has said why.
            _ => EXIT_TETHER,
        }
    });
    runtime.shutdown_background();
    ExitCode::from(code)
}

/// The namespaces, the user's mapping and the resolver file; before any thread exists.
fn enter(resolv_conf: &Path) -> Result<(), Failure> {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let refused = |what: &str, e: std::io::Error| Failure::UserNamespace(format!("{what}: {e}"));
    // SAFETY: called from `main` before any thread was started.
    unsafe { unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNET | UnshareFlags::NEWNS) }
        .map_err(|e| refused("unshare", e.into()))?;
    // An unprivileged user may map only themselves, and only once setgroups is denied.
    std::fs::write("/proc/self/setgroups", "deny").map_err(|e| refused("setgroups", e))?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))
        .map_err(|e| refused("uid_map", e))?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))
        .map_err(|e| refused("gid_map", e))?;
    let setup = |what: &str, e: rustix::io::Errno| Failure::Setup(format!("{what}: {e}"));
    // Nothing mounted here may reach the user's own mount namespace.
    mount_change(
        c"/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .map_err(|e| setup("making mounts private", e))?;
    mount_bind(resolv_conf, c"/etc/resolv.conf")
        .map_err(|e| setup("mounting the resolver file over /etc/resolv.conf", e))?;
    Ok(())
}

/// Loopback up, the TUN device, and every destination routed into it.
async fn set_up_network(tun_name: &str, address: Ipv4Net) -> Result<OwnedFd, Failure> {
    let setup = |e: &dyn std::fmt::Display| Failure::Setup(e.to_string());
    let routes = Routes::new().map_err(|e| setup(&e))?;
    routes.link_up("lo").await.map_err(|e| setup(&e))?;
    let tun = tether_tunnel::stack::tun_device::create(
        tun_name,
        address.addr(),
        address.prefix_len(),
        TUN_MTU,
    )
    .map_err(|e| match &e {
        StackError::CreateTun {
            source: tun::Error::Io(io),
            ..
        } if io.kind() == std::io::ErrorKind::PermissionDenied => Failure::TunDenied,
        StackError::CreateTun {
            source: tun::Error::Io(io),
            ..
        } if io.kind() == std::io::ErrorKind::NotFound => Failure::TunMissing,
        _ => setup(&e),
    })?;
    let everything = IpNet::V4(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).map_err(|e| setup(&e))?);
    routes
        .add(tun_name, &[everything])
        .await
        .map_err(|e| setup(&e))?;
    Ok(tun)
}
