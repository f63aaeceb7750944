//! Changes tether makes to this machine, each recorded before it is made so that it can be
//! undone on exit and after a crash.
//!
//! - [`state`]: the session record in the state directory (what was changed, by which pid).
//! - [`resolv`]: pointing /etc/resolv.conf at tether's DNS server, with a backup.
//! - [`routes`]: routes to the cluster's subnets on the TUN device (rtnetlink).
//! - [`process`]: whether the pid that owns a record still runs.

pub mod process;
pub mod resolv;
pub mod routes;
pub mod state;
