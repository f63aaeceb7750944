//! `tether doctor svc/NAME|deploy/NAME`: prints the walk of [`crate::doctor`] and exits 1
//! when a step failed. The in-cluster steps use a session of their own with the traffic
//! manager; the last step runs only when this machine is connected to the same cluster.

use std::path::Path;

use crate::cluster::{self, KubeOptions};
use crate::commands::status;
use crate::config::KubeTarget;
use crate::doctor::probe::Inside;
use crate::doctor::{Doctor, Target};
use crate::error::CliError;
use crate::ipc::SessionState;
use crate::output::{Event, Printer};

pub async fn run(
    what: &str,
    target: &KubeTarget,
    state_dir: &Path,
    printer: &Printer,
) -> Result<(), CliError> {
    let parsed = Target::parse(what).map_err(CliError::BadTarget)?;
    let cluster = cluster::connect(&KubeOptions::from(target)).await?;
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| cluster.namespace.clone());
    let inside = Inside::open(&cluster, &target.manager_namespace)
        .await
        .map_err(|why| format!("not checked from inside the cluster: {why}"));
    let laptop = match status::status(state_dir).await.ok().flatten() {
        None => Err("not checked from this machine: it is not connected; run `tether connect`, then `tether doctor` again".to_owned()),
        Some(s) if s.rootless.is_some() => Err("not checked from this machine: the session is a rootless `tether run`, whose routes are inside its own namespace".to_owned()),
        Some(s) if s.context.as_deref() != Some(cluster.context.as_str()) => Err(format!(
            "not checked from this machine: it is connected to context {}, not {}",
            s.context.unwrap_or_else(|| "(direct mode)".into()),
            cluster.context
        )),
        Some(s) if s.state != SessionState::Connected => Err(format!(
            "not checked from this machine: the session is {:?}, not connected",
            s.state
        )),
        Some(_) => Ok(()),
    };
    let doctor = Doctor {
        cluster: &cluster,
        namespace,
        inside,
        laptop,
    };
    let diagnosis = doctor.diagnose(&parsed).await?;
    let healthy = diagnosis.healthy;
    printer.event(&Event::Doctor(Box::new(diagnosis)));
    match healthy {
        true => Ok(()),
        false => Err(CliError::Exited(1)),
    }
}
