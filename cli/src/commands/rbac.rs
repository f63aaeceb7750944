//! `tether rbac [-n NS] [--user U | --group G | --service-account NS:NAME]`: the Roles a
//! developer needs to use tether in one namespace with a manager an admin installed, and
//! with a subject their bindings, as YAML for `kubectl apply -f -`. Reads the kubeconfig
//! only for the default namespace; nothing is sent to the cluster.

use crate::cluster::KubeOptions;
use crate::cluster::client::namespace_of;
use crate::cluster::roles::{self, Who};
use crate::config::KubeTarget;
use crate::error::CliError;
use crate::output::{Event, Printer};

pub fn run(target: &KubeTarget, who: Option<Who>, printer: &Printer) -> Result<(), CliError> {
    let namespace = namespace_of(&KubeOptions::from(target))?;
    let objects = roles::objects(&namespace, &target.manager_namespace, who.as_ref());
    let yaml = roles::to_yaml(&objects).map_err(|e| CliError::DaemonFailed {
        message: format!("cannot write the Roles as YAML: {e}"),
        exit_code: 1,
    })?;
    printer.event(&Event::Rbac {
        namespace,
        manager_namespace: target.manager_namespace.clone(),
        objects,
        yaml,
    });
    Ok(())
}
