//! The ReplicaSet controller: keeps `spec.replicas` active pods per ReplicaSet (pods named
//! `<rs>-<5 random characters>`, with a controller reference to it), adopts matching orphans,
//! deletes the least useful pods first when scaling down (unscheduled, pending, not ready,
//! newest), and writes the ReplicaSet's status.
//!
//! Each pass reads and writes under one store lock, so it sees its own earlier writes and needs
//! none of the expectations bookkeeping the real controller does against its caches.

use std::cmp::Reverse;
use std::sync::Arc;

use serde_json::{Value, json};

use super::Controller;
use super::objects::{self, controller_ref, controller_uid, pod_active, pod_ready};
use crate::admission::Part;
use crate::error::ApiError;
use crate::lifecycle::{self, DeleteOptions};
use crate::resources::{self, Shape};
use crate::store::{Event, State, Store, Stored};

/// At most this many pods are created or deleted per pass, as the real controller's burst.
const BURST: usize = 500;

pub struct ReplicaSets;

/// The pods a ReplicaSet controls (adopting matching orphans first).
fn owned_pods(state: &mut State, rs: &Value) -> Result<Vec<Arc<Stored>>, ApiError> {
    let pod_rt = resources::by_shape(Shape::Pod);
    let rs_rt = resources::by_shape(Shape::ReplicaSet);
    let ns = rs["metadata"]["namespace"].as_str().unwrap_or_default();
    let uid = rs["metadata"]["uid"].as_str().unwrap_or_default();
    let Some(sel) = objects::selector(&rs["spec"]["selector"]) else {
        return Ok(Vec::new());
    };
    let orphans: Vec<Arc<Stored>> = state
        .list(pod_rt, Some(ns), None)
        .filter(|p| controller_uid(&p.value).is_none())
        .filter(|p| pod_active(&p.value) && sel.matches(&p.value["metadata"]["labels"]))
        .cloned()
        .collect();
    if !objects::terminating(rs) {
        for orphan in orphans {
            let mut adopted = orphan.value.clone();
            let mut refs = adopted["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            refs.push(controller_ref(rs_rt, rs));
            adopted["metadata"]["ownerReferences"] = json!(refs);
            objects::update(state, pod_rt, &orphan.value, adopted, Part::Main)?;
        }
    }
    Ok(state
        .list(pod_rt, Some(ns), None)
        .filter(|p| controller_uid(&p.value) == Some(uid))
        .cloned()
        .collect())
}

/// Sort key: pods to delete first come first (as client-go's ActivePods ordering).
fn deletion_rank(pod: &Value) -> (Reverse<bool>, u8, bool, Reverse<i64>, Reverse<String>) {
    let unscheduled = pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
    let phase_rank = match pod["status"]["phase"].as_str() {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let restarts: i64 = pod["status"]["containerStatuses"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["restartCount"].as_i64()).sum())
        .unwrap_or(0);
    let created = pod["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (
        Reverse(unscheduled),
        phase_rank,
        pod_ready(pod),
        Reverse(restarts),
        Reverse(created),
    )
}

/// A new pod for the ReplicaSet, from its template.
fn pod_from_template(rs: &Value) -> Value {
    let rs_rt = resources::by_shape(Shape::ReplicaSet);
    let template = &rs["spec"]["template"];
    let name = rs["metadata"]["name"].as_str().unwrap_or_default();
    let mut meta = json!({
        "generateName": format!("{name}-"),
        "ownerReferences": [controller_ref(rs_rt, rs)],
    });
    for key in ["labels", "annotations"] {
        if template["metadata"][key].is_object() {
            meta[key] = template["metadata"][key].clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})
}

/// Brings one ReplicaSet's pods and status in line with its spec.
pub fn reconcile(state: &mut State, ns: &str, name: &str) -> Result<(), ApiError> {
    let rs_rt = resources::by_shape(Shape::ReplicaSet);
    let pod_rt = resources::by_shape(Shape::Pod);
    let Some(rs) = state.get(rs_rt, ns, name).cloned() else {
        return Ok(());
    };
    let rs = &rs.value;
    let mut pods = owned_pods(state, rs)?;
    pods.retain(|p| pod_active(&p.value));
    let wanted = usize::try_from(rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0)).unwrap_or(0);
    if !objects::terminating(rs) {
        if pods.len() < wanted {
            for _ in 0..(wanted - pods.len()).min(BURST) {
                pods.push(objects::create(state, pod_rt, ns, pod_from_template(rs))?);
            }
        } else if pods.len() > wanted {
            pods.sort_by_key(|p| deletion_rank(&p.value));
            let extra = pods.len() - wanted;
            for pod in pods.drain(..extra.min(BURST)) {
                lifecycle::delete(state, pod_rt, ns, pod.name(), &DeleteOptions::default())?;
            }
        }
    }
    write_status(state, ns, name, &pods)
}

/// Writes `status` from the active pods, when it changed.
fn write_status(
    state: &mut State,
    ns: &str,
    name: &str,
    pods: &[Arc<Stored>],
) -> Result<(), ApiError> {
    let rs_rt = resources::by_shape(Shape::ReplicaSet);
    let Some(current) = state.get(rs_rt, ns, name).cloned() else {
        return Ok(());
    };
    let rs = &current.value;
    let min_ready = rs["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    let now = jiff::Timestamp::now();
    let template_labels =
        objects::selector(&json!({"matchLabels": rs["spec"]["template"]["metadata"]["labels"]}));
    let count = |f: &dyn Fn(&Value) -> bool| pods.iter().filter(|p| f(&p.value)).count();
    let mut status = json!({
        "replicas": pods.len(),
        "fullyLabeledReplicas": count(&|p| template_labels.as_ref().is_none_or(|s| s.matches(&p["metadata"]["labels"]))),
        "readyReplicas": count(&pod_ready),
        "availableReplicas": count(&|p| objects::pod_available(p, min_ready, now)),
        "observedGeneration": rs["metadata"]["generation"],
    });
    if let Some(conditions) = rs["status"].get("conditions") {
        status["conditions"] = conditions.clone();
    }
    if rs["status"] == status {
        return Ok(());
    }
    let mut new = rs.clone();
    new["status"] = status;
    objects::update(state, rs_rt, rs, new, Part::Status)?;
    Ok(())
}

fn log(ns: &str, name: &str, result: Result<(), ApiError>) {
    if let Err(e) = result {
        tracing::warn!("replicaset controller ({ns}/{name}): {e}");
    }
}

impl Controller for ReplicaSets {
    /// Pods become available `minReadySeconds` after turning ready, with no event to say so.
    fn period(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(2))
    }

    fn resync(&mut self, store: &Store) {
        let rs_rt = resources::by_shape(Shape::ReplicaSet);
        let all: Vec<(String, String)> = store.read(|s| {
            s.list(rs_rt, None, None)
                .map(|o| (o.namespace().to_string(), o.name().to_string()))
                .collect()
        });
        for (ns, name) in all {
            log(&ns, &name, store.write(|s| reconcile(s, &ns, &name)));
        }
    }

    fn on_event(&mut self, store: &Store, event: &Event) {
        let obj = &event.object;
        let ns = obj.namespace().to_string();
        let targets: Vec<String> = match event.resource.shape {
            Shape::ReplicaSet => vec![obj.name().to_string()],
            Shape::Pod => {
                let mut names: Vec<String> = objects::controller_name(&obj.value, "ReplicaSet")
                    .map(str::to_string)
                    .into_iter()
                    .collect();
                // An orphan (or a pod whose owner was dropped) may be adopted.
                if names.is_empty() && pod_active(&obj.value) {
                    let rs_rt = resources::by_shape(Shape::ReplicaSet);
                    names = store.read(|s| {
                        s.list(rs_rt, Some(&ns), None)
                            .filter(|rs| {
                                objects::selector(&rs.value["spec"]["selector"]).is_some_and(
                                    |sel| sel.matches(&obj.value["metadata"]["labels"]),
                                )
                            })
                            .map(|rs| rs.name().to_string())
                            .collect()
                    });
                }
                names
            }
            _ => return,
        };
        for name in targets {
            log(&ns, &name, store.write(|s| reconcile(s, &ns, &name)));
        }
    }
}
