//! `tether uninstall`: take the sidecars out of workloads (`--agent W`, `--all-agents`), or
//! remove everything tether installed: every sidecar, then the traffic manager. A session on
//! this machine would lose what is removed, so its intercepts are left first (and for a full
//! uninstall the session is ended).

use std::path::Path;

use crate::args::AgentsToRemove;
use crate::cluster::{self, Cluster, KubeOptions, agent};
use crate::config::KubeTarget;
use crate::control::{self, Ended};
use crate::error::CliError;
use crate::ipc::{self, Request};
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
    agents: AgentsToRemove,
    state_dir: &Path,
    printer: &Printer,
) -> Result<Uninstalled, CliError> {
    // Checked first: an unreachable cluster should not cost the user their session.
    let cluster = cluster::connect(&KubeOptions::from(target)).await?;
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| cluster.namespace.clone());
    let state = StateDir::open(state_dir)?;
    let sidecars = match &agents {
        AgentsToRemove::One(w) => {
            vec![(
                namespace.clone(),
                crate::commands::intercept::workload_name(w)?,
            )]
        }
        AgentsToRemove::All => agent::injected(&cluster, Some(&namespace)).await?,
        AgentsToRemove::Everything => match agent::injected(&cluster, None).await {
            Ok(all) => all,
            // Without the right to list every namespace, the user's own is what they can
            // clean; say what was not looked at.
            Err(e) => {
                printer.notice(&format!(
                    "warning: {e}; only namespace {namespace} is cleaned of sidecars"
                ));
                agent::injected(&cluster, Some(&namespace)).await?
            }
        },
    };
    let mut progress = printer.progress();
    leave_intercepts_of(&state, &sidecars).await;
    let mut removed = Vec::new();
    for (ns, name) in &sidecars {
        progress.step(&format!(
            "Taking the tether-agent sidecar out of deploy/{name} in {ns}"
        ));
        if remove_sidecar(&cluster, ns, name, &mut progress).await? {
            removed.push(format!("sidecar/{ns}/{name}"));
        }
    }
    progress.finish();
    if let AgentsToRemove::One(w) = &agents
        && removed.is_empty()
    {
        return Err(CliError::DaemonFailed {
            message: format!(
                "deploy/{w} in namespace {namespace} has no tether-agent sidecar; `tether list -n {namespace}` shows which do"
            ),
            exit_code: 2,
        });
    }
    if agents != AgentsToRemove::Everything {
        return Ok(Uninstalled {
            ended: None,
            context: cluster.context,
            namespace,
            removed,
        });
    }
    let ended = match control::query(&state.socket_path()).await {
        Some(_) => Some(control::end_session(state_dir, printer).await?),
        None => None,
    };
    let manager = cluster::uninstall(&cluster, &target.manager_namespace).await?;
    removed.extend(manager.objects);
    Ok(Uninstalled {
        ended,
        context: cluster.context,
        namespace: target.manager_namespace.clone(),
        removed,
    })
}

/// Restores the workload and waits for its single rollout, so no pod has the sidecar when
/// this returns.
async fn remove_sidecar(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    progress: &mut crate::output::Progress,
) -> Result<bool, CliError> {
    if !agent::remove(cluster, ns, name).await? {
        return Ok(false);
    }
    let steps = std::sync::Mutex::new(Vec::new());
    let result = agent::wait_rolled_out(cluster, ns, name, &|m| {
        if let Ok(mut s) = steps.lock() {
            s.push(m);
        }
    })
    .await;
    if let Ok(steps) = steps.lock() {
        for step in steps.iter() {
            progress.step(step);
        }
    }
    result?;
    Ok(true)
}

/// Ends this machine's intercepts of the workloads about to lose their sidecar.
async fn leave_intercepts_of(state: &StateDir, sidecars: &[(String, String)]) {
    let socket = state.socket_path();
    let Some(status) = control::query(&socket).await else {
        return;
    };
    for i in status.intercepts {
        if sidecars
            .iter()
            .any(|(ns, w)| *ns == i.namespace && *w == i.workload)
            && let Ok(mut replies) = ipc::send(&socket, Request::Leave { name: i.name }).await
        {
            let _ = replies.next().await;
        }
    }
}

pub async fn run(
    target: &KubeTarget,
    agents: AgentsToRemove,
    state_dir: &Path,
    printer: &Printer,
) -> Result<(), CliError> {
    let done = uninstall(target, agents, state_dir, printer).await?;
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
