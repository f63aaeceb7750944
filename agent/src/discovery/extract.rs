//! What each kind of object contributes to discovery. Malformed values (an unparsable CIDR
//! or IP) are skipped: one odd object must not stop the manager from routing the rest.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::networking::v1::ServiceCIDR;

/// The ranges a ServiceCIDR object declares (`spec.cidrs`).
pub fn service_cidr_nets(obj: &ServiceCIDR) -> Vec<IpNet> {
    let cidrs = obj.spec.as_ref().and_then(|s| s.cidrs.as_deref());
    parse_nets(cidrs.unwrap_or_default().iter().map(String::as_str))
}

/// The pod ranges a node was given (`spec.podCIDRs`, else the older `spec.podCIDR`).
pub fn node_pod_nets(node: &Node) -> Vec<IpNet> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    match spec.pod_cidrs.as_deref() {
        Some(list) if !list.is_empty() => parse_nets(list.iter().map(String::as_str)),
        _ => parse_nets(spec.pod_cidr.as_deref()),
    }
}

/// A pod's own addresses; none for host-network pods, whose addresses are their node's.
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let Some(status) = pod.status.as_ref().filter(|_| !host_network) else {
        return Vec::new();
    };
    match status.pod_ips.as_deref() {
        Some(list) if !list.is_empty() => parse_ips(list.iter().map(|p| p.ip.as_str())),
        _ => parse_ips(status.pod_ip.as_deref()),
    }
}

/// A Service's ClusterIPs; none for headless (`None`) and ExternalName Services.
pub fn service_ips(svc: &Service) -> Vec<IpAddr> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    match spec.cluster_ips.as_deref() {
        Some(list) if !list.is_empty() => parse_ips(list.iter().map(String::as_str)),
        _ => parse_ips(spec.cluster_ip.as_deref()),
    }
}

/// Parses CIDRs, dropping host bits (`10.244.0.1/24` names 10.244.0.0/24).
pub fn parse_nets<'a>(list: impl IntoIterator<Item = &'a str>) -> Vec<IpNet> {
    list.into_iter()
        .filter_map(|s| match s.trim().parse::<IpNet>() {
            Ok(net) => Some(net.trunc()),
            Err(_) => {
                tracing::debug!(value = s, "ignoring a CIDR that does not parse");
                None
            }
        })
        .collect()
}

/// Parses IP addresses; `None` (headless Services) and empty strings are no addresses.
fn parse_ips<'a>(list: impl IntoIterator<Item = &'a str>) -> Vec<IpAddr> {
    list.into_iter()
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<T: k8s_openapi::serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn service_cidrs() {
        let obj: ServiceCIDR = from(json!({"metadata": {"name": "kubernetes"},
            "spec": {"cidrs": ["10.96.0.0/16", "fd00:10:96::/112", "bogus"]}}));
        assert_eq!(
            service_cidr_nets(&obj),
            vec![
                "10.96.0.0/16".parse().unwrap(),
                "fd00:10:96::/112".parse().unwrap()
            ]
        );
        let empty: ServiceCIDR = from(json!({"metadata": {"name": "x"}}));
        assert!(service_cidr_nets(&empty).is_empty());
    }

    #[test]
    fn node_pod_cidrs_prefer_the_list() {
        let node: Node = from(json!({"metadata": {"name": "n"},
            "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24", "fd00:10:244::/64"]}}));
        assert_eq!(node_pod_nets(&node).len(), 2);
        let old: Node =
            from(json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.244.3.1/24"}}));
        assert_eq!(node_pod_nets(&old), vec!["10.244.3.0/24".parse().unwrap()]);
        let none: Node = from(json!({"metadata": {"name": "n"}, "spec": {}}));
        assert!(node_pod_nets(&none).is_empty());
    }

    #[test]
    fn pod_addresses_skip_the_host_network() {
        let pod: Pod = from(
            json!({"metadata": {"name": "p"}, "spec": {"containers": []},
            "status": {"podIP": "10.1.2.3", "podIPs": [{"ip": "10.1.2.3"}, {"ip": "fd00::3"}]}}),
        );
        assert_eq!(pod_ips(&pod).len(), 2);
        let old: Pod = from(json!({"metadata": {"name": "p"}, "status": {"podIP": "10.1.2.3"}}));
        assert_eq!(pod_ips(&old), vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
        let host: Pod = from(json!({"metadata": {"name": "p"},
            "spec": {"hostNetwork": true, "containers": []}, "status": {"podIP": "192.168.1.5"}}));
        assert!(pod_ips(&host).is_empty());
        let pending: Pod = from(json!({"metadata": {"name": "p"}, "status": {"phase": "Pending"}}));
        assert!(pod_ips(&pending).is_empty());
    }

    #[test]
    fn service_addresses_skip_headless_services() {
        let svc: Service = from(json!({"metadata": {"name": "s"},
            "spec": {"clusterIP": "10.96.4.5", "clusterIPs": ["10.96.4.5"]}}));
        assert_eq!(
            service_ips(&svc),
            vec!["10.96.4.5".parse::<IpAddr>().unwrap()]
        );
        let headless: Service = from(json!({"metadata": {"name": "s"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"]}}));
        assert!(service_ips(&headless).is_empty());
        let external: Service = from(json!({"metadata": {"name": "s"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}));
        assert!(service_ips(&external).is_empty());
    }
}
