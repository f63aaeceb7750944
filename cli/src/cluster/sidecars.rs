//! Asking a workload's sidecars what they hold: every claim on every port, through a
//! port-forward to each pod's control port. `tether list` shows it; the daemon checks it
//! before it puts back a replaced workload whose intercept's daemon died.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use tether_tunnel::sidecar::Link;
use tether_tunnel::wire::capability::Capability;
use tether_tunnel::wire::intercept::{
    ClaimStatus, PortRoutes, SidecarReply, SidecarRequest, SidecarRoutes,
};

use super::Cluster;
use super::agent::SIDECAR;
use super::rollout::is_ready;
use super::transport::{PodRef, forward_port};

/// Every claim of one pod's sidecar; from an older sidecar, its one claim per port.
pub async fn routes_of(cluster: &Cluster, pod: &PodRef, control: u16) -> Option<SidecarRoutes> {
    let stream = forward_port(cluster, pod, control).await.ok()?;
    let mut link = Link::open(stream).await.ok()?;
    if link.accepted.capabilities.contains(Capability::HttpRoutes) {
        return match link.request(&SidecarRequest::Routes).await.ok()? {
            SidecarReply::Routes(r) => Some(r),
            _ => None,
        };
    }
    let SidecarReply::Status(status) = link.request(&SidecarRequest::Status).await.ok()? else {
        return None;
    };
    Some(SidecarRoutes {
        ports: status
            .ports
            .into_iter()
            .map(|p| PortRoutes {
                listen: p.listen,
                app: p.app,
                claims: p
                    .holder
                    .into_iter()
                    .map(|holder| ClaimStatus {
                        holder,
                        route: Default::default(),
                        matched: p.intercepted,
                        dropped: 0,
                    })
                    .collect(),
                forwarded: p.forwarded,
                not_http: 0,
            })
            .collect(),
    })
}

/// Whether any Ready pod of `deploy` has a sidecar that holds a claim; `None` when that
/// cannot be told (no pod answered).
pub async fn any_claims(cluster: &Cluster, deploy: &Deployment, control: u16) -> Option<bool> {
    let ns = deploy.metadata.namespace.clone().unwrap_or_default();
    let selector = deploy
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .ok()?;
    let mut answered = false;
    for pod in pods.items.iter().filter(|p| {
        is_ready(p)
            && p.spec
                .as_ref()
                .is_some_and(|s| s.containers.iter().any(|c| c.name == SIDECAR))
    }) {
        let pod = PodRef {
            namespace: ns.clone(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        };
        if let Some(routes) = routes_of(cluster, &pod, control).await {
            answered = true;
            if routes.ports.iter().any(|p| !p.claims.is_empty()) {
                return Some(true);
            }
        }
    }
    answered.then_some(false)
}
