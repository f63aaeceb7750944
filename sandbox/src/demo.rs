//! `tether-sandbox up --demo`: the `demo` namespace (see `demo/demo.yaml`) and the ingress
//! controller it uses (`demo/ingress-nginx.yaml`), created when missing at each start, and the
//! wait until their workloads can take traffic, so `up --demo` returns a cluster a newcomer
//! can use at once.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::admission::{self, FieldValidation};
use crate::error::ApiError;
use crate::resources::{self, Shape};
use crate::store::Store;

const MANIFEST: &str = include_str!("demo/demo.yaml");
const INGRESS_MANIFEST: &str = include_str!("demo/ingress-nginx.yaml");
pub const NAMESPACE: &str = "demo";
/// The ingress controller's namespace and Deployment.
pub const INGRESS_NAMESPACE: &str = "ingress-nginx";
const INGRESS_CONTROLLER: &str = "ingress-nginx-controller";

/// The objects of the demo, in creation order: the ingress controller (and its default
/// IngressClass) first, so the demo's Ingress finds its class.
pub(crate) fn objects() -> Vec<Value> {
    // The manifests are part of the binary and parsed by a unit test.
    let mut out =
        serde_saphyr::from_multiple::<Value>(INGRESS_MANIFEST).expect("ingress-nginx.yaml parses");
    out.extend(serde_saphyr::from_multiple::<Value>(MANIFEST).expect("demo.yaml parses"));
    out
}

/// Creates the demo objects that are missing (edits a user made to existing ones are kept).
pub fn apply(store: &Store) -> Result<(), ApiError> {
    for obj in objects() {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let rt = resources::served()
            .find(|rt| rt.kind == kind && rt.api_version() == api_version)
            .ok_or_else(|| {
                ApiError::BadRequest(format!("demo.yaml: no type {api_version} {kind}"))
            })?;
        let namespace = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        store.write(|s| {
            if s.get(rt, &namespace, &name).is_some() {
                return Ok(());
            }
            let (stored, _) =
                admission::admit_create(s, rt, &namespace, obj, FieldValidation::Strict)?;
            s.put(rt, stored);
            Ok::<_, ApiError>(())
        })?;
    }
    Ok(())
}

/// What is not ready yet, or `None` when every demo workload and the ingress controller are
/// (except `flaky`, which is meant never to be ready).
fn pending(store: &Store) -> Option<String> {
    store.read(|s| {
        let deployments = resources::by_shape(Shape::Deployment);
        for d in s.list(deployments, Some(NAMESPACE), None) {
            if d.name() == "flaky" {
                continue;
            }
            let want = d.value["spec"]["replicas"].as_i64().unwrap_or(1);
            let have = d.value["status"]["availableReplicas"].as_i64().unwrap_or(0);
            if have < want {
                return Some(format!(
                    "deployment {} has {have}/{want} available",
                    d.name()
                ));
            }
        }
        let controller = s.get(deployments, INGRESS_NAMESPACE, INGRESS_CONTROLLER);
        let available = controller
            .is_some_and(|d| d.value["status"]["availableReplicas"].as_i64().unwrap_or(0) >= 1);
        if !available {
            return Some(format!(
                "deployment {INGRESS_NAMESPACE}/{INGRESS_CONTROLLER} (the ingress controller) is not available"
            ));
        }
        let pods = resources::by_shape(Shape::Pod);
        for name in ["db-0", "db-1"] {
            let ready = s.get(pods, NAMESPACE, name).is_some_and(|p| {
                p.value["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if !ready {
                return Some(format!("pod {name} is not ready"));
            }
        }
        None
    })
}

/// Waits until the demo workloads are ready; the error says what still was not.
pub async fn wait_ready(store: &Store, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut events = store.events();
    loop {
        let Some(what) = pending(store) else {
            return Ok(());
        };
        // Any event (or a lag) is a reason to look again.
        match tokio::time::timeout_at(deadline.into(), events.recv()).await {
            Err(_) => return Err(what),
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return Err(what),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_is_admitted_and_idempotent() {
        let store = Store::new(0);
        crate::bootstrap::run(&store).unwrap();
        apply(&store).unwrap();
        let rv = store.read(|s| s.rv());
        apply(&store).unwrap();
        assert_eq!(store.read(|s| s.rv()), rv);
        let svc = resources::by_shape(Shape::Service);
        let names: Vec<String> = store.read(|s| {
            s.list(svc, Some(NAMESPACE), None)
                .map(|o| o.name().to_string())
                .collect()
        });
        for want in ["web", "flaky", "api", "db", "legacy", "udp"] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        let ing = resources::by_shape(Shape::Ingress);
        let shop = store.read(|s| s.get(ing, NAMESPACE, "shop").map(|o| o.value.clone()));
        assert_eq!(shop.unwrap()["spec"]["ingressClassName"], "nginx");
        let svc_rt = resources::by_shape(Shape::Service);
        let lb = store.read(|s| {
            s.get(svc_rt, INGRESS_NAMESPACE, INGRESS_CONTROLLER)
                .map(|o| o.value.clone())
        });
        assert_eq!(lb.unwrap()["spec"]["type"], "LoadBalancer");
        assert!(pending(&store).is_some());
    }
}
