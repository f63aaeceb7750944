//! What an install is doing, as events. [`install`](super::install) reports [`Progress`]
//! through a callback and never prints; the caller decides how to show it (the commands use
//! [`crate::output::Progress`]).

use std::fmt;

/// One step of an install or uninstall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Looking at what is installed in the namespace.
    Checking { namespace: String },
    /// An object did not exist and was created (`kind` as in kubectl: `deployment`, ...).
    Created { kind: &'static str, name: String },
    /// An object existed with other content and was replaced.
    Updated { kind: &'static str, name: String },
    /// The installed manager is older (or differs) and is being replaced.
    Upgrading { from: String, to: String },
    /// A compatible manager is installed and is used as it is.
    UsingInstalled { version: String },
    /// Waiting for the manager rollout; `status` says what is still missing.
    Waiting { status: String },
    /// A manager pod is Ready.
    Ready { pod: String, version: String },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Checking { namespace } => {
                write!(f, "checking the traffic manager in namespace {namespace}")
            }
            Progress::Created { kind, name } => write!(f, "created {kind}/{name}"),
            Progress::Updated { kind, name } => write!(f, "updated {kind}/{name}"),
            Progress::Upgrading { from, to } => {
                write!(f, "upgrading the traffic manager from {from} to {to}")
            }
            Progress::UsingInstalled { version } => {
                write!(f, "using the installed traffic manager {version}")
            }
            Progress::Waiting { status } => write!(f, "waiting for the traffic manager: {status}"),
            Progress::Ready { pod, version } => {
                write!(f, "traffic manager {version} ready (pod {pod})")
            }
        }
    }
}
