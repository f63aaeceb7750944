//! The kubelet: runs the pods bound to the sandbox's node as processes in the pods' network
//! namespaces, and writes their status as a real kubelet does.
//!
//! It is a [`Controller`] on the store's broadcast: a pod without `spec.nodeName` is bound to
//! the node (there is one node, so scheduling is binding); each bound pod gets a worker task
//! ([`pod`]) that owns it until it is removed. Pods found in the store when the sandbox starts
//! are started afresh (their old processes went with the previous sandbox).
//!
//! - [`images`]: image names → executables (built-ins, `tether-agent`, `images.json`);
//! - [`env`]: the container environment (Service variables, `envFrom`, `env`, `$(VAR)`);
//! - [`files`]: `/etc/resolv.conf`, `/etc/hosts`, `/etc/hostname` and the service-account
//!   token, mounted into each container;
//! - [`process`]: forking a container into the pod's namespaces, signalling, exec probes;
//! - [`exec`]: `kubectl exec` in a running container (the containers one may exec into, the
//!   command's streams, a terminal when asked for);
//! - [`probe`]: readiness and liveness probes;
//! - [`status`]: container states, phase and conditions;
//! - [`pod`]: the per-pod worker (start, restart with back-off, graceful deletion).
//!
//! Not done (yet): init containers, startup probes, lifecycle hooks, volumes other than the
//! service-account token, resource limits, image changes on a running pod (the container is not
//! restarted).

mod env;
pub mod exec;
mod files;
mod images;
mod pod;
mod probe;
pub mod process;
mod status;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::admission;
use crate::auth::TokenIssuer;
use crate::bootstrap::NODE_NAME;
use crate::controllers::{self, Controller};
use crate::node::Layout;
use crate::node::netns::Netns;
use crate::resources::{self, Shape};
use crate::store::{Event, EventType, Store, Stored};

/// The pod network the kubelet asks for each pod (the node implements it with a veth on the
/// bridge). Both calls block.
pub trait PodNetwork: Send + Sync + 'static {
    /// Creates the pod's network namespace with its address; returns both.
    fn add_pod(&self, uid: &str) -> Result<(Netns, Ipv4Addr), String>;
    /// Removes what `add_pod` made (processes still inside are killed).
    fn remove_pod(&self, uid: &str);
}

/// What every pod worker shares.
struct Shared {
    store: Arc<Store>,
    net: Arc<dyn PodNetwork>,
    layout: Arc<Layout>,
    tokens: Arc<dyn TokenIssuer>,
    /// The cluster CA (PEM), written into pods as `ca.crt`.
    ca_pem: String,
    /// Running containers, for the API server's `pods/exec`.
    exec_targets: Arc<exec::ExecTargets>,
}

/// The kubelet controller: binds pods and keeps one worker per pod on the node.
pub struct Kubelet {
    shared: Arc<Shared>,
    /// Latest pod object, sent to its worker; a closed sender means the worker has finished
    /// (the pod is gone or left to its finalizers) and is not started again.
    workers: HashMap<String, watch::Sender<Option<Arc<Stored>>>>,
}

impl Kubelet {
    pub fn new(
        store: Arc<Store>,
        net: Arc<dyn PodNetwork>,
        layout: Arc<Layout>,
        tokens: Arc<dyn TokenIssuer>,
        ca_pem: String,
        exec_targets: Arc<exec::ExecTargets>,
    ) -> Self {
        Kubelet {
            shared: Arc::new(Shared {
                store,
                net,
                layout,
                tokens,
                ca_pem,
                exec_targets,
            }),
            workers: HashMap::new(),
        }
    }

    fn on_pod(&mut self, store: &Store, pod: &Arc<Stored>) {
        let v = &pod.value;
        let node = v["spec"]["nodeName"].as_str().unwrap_or_default();
        if node.is_empty() {
            if v["metadata"]["deletionTimestamp"].is_null() {
                bind(store, pod);
            }
            return;
        }
        if node != NODE_NAME {
            return;
        }
        let uid = pod.uid().to_string();
        match self.workers.get(&uid) {
            Some(tx) => {
                tx.send_replace(Some(pod.clone()));
            }
            None => {
                let (tx, rx) = watch::channel(Some(pod.clone()));
                tokio::spawn(pod::run(self.shared.clone(), rx));
                self.workers.insert(uid, tx);
            }
        }
    }
}

/// Binds a pod to the node, as the scheduler does.
fn bind(store: &Store, pod: &Arc<Stored>) {
    let rt = resources::by_shape(Shape::Pod);
    let (ns, name, uid) = (pod.namespace(), pod.name(), pod.uid());
    let _ = store.write(|s| {
        let Some(cur) = s.get(rt, ns, name).filter(|p| p.uid() == uid).cloned() else {
            return Ok::<_, ()>(());
        };
        if !cur.value["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            return Ok(());
        }
        let mut value = cur.value.clone();
        value["spec"]["nodeName"] = json!(NODE_NAME);
        if value["status"]["phase"].is_null() {
            value["status"]["phase"] = json!("Pending");
        }
        let conditions = value["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conditions: Vec<Value> = conditions
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conditions.push(
            json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
            "lastTransitionTime": admission::now()}),
        );
        value["status"]["conditions"] = json!(conditions);
        s.put(rt, value);
        Ok(())
    });
}

impl Controller for Kubelet {
    fn resync(&mut self, store: &Store) {
        let rt = resources::by_shape(Shape::Pod);
        let pods: Vec<Arc<Stored>> = store.read(|s| s.list(rt, None, None).cloned().collect());
        let live: std::collections::HashSet<String> =
            pods.iter().map(|p| p.uid().to_string()).collect();
        self.workers.retain(|uid, tx| {
            let keep = live.contains(uid);
            if !keep {
                tx.send_replace(None);
            }
            keep
        });
        for p in &pods {
            self.on_pod(store, p);
        }
    }

    fn on_event(&mut self, store: &Store, event: &Event) {
        if event.resource.shape != Shape::Pod {
            return;
        }
        match event.kind {
            EventType::Deleted => {
                if let Some(tx) = self.workers.remove(event.object.uid()) {
                    tx.send_replace(None);
                }
            }
            EventType::Added | EventType::Modified => self.on_pod(store, &event.object),
        }
    }
}

/// Marks the node Ready: from now on its pods run.
fn node_ready(store: &Store) {
    let rt = resources::by_shape(Shape::Node);
    let _ = store.write(|s| {
        let Some(node) = s.get(rt, "", NODE_NAME).cloned() else {
            return Ok::<_, ()>(());
        };
        let now = admission::now();
        let mut value = node.value.clone();
        let mut conditions: Vec<Value> = value["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "Ready")
            .collect();
        conditions.push(json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}));
        value["status"]["conditions"] = json!(conditions);
        value["status"]["addresses"] = json!([
            {"type": "InternalIP", "address": crate::node::NODE_IP.to_string()},
            {"type": "Hostname", "address": NODE_NAME},
        ]);
        s.put(rt, value);
        Ok(())
    });
}

/// Runs the kubelet until the store's broadcast closes: marks the node Ready, then binds and
/// runs pods. `ca_pem` is the cluster CA that pods get as `ca.crt`; `exec_targets` is kept
/// up to date with the running containers.
pub async fn run(
    store: Arc<Store>,
    net: Arc<dyn PodNetwork>,
    layout: Arc<Layout>,
    tokens: Arc<dyn TokenIssuer>,
    ca_pem: String,
    exec_targets: Arc<exec::ExecTargets>,
) {
    node_ready(&store);
    let kubelet = Kubelet::new(store.clone(), net, layout, tokens, ca_pem, exec_targets);
    controllers::run(store, kubelet).await;
}

#[cfg(test)]
mod tests;
