//! The node's registration with the API server, as a kubelet registers: the Node
//! object (created by the node itself, which NodeRestriction allows for its own name), its
//! status every [`STATUS_EVERY`], and the Lease in `kube-node-lease` renewed every
//! [`LEASE_EVERY`], which is what the node lifecycle controller watches.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::bootstrap::{NODE_NAME, POD_CIDR};
use crate::node::NODE_IP;

/// The port of the kubelet API on the node address.
pub const KUBELET_PORT: u16 = 10250;
const LEASE_EVERY: Duration = Duration::from_secs(10);
const STATUS_EVERY: Duration = Duration::from_secs(30);
const LEASE_SECONDS: i32 = 40;

fn arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        std::env::consts::ARCH
    }
}

fn node_object() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE_NAME, "labels": {
            "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch(),
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": arch(),
        }},
        "spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR]},
    })
}

/// The node's status; `since` is when the conditions last changed (the node's start: they
/// do not change while it runs).
fn status(version: &str, since: &str) -> Value {
    let now = crate::admission::now();
    let ready = |t: &str, s: &str, reason: &str, message: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": since})
    };
    json!({"status": {
        "conditions": [
            ready("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            ready("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ready("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            ready("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": NODE_IP.to_string()}, {"type": "Hostname", "address": NODE_NAME}],
        "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "20Gi"},
        "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "20Gi"},
        "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
        "nodeInfo": {
            "architecture": arch(), "operatingSystem": "linux", "kubeletVersion": version,
            "kubeProxyVersion": version, "containerRuntimeVersion": "tether-sandbox://0.1.0",
            "osImage": "tether-sandbox", "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": "",
        },
    }})
}

/// Creates the Node (once), then keeps its status and Lease fresh until the task is aborted.
/// `version` is the control plane's (the node reports it as its kubelet's, within skew).
pub async fn run(client: kube::Client, version: String) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        let node: Node = match serde_json::from_value(node_object()) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("node object: {e}");
                return;
            }
        };
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 409 => break,
            Err(e) => {
                tracing::warn!("cannot register node {NODE_NAME}: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let mut last_status: Option<tokio::time::Instant> = None;
    let since = crate::admission::now();
    loop {
        if last_status.is_none_or(|t| t.elapsed() >= STATUS_EVERY) {
            match nodes
                .patch_status(
                    NODE_NAME,
                    &PatchParams::default(),
                    &Patch::Merge(status(&version, &since)),
                )
                .await
            {
                Ok(_) => last_status = Some(tokio::time::Instant::now()),
                Err(e) => tracing::warn!("cannot update node {NODE_NAME}'s status: {e}"),
            }
        }
        if let Err(e) = renew(&leases).await {
            tracing::warn!("cannot renew node {NODE_NAME}'s lease: {e}");
        }
        tokio::time::sleep(LEASE_EVERY).await;
    }
}

async fn renew(leases: &Api<Lease>) -> Result<(), kube::Error> {
    let now = MicroTime(jiff::Timestamp::now());
    let patch = json!({"spec": {"holderIdentity": NODE_NAME, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now}});
    match leases
        .patch(NODE_NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": NODE_NAME, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": NODE_NAME, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now},
            }))
            .map_err(kube::Error::SerdeError)?;
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}
