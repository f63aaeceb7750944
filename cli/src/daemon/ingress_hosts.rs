//! Ingress hosts on the laptop: while connected, the hosts named in the cluster's Ingress
//! rules resolve to the ingress controller, so `curl http://shop.example.test/` reaches the
//! rule with its Host header intact before any public DNS exists.
//!
//! The address is the ClusterIP of the LoadBalancer Service whose address the Ingress's
//! status names (the controller's own Service), which the tunnel routes; when that Service
//! cannot be seen (a developer without rights in the controller's namespace), the
//! load-balancer address itself. Ingresses and Services are watched in every namespace,
//! or in the connection's namespace only when the user may not list them cluster-wide.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use tether_tunnel::stack::dns::hosts::{LocalHost, LocalHosts, Precedence};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, workload};
use crate::ipc::{IngressHost, Status};

/// Keeps `hosts` (and the status's list) equal to what the Ingresses name, until `stop`.
pub async fn keep(
    cluster: Cluster,
    namespace: String,
    hosts: LocalHosts,
    status: Arc<Mutex<Status>>,
    stop: CancellationToken,
) {
    let client = cluster.client.clone();
    let everywhere = Api::<Ingress>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .is_ok();
    let (ingresses, services): (Api<Ingress>, Api<Service>) = match everywhere {
        true => (Api::all(client.clone()), Api::all(client.clone())),
        false => {
            tracing::info!(
                %namespace,
                "cannot list Ingresses in every namespace: only those of namespace {namespace} resolve here"
            );
            (
                Api::namespaced(client.clone(), &namespace),
                Api::namespaced(client, &namespace),
            )
        }
    };
    let mut ingress_events = watcher(ingresses, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut service_events = watcher(services, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut seen_ingresses: BTreeMap<String, Ingress> = BTreeMap::new();
    let mut seen_services: BTreeMap<String, Service> = BTreeMap::new();
    let mut init_ingresses = BTreeMap::new();
    let mut init_services = BTreeMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            event = ingress_events.try_next() => {
                if !apply(event, &mut seen_ingresses, &mut init_ingresses) {
                    continue;
                }
            }
            event = service_events.try_next() => {
                if !apply(event, &mut seen_services, &mut init_services) {
                    continue;
                }
            }
        }
        let table = resolve(
            seen_ingresses.values(),
            &seen_services.values().collect::<Vec<_>>(),
        );
        let precedence = match hosts.precedence() {
            Precedence::PublicFirst => "auto",
            Precedence::Override => "override",
        };
        let listed: Vec<IngressHost> = table
            .iter()
            .map(|h| IngressHost {
                host: h.name.clone(),
                address: h.address,
                ingress: h.source.clone(),
                precedence: precedence.into(),
            })
            .collect();
        let before = hosts.entries();
        hosts.replace(table);
        if hosts.entries() != before {
            tracing::info!(hosts = ?listed.iter().map(|h| &h.host).collect::<Vec<_>>(), "Ingress hosts resolve here");
        }
        if let Ok(mut s) = status.lock() {
            s.ingress_hosts = listed;
        }
    }
}

/// Applies one watch event to `seen`; whether it changed what is known. A relist is
/// gathered in `init` and replaces `seen` when it is complete.
fn apply<K: kube::Resource>(
    event: Result<Option<watcher::Event<K>>, watcher::Error>,
    seen: &mut BTreeMap<String, K>,
    init: &mut BTreeMap<String, K>,
) -> bool {
    let key = |o: &K| {
        format!(
            "{}/{}",
            o.meta().namespace.clone().unwrap_or_default(),
            o.meta().name.clone().unwrap_or_default()
        )
    };
    match event {
        Ok(Some(watcher::Event::Apply(o))) => {
            seen.insert(key(&o), o);
            true
        }
        Ok(Some(watcher::Event::Delete(o))) => seen.remove(&key(&o)).is_some(),
        Ok(Some(watcher::Event::Init)) => {
            init.clear();
            false
        }
        Ok(Some(watcher::Event::InitApply(o))) => {
            init.insert(key(&o), o);
            false
        }
        Ok(Some(watcher::Event::InitDone)) => {
            *seen = std::mem::take(init);
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::debug!("watching for Ingress hosts: {e}");
            false
        }
    }
}

/// The hosts the Ingresses name, each to the address it should resolve to.
pub fn resolve<'a>(
    ingresses: impl IntoIterator<Item = &'a Ingress>,
    services: &[&Service],
) -> Vec<LocalHost> {
    // A load-balancer address -> the ClusterIP of the Service that owns it.
    let mut cluster_ip_of: BTreeMap<Ipv4Addr, Ipv4Addr> = BTreeMap::new();
    for s in services {
        let Some(cluster_ip) = s
            .spec
            .as_ref()
            .and_then(|spec| spec.cluster_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        for ip in workload::load_balancer_ips(s) {
            if let IpAddr::V4(ip) = ip {
                cluster_ip_of.entry(ip).or_insert(cluster_ip);
            }
        }
    }
    let mut out = Vec::new();
    for ing in ingresses {
        let Some(lb) = ing
            .status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .find_map(|x| x.ip.as_deref()?.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let address = cluster_ip_of.get(&lb).copied().unwrap_or(lb);
        let source = format!(
            "{}/{}",
            ing.metadata.namespace.clone().unwrap_or_default(),
            ing.metadata.name.clone().unwrap_or_default()
        );
        for rule in ing.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
            if let Some(host) = rule.host.as_deref().filter(|h| !h.is_empty()) {
                out.push(LocalHost {
                    name: host.to_ascii_lowercase(),
                    address,
                    source: source.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.source.cmp(&b.source)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(ns: &str, name: &str, hosts: &[&str], lb: Option<&str>) -> Ingress {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"rules": hosts.iter().map(|h| serde_json::json!({"host": h})).collect::<Vec<_>>()},
            "status": {"loadBalancer": {"ingress": lb.map(|ip| vec![serde_json::json!({"ip": ip})]).unwrap_or_default()}},
        }))
        .unwrap()
    }

    fn service(cluster_ip: &str, lb: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
            "spec": {"type": "LoadBalancer", "clusterIP": cluster_ip},
            "status": {"loadBalancer": {"ingress": [{"ip": lb}]}},
        }))
        .unwrap()
    }

    #[test]
    fn hosts_resolve_to_the_controllers_cluster_ip_else_its_address() {
        let shop = ingress(
            "demo",
            "shop",
            &["Shop.example.test", ""],
            Some("198.51.100.128"),
        );
        let pending = ingress("demo", "new", &["new.example.test"], None);
        let elsewhere = ingress("other", "api", &["api.example.test"], Some("203.0.113.9"));
        let controller = service("10.96.0.40", "198.51.100.128");
        let hosts = resolve([&shop, &pending, &elsewhere], &[&controller]);
        let got: Vec<(String, Ipv4Addr, String)> = hosts
            .into_iter()
            .map(|h| (h.name, h.address, h.source))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "api.example.test".into(),
                    Ipv4Addr::new(203, 0, 113, 9),
                    "other/api".into()
                ),
                (
                    "shop.example.test".into(),
                    Ipv4Addr::new(10, 96, 0, 40),
                    "demo/shop".into()
                ),
            ]
        );
    }
}
