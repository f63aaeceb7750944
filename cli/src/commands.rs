//! One module per command. Each has a function that does the work and returns a typed
//! result, usable by other commands (`tether run` will connect through [`connect::connect`]),
//! and a `run` that turns that result into [`crate::output::Event`]s for the printer. What
//! several commands need (the daemon's status, starting it, ending a session) is in
//! [`crate::control`], not in any one command.

pub mod completion;
pub mod config;
pub mod connect;
pub mod doctor;
pub mod intercept;
pub mod leave;
pub mod list;
pub mod quit;
pub mod rbac;
pub mod run;
pub mod status;
pub mod uninstall;
pub mod version;
