//! The objects every cluster starts with, created at each start when missing (as
//! kube-apiserver reconciles the `kubernetes` Service): the four system namespaces, the
//! ServiceCIDR, and the `kubernetes` and `kube-dns` Services at their fixed addresses. The
//! Node is not among them: the node registers itself ([`crate::kubelet::registration`]).
//!
//! Both Services point at listeners of the sandbox process itself in the node namespace (the
//! API server and the cluster DNS at [`NODE_IP`]), not at pods, so they have no selector and
//! their Endpoints and EndpointSlices are written here, as kube-apiserver writes the
//! `kubernetes` Service's.

use serde_json::{Value, json};

use crate::admission::{self, FieldValidation};
use crate::alloc::{KUBE_DNS_IP, KUBERNETES_IP, SERVICE_CIDR};
use crate::error::ApiError;
use crate::node::{API_PORT, NODE_IP};
use crate::resources::{self, Shape};
use crate::store::Store;

pub const NODE_NAME: &str = "sandbox";
pub const POD_CIDR: &str = "10.244.0.0/24";
pub const NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the bootstrap objects that are missing.
pub fn run(store: &Store) -> Result<(), ApiError> {
    let mut wanted: Vec<(Shape, &str, Value)> = NAMESPACES
        .iter()
        .map(|n| (Shape::Namespace, "", json!({"metadata": {"name": n}})))
        .collect();
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
            "spec": {"clusterIP": KUBE_DNS_IP.to_string(), "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}}),
    ));
    wanted.extend(endpoints(
        "default",
        "kubernetes",
        &[("https", API_PORT, "TCP")],
        json!({"component": "apiserver", "provider": "kubernetes"}),
    ));
    wanted.extend(endpoints(
        "kube-system",
        "kube-dns",
        &[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")],
        json!({"k8s-app": "kube-dns"}),
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

/// The Endpoints and EndpointSlice of a selector-less Service served at [`NODE_IP`].
fn endpoints(
    ns: &'static str,
    service: &str,
    ports: &[(&str, u16, &str)],
    labels: Value,
) -> [(Shape, &'static str, Value); 2] {
    let ip = NODE_IP.to_string();
    let mut slice_labels = labels.clone();
    slice_labels["kubernetes.io/service-name"] = json!(service);
    slice_labels["endpointslice.kubernetes.io/managed-by"] = json!("tether-sandbox");
    let port_list: Vec<Value> = ports
        .iter()
        .map(|(name, port, proto)| json!({"name": name, "port": port, "protocol": proto}))
        .collect();
    [
        (
            Shape::Endpoints,
            ns,
            json!({"metadata": {"name": service, "labels": labels},
                "subsets": [{"addresses": [{"ip": ip, "nodeName": NODE_NAME}], "ports": port_list}]}),
        ),
        (
            Shape::EndpointSlice,
            ns,
            json!({"metadata": {"name": service, "labels": slice_labels},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": NODE_NAME}],
                "ports": port_list}),
        ),
    ]
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
        let slice = store
            .read(|s| {
                s.get(
                    resources::by_shape(Shape::EndpointSlice),
                    "kube-system",
                    "kube-dns",
                )
                .cloned()
            })
            .unwrap();
        assert_eq!(slice.value["endpoints"][0]["addresses"][0], "10.244.0.1");
        assert_eq!(slice.value["ports"][0]["port"], 53);
    }
}
