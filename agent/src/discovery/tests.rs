//! The probe's fallbacks against a fake API server: clusters without the ServiceCIDR API,
//! without permission for the dry-run, and with CNIs that leave nodes' podCIDRs empty. The
//! sandbox has all of those APIs, so these paths are only reachable here.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use super::*;

/// Answers for the fake API server: (method, path) -> (status code, body).
type Routes = fn(&str, &str) -> (u16, Value);

/// A client whose every request is answered by `routes`; the requests are recorded as
/// `METHOD path?query`.
fn fake(routes: Routes) -> (Client, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let line = format!("{} {}", req.method(), req.uri());
        log.lock().unwrap().push(line);
        let (code, body) = routes(req.method().as_str(), req.uri().path());
        async move {
            Ok::<_, Infallible>(
                http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .unwrap(),
            )
        }
    });
    (Client::new(service, "tether"), seen)
}

fn list(kind: &str, items: Value) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "7"}, "items": items})
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

const OUT_OF_RANGE: &str = r#"Service "tether-cidr-probe" is invalid: spec.clusterIPs: Invalid value: []string{"1.1.1.1"}: failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is 10.43.0.0/16"#;

/// Nodes without podCIDRs, pods on two nodes' ranges and one on the host network.
fn pods_without_node_cidrs(path: &str) -> Option<(u16, Value)> {
    match path {
        "/api/v1/nodes" => Some((
            200,
            list("NodeList", json!([{"metadata": {"name": "a"}, "spec": {}}])),
        )),
        "/api/v1/pods" => Some((
            200,
            list(
                "PodList",
                json!([
                    {"metadata": {"name": "p1", "namespace": "x"}, "status": {"podIP": "192.168.7.20"}},
                    {"metadata": {"name": "p2", "namespace": "x"}, "status": {"podIPs": [{"ip": "192.168.12.3"}]}},
                    {"metadata": {"name": "h", "namespace": "kube-system"},
                     "spec": {"hostNetwork": true, "containers": []}, "status": {"podIP": "172.31.0.9"}},
                ]),
            ),
        )),
        _ => None,
    }
}

#[tokio::test]
async fn without_the_service_cidr_api_the_out_of_range_error_names_the_range() {
    let (client, seen) = fake(|method, path| match (method, path) {
        (_, "/apis/networking.k8s.io/v1/servicecidrs") => (
            404,
            status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        ),
        ("POST", "/api/v1/namespaces/tether/services") => {
            (422, status(422, "Invalid", OUT_OF_RANGE))
        }
        (_, path) => pods_without_node_cidrs(path).unwrap_or((404, status(404, "NotFound", path))),
    });
    let found = Discovery::new(client, "tether").probe().await.unwrap();
    assert_eq!(
        found,
        Discovered {
            service_cidrs: nets(&["10.43.0.0/16"]),
            service_source: ServiceCidrSource::OutOfRangeError,
            // 192.168.7.20 and 192.168.12.3 share 192.168.0.0/20; the host-network pod's
            // address is its node's and stays out.
            pod_cidrs: nets(&["192.168.0.0/20"]),
            pod_source: PodCidrSource::PodIps,
        }
    );
    let seen = seen.lock().unwrap();
    let post = seen
        .iter()
        .find(|l| l.starts_with("POST"))
        .expect("a dry-run create");
    assert!(post.contains("dryRun=All"), "{post}");
}

#[tokio::test]
async fn when_everything_else_is_forbidden_the_cluster_ips_are_covered() {
    let (client, _) = fake(|method, path| match (method, path) {
        (_, "/apis/networking.k8s.io/v1/servicecidrs") => (
            403,
            status(
                403,
                "Forbidden",
                "servicecidrs.networking.k8s.io is forbidden",
            ),
        ),
        ("POST", _) => (403, status(403, "Forbidden", "services is forbidden")),
        ("GET", "/api/v1/services") => (
            200,
            list(
                "ServiceList",
                json!([
                    {"metadata": {"name": "kubernetes", "namespace": "default"}, "spec": {"clusterIP": "172.20.0.1"}},
                    {"metadata": {"name": "web", "namespace": "shop"}, "spec": {"clusterIPs": ["172.20.81.4"]}},
                    {"metadata": {"name": "db", "namespace": "shop"}, "spec": {"clusterIP": "None"}},
                ]),
            ),
        ),
        ("GET", "/api/v1/nodes") => (
            200,
            list(
                "NodeList",
                json!([{"metadata": {"name": "a"}, "spec": {"podCIDR": "10.1.4.0/24"}}]),
            ),
        ),
        (_, path) => (404, status(404, "NotFound", path)),
    });
    let found = Discovery::new(client, "tether").probe().await.unwrap();
    assert_eq!(found.service_source, ServiceCidrSource::ClusterIps);
    assert_eq!(found.service_cidrs, nets(&["172.20.0.0/17"]));
    assert_eq!(found.pod_source, PodCidrSource::NodeSpecs);
    assert_eq!(found.pod_cidrs, nets(&["10.1.4.0/24"]));
    assert_eq!(found.subnets(), nets(&["10.1.4.0/24", "172.20.0.0/17"]));
}

#[tokio::test]
async fn an_empty_service_cidr_list_falls_back_too() {
    let (client, _) = fake(|method, path| match (method, path) {
        (_, "/apis/networking.k8s.io/v1/servicecidrs") => (200, list("ServiceCIDRList", json!([]))),
        ("POST", _) => (422, status(422, "Invalid", OUT_OF_RANGE)),
        (_, path) => pods_without_node_cidrs(path).unwrap_or((404, status(404, "NotFound", path))),
    });
    let found = Discovery::new(client, "tether").probe().await.unwrap();
    assert_eq!(found.service_source, ServiceCidrSource::OutOfRangeError);
}

#[tokio::test]
async fn a_failing_api_server_is_an_error_not_a_fallback() {
    let (client, _) = fake(|_, _| (500, status(500, "InternalError", "etcd is down")));
    let err = Discovery::new(client, "tether").probe().await.unwrap_err();
    assert!(
        matches!(
            err,
            DiscoveryError::List {
                what: "ServiceCIDRs",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn subnets_merge_both_halves() {
    let found = Discovered {
        service_cidrs: nets(&["10.96.0.0/16"]),
        service_source: ServiceCidrSource::ServiceCidrObjects,
        pod_cidrs: nets(&["10.244.0.0/24", "10.96.3.0/24", "10.244.0.0/24"]),
        pod_source: PodCidrSource::NodeSpecs,
    };
    assert_eq!(found.subnets(), nets(&["10.96.0.0/16", "10.244.0.0/24"]));
}
