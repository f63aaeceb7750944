//! Discovery of what a laptop must route into the cluster: the Service CIDRs and the pod
//! CIDRs, found through the Kubernetes API with the manager's own (read-only) credentials.
//!
//! Each half has an ordered list of methods, because clusters differ in what they expose:
//!
//! - Service CIDRs: the `networking.k8s.io/v1` ServiceCIDR objects (Kubernetes 1.33+); when
//!   that API is absent or forbidden, the range named in the error a dry-run Service with an
//!   out-of-range `clusterIP` gets; as a last resort, the covering prefix of the ClusterIPs
//!   seen.
//! - Pod CIDRs: the nodes' `spec.podCIDRs`; when no node has one (CNIs that hand out
//!   addresses from elsewhere, such as the AWS VPC CNI), the covering prefix of the pod IPs
//!   seen, host-network pods excluded.
//!
//! [`Discovery::probe`] picks the methods and answers once; [`Discovery::run`] then keeps
//! the answer current with watchers on the objects the chosen methods read (see [`watch`]).
//! The module only needs a [`kube::Client`], so tests hand it one built from a kubeconfig.
//! `extract` says what each object contributes and [`prefix`] does the address arithmetic.

mod extract;
pub mod prefix;
mod watch;

use std::fmt;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use thiserror::Error;
use tokio::sync::watch as channel;

/// The name of the Service the dry-run probe asks the API server to create (never stored).
pub const PROBE_SERVICE: &str = "tether-cidr-probe";
/// A ClusterIP no cluster uses for Services (it is a public resolver's address), so asking
/// for it makes the API server name its real range in the error.
const PROBE_CLUSTER_IP: &str = "1.1.1.1";

/// How the Service CIDRs were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceCidrSource {
    /// The ServiceCIDR objects' `spec.cidrs`.
    ServiceCidrObjects,
    /// The range in the API server's answer to a dry-run Service with an out-of-range IP.
    OutOfRangeError,
    /// The covering prefix of the Services' ClusterIPs.
    ClusterIps,
}

/// How the pod CIDRs were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodCidrSource {
    /// The nodes' `spec.podCIDRs` (or `spec.podCIDR`).
    NodeSpecs,
    /// The covering prefix of the (non-host-network) pods' IPs.
    PodIps,
}

impl fmt::Display for ServiceCidrSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceCidrSource::ServiceCidrObjects => "ServiceCIDR objects",
            ServiceCidrSource::OutOfRangeError => "the API server's out-of-range error",
            ServiceCidrSource::ClusterIps => "the ClusterIPs in use",
        })
    }
}

impl fmt::Display for PodCidrSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PodCidrSource::NodeSpecs => "the nodes' podCIDRs",
            PodCidrSource::PodIps => "the pod IPs in use",
        })
    }
}

/// What discovery found, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub service_cidrs: Vec<IpNet>,
    pub service_source: ServiceCidrSource,
    pub pod_cidrs: Vec<IpNet>,
    pub pod_source: PodCidrSource,
}

impl Discovered {
    /// Every subnet to route, sorted, without duplicates or subnets another one contains.
    pub fn subnets(&self) -> Vec<IpNet> {
        tidy(self.service_cidrs.iter().chain(&self.pod_cidrs).copied())
    }
}

#[derive(Debug, Error)]
pub enum DiscoveryError {
    #[error("cannot list {what}: {source}")]
    List {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("cannot ask for a dry-run Service in namespace {namespace}: {source}")]
    DryRun {
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

/// Finds and watches the cluster's Service and pod CIDRs.
#[derive(Clone)]
pub struct Discovery {
    client: Client,
    /// Where the dry-run Service probe is asked for: the manager's own namespace, where its
    /// RBAC allows `create` on Services.
    namespace: String,
}

impl Discovery {
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Discovery {
            client,
            namespace: namespace.into(),
        }
    }

    /// Picks the methods that work on this cluster and discovers once.
    pub async fn probe(&self) -> Result<Discovered, DiscoveryError> {
        let (service_source, service_cidrs) = self.probe_services().await?;
        let (pod_source, pod_cidrs) = self.probe_pods().await?;
        Ok(Discovered {
            service_cidrs,
            service_source,
            pod_cidrs,
            pod_source,
        })
    }

    /// Probes (retrying while the API server fails), publishes the answer on `found_tx`,
    /// then watches and publishes every change of the subnets. Returns once every receiver
    /// of `found_tx` is gone.
    pub async fn run(self, found_tx: channel::Sender<Option<Discovered>>) {
        watch::run(self, found_tx).await
    }

    async fn probe_services(&self) -> Result<(ServiceCidrSource, Vec<IpNet>), DiscoveryError> {
        let cidrs: Api<ServiceCIDR> = Api::all(self.client.clone());
        match cidrs.list(&ListParams::default()).await {
            Ok(list) => {
                let nets = tidy(list.items.iter().flat_map(extract::service_cidr_nets));
                if !nets.is_empty() {
                    return Ok((ServiceCidrSource::ServiceCidrObjects, nets));
                }
                tracing::debug!("no ServiceCIDR object names a range");
            }
            Err(e) if api_code(&e).is_some_and(|c| c == 403 || c == 404) => {
                tracing::debug!("the ServiceCIDR API is absent or forbidden: {e}");
            }
            Err(source) => {
                return Err(DiscoveryError::List {
                    what: "ServiceCIDRs",
                    source,
                });
            }
        }
        if let Some(nets) = self.out_of_range_probe().await? {
            return Ok((ServiceCidrSource::OutOfRangeError, nets));
        }
        let services: Api<Service> = Api::all(self.client.clone());
        let list = services
            .list(&ListParams::default())
            .await
            .map_err(|source| DiscoveryError::List {
                what: "Services",
                source,
            })?;
        let ips = list.items.iter().flat_map(extract::service_ips);
        Ok((
            ServiceCidrSource::ClusterIps,
            prefix::covering_prefixes(ips),
        ))
    }

    /// Asks for a Service at [`PROBE_CLUSTER_IP`] with `dryRun=All` (nothing is stored) and
    /// reads the valid range from the refusal. `None` when the answer names no range.
    async fn out_of_range_probe(&self) -> Result<Option<Vec<IpNet>>, DiscoveryError> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let probe = Service {
            metadata: ObjectMeta {
                name: Some(PROBE_SERVICE.to_owned()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(PROBE_CLUSTER_IP.to_owned()),
                ports: Some(vec![ServicePort {
                    port: 443,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let params = PostParams {
            dry_run: true,
            ..Default::default()
        };
        match services.create(&params, &probe).await {
            Ok(_) => {
                tracing::debug!("the Service range contains {PROBE_CLUSTER_IP}; cannot probe it");
                Ok(None)
            }
            Err(kube::Error::Api(status)) if (400..500).contains(&status.code) => {
                let nets = prefix::parse_valid_range(&status.message);
                if nets.is_empty() {
                    tracing::debug!(
                        code = status.code,
                        "the dry-run Service got no range: {}",
                        status.message
                    );
                    Ok(None)
                } else {
                    Ok(Some(tidy(nets)))
                }
            }
            Err(source) => Err(DiscoveryError::DryRun {
                namespace: self.namespace.clone(),
                source,
            }),
        }
    }

    async fn probe_pods(&self) -> Result<(PodCidrSource, Vec<IpNet>), DiscoveryError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list =
            nodes
                .list(&ListParams::default())
                .await
                .map_err(|source| DiscoveryError::List {
                    what: "nodes",
                    source,
                })?;
        let nets = tidy(list.items.iter().flat_map(extract::node_pod_nets));
        if !nets.is_empty() {
            return Ok((PodCidrSource::NodeSpecs, nets));
        }
        tracing::debug!("no node has a podCIDR; covering the pod IPs instead");
        let pods: Api<Pod> = Api::all(self.client.clone());
        let list =
            pods.list(&ListParams::default())
                .await
                .map_err(|source| DiscoveryError::List {
                    what: "pods",
                    source,
                })?;
        let ips = list.items.iter().flat_map(extract::pod_ips);
        Ok((PodCidrSource::PodIps, prefix::covering_prefixes(ips)))
    }
}

/// The manager's namespace: `POD_NAMESPACE` (set from the downward API), else the
/// client's default namespace, which in a pod is read from the service account's
/// namespace file.
pub fn own_namespace(client: &Client) -> String {
    match std::env::var("POD_NAMESPACE") {
        Ok(ns) if !ns.is_empty() => ns,
        _ => client.default_namespace().to_owned(),
    }
}

/// The HTTP status code of an error the API server answered with.
fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Sorted, without duplicates, and without subnets another one contains.
fn tidy(nets: impl IntoIterator<Item = IpNet>) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = nets.into_iter().collect();
    nets.sort();
    nets.dedup();
    let kept: Vec<IpNet> = nets
        .iter()
        .filter(|net| !nets.iter().any(|o| o != *net && o.contains(*net)))
        .copied()
        .collect();
    kept
}

#[cfg(test)]
mod tests;
