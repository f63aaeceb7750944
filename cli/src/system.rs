//! Changes tether makes to this machine, each recorded before it is made so that it can be
//! undone on exit and after a crash.
//!
//! - [`state`]: the session record in the state directory (what was changed, by which pid).
//! - [`dns`]: pointing cluster names at tether's DNS server: systemd-resolved per-link DNS,
//!   or [`resolv`], a rewrite of /etc/resolv.conf with a backup.
//! - [`flows`]: counting open connections into routed subnets, for `tether status`.
//! - [`routes`]: routes to the cluster's subnets on the TUN device (rtnetlink).
//! - [`process`]: whether the pid that owns a record still runs.

pub mod dns;
pub mod flows;
pub mod process;
pub mod resolv;
pub mod routes;
pub mod state;
