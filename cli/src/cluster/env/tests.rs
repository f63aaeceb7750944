//! The resolver, rule by rule, with typed objects and no cluster. The expected values are
//! what the kubelet gives the process (`kubectl exec POD -- env`), worked out from its code.

mod downward;
mod fetch;
mod services;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use serde_json::{Value, json};

use super::{Env, EnvError, Inputs, Needs, needs, resolve};

const NS: &str = "demo";

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

/// A running pod of `web` with the given containers (as JSON container specs).
fn pod(containers: Value) -> Pod {
    pod_with(containers, json!({}))
}

/// Like [`pod`], with more fields merged into the spec.
fn pod_with(containers: Value, spec: Value) -> Pod {
    let mut full = json!({
        "nodeName": "node-1",
        "serviceAccountName": "web",
        "enableServiceLinks": true,
        "containers": containers,
    });
    if let (Some(full), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
        full.extend(extra.clone());
    }
    typed(json!({
        "metadata": {
            "name": "web-7d9f-x2b", "namespace": NS, "uid": "6f1c-uid",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"example.com/owner": "team a"},
        },
        "spec": full,
        "status": {
            "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00:10:244::5"}],
            "hostIP": "172.18.0.2", "hostIPs": [{"ip": "172.18.0.2"}, {"ip": "fc00:f853::2"}],
        },
    }))
}

fn service(namespace: &str, name: &str, ip: &str, ports: Value) -> Service {
    typed(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": ip, "ports": ports},
    }))
}

fn kubernetes() -> Service {
    service(
        "default",
        "kubernetes",
        "10.96.0.1",
        json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]),
    )
}

fn config_map(name: &str, data: &[(&str, &str)]) -> (String, ConfigMap) {
    let data: BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cm = typed(json!({"metadata": {"name": name, "namespace": NS}, "data": data}));
    (name.to_string(), cm)
}

fn secret(name: &str, data: &[(&str, &[u8])]) -> (String, Secret) {
    let mut s: Secret = typed(json!({"metadata": {"name": name, "namespace": NS}}));
    s.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
            .collect(),
    );
    (name.to_string(), s)
}

fn inputs() -> Inputs {
    Inputs {
        kubernetes: Some(kubernetes()),
        ..Inputs::default()
    }
}

fn env_of(pod: &Pod, inputs: &Inputs) -> Env {
    resolve(pod, "app", inputs).expect("the environment")
}

/// An env var read from a `resourceFieldRef`.
fn resource(name: &str, resource: &str, divisor: Option<&str>, container: Option<&str>) -> Value {
    let mut r = json!({"resource": resource});
    if let Some(d) = divisor {
        r["divisor"] = json!(d);
    }
    if let Some(c) = container {
        r["containerName"] = json!(c);
    }
    json!({"name": name, "valueFrom": {"resourceFieldRef": r}})
}

/// The variables as `kubectl exec -- env | sort` lists them.
fn lines(env: &Env) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn without_services(env: &Env) -> BTreeMap<String, String> {
    env.iter()
        .filter(|(k, _)| !k.starts_with("KUBERNETES_"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn env_from_takes_every_key_with_its_prefix_later_sources_winning() {
    let mut inputs = inputs();
    inputs.config_maps.extend([config_map(
        "settings",
        &[
            ("MODE", "dev"),
            ("SHARED", "from-cm"),
            ("1234", "digits"),
            ("a.b-c", "dots"),
        ],
    )]);
    inputs.secrets.extend([secret(
        "db-pass",
        &[("PASSWORD", b"hunter2"), ("SHARED", b"from-secret")],
    )]);
    let p = pod(json!([{"name": "app", "envFrom": [
        {"configMapRef": {"name": "settings"}},
        {"configMapRef": {"name": "settings"}, "prefix": "CM_"},
        {"secretRef": {"name": "db-pass"}},
    ]}]));
    assert_eq!(
        without_services(&env_of(&p, &inputs)),
        map(&[
            // Keys that are not C identifiers are passed on, as kubelets since 1.30 do.
            ("1234", "digits"),
            ("a.b-c", "dots"),
            ("CM_1234", "digits"),
            ("CM_MODE", "dev"),
            ("CM_SHARED", "from-cm"),
            ("CM_a.b-c", "dots"),
            ("MODE", "dev"),
            ("PASSWORD", "hunter2"),
            ("SHARED", "from-secret"),
        ])
    );
}

#[test]
fn env_from_a_missing_object_is_an_error_unless_optional() {
    let optional = pod(json!([{"name": "app", "envFrom": [
        {"configMapRef": {"name": "gone", "optional": true}},
        {"secretRef": {"name": "gone-too", "optional": true}},
    ]}]));
    assert!(without_services(&env_of(&optional, &inputs())).is_empty());

    let required = pod(json!([{"name": "app", "envFrom": [{"secretRef": {"name": "gone"}}]}]));
    let err = resolve(&required, "app", &inputs()).expect_err("a missing Secret");
    assert!(
        matches!(err, EnvError::NotFound { kind: "Secret", .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "Secret demo/gone not found; container app reads it and does not mark it optional"
    );
}

/// Later definitions win: `env` over `envFrom` over the Service variables.
#[test]
fn precedence_follows_the_kubelets_order() {
    let mut inputs = inputs();
    inputs.services = vec![service(NS, "web", "10.96.12.7", json!([{"port": 80}]))];
    inputs.config_maps.extend([config_map(
        "settings",
        &[("WEB_SERVICE_PORT", "8000"), ("LEVEL", "info")],
    )]);
    let p = pod(json!([{"name": "app",
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "env": [
            {"name": "LEVEL", "value": "debug"},
            {"name": "KUBERNETES_SERVICE_HOST", "value": "10.0.0.1"},
            {"name": "LEVEL", "value": "trace"},
        ],
    }]));
    let env = env_of(&p, &inputs);
    assert_eq!(env.get("WEB_SERVICE_PORT"), Some("8000"));
    assert_eq!(env.get("WEB_SERVICE_HOST"), Some("10.96.12.7"));
    assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some("10.0.0.1"));
    assert_eq!(env.get("LEVEL"), Some("trace"));
}

#[test]
fn values_expand_references_to_what_is_defined_so_far() {
    let mut inputs = inputs();
    inputs.services = vec![service(NS, "api", "10.96.40.2", json!([{"port": 8080}]))];
    inputs
        .config_maps
        .extend([config_map("settings", &[("HOST", "db.internal")])]);
    let p = pod(json!([{"name": "app",
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "env": [
            {"name": "API_URL", "value": "http://$(API_SERVICE_HOST):$(API_SERVICE_PORT)/v1"},
            {"name": "DSN", "value": "postgres://$(USER)@$(HOST)/$(LATER)"},
            {"name": "USER", "value": "app"},
            {"name": "LATER", "value": "x"},
            {"name": "AGAIN", "value": "$(USER)-$(LATER)"},
            {"name": "PATHS", "value": "/bin"},
            {"name": "PATHS", "value": "$(PATHS):/usr/bin"},
            {"name": "ESCAPED", "value": "$$(USER) costs $$5 $HOME $(NOPE"},
            {"name": "EMPTY", "value": ""},
            {"name": "NOTHING"},
        ],
    }]));
    let env = env_of(&p, &inputs);
    assert_eq!(env.get("API_URL"), Some("http://10.96.40.2:8080/v1"));
    assert_eq!(
        env.get("DSN"),
        Some("postgres://$(USER)@db.internal/$(LATER)")
    );
    assert_eq!(env.get("AGAIN"), Some("app-x"));
    assert_eq!(env.get("PATHS"), Some("/bin:/usr/bin"));
    assert_eq!(env.get("ESCAPED"), Some("$(USER) costs $5 $HOME $(NOPE"));
    assert_eq!(env.get("EMPTY"), Some(""));
    assert_eq!(env.get("NOTHING"), Some(""));
}

#[test]
fn key_refs_read_configmaps_and_secrets_with_optional_handling() {
    let mut inputs = inputs();
    inputs
        .config_maps
        .extend([config_map("settings", &[("mode", "dev")])]);
    inputs
        .secrets
        .extend([secret("db-pass", &[("password", b"s3cr=t $x\n")])]);
    let p = pod(
        json!([{"name": "app", "envFrom": [{"configMapRef": {"name": "settings"}}],
            "env": [
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                {"name": "DB_PASSWORD",
                 "valueFrom": {"secretKeyRef": {"name": "db-pass", "key": "password"}}},
                // Optional and missing: nothing is defined, not even an empty value ...
                {"name": "NO_CM", "valueFrom":
                    {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                {"name": "NO_KEY", "valueFrom":
                    {"secretKeyRef": {"name": "db-pass", "key": "nope", "optional": true}}},
                // ... and an earlier definition of the name stays.
                {"name": "mode", "valueFrom":
                    {"configMapKeyRef": {"name": "settings", "key": "absent", "optional": true}}},
            ],
        }]),
    );
    let env = env_of(&p, &inputs);
    assert_eq!(env.get("MODE"), Some("dev"));
    // Secret values are used as they are: no expansion, newline kept.
    assert_eq!(env.get("DB_PASSWORD"), Some("s3cr=t $x\n"));
    assert_eq!(env.get("NO_CM"), None);
    assert_eq!(env.get("NO_KEY"), None);
    assert_eq!(env.get("mode"), Some("dev"));

    let missing_key = pod(json!([{"name": "app", "env": [{"name": "X", "valueFrom":
        {"configMapKeyRef": {"name": "settings", "key": "absent"}}}]}]));
    let err = resolve(&missing_key, "app", &inputs).expect_err("a missing key");
    assert_eq!(
        err.to_string(),
        "ConfigMap demo/settings has no key \"absent\"; variable X of container app reads it \
         and does not mark it optional"
    );
    let missing_secret = pod(json!([{"name": "app", "env": [{"name": "X", "valueFrom":
        {"secretKeyRef": {"name": "other", "key": "k"}}}]}]));
    let err = resolve(&missing_secret, "app", &inputs).expect_err("a missing Secret");
    assert!(
        matches!(err, EnvError::NotFound { kind: "Secret", .. }),
        "{err:?}"
    );
}

#[test]
fn a_binary_secret_value_is_refused_by_name() {
    let mut inputs = inputs();
    inputs
        .secrets
        .extend([secret("keys", &[("store.p12", &[0x30, 0x82, 0xff, 0xfe])])]);
    let p = pod(json!([{"name": "app", "envFrom": [{"secretRef": {"name": "keys"}}]}]));
    let err = resolve(&p, "app", &inputs).expect_err("binary");
    assert_eq!(
        err.to_string(),
        "Secret demo/keys key \"store.p12\" is binary, not text, and no env file can carry it"
    );
}

#[test]
fn needs_lists_what_to_read() {
    let p = pod(json!([{"name": "app",
        "envFrom": [{"configMapRef": {"name": "a"}}, {"secretRef": {"name": "s1"}, "prefix": "P_"}],
        "env": [
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "b", "key": "k"}}},
            {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k", "optional": true}}},
            // A literal wins over valueFrom, so "c" is never read.
            {"name": "Z", "value": "lit", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
            resource("CPU", "limits.cpu", None, None),
        ],
        "resources": {"limits": {"cpu": "1"}},
    }]));
    assert_eq!(
        needs(&p, "app").expect("needs"),
        Needs {
            config_maps: ["a", "b"].map(String::from).into(),
            secrets: ["s1", "s2"].map(String::from).into(),
            service_links: true,
            node_allocatable: false,
        }
    );
}

#[test]
fn init_containers_resolve_and_unknown_containers_are_named() {
    let p = pod_with(
        json!([{"name": "app"}, {"name": "tether-agent"}]),
        json!({"initContainers": [{"name": "setup", "env": [{"name": "PHASE", "value": "init"}]}]}),
    );
    let env = resolve(&p, "setup", &inputs()).expect("an init container");
    assert_eq!(env.get("PHASE"), Some("init"));
    let err = resolve(&p, "db", &inputs()).expect_err("no such container");
    assert_eq!(
        err.to_string(),
        "pod demo/web-7d9f-x2b has no container db (it has: app, tether-agent, setup)"
    );
    let mut nameless = p.clone();
    nameless.metadata.namespace = None;
    assert!(matches!(
        resolve(&nameless, "app", &inputs()),
        Err(EnvError::Incomplete { .. })
    ));
}

#[test]
fn an_env_collects_from_pairs() {
    let env: Env = [("B", "2"), ("A", "1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(env.iter().collect::<Vec<_>>(), [("A", "1"), ("B", "2")]);
}
