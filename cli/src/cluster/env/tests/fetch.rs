//! `container_env` against a fake API server: what it reads, and what a refusal says.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use super::super::{EnvError, container_env};
use super::pod;

/// An API server that answers `GET path` from `objects` (404 otherwise, 403 for the paths
/// in `forbidden`), and records every path asked for.
struct Fake {
    objects: Vec<(String, Value)>,
    forbidden: Vec<String>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn new() -> Self {
        let list = |kind: &str, items: Value| json!({"kind": kind, "metadata": {}, "items": items});
        Fake {
            objects: vec![
                (
                    "/api/v1/namespaces/default/services/kubernetes".into(),
                    json!({"metadata": {"name": "kubernetes", "namespace": "default"},
                           "spec": {"clusterIP": "10.96.0.1",
                                    "ports": [{"name": "https", "port": 443}]}}),
                ),
                (
                    "/api/v1/namespaces/demo/services".into(),
                    list(
                        "ServiceList",
                        json!([{"metadata": {"name": "api", "namespace": "demo"},
                                "spec": {"clusterIP": "10.96.40.2", "ports": [{"port": 8080}]}}]),
                    ),
                ),
                (
                    "/api/v1/namespaces/demo/configmaps/settings".into(),
                    json!({"metadata": {"name": "settings", "namespace": "demo"},
                           "data": {"MODE": "dev"}}),
                ),
                (
                    "/api/v1/namespaces/demo/secrets/db-pass".into(),
                    // "hunter2"
                    json!({"metadata": {"name": "db-pass", "namespace": "demo"},
                           "data": {"password": "aHVudGVyMg=="}}),
                ),
                (
                    "/api/v1/nodes/node-1".into(),
                    json!({"metadata": {"name": "node-1"},
                           "status": {"allocatable": {"cpu": "4", "memory": "8Gi"}}}),
                ),
            ],
            forbidden: Vec::new(),
            asked: Arc::default(),
        }
    }

    fn forbid(mut self, path: &str) -> Self {
        self.forbidden.push(path.into());
        self
    }

    fn client(&self) -> kube::Client {
        let objects = self.objects.clone();
        let forbidden = self.forbidden.clone();
        let asked = Arc::clone(&self.asked);
        let service = tower::service_fn(move |req: Request<Body>| {
            let path = req.uri().path().to_string();
            if let Ok(mut asked) = asked.lock() {
                asked.push(path.clone());
            }
            let (code, body) = if forbidden.contains(&path) {
                (
                    403,
                    status(403, "Forbidden", "secrets \"db-pass\" is forbidden"),
                )
            } else if let Some((_, object)) = objects.iter().find(|(p, _)| *p == path) {
                (200, object.clone())
            } else {
                (404, status(404, "NotFound", "not found"))
            };
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string().into_bytes()));
            async move { Ok::<_, Infallible>(response.expect("a response")) }
        });
        kube::Client::new(service, "default")
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn web() -> k8s_openapi::api::core::v1::Pod {
    pod(json!([{"name": "app",
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "env": [
            {"name": "DB_PASSWORD",
             "valueFrom": {"secretKeyRef": {"name": "db-pass", "key": "password"}}},
            {"name": "EXTRA", "valueFrom":
                {"configMapKeyRef": {"name": "optional-extra", "key": "k", "optional": true}}},
            {"name": "API", "value": "http://$(API_SERVICE_HOST):$(API_SERVICE_PORT)"},
        ],
    }]))
}

#[tokio::test]
async fn reads_the_referenced_objects_and_resolves() {
    let fake = Fake::new();
    let env = container_env(&fake.client(), &web(), "app")
        .await
        .expect("the environment");
    assert_eq!(env.get("MODE"), Some("dev"));
    assert_eq!(env.get("DB_PASSWORD"), Some("hunter2"));
    assert_eq!(env.get("EXTRA"), None);
    assert_eq!(env.get("API"), Some("http://10.96.40.2:8080"));
    assert_eq!(env.get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
    let mut asked = fake.asked();
    asked.sort();
    assert_eq!(
        asked,
        [
            "/api/v1/namespaces/default/services/kubernetes",
            "/api/v1/namespaces/demo/configmaps/optional-extra",
            "/api/v1/namespaces/demo/configmaps/settings",
            "/api/v1/namespaces/demo/secrets/db-pass",
            "/api/v1/namespaces/demo/services",
        ],
        "no Node is read when no limit falls back to it"
    );
}

#[tokio::test]
async fn reads_the_node_only_for_a_missing_limit() {
    let fake = Fake::new();
    let p = pod(json!([{"name": "app", "env": [{"name": "MEM", "valueFrom":
        {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}}]}]));
    let env = container_env(&fake.client(), &p, "app")
        .await
        .expect("the environment");
    assert_eq!(env.get("MEM"), Some("8192"));
    assert!(fake.asked().contains(&"/api/v1/nodes/node-1".to_string()));
}

#[tokio::test]
async fn a_refusal_names_the_object_and_the_grant_to_ask_for() {
    let fake = Fake::new().forbid("/api/v1/namespaces/demo/secrets/db-pass");
    let err = container_env(&fake.client(), &web(), "app")
        .await
        .expect_err("forbidden");
    assert!(matches!(err, EnvError::Forbidden { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot read Secret demo/db-pass: forbidden; ask for get on secrets in namespace demo"
    );
    // The API server's own words stay reachable as the source.
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(source.is_some_and(|s| s.contains("forbidden")));

    let fake = Fake::new().forbid("/api/v1/namespaces/demo/services");
    let err = container_env(&fake.client(), &web(), "app")
        .await
        .expect_err("forbidden");
    assert_eq!(
        err.to_string(),
        "cannot list Services in namespace demo: forbidden; ask for list on services in \
         namespace demo"
    );

    let fake = Fake::new().forbid("/api/v1/nodes/node-1");
    let p = pod(json!([{"name": "app", "env": [{"name": "CPU", "valueFrom":
        {"resourceFieldRef": {"resource": "limits.cpu"}}}]}]));
    let err = container_env(&fake.client(), &p, "app")
        .await
        .expect_err("forbidden");
    assert_eq!(
        err.to_string(),
        "cannot read Node node-1: forbidden; ask for get on nodes (cluster-wide)"
    );
}

#[tokio::test]
async fn a_missing_required_object_is_named() {
    let p = pod(json!([{"name": "app", "envFrom": [{"configMapRef": {"name": "absent"}}]}]));
    let err = container_env(&Fake::new().client(), &p, "app")
        .await
        .expect_err("not found");
    assert_eq!(
        err.to_string(),
        "ConfigMap demo/absent not found; container app reads it and does not mark it optional"
    );
}

#[tokio::test]
async fn service_links_off_lists_no_services() {
    let fake = Fake::new();
    let mut p = pod(json!([{"name": "app"}]));
    if let Some(spec) = p.spec.as_mut() {
        spec.enable_service_links = Some(false);
    }
    let env = container_env(&fake.client(), &p, "app")
        .await
        .expect("the environment");
    assert_eq!(env.get("API_SERVICE_HOST"), None);
    assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
    assert_eq!(
        fake.asked(),
        ["/api/v1/namespaces/default/services/kubernetes"]
    );
}
