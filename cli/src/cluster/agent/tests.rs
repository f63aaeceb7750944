//! Injection and restore as JSON patches on the demo's workloads: restoring gives back the
//! objects exactly, also when the user changed the Deployment in between.

use serde_json::{Value, json};

use super::*;
use crate::cluster::workload::{Choice, resolve};

fn web() -> Value {
    json!({
        "metadata": {"name": "web", "namespace": "demo", "resourceVersion": "7",
                     "labels": {"app": "web"}, "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web", "track": "stable"}},
            "spec": {"containers": [{"name": "http-echo", "image": "tether-sandbox/http-echo",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"}, "periodSeconds": 2}}]}}}
    })
}

fn api() -> Value {
    json!({
        "metadata": {"name": "api", "namespace": "demo", "resourceVersion": "9"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}}, "template": {
            "metadata": {"labels": {"app": "api"}},
            "spec": {"containers": [{"name": "http-echo", "image": "tether-sandbox/http-echo", "args": ["--port", "9090"],
                "ports": [{"containerPort": 9090, "protocol": "TCP"}],
                "readinessProbe": {"tcpSocket": {"port": 9090}}}]}}}
    })
}

fn web_service() -> Value {
    json!({"metadata": {"name": "web", "namespace": "demo", "resourceVersion": "3"},
           "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.20",
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}})
}

fn api_service() -> Value {
    json!({"metadata": {"name": "api", "namespace": "demo", "resourceVersion": "4"},
           "spec": {"type": "NodePort", "selector": {"app": "api"}, "clusterIP": "10.96.0.30",
                    "ports": [{"name": "http", "port": 8080, "targetPort": 9090, "nodePort": 30080, "protocol": "TCP"}]}})
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

fn apply(doc: &Value, ops: &Value) -> Value {
    let mut doc = doc.clone();
    let patch: json_patch::Patch = serde_json::from_value(ops.clone()).unwrap();
    json_patch::patch(&mut doc, &patch).unwrap();
    doc
}

/// As the API server does on a write: a new resourceVersion.
fn bump(mut doc: Value) -> Value {
    let rv: u64 = doc["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    doc["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
    doc
}

fn containers(doc: &Value) -> &Vec<Value> {
    doc["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
}

#[test]
fn a_named_port_moves_to_the_sidecar_and_comes_back() {
    let (deploy, service) = (web(), web_service());
    let target = resolve(&typed(&deploy), &[typed(&service)], &Choice::default()).unwrap();
    let plan = plan(
        &typed(&deploy),
        &target,
        "ghcr.io/tether-dev/tether-agent:0.1.0",
    );
    assert!(
        plan.service.is_none(),
        "a named port needs no Service change"
    );
    let injected = bump(apply(&deploy, &plan.deployment));
    let [app, sidecar] = containers(&injected).as_slice() else {
        panic!("two containers: {injected}");
    };
    assert_eq!(
        app["ports"],
        json!([{"containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(app["readinessProbe"]["httpGet"]["port"], json!(8080));
    assert_eq!(sidecar["name"], json!(SIDECAR));
    assert_eq!(
        sidecar["ports"],
        json!([{"name": "http", "containerPort": 47100, "protocol": "TCP"}])
    );
    assert_eq!(
        sidecar["args"],
        json!([
            "sidecar",
            "--control",
            "127.0.0.1:47099",
            "--forward",
            "47100=8080"
        ])
    );
    let record = record_of(&typed(&injected)).unwrap().unwrap();
    assert_eq!(record, plan.record);

    // The user scales and changes the image meanwhile; both are kept.
    let mut changed = injected.clone();
    changed["spec"]["replicas"] = json!(3);
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:v2");
    let changed = bump(changed);
    let restored = apply(&changed, &restore_deployment(&typed(&changed), &record));
    let mut expected = web();
    expected["spec"]["replicas"] = json!(3);
    expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:v2");
    expected["metadata"]["resourceVersion"] = changed["metadata"]["resourceVersion"].clone();
    assert_eq!(restored, expected);
}

#[test]
fn a_numeric_port_is_taken_by_pointing_the_service_at_the_sidecar() {
    let (deploy, service) = (api(), api_service());
    let target = resolve(&typed(&deploy), &[typed(&service)], &Choice::default()).unwrap();
    let plan = plan(&typed(&deploy), &target, "agent:1");
    let injected = bump(apply(&deploy, &plan.deployment));
    assert_eq!(
        containers(&injected)[0],
        api()["spec"]["template"]["spec"]["containers"][0]
    );
    // The Deployment had no annotations at all: the map is created, and goes again.
    assert!(injected["metadata"]["annotations"][ANNOTATION].is_string());
    let svc = bump(apply(&service, plan.service.as_ref().unwrap()));
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], json!(47100));
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], json!(30080));

    let restored_svc = apply(&svc, &restore_service(&typed(&svc)).unwrap());
    let mut expected = api_service();
    expected["metadata"]["resourceVersion"] = svc["metadata"]["resourceVersion"].clone();
    assert_eq!(restored_svc, expected);
    let record = record_of(&typed(&injected)).unwrap().unwrap();
    let restored = apply(&injected, &restore_deployment(&typed(&injected), &record));
    let mut expected = api();
    expected["metadata"]["resourceVersion"] = injected["metadata"]["resourceVersion"].clone();
    assert_eq!(restored, expected);
}

#[test]
fn a_patch_planned_on_a_stale_object_fails_its_test() {
    let deploy = web();
    let target = resolve(
        &typed(&deploy),
        &[typed(&web_service())],
        &Choice::default(),
    )
    .unwrap();
    let plan = plan(&typed(&deploy), &target, "agent:1");
    let newer = bump(deploy);
    let patch: json_patch::Patch = serde_json::from_value(plan.deployment).unwrap();
    assert!(json_patch::patch(&mut newer.clone(), &patch).is_err());
}

#[test]
fn sidecar_ports_avoid_the_pods_own() {
    let mut deploy = web();
    deploy["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([
        {"name": "http", "containerPort": 8080}, {"name": "x", "containerPort": 47099}, {"name": "y", "containerPort": 47100}
    ]);
    let target = resolve(
        &typed(&deploy),
        &[typed(&web_service())],
        &Choice::default(),
    )
    .unwrap();
    let plan = plan(&typed(&deploy), &target, "agent:1");
    assert_eq!(plan.record.control, 47101);
    assert_eq!(plan.record.forwards[0].listen, 47102);
}

#[test]
fn a_replaced_container_leaves_the_pod_and_comes_back_where_it_was() {
    // A second container after the app, so that the app's index matters.
    let mut deploy = api();
    deploy["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "logger", "image": "busybox", "ports": [{"containerPort": 5140, "protocol": "UDP"}]}));
    deploy["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "metrics", "containerPort": 9100, "protocol": "TCP"}));
    let target = resolve(
        &typed(&deploy),
        &[typed(&api_service())],
        &Choice::default(),
    )
    .unwrap();
    let plan = plan_replace(&typed(&deploy), &target, "agent:1", "dev@laptop");
    assert!(
        plan.service.is_none(),
        "the sidecar takes the same port numbers"
    );
    let injected = bump(apply(&deploy, &plan.deployment));
    let [logger, sidecar] = containers(&injected).as_slice() else {
        panic!("the app container is gone, the sidecar is in: {injected}");
    };
    assert_eq!(logger["name"], json!("logger"));
    assert_eq!(
        sidecar["args"],
        json!([
            "sidecar",
            "--control",
            "127.0.0.1:47099",
            "--forward",
            "9090=9090",
            "--forward",
            "9100=9100",
            "--replace"
        ])
    );
    assert_eq!(
        sidecar["ports"],
        json!([{"containerPort": 9090, "protocol": "TCP"}, {"name": "metrics", "containerPort": 9100, "protocol": "TCP"}])
    );
    assert!(
        sidecar.get("readinessProbe").is_none(),
        "the app's probes went with it"
    );
    let record = record_of(&typed(&injected)).unwrap().unwrap();
    assert!(record.replace);
    assert_eq!(record.holder.as_deref(), Some("dev@laptop"));
    // Targets are still chosen on the workload as the user made it.
    assert_eq!(
        containers(&serde_json::to_value(original_view(&typed(&injected), &record)).unwrap())[0]["name"],
        json!("http-echo")
    );

    let mut changed = injected.clone();
    changed["spec"]["replicas"] = json!(4);
    let changed = bump(changed);
    let restored = apply(&changed, &restore_deployment(&typed(&changed), &record));
    let mut expected = deploy.clone();
    expected["spec"]["replicas"] = json!(4);
    expected["metadata"]["resourceVersion"] = changed["metadata"]["resourceVersion"].clone();
    assert_eq!(restored, expected);
}
