//! The scheduler of the builtin control plane: every pod without `spec.nodeName` is bound to
//! the one node, once that node has registered (the node's kubelet, an API client like the
//! upstream one, only ever sees pods bound to it). Node selectors, affinity and taints are
//! not looked at: there is nowhere else to go.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Controller;
use crate::admission;
use crate::bootstrap::NODE_NAME;
use crate::resources::{self, Shape};
use crate::store::{Event, EventType, Store, Stored};

pub struct Scheduler;

fn node_registered(store: &Store) -> bool {
    let rt = resources::by_shape(Shape::Node);
    store.read(|s| s.get(rt, "", NODE_NAME).is_some())
}

fn unbound(pod: &Value) -> bool {
    pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
        && pod["metadata"]["deletionTimestamp"].is_null()
}

/// Binds a pod to the node, as the scheduler's Binding does: `spec.nodeName` and the
/// PodScheduled condition.
fn bind(store: &Store, pod: &Stored) {
    let rt = resources::by_shape(Shape::Pod);
    let (ns, name, uid) = (pod.namespace(), pod.name(), pod.uid());
    let _ = store.write(|s| {
        let Some(cur) = s.get(rt, ns, name).filter(|p| p.uid() == uid).cloned() else {
            return Ok::<_, ()>(());
        };
        if !unbound(&cur.value) {
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

impl Controller for Scheduler {
    fn resync(&mut self, store: &Store) {
        if !node_registered(store) {
            return;
        }
        let rt = resources::by_shape(Shape::Pod);
        let pods: Vec<Arc<Stored>> = store.read(|s| {
            s.list(rt, None, None)
                .filter(|p| unbound(&p.value))
                .cloned()
                .collect()
        });
        for pod in pods {
            bind(store, &pod);
        }
    }

    fn on_event(&mut self, store: &Store, event: &Event) {
        match (event.resource.shape, event.kind) {
            // The node registered: whatever waited for it is bound now.
            (Shape::Node, EventType::Added) => self.resync(store),
            (Shape::Pod, EventType::Added | EventType::Modified)
                if unbound(&event.object.value) && node_registered(store) =>
            {
                bind(store, &event.object);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(store: &Store, name: &str) -> Value {
        let rt = resources::by_shape(Shape::Pod);
        store
            .read(|s| s.get(rt, "default", name).map(|p| p.value.clone()))
            .unwrap_or_default()
    }

    #[test]
    fn pods_are_bound_once_the_node_has_registered() {
        let store = Store::new(0);
        let pods = resources::by_shape(Shape::Pod);
        let nodes = resources::by_shape(Shape::Node);
        store.write(|s| {
            s.put(pods, json!({"metadata": {"name": "p", "namespace": "default", "uid": "u1"}, "spec": {}}));
            Ok::<_, ()>(())
        })
        .unwrap();
        let mut scheduler = Scheduler;
        scheduler.resync(&store);
        assert!(
            pod(&store, "p")["spec"]["nodeName"].is_null(),
            "no node yet"
        );
        store
            .write(|s| {
                s.put(nodes, json!({"metadata": {"name": NODE_NAME}}));
                Ok::<_, ()>(())
            })
            .unwrap();
        scheduler.resync(&store);
        let bound = pod(&store, "p");
        assert_eq!(bound["spec"]["nodeName"], NODE_NAME);
        assert_eq!(bound["status"]["phase"], "Pending");
        assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
    }
}
