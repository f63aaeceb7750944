//! `tether uninstall`: remove the traffic manager and everything tether installed with it.
//! A session on this machine would lose its manager, so it is ended first.

use std::path::Path;

use serde_json::json;

use crate::cluster::{self, KubeOptions};
use crate::error::CliError;
use crate::output::Printer;
use crate::system::state::StateDir;

pub async fn run(
    options: &KubeOptions,
    manager_namespace: &str,
    state_dir: &Path,
    printer: Printer,
) -> Result<(), CliError> {
    // Checked first: an unreachable cluster should not cost the user their session.
    let cluster = cluster::connect(options).await?;
    let state = StateDir::open(state_dir)?;
    if crate::status::query(&state.socket_path()).await.is_some() {
        crate::quit::run(state_dir, printer).await?;
    }
    let removed = cluster::uninstall(&cluster, manager_namespace).await?;
    let text = if removed.objects.is_empty() {
        format!(
            "Nothing of tether's was installed in namespace {manager_namespace} of context {}.",
            cluster.context
        )
    } else {
        format!(
            "Removed from context {}: {}.",
            cluster.context,
            removed.objects.join(", ")
        )
    };
    printer.emit(
        &text,
        json!({
            "event": "uninstalled",
            "context": cluster.context,
            "namespace": manager_namespace,
            "removed": removed.objects,
        }),
    );
    Ok(())
}
