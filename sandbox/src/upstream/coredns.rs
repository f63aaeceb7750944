//! Cluster DNS for the upstream control plane: CoreDNS as a Deployment in kube-system behind
//! the `kube-dns` Service at 10.96.0.10, with kubeadm's RBAC and a Corefile like kubeadm's;
//! its image maps to the CoreDNS that scripts/build-upstream.sh built (see
//! [`crate::kubelet`]'s images). Also the demo's objects, created through the API.
//!
//! The Corefile is in the `coredns` ConfigMap, as kubeadm puts it. The sandbox's kubelet
//! mounts no ConfigMap volumes, so the container reads the same text from a file the sandbox
//! writes next to its state (containers see the host's filesystem).

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};

use super::UpstreamError;
use crate::alloc::KUBE_DNS_IP;
use crate::demo;
use crate::node::NODE_IP;
use crate::resources::{self, Shape};
use crate::store::Store;

/// How long a create is retried while the API server is not yet able to take it (a new
/// namespace's `default` ServiceAccount is made by the controller-manager moments later).
const CREATE_RETRY: Duration = Duration::from_secs(30);

/// The Corefile: kubeadm's, forwarding names outside the cluster to the node's resolver
/// (CoreDNS's own /etc/resolv.conf in the pod names the cluster DNS, that is itself).
pub fn corefile() -> String {
    format!(
        ".:53 {{\n    errors\n    health {{\n       lameduck 5s\n    }}\n    ready\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }}\n    prometheus :9153\n    forward . {NODE_IP} {{\n       max_concurrent 1000\n    }}\n    cache 30 {{\n       disable success cluster.local\n       disable denial cluster.local\n    }}\n    loop\n    reload\n    loadbalance\n}}\n"
    )
}

fn objects(corefile: &str, corefile_path: &Path) -> Vec<Value> {
    let labels = json!({"k8s-app": "kube-dns"});
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": "kube-system"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": corefile}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system",
                "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}},
            "spec": {"clusterIP": KUBE_DNS_IP.to_string(), "selector": labels, "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": "coredns",
                "priorityClassName": "system-cluster-critical",
                "dnsPolicy": "Default",
                "containers": [{
                    "name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.12.3",
                    "args": ["-conf", corefile_path.display().to_string()],
                    "ports": [
                        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                        {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                        {"name": "metrics", "containerPort": 9153, "protocol": "TCP"}],
                    "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "initialDelaySeconds": 60, "periodSeconds": 10, "failureThreshold": 5},
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
                }]}}}}),
    ]
}

fn plural(kind: &str) -> String {
    match kind {
        "ClusterRole" => "clusterroles".into(),
        "ClusterRoleBinding" => "clusterrolebindings".into(),
        "Endpoints" => "endpoints".into(),
        "Ingress" => "ingresses".into(),
        "IngressClass" => "ingressclasses".into(),
        other => format!("{}s", other.to_lowercase()),
    }
}

/// Creates `value` unless it exists (what is there is kept, as `kubectl create` would keep
/// it). Retries errors other than a conflict for [`CREATE_RETRY`].
async fn create(client: &kube::Client, value: Value) -> Result<(), UpstreamError> {
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    let kind = value["kind"].as_str().unwrap_or_default().to_string();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, &kind),
        &plural(&kind),
    );
    let namespace = value["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let what = format!("{kind} {namespace}/{name}");
    let object: DynamicObject =
        serde_json::from_value(value).map_err(|e| UpstreamError::Apply {
            what: what.clone(),
            detail: e.to_string(),
        })?;
    let api: Api<DynamicObject> = if namespace.is_empty() {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), &namespace, &resource)
    };
    let deadline = Instant::now() + CREATE_RETRY;
    loop {
        // Looked up first: for an existing Service with a fixed clusterIP, kube-apiserver's
        // create answers 422 (the address is taken) rather than 409.
        match api.get_opt(&name).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(e) if Instant::now() > deadline => {
                return Err(UpstreamError::Apply {
                    what,
                    detail: e.to_string(),
                });
            }
            Err(e) => {
                tracing::debug!("looking up {what}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        }
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(UpstreamError::Apply {
                    what,
                    detail: e.to_string(),
                });
            }
            Err(e) => {
                tracing::debug!("creating {what}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Creates CoreDNS's objects that are missing. `dir` is `<state-dir>/upstream`.
pub async fn apply(client: &kube::Client, dir: &Path) -> Result<(), UpstreamError> {
    let corefile_path = dir.join("Corefile");
    for object in objects(&corefile(), &corefile_path) {
        create(client, object).await?;
    }
    // The file the container reads is the ConfigMap's text as it is now, edits included
    // (they take effect when the sandbox starts again).
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let current = maps
        .get("coredns")
        .await
        .ok()
        .and_then(|m| m.data?.remove("Corefile"))
        .unwrap_or_else(corefile);
    std::fs::write(&corefile_path, current).map_err(|e| UpstreamError::Apply {
        what: corefile_path.display().to_string(),
        detail: e.to_string(),
    })
}

/// Creates the demo's objects that are missing.
pub async fn apply_demo(client: &kube::Client) -> Result<(), UpstreamError> {
    for object in demo::objects() {
        create(client, object).await?;
    }
    Ok(())
}

/// Whether a CoreDNS pod on the node is Ready (the node's copy holds every pod it runs).
fn serving(store: &Store) -> bool {
    let rt = resources::by_shape(Shape::Pod);
    store.read(|s| {
        s.list(rt, Some("kube-system"), None).any(|p| {
            p.value["metadata"]["labels"]["k8s-app"] == "kube-dns"
                && p.value["metadata"]["deletionTimestamp"].is_null()
                && p.value["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
    })
}

/// Waits until CoreDNS answers (a Ready pod), so that `up` never reports a cluster whose
/// names do not resolve yet.
pub async fn wait_ready(store: &Store, timeout: Duration) -> Result<(), UpstreamError> {
    let deadline = Instant::now() + timeout;
    let mut events_rx = store.events();
    while !serving(store) {
        // Any event (or a lag) is a reason to look again.
        match tokio::time::timeout_at(deadline.into(), events_rx.recv()).await {
            Err(_) | Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                return Err(UpstreamError::CoreDnsNotReady(timeout));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}
