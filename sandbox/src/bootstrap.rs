//! The objects every cluster starts with, created at each start when missing (as
//! kube-apiserver reconciles the `kubernetes` Service): the four system namespaces, the node,
//! the ServiceCIDR, and the `kubernetes` and `kube-dns` Services at their fixed addresses.

use serde_json::{Value, json};

use crate::admission::{self, FieldValidation};
use crate::alloc::{KUBE_DNS_IP, KUBERNETES_IP, SERVICE_CIDR};
use crate::error::ApiError;
use crate::resources::{self, Shape};
use crate::store::Store;

pub const NODE_NAME: &str = "sandbox";
pub const POD_CIDR: &str = "10.244.0.0/24";
pub const NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

fn node() -> Value {
    let now = admission::now();
    let arch = if cfg!(target_arch = "x86_64") {
        "amd64"
    } else {
        std::env::consts::ARCH
    };
    json!({
        "metadata": {"name": NODE_NAME, "labels": {
            "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch,
            "node-role.kubernetes.io/control-plane": "",
        }},
        "spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR]},
        "status": {
            "conditions": [{
                "type": "Ready", "status": "False", "reason": "KubeletNotReady",
                "message": "tether-sandbox runs no kubelet yet: pods are stored but not started",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
            "addresses": [{"type": "Hostname", "address": NODE_NAME}],
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "nodeInfo": {
                "architecture": arch, "operatingSystem": "linux", "kubeletVersion": "v1.33.0",
                "kubeProxyVersion": "v1.33.0", "containerRuntimeVersion": "tether-sandbox://0.1.0",
                "osImage": "tether-sandbox", "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": "",
            },
        },
    })
}

/// Creates the bootstrap objects that are missing.
pub fn run(store: &Store) -> Result<(), ApiError> {
    let mut wanted: Vec<(Shape, &str, Value)> = NAMESPACES
        .iter()
        .map(|n| (Shape::Namespace, "", json!({"metadata": {"name": n}})))
        .collect();
    wanted.push((Shape::Node, "", node()));
    wanted.push((
        Shape::ServiceCidr,
        "",
        json!({"metadata": {"name": "kubernetes"}, "spec": {"cidrs": [SERVICE_CIDR]},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "", "message": "Kubernetes Service CIDR is ready",
                "lastTransitionTime": admission::now()}]}}),
    ));
    wanted.push((
        Shape::Service,
        "default",
        json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": KUBERNETES_IP.to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}),
    ));
    wanted.push((
        Shape::Service,
        "kube-system",
        json!({"metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}},
            "spec": {"clusterIP": KUBE_DNS_IP.to_string(), "selector": {"k8s-app": "kube-dns"}, "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}}),
    ));
    for (shape, namespace, body) in wanted {
        let rt = resources::by_shape(shape);
        let name = body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        store.write(|s| {
            if s.get(rt, namespace, &name).is_some() {
                return Ok(());
            }
            let (obj, _) =
                admission::admit_create(s, rt, namespace, body, FieldValidation::Strict)?;
            s.put(rt, obj);
            Ok::<_, ApiError>(())
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_is_idempotent_and_places_fixed_addresses() {
        let store = Store::new(0);
        run(&store).unwrap();
        let rv = store.read(|s| s.rv());
        run(&store).unwrap();
        assert_eq!(store.read(|s| s.rv()), rv, "nothing is rewritten");
        let svc = resources::by_shape(Shape::Service);
        let dns = store
            .read(|s| s.get(svc, "kube-system", "kube-dns").cloned())
            .unwrap();
        assert_eq!(dns.value["spec"]["clusterIP"], "10.96.0.10");
        let k = store
            .read(|s| s.get(svc, "default", "kubernetes").cloned())
            .unwrap();
        assert_eq!(k.value["spec"]["clusterIPs"], json!(["10.96.0.1"]));
        let node = store
            .read(|s| {
                s.get(resources::by_shape(Shape::Node), "", NODE_NAME)
                    .cloned()
            })
            .unwrap();
        assert_eq!(node.value["spec"]["podCIDRs"], json!([POD_CIDR]));
        assert_eq!(node.value["status"]["conditions"][0]["type"], "Ready");
    }
}
