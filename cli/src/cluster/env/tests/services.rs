//! The Service variables: which Services, and the names and values of their variables.

use serde_json::json;

use super::{
    NS, env_of, inputs, lines, map, needs, pod, pod_with, service, typed, without_services,
};

/// The demo's two shapes: `web` with a named port, `api` with a single unnamed port (and a
/// NodePort, which adds nothing). This is the `sort`ed output of `kubectl exec ... -- env`
/// for those keys.
#[test]
fn service_variables_match_kubectl_exec_env() {
    let mut inputs = inputs();
    inputs.services = vec![
        service(
            NS,
            "web",
            "10.96.12.7",
            json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]),
        ),
        typed(json!({
            "metadata": {"name": "api", "namespace": NS},
            "spec": {"type": "NodePort", "clusterIP": "10.96.40.2",
                     "ports": [{"port": 8080, "targetPort": 8080, "nodePort": 30080}]},
        })),
    ];
    let env = env_of(&pod(json!([{"name": "app"}])), &inputs);
    assert_eq!(
        lines(&env),
        [
            "API_PORT=tcp://10.96.40.2:8080",
            "API_PORT_8080_TCP=tcp://10.96.40.2:8080",
            "API_PORT_8080_TCP_ADDR=10.96.40.2",
            "API_PORT_8080_TCP_PORT=8080",
            "API_PORT_8080_TCP_PROTO=tcp",
            "API_SERVICE_HOST=10.96.40.2",
            "API_SERVICE_PORT=8080",
            "KUBERNETES_PORT=tcp://10.96.0.1:443",
            "KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443",
            "KUBERNETES_PORT_443_TCP_ADDR=10.96.0.1",
            "KUBERNETES_PORT_443_TCP_PORT=443",
            "KUBERNETES_PORT_443_TCP_PROTO=tcp",
            "KUBERNETES_SERVICE_HOST=10.96.0.1",
            "KUBERNETES_SERVICE_PORT=443",
            "KUBERNETES_SERVICE_PORT_HTTPS=443",
            "WEB_PORT=tcp://10.96.12.7:80",
            "WEB_PORT_80_TCP=tcp://10.96.12.7:80",
            "WEB_PORT_80_TCP_ADDR=10.96.12.7",
            "WEB_PORT_80_TCP_PORT=80",
            "WEB_PORT_80_TCP_PROTO=tcp",
            "WEB_SERVICE_HOST=10.96.12.7",
            "WEB_SERVICE_PORT=80",
            "WEB_SERVICE_PORT_HTTP=80",
        ]
    );
    assert_eq!(env.len(), 23);
    assert!(!env.is_empty());
}

#[test]
fn every_port_gets_link_variables_and_the_first_is_the_default() {
    let mut inputs = inputs();
    inputs.services = vec![service(
        NS,
        "my-db",
        "10.96.0.7",
        json!([
            {"name": "pg", "port": 5432},
            {"name": "stats-udp", "port": 9187, "protocol": "UDP"},
            {"name": "sig", "port": 7777, "protocol": "SCTP"},
        ]),
    )];
    let env = without_services(&env_of(&pod(json!([{"name": "app"}])), &inputs));
    assert_eq!(
        env,
        map(&[
            ("MY_DB_SERVICE_HOST", "10.96.0.7"),
            ("MY_DB_SERVICE_PORT", "5432"),
            ("MY_DB_SERVICE_PORT_PG", "5432"),
            ("MY_DB_SERVICE_PORT_STATS_UDP", "9187"),
            ("MY_DB_SERVICE_PORT_SIG", "7777"),
            ("MY_DB_PORT", "tcp://10.96.0.7:5432"),
            ("MY_DB_PORT_5432_TCP", "tcp://10.96.0.7:5432"),
            ("MY_DB_PORT_5432_TCP_PROTO", "tcp"),
            ("MY_DB_PORT_5432_TCP_PORT", "5432"),
            ("MY_DB_PORT_5432_TCP_ADDR", "10.96.0.7"),
            ("MY_DB_PORT_9187_UDP", "udp://10.96.0.7:9187"),
            ("MY_DB_PORT_9187_UDP_PROTO", "udp"),
            ("MY_DB_PORT_9187_UDP_PORT", "9187"),
            ("MY_DB_PORT_9187_UDP_ADDR", "10.96.0.7"),
            ("MY_DB_PORT_7777_SCTP", "sctp://10.96.0.7:7777"),
            ("MY_DB_PORT_7777_SCTP_PROTO", "sctp"),
            ("MY_DB_PORT_7777_SCTP_PORT", "7777"),
            ("MY_DB_PORT_7777_SCTP_ADDR", "10.96.0.7"),
        ])
    );
}

#[test]
fn an_ipv6_cluster_ip_is_bracketed_in_urls_only() {
    let mut inputs = inputs();
    inputs.services = vec![service(NS, "v6", "fd00:10:96::a", json!([{"port": 80}]))];
    let env = env_of(&pod(json!([{"name": "app"}])), &inputs);
    assert_eq!(env.get("V6_SERVICE_HOST"), Some("fd00:10:96::a"));
    assert_eq!(env.get("V6_PORT"), Some("tcp://[fd00:10:96::a]:80"));
    assert_eq!(env.get("V6_PORT_80_TCP"), Some("tcp://[fd00:10:96::a]:80"));
    assert_eq!(env.get("V6_PORT_80_TCP_ADDR"), Some("fd00:10:96::a"));
}

#[test]
fn headless_external_name_and_foreign_services_give_nothing() {
    let mut inputs = inputs();
    inputs.services = vec![
        service(NS, "headless", "None", json!([{"port": 80}])),
        typed(json!({
            "metadata": {"name": "ext", "namespace": NS},
            "spec": {"type": "ExternalName", "externalName": "example.com",
                     "ports": [{"port": 80}]},
        })),
        service(NS, "no-ip-yet", "", json!([{"port": 80}])),
        service("other", "elsewhere", "10.96.9.9", json!([{"port": 80}])),
    ];
    let env = env_of(&pod(json!([{"name": "app"}])), &inputs);
    assert!(without_services(&env).is_empty(), "{:?}", lines(&env));
    assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
}

#[test]
fn service_links_off_keeps_only_the_api_service() {
    let mut inputs = inputs();
    inputs.services = vec![service(NS, "web", "10.96.12.7", json!([{"port": 80}]))];
    let off = pod_with(
        json!([{"name": "app"}]),
        json!({"enableServiceLinks": false}),
    );
    let env = env_of(&off, &inputs);
    assert_eq!(env.get("WEB_SERVICE_HOST"), None);
    assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
    assert!(!needs(&off, "app").expect("needs").service_links);
    // Unset means on, the API's default.
    let mut unset = pod(json!([{"name": "app"}]));
    if let Some(spec) = unset.spec.as_mut() {
        spec.enable_service_links = None;
    }
    assert_eq!(env_of(&unset, &inputs).get("WEB_SERVICE_PORT"), Some("80"));
    // A cluster without default/kubernetes (or one the reader may not see) gives none.
    inputs.kubernetes = None;
    assert_eq!(env_of(&off, &inputs).len(), 0);
}

/// As in the kubelet's own tests: the pod's namespace's `kubernetes` Service, when linked,
/// replaces the one in `default`; unlinked or headless, it does not.
#[test]
fn a_kubernetes_service_of_the_pods_namespace_takes_precedence() {
    let mut inputs = inputs();
    inputs.services = vec![service(
        NS,
        "kubernetes",
        "10.96.3.4",
        json!([{"port": 8084}]),
    )];
    let linked = env_of(&pod(json!([{"name": "app"}])), &inputs);
    assert_eq!(linked.get("KUBERNETES_SERVICE_HOST"), Some("10.96.3.4"));
    assert_eq!(linked.get("KUBERNETES_SERVICE_PORT"), Some("8084"));
    assert_eq!(linked.get("KUBERNETES_SERVICE_PORT_HTTPS"), None);
    let off = pod_with(
        json!([{"name": "app"}]),
        json!({"enableServiceLinks": false}),
    );
    assert_eq!(
        env_of(&off, &inputs).get("KUBERNETES_SERVICE_HOST"),
        Some("10.96.0.1")
    );
    inputs.services = vec![service(NS, "kubernetes", "None", json!([{"port": 8084}]))];
    let headless = env_of(&pod(json!([{"name": "app"}])), &inputs);
    assert_eq!(headless.get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
}
