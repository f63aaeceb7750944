//! `tether list`: the Deployments of a namespace, the Services that select them and their
//! ports, whether they have a sidecar (none, dormant, active) and who intercepts them. The
//! intercepts come from the sidecars themselves (through a port-forward to each Ready pod),
//! so the list is true for every laptop, not only this one.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;
use tether_tunnel::sidecar::Link;
use tether_tunnel::wire::intercept::{SidecarReply, SidecarRequest};

use crate::cluster::agent::{self, SIDECAR};
use crate::cluster::rollout::is_ready;
use crate::cluster::transport::{PodRef, forward_port};
use crate::cluster::workload;
use crate::cluster::{self, Cluster, KubeOptions};
use crate::config::KubeTarget;
use crate::error::CliError;
use crate::output::{Event, Printer};

/// One workload as `tether list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub kind: String,
    pub services: Vec<ListedService>,
    /// `none`, `dormant` or `active`.
    pub agent: String,
    pub intercepts: Vec<ListedIntercept>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListedService {
    pub name: String,
    /// `name (port)` or `port`, each with `-> targetPort`.
    pub ports: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListedIntercept {
    pub name: String,
    /// The app's container port.
    pub port: u16,
    /// `user@host`.
    pub held_by: String,
    /// Where the holder sends the traffic.
    pub local: String,
    /// Pods whose sidecar sends it there.
    pub pods: Vec<String>,
}

pub async fn list(cluster: &Cluster, namespace: &str) -> Result<Vec<Listed>, CliError> {
    let read = |what: String| {
        move |e: kube::Error| CliError::DaemonFailed {
            message: format!(
                "cannot list {what} in namespace {namespace}: {}",
                cluster::client::describe(&e)
            ),
            exit_code: 4,
        }
    };
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(read("Deployments".into()))?
        .items;
    let services = Api::<Service>::namespaced(cluster.client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(read("Services".into()))?
        .items;
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(read("Pods".into()))?
        .items;
    let mut out = Vec::new();
    for d in &deployments {
        let name = d.metadata.name.clone().unwrap_or_default();
        let selecting = services
            .iter()
            .filter(|s| workload::selects(s, d))
            .map(|s| ListedService {
                name: workload::name_of(s),
                ports: s
                    .spec
                    .iter()
                    .flat_map(|spec| spec.ports.iter().flatten())
                    .map(|p| {
                        let target = match &p.target_port {
                            Some(
                                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n),
                            ) => n.to_string(),
                            Some(
                                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                                    s,
                                ),
                            ) => s.clone(),
                            None => p.port.to_string(),
                        };
                        format!("{} -> {target}", workload::describe_port(p))
                    })
                    .collect(),
            })
            .collect();
        let record = agent::record_of(d)?;
        let intercepts = match &record {
            Some(record) => held(cluster, &pods, d, record.control).await,
            None => Vec::new(),
        };
        let agent = match (&record, intercepts.is_empty()) {
            (None, _) => "none",
            (Some(_), true) => "dormant",
            (Some(_), false) => "active",
        };
        out.push(Listed {
            name,
            kind: "Deployment".into(),
            services: selecting,
            agent: agent.into(),
            intercepts,
        });
    }
    Ok(out)
}

/// The claims the sidecars of `deploy`'s Ready pods report, merged by intercept.
async fn held(
    cluster: &Cluster,
    pods: &[Pod],
    deploy: &Deployment,
    control: u16,
) -> Vec<ListedIntercept> {
    let selector = deploy
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    let mut merged: BTreeMap<(String, u16, String, String), Vec<String>> = BTreeMap::new();
    for pod in pods.iter().filter(|p| {
        is_ready(p)
            && p.spec
                .as_ref()
                .is_some_and(|s| s.containers.iter().any(|c| c.name == SIDECAR))
            && selector
                .iter()
                .all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
    }) {
        let pod_ref = PodRef {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        };
        let status = async {
            let stream = forward_port(cluster, &pod_ref, control).await.ok()?;
            let mut link = Link::open(stream).await.ok()?;
            match link.request(&SidecarRequest::Status).await.ok()? {
                SidecarReply::Status(s) => Some(s),
                _ => None,
            }
        };
        let Some(status) = status.await else {
            tracing::debug!(pod = %pod_ref, "no status from the sidecar");
            continue;
        };
        for p in status.ports {
            if let Some(h) = p.holder {
                merged
                    .entry((
                        h.intercept,
                        p.app,
                        format!("{}@{}", h.user, h.host),
                        h.local,
                    ))
                    .or_default()
                    .push(pod_ref.name.clone());
            }
        }
    }
    merged
        .into_iter()
        .map(|((name, port, held_by, local), pods)| ListedIntercept {
            name,
            port,
            held_by,
            local,
            pods,
        })
        .collect()
}

pub async fn run(target: &KubeTarget, printer: &Printer) -> Result<(), CliError> {
    let cluster = cluster::connect(&KubeOptions::from(target)).await?;
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| cluster.namespace.clone());
    let workloads = list(&cluster, &namespace).await?;
    printer.event(&Event::List {
        namespace,
        workloads,
    });
    Ok(())
}
