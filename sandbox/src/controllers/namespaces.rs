//! Per-namespace housekeeping, as the ServiceAccount, root-CA-publisher and namespace
//! controllers do it: every active namespace has a `default` ServiceAccount and a
//! `kube-root-ca.crt` ConfigMap; a namespace being deleted has its contents deleted, and goes
//! when they are gone.

use serde_json::{Value, json};

use super::Controller;
use crate::admission::{self, FieldValidation};
use crate::error::ApiError;
use crate::lifecycle::{self, DeleteOptions};
use crate::resources::{self, Shape};
use crate::store::{Event, State, Store};

pub struct Namespaces {
    pub ca_pem: String,
}

pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

fn terminating(ns: &Value) -> bool {
    !ns["metadata"]["deletionTimestamp"].is_null()
}

impl Namespaces {
    /// Creates the default ServiceAccount and root CA ConfigMap of an active namespace.
    fn populate(&self, state: &mut State, namespace: &str) -> Result<(), ApiError> {
        let ns_rt = resources::by_shape(Shape::Namespace);
        if state
            .get(ns_rt, "", namespace)
            .is_none_or(|ns| terminating(&ns.value))
        {
            return Ok(());
        }
        let wanted = [
            (
                Shape::ServiceAccount,
                json!({"metadata": {"name": "default"}}),
            ),
            (
                Shape::ConfigMap,
                json!({"metadata": {"name": ROOT_CA_CONFIGMAP, "annotations": {"kubernetes.io/description":
                    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                    "data": {"ca.crt": self.ca_pem}}),
            ),
        ];
        for (shape, body) in wanted {
            let rt = resources::by_shape(shape);
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if state.get(rt, namespace, &name).is_none() {
                let (obj, _) =
                    admission::admit_create(state, rt, namespace, body, FieldValidation::Strict)?;
                state.put(rt, obj);
            }
        }
        Ok(())
    }

    /// Deletes what a terminating namespace still holds; removes the namespace when empty.
    fn finish(&self, state: &mut State, namespace: &str) -> Result<(), ApiError> {
        let ns_rt = resources::by_shape(Shape::Namespace);
        let Some(ns) = state.get(ns_rt, "", namespace).cloned() else {
            return Ok(());
        };
        if !terminating(&ns.value) {
            return Ok(());
        }
        let contents: Vec<_> = resources::served()
            .filter(|rt| rt.namespaced)
            .flat_map(|rt| {
                state
                    .list(rt, Some(namespace), None)
                    .map(move |o| (rt, o.name().to_string(), terminating(&o.value)))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (rt, name, being_deleted) in contents {
            if !being_deleted {
                lifecycle::delete(state, rt, namespace, &name, &DeleteOptions::default())?;
            }
        }
        // Objects held by finalizers keep the namespace until they go; each of their DELETED
        // events brings the controller back here.
        let empty = resources::served()
            .filter(|rt| rt.namespaced)
            .all(|rt| state.list(rt, Some(namespace), None).next().is_none());
        if empty && let Some(ns) = state.get(ns_rt, "", namespace).cloned() {
            let mut value = ns.value.clone();
            value["spec"]["finalizers"] = json!([]);
            lifecycle::store_update(state, ns_rt, value);
        }
        Ok(())
    }

    fn reconcile(&self, store: &Store, namespace: &str) {
        let result = store.write(|s| {
            self.finish(s, namespace)?;
            self.populate(s, namespace)
        });
        if let Err(e) = result {
            tracing::warn!("namespace controller ({namespace}): {e}");
        }
    }
}

impl Controller for Namespaces {
    fn resync(&mut self, store: &Store) {
        let ns_rt = resources::by_shape(Shape::Namespace);
        let names: Vec<String> = store.read(|s| {
            s.list(ns_rt, None, None)
                .map(|n| n.name().to_string())
                .collect()
        });
        for name in names {
            self.reconcile(store, &name);
        }
    }

    fn on_event(&mut self, store: &Store, event: &Event) {
        let obj = &event.object;
        if event.resource.shape == Shape::Namespace {
            self.reconcile(store, obj.name());
            return;
        }
        // A deleted object may have been the last one of a terminating namespace, or the
        // default ServiceAccount or CA ConfigMap, which come back.
        if event.kind == crate::store::EventType::Deleted && event.resource.namespaced {
            self.reconcile(store, obj.namespace());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_get_defaults_and_delete_their_contents() {
        let store = Store::new(0);
        let ns_rt = resources::by_shape(Shape::Namespace);
        let cm = resources::by_shape(Shape::ConfigMap);
        let sa = resources::by_shape(Shape::ServiceAccount);
        store
            .write(|s| {
                let (obj, _) = admission::admit_create(
                    s,
                    ns_rt,
                    "",
                    json!({"metadata": {"name": "shop"}}),
                    FieldValidation::Strict,
                )?;
                s.put(ns_rt, obj);
                Ok::<_, ApiError>(())
            })
            .unwrap();
        let mut c = Namespaces {
            ca_pem: "PEM".into(),
        };
        c.resync(&store);
        assert!(store.read(|s| s.get(sa, "shop", "default").is_some()));
        assert_eq!(
            store.read(|s| s
                .get(cm, "shop", ROOT_CA_CONFIGMAP)
                .map(|o| o.value["data"]["ca.crt"].clone())),
            Some(json!("PEM"))
        );

        let held = store
            .write(|s| lifecycle::delete(s, ns_rt, "", "shop", &DeleteOptions::default()))
            .unwrap();
        assert_eq!(held.value["status"]["phase"], "Terminating");
        c.resync(&store);
        assert!(store.read(|s| s.get(sa, "shop", "default").is_none()));
        assert!(store.read(|s| s.get(ns_rt, "", "shop").is_none()));
    }
}
