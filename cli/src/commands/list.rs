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

use crate::cluster::agent::{self, SIDECAR};
use crate::cluster::rollout::is_ready;
use crate::cluster::sidecars;
use crate::cluster::transport::PodRef;
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
    /// `none`, `dormant`, `active`, or `replaced` (a `--replace` sidecar that nobody holds:
    /// the app container is not running).
    pub agent: String,
    pub intercepts: Vec<ListedIntercept>,
    /// Connections that did not speak HTTP while a filter was on their port (they went to
    /// the app, or to a global intercept), over every Ready pod.
    pub not_http: u64,
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
    /// What it takes: `all traffic`, its filters, or `mirror of ...`.
    pub route: String,
    /// Connections or requests it took (copied, for a mirror), over every pod.
    pub matched: u64,
    /// Copies a mirror dropped because the laptop was slow or gone.
    pub dropped: u64,
}

/// An Ingress of the namespace: its hosts, and the address its status shows.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListedIngress {
    pub name: String,
    pub hosts: Vec<String>,
    /// Empty until the controller has given it one.
    pub address: String,
}

/// The Ingresses of `namespace`; none where Ingresses cannot be read (no rights, or a
/// cluster that does not serve them).
pub async fn ingresses(cluster: &Cluster, namespace: &str) -> Vec<ListedIngress> {
    use k8s_openapi::api::networking::v1::Ingress;
    let Ok(list) = Api::<Ingress>::namespaced(cluster.client.clone(), namespace)
        .list(&ListParams::default())
        .await
    else {
        return Vec::new();
    };
    list.items
        .iter()
        .map(|i| ListedIngress {
            name: i.metadata.name.clone().unwrap_or_default(),
            hosts: i
                .spec
                .iter()
                .flat_map(|s| s.rules.iter().flatten())
                .filter_map(|r| r.host.clone())
                .collect(),
            address: i
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .and_then(|x| x.first())
                .and_then(|x| x.ip.clone().or_else(|| x.hostname.clone()))
                .unwrap_or_default(),
        })
        .collect()
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
        let (intercepts, not_http) = match &record {
            Some(record) => held(cluster, &pods, d, record.control).await,
            None => (Vec::new(), 0),
        };
        let agent = match (&record, intercepts.is_empty()) {
            (None, _) => "none",
            // The app container is out and nobody holds its ports: nothing serves them.
            (Some(r), true) if r.replace => "replaced",
            (Some(_), true) => "dormant",
            (Some(_), false) => "active",
        };
        out.push(Listed {
            name,
            kind: "Deployment".into(),
            services: selecting,
            agent: agent.into(),
            intercepts,
            not_http,
        });
    }
    Ok(out)
}

/// The claims the sidecars of `deploy`'s Ready pods report, merged by intercept, and the
/// connections that were not HTTP.
async fn held(
    cluster: &Cluster,
    pods: &[Pod],
    deploy: &Deployment,
    control: u16,
) -> (Vec<ListedIntercept>, u64) {
    let selector = deploy
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    type Key = (String, u16, String, String, String);
    let mut merged: BTreeMap<Key, (Vec<String>, u64, u64)> = BTreeMap::new();
    let mut not_http = 0;
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
        let Some(routes) = sidecars::routes_of(cluster, &pod_ref, control).await else {
            tracing::debug!(pod = %pod_ref, "no status from the sidecar");
            continue;
        };
        for p in routes.ports {
            not_http += p.not_http;
            for c in p.claims {
                let h = c.holder;
                let entry = merged
                    .entry((
                        h.intercept,
                        p.app,
                        format!("{}@{}", h.user, h.host),
                        h.local,
                        c.route.to_string(),
                    ))
                    .or_default();
                entry.0.push(pod_ref.name.clone());
                entry.1 += c.matched;
                entry.2 += c.dropped;
            }
        }
    }
    let listed = merged
        .into_iter()
        .map(
            |((name, port, held_by, local, route), (pods, matched, dropped))| ListedIntercept {
                name,
                port,
                held_by,
                local,
                pods,
                route,
                matched,
                dropped,
            },
        )
        .collect();
    (listed, not_http)
}

pub async fn run(target: &KubeTarget, printer: &Printer) -> Result<(), CliError> {
    let cluster = cluster::connect(&KubeOptions::from(target)).await?;
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| cluster.namespace.clone());
    let workloads = list(&cluster, &namespace).await?;
    let ingresses = ingresses(&cluster, &namespace).await;
    printer.event(&Event::List {
        namespace,
        workloads,
        ingresses,
    });
    Ok(())
}
