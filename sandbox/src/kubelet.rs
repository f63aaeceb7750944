//! The kubelet: the node's agent, an API client of whichever control plane serves the API
//! (the builtin one or the real kube-apiserver, through the same code). It registers the
//! node, runs the pods bound to it as processes in the pods' network namespaces, and reports
//! their status as a real kubelet does.
//!
//! [`join`] is the one entry: it starts [`registration`] (the Node object, its status and
//! Lease), and [`mirror`], the node's local copy of what it may see (its pods, the Services
//! and the ConfigMaps and Secrets their environment names), which the kubelet proper runs
//! on. That is a [`Controller`] on the copy's broadcast: each pod bound to the node gets a
//! worker task ([`pod`]) that owns it until it is removed, and what the workers write (pod
//! status, the final removal) goes back to the API server through [`mirror::uplink`]. Pods
//! found when the node starts are started afresh (their old processes went with the
//! previous sandbox).
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
//! - [`pod`]: the per-pod worker (start, restart with back-off, graceful deletion);
//! - [`tokens`]: service-account tokens from TokenRequest (renewed by the pod worker at 80%
//!   of their requested lifetime, as a kubelet renews them).
//!
//! Not done (yet): init containers, startup probes, lifecycle hooks, volumes other than the
//! service-account token, resource limits, image changes on a running pod (the container is not
//! restarted).

mod env;
pub mod exec;
mod files;
mod images;
pub mod mirror;
mod pod;
mod probe;
pub mod process;
pub mod registration;
mod status;
pub mod tokens;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

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

    fn on_pod(&mut self, pod: &Arc<Stored>) {
        // The copy holds the node's own pods only; the check keeps a stray one out.
        if pod.value["spec"]["nodeName"] != NODE_NAME {
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
            self.on_pod(p);
        }
    }

    fn on_event(&mut self, _: &Store, event: &Event) {
        if event.resource.shape != Shape::Pod {
            return;
        }
        match event.kind {
            EventType::Deleted => {
                if let Some(tx) = self.workers.remove(event.object.uid()) {
                    tx.send_replace(None);
                }
            }
            EventType::Added | EventType::Modified => self.on_pod(&event.object),
        }
    }
}

/// Runs the kubelet on `store` (the node's copy) until its broadcast closes. `ca_pem` is the
/// cluster CA that pods get as `ca.crt`; `exec_targets` is kept up to date with the running
/// containers.
pub async fn run(
    store: Arc<Store>,
    net: Arc<dyn PodNetwork>,
    layout: Arc<Layout>,
    tokens: Arc<dyn TokenIssuer>,
    ca_pem: String,
    exec_targets: Arc<exec::ExecTargets>,
) {
    let kubelet = Kubelet::new(store.clone(), net, layout, tokens, ca_pem, exec_targets);
    controllers::run(store, kubelet).await;
}

/// What a node needs to join a control plane.
pub struct Join {
    /// The API client the node acts as (its own identity: `system:node:sandbox` upstream).
    pub client: kube::Client,
    /// The kubelet version the node reports (the control plane's own, within any skew).
    pub version: String,
    pub net: Arc<dyn PodNetwork>,
    pub layout: Arc<Layout>,
    /// Where pods' service-account tokens come from.
    pub tokens: Arc<dyn TokenIssuer>,
    /// The cluster CA (PEM), written into pods as `ca.crt`.
    pub ca_pem: String,
    pub exec_targets: Arc<exec::ExecTargets>,
}

/// Joins the node to the API server behind `join.client`, the same way for both control
/// planes: registration, the local copy and its uplink, and the kubelet on the copy. Returns
/// the copy (the kubelet API and the node's resolver read it) and the tasks, which run until
/// aborted.
pub fn join(join: Join) -> (Arc<mirror::Mirror>, Vec<JoinHandle<()>>) {
    let mirror = Arc::new(mirror::Mirror::new());
    let client = join.client;
    let tasks = vec![
        tokio::spawn(mirror::reflect_pods(
            mirror.clone(),
            client.clone(),
            NODE_NAME,
        )),
        tokio::spawn(mirror::reflect(
            mirror.clone(),
            kube::Api::<k8s_openapi::api::core::v1::Service>::all(client.clone()),
            kube::runtime::watcher::Config::default(),
            Shape::Service,
        )),
        tokio::spawn(mirror::uplink(mirror.clone(), client.clone())),
        tokio::spawn(registration::run(client, join.version)),
        tokio::spawn(run(
            mirror.store.clone(),
            join.net,
            join.layout,
            join.tokens,
            join.ca_pem,
            join.exec_targets,
        )),
    ];
    (mirror, tasks)
}

#[cfg(test)]
mod tests;
