//! Changes tether makes to this machine, each recorded before it is made so that it can be
//! undone on exit and after a crash, and the facts about this machine those changes need.
//!
//! - [`state`]: the session record in the state directory (what was changed, by which pid).
//! - [`leftovers`]: undoing what a daemon that died without cleaning up had changed.
//! - [`dns`]: pointing cluster names at tether's DNS server: systemd-resolved per-link DNS,
//!   or [`resolv`], a rewrite of /etc/resolv.conf with a backup.
//! - [`flows`]: counting open connections into routed subnets, for `tether status`.
//! - [`routes`]: routes to the cluster's subnets on the TUN device (rtnetlink).
//! - [`process`]: whether the pid that owns a record still runs, and waiting for it to end.

pub mod dns;
pub mod flows;
pub mod leftovers;
pub mod process;
pub mod resolv;
pub mod routes;
pub mod state;

use std::path::PathBuf;

/// Whether this process runs as root (it may then create devices and change routes).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `program` as the shell would find it on `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}
