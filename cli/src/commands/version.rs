//! `tether version`: this build's version and, with a session, the daemon's and the
//! manager's, with what does not fit together said plainly.

use std::path::Path;

use crate::control;
use crate::error::CliError;
use crate::output::{Event, Printer};
use crate::system::state::StateDir;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What `tether version` reports.
pub struct Versions {
    pub client: String,
    pub daemon: Option<String>,
    pub manager: Option<String>,
    /// Combinations that do not work together, with what to do.
    pub problems: Vec<String>,
}

pub async fn versions(state_dir: &Path) -> Result<Versions, CliError> {
    let state = StateDir::open(state_dir)?;
    let status = control::query(&state.socket_path()).await;
    let daemon = status.as_ref().map(|s| {
        if s.daemon_version.is_empty() {
            "older than 0.1.0".to_owned()
        } else {
            s.daemon_version.clone()
        }
    });
    let manager = status
        .as_ref()
        .map(|s| s.manager.version.clone())
        .filter(|v| !v.is_empty());
    Ok(Versions {
        problems: problems(VERSION, daemon.as_deref()),
        client: VERSION.to_owned(),
        daemon,
        manager,
    })
}

/// The daemon answers this build's requests only if it is this build: a different version
/// may lack requests (intercepts) or read them differently. The manager's fit is decided by
/// the handshake's capabilities, which refuse a manager that lacks one by name at connect
/// time, so a connected manager fits.
fn problems(client: &str, daemon: Option<&str>) -> Vec<String> {
    match daemon {
        Some(d) if d != client => vec![format!(
            "the daemon runs tether {d} and this is tether {client}: run `tether quit` and connect again to use this build"
        )],
        _ => Vec::new(),
    }
}

pub async fn run(state_dir: &Path, printer: &Printer) -> Result<(), CliError> {
    let v = versions(state_dir).await?;
    printer.event(&Event::Version {
        client: v.client,
        daemon: v.daemon,
        manager: v.manager,
        problems: v.problems,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_of_another_build_is_named_with_the_way_out() {
        assert!(problems("0.2.0", Some("0.2.0")).is_empty());
        assert!(problems("0.2.0", None).is_empty());
        let p = problems("0.2.0", Some("0.1.0"));
        assert!(
            p[0].contains("0.1.0") && p[0].contains("tether quit"),
            "{p:?}"
        );
    }
}
