//! `tether uninstall`: remove the traffic manager and everything tether installed with it.
//! A session on this machine would lose its manager, so it is ended first.

use std::path::Path;

use crate::cluster::{self, KubeOptions};
use crate::config::KubeTarget;
use crate::control::{self, Ended};
use crate::error::CliError;
use crate::output::{Event, Printer};
use crate::system::state::StateDir;

/// What `tether uninstall` did.
pub struct Uninstalled {
    /// The session it ended first, if one ran.
    pub ended: Option<Ended>,
    pub context: String,
    pub namespace: String,
    /// `kind/name` of each object removed.
    pub removed: Vec<String>,
}

pub async fn uninstall(
    target: &KubeTarget,
    state_dir: &Path,
    printer: &Printer,
) -> Result<Uninstalled, CliError> {
    // Checked first: an unreachable cluster should not cost the user their session.
    let cluster = cluster::connect(&KubeOptions {
        kubeconfig: target.kubeconfig.clone(),
        context: target.context.clone(),
        namespace: target.namespace.clone(),
        exec_as: None,
    })
    .await?;
    let state = StateDir::open(state_dir)?;
    let ended = match control::query(&state.socket_path()).await {
        Some(_) => Some(control::end_session(state_dir, printer).await?),
        None => None,
    };
    let removed = cluster::uninstall(&cluster, &target.manager_namespace).await?;
    Ok(Uninstalled {
        ended,
        context: cluster.context,
        namespace: target.manager_namespace.clone(),
        removed: removed.objects,
    })
}

pub async fn run(target: &KubeTarget, state_dir: &Path, printer: &Printer) -> Result<(), CliError> {
    let done = uninstall(target, state_dir, printer).await?;
    if let Some(event) = done.ended.and_then(Ended::into_event) {
        printer.event(&event);
    }
    printer.event(&Event::Uninstalled {
        context: done.context,
        namespace: done.namespace,
        removed: done.removed,
    });
    Ok(())
}
