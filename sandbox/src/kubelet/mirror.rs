//! The node's view of the cluster, kept in a local [`Store`] so that the kubelet, written
//! against the store, runs on a copy of what the API server tells the node (an informer
//! cache, in the store's shape), whichever control plane serves the API.
//!
//! Downwards, kube-rs watchers copy what this node may see into the store: its own pods
//! (field selector `spec.nodeName`, as the kubelet lists them), the ConfigMaps and Secrets
//! their containers' environment names (fetched one by one whenever the pod changes, which
//! is all the Node authorizer lets a node read of them), and Services (for the containers'
//! Service variables). Upwards, [`uplink`] sends what the kubelet
//! writes to the copy back to the API server: pod status as a status patch, and the removal
//! of a pod whose containers have stopped as the kubelet's final delete (grace period 0, UID
//! precondition).
//!
//! What the kubelet wrote is told apart from what the watchers copied by resourceVersion:
//! every write made here records the local resourceVersion it got.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::resources::{self, Shape};
use crate::store::{EventType, Store};

/// The local store and the resourceVersions of the writes made by the watchers.
#[derive(Debug)]
pub struct Mirror {
    pub store: Arc<Store>,
    copied: Mutex<HashSet<u64>>,
    /// UIDs of the pods whose references are being asked for again.
    retrying: Mutex<HashSet<String>>,
}

impl Mirror {
    pub fn new() -> Self {
        Mirror {
            store: Arc::new(Store::new(0)),
            copied: Mutex::new(HashSet::new()),
            retrying: Mutex::new(HashSet::new()),
        }
    }

    fn note(&self, rv: u64) {
        // Poisoning only follows a panic inside these one-line critical sections.
        self.copied.lock().expect("mirror lock").insert(rv);
    }

    /// Whether the event at `rv` is a watcher's copy (forgotten once asked).
    fn was_copied(&self, rv: u64) -> bool {
        self.copied.lock().expect("mirror lock").remove(&rv)
    }

    fn put(&self, shape: Shape, value: serde_json::Value) {
        let rt = resources::by_shape(shape);
        let stored = self.store.write(|s| {
            // `put` replaces the API server's resourceVersion with the local one, and stores
            // an unchanged copy not at all, so that has no event to note.
            let before = s.rv();
            let stored = s.put(rt, value);
            Ok::<_, ()>((stored.rv > before).then_some(stored))
        });
        if let Ok(Some(stored)) = stored {
            self.note(stored.rv);
        }
    }

    fn remove(&self, shape: Shape, ns: &str, name: &str) {
        let rt = resources::by_shape(shape);
        if let Ok(Some(gone)) = self.store.write(|s| Ok::<_, ()>(s.remove(rt, ns, name))) {
            self.note(gone.rv);
        }
    }

    /// Removes the objects of `shape` that a relist no longer shows.
    fn retain(&self, shape: Shape, live: &HashSet<(String, String)>) {
        let rt = resources::by_shape(shape);
        let stale: Vec<(String, String)> = self.store.read(|s| {
            s.list(rt, None, None)
                .map(|o| (o.namespace().to_string(), o.name().to_string()))
                .filter(|k| !live.contains(k))
                .collect()
        });
        for (ns, name) in stale {
            self.remove(shape, &ns, &name);
        }
    }
}

fn namespace(v: &serde_json::Value) -> &str {
    v["metadata"]["namespace"].as_str().unwrap_or_default()
}

fn name(v: &serde_json::Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or_default()
}

/// Copies the objects `api` lists (with `config`'s selectors) into the store as `shape`,
/// until the task is aborted. The watcher relists with back-off after errors.
pub async fn reflect<K>(mirror: Arc<Mirror>, api: Api<K>, config: watcher::Config, shape: Shape)
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + Debug + Send + 'static,
{
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut listed: HashSet<(String, String)> = HashSet::new();
    while let Some(event) = events.next().await {
        let value = |o: &K| serde_json::to_value(o).unwrap_or_default();
        match event {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(o)) => {
                let v = value(&o);
                listed.insert((namespace(&v).to_string(), name(&v).to_string()));
                mirror.put(shape, v);
            }
            Ok(watcher::Event::InitDone) => mirror.retain(shape, &listed),
            Ok(watcher::Event::Apply(o)) => mirror.put(shape, value(&o)),
            Ok(watcher::Event::Delete(o)) => {
                let v = value(&o);
                mirror.remove(shape, namespace(&v), name(&v));
            }
            Err(e) => tracing::warn!("watching {:?}: {e}", shape),
        }
    }
}

/// The ConfigMaps (false) and Secrets (true) the containers' environment names.
pub fn references(pod: &serde_json::Value) -> Vec<(bool, String)> {
    let mut refs = Vec::new();
    let spec = &pod["spec"];
    let containers = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten());
    for c in containers {
        for from in c["envFrom"].as_array().into_iter().flatten() {
            if let Some(n) = from["configMapRef"]["name"].as_str() {
                refs.push((false, n.to_string()));
            }
            if let Some(n) = from["secretRef"]["name"].as_str() {
                refs.push((true, n.to_string()));
            }
        }
        for env in c["env"].as_array().into_iter().flatten() {
            let from = &env["valueFrom"];
            if let Some(n) = from["configMapKeyRef"]["name"].as_str() {
                refs.push((false, n.to_string()));
            }
            if let Some(n) = from["secretKeyRef"]["name"].as_str() {
                refs.push((true, n.to_string()));
            }
        }
    }
    refs.sort();
    refs.dedup();
    refs
}

/// What asking for a pod's ConfigMaps and Secrets found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetched {
    All,
    /// Some do not exist (yet).
    Missing,
    /// Some could not be read (e.g. 403 while the Node authorizer catches up).
    Failed,
}

/// Copies the ConfigMaps and Secrets `pod` names (or removes them when they are gone).
async fn fetch_references(
    mirror: &Mirror,
    client: &kube::Client,
    pod: &serde_json::Value,
) -> Fetched {
    let ns = namespace(pod);
    let mut fetched = Fetched::All;
    for (secret, name) in references(pod) {
        let got = if secret {
            Api::<Secret>::namespaced(client.clone(), ns)
                .get(&name)
                .await
                .map(|o| serde_json::to_value(o).unwrap_or_default())
        } else {
            Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get(&name)
                .await
                .map(|o| serde_json::to_value(o).unwrap_or_default())
        };
        let shape = if secret {
            Shape::Secret
        } else {
            Shape::ConfigMap
        };
        match got {
            Ok(v) => mirror.put(shape, v),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                if fetched == Fetched::All {
                    fetched = Fetched::Missing;
                }
                mirror.remove(shape, ns, &name);
            }
            Err(e) => {
                fetched = Fetched::Failed;
                tracing::debug!(
                    "cannot read {name} for pod {ns}/{} yet: {e}",
                    self::name(pod)
                );
            }
        }
    }
    fetched
}

/// How long a pod waits for its references to be readable before the kubelet sees it, as a
/// kubelet's secret and ConfigMap caches wait up to a second to sync before a container's
/// configuration counts as missing.
const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
const SYNC_STEP: std::time::Duration = std::time::Duration::from_millis(50);

/// First pause before the references of a pod are asked for again, doubled up to
/// [`REFETCH_MAX`].
const REFETCH_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
const REFETCH_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Fetches `pod`'s references (waiting up to [`SYNC_WAIT`] while they cannot be read: right
/// after a pod is bound, the Node authorizer may not know yet that this node may read what
/// it names, 403), and when some are still missing keeps asking in the background, as a
/// kubelet retries a container whose configuration is missing (a Secret may be created after
/// its pod). Stops once all are there or the pod is gone from the copy; one retrying task
/// per pod.
async fn fetch_until_complete(mirror: Arc<Mirror>, client: kube::Client, pod: serde_json::Value) {
    let started = tokio::time::Instant::now();
    let mut fetched = fetch_references(&mirror, &client, &pod).await;
    while fetched == Fetched::Failed && started.elapsed() < SYNC_WAIT {
        tokio::time::sleep(SYNC_STEP).await;
        fetched = fetch_references(&mirror, &client, &pod).await;
    }
    if fetched == Fetched::All {
        return;
    }
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Poisoning only follows a panic inside these one-line critical sections.
    if !mirror
        .retrying
        .lock()
        .expect("mirror lock")
        .insert(uid.clone())
    {
        return;
    }
    let rt = resources::by_shape(Shape::Pod);
    let (ns, name) = (namespace(&pod).to_string(), self::name(&pod).to_string());
    tokio::spawn(async move {
        let mut pause = REFETCH_FIRST;
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(REFETCH_MAX);
            let current = mirror.store.read(|s| {
                s.get(rt, &ns, &name)
                    .filter(|p| p.uid() == uid)
                    .map(|p| p.value.clone())
            });
            let Some(current) = current else { break };
            if fetch_references(&mirror, &client, &current).await == Fetched::All {
                break;
            }
        }
        mirror.retrying.lock().expect("mirror lock").remove(&uid);
    });
}

/// [`reflect`] for the node's own pods, with what their environment names.
pub async fn reflect_pods(mirror: Arc<Mirror>, client: kube::Client, node: &str) {
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let api: Api<Pod> = Api::all(client.clone());
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut listed: HashSet<(String, String)> = HashSet::new();
    while let Some(event) = events.next().await {
        let value = |o: &Pod| serde_json::to_value(o).unwrap_or_default();
        match event {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(o)) => {
                let v = value(&o);
                listed.insert((namespace(&v).to_string(), name(&v).to_string()));
                fetch_until_complete(mirror.clone(), client.clone(), v.clone()).await;
                mirror.put(Shape::Pod, v);
            }
            Ok(watcher::Event::InitDone) => mirror.retain(Shape::Pod, &listed),
            Ok(watcher::Event::Apply(o)) => {
                let v = value(&o);
                fetch_until_complete(mirror.clone(), client.clone(), v.clone()).await;
                mirror.put(Shape::Pod, v);
            }
            Ok(watcher::Event::Delete(o)) => {
                let v = value(&o);
                mirror.remove(Shape::Pod, namespace(&v), name(&v));
            }
            Err(e) => tracing::warn!("watching the node's pods: {e}"),
        }
    }
}

/// Patches a pod's status on the API server to the one in the copy.
async fn report_status(client: &kube::Client, pod: &crate::store::Stored) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), pod.namespace());
    let patch = json!({"status": pod.value["status"]});
    if let Err(e) = pods
        .patch_status(pod.name(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(
            "cannot report pod {}/{}'s status: {e}",
            pod.namespace(),
            pod.name()
        );
    }
}

/// Sends the kubelet's writes to pods to the API server, until the task is aborted.
pub async fn uplink(mirror: Arc<Mirror>, client: kube::Client) {
    let mut events_rx = mirror.store.events();
    loop {
        let event = match events_rx.recv().await {
            Ok(e) => e,
            Err(RecvError::Lagged(n)) => {
                // Some of the kubelet's writes may be among the missed events: every pod's
                // status as the kubelet has it now goes up again.
                tracing::warn!("uplink missed {n} store events; reporting every pod again");
                let rt = resources::by_shape(Shape::Pod);
                let pods: Vec<Arc<crate::store::Stored>> = mirror
                    .store
                    .read(|s| s.list(rt, None, None).cloned().collect());
                for pod in pods {
                    report_status(&client, &pod).await;
                }
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if event.resource.shape != Shape::Pod || mirror.was_copied(event.object.rv) {
            continue;
        }
        let object = &event.object;
        let pods: Api<Pod> = Api::namespaced(client.clone(), object.namespace());
        match event.kind {
            EventType::Added | EventType::Modified => {
                let before = event.previous.as_ref().map(|p| &p.value["status"]);
                if before == Some(&object.value["status"]) {
                    continue;
                }
                report_status(&client, object).await;
            }
            EventType::Deleted => {
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(object.uid().to_string()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match pods.delete(object.name(), &params).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => tracing::warn!(
                        "cannot remove pod {}/{}: {e}",
                        object.namespace(),
                        object.name()
                    ),
                }
            }
        }
    }
}
