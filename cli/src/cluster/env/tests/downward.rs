//! The downward API in `valueFrom`: `fieldRef` and `resourceFieldRef`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use serde_json::{Value, json};

use super::{
    EnvError, env_of, inputs, map, needs, pod, pod_with, resolve, resource, without_services,
};

#[test]
fn field_refs_read_the_downward_api() {
    let field = |path: &str| json!({"fieldRef": {"apiVersion": "v1", "fieldPath": path}});
    let vars: Vec<Value> = [
        ("NAME", "metadata.name"),
        ("NAMESPACE", "metadata.namespace"),
        ("UID", "metadata.uid"),
        ("APP", "metadata.labels['app']"),
        ("OWNER", "metadata.annotations['example.com/owner']"),
        ("NO_LABEL", "metadata.labels['absent']"),
        ("NODE", "spec.nodeName"),
        ("SA", "spec.serviceAccountName"),
        ("HOST_IP", "status.hostIP"),
        ("HOST_IPS", "status.hostIPs"),
        ("POD_IP", "status.podIP"),
        ("POD_IPS", "status.podIPs"),
    ]
    .iter()
    .map(|(name, path)| json!({"name": name, "valueFrom": field(path)}))
    .collect();
    let p = pod(json!([{"name": "app", "env": vars}]));
    assert_eq!(
        without_services(&env_of(&p, &inputs())),
        map(&[
            ("NAME", "web-7d9f-x2b"),
            ("NAMESPACE", "demo"),
            ("UID", "6f1c-uid"),
            ("APP", "web"),
            ("OWNER", "team a"),
            ("NO_LABEL", ""),
            ("NODE", "node-1"),
            ("SA", "web"),
            ("HOST_IP", "172.18.0.2"),
            ("HOST_IPS", "172.18.0.2,fc00:f853::2"),
            ("POD_IP", "10.244.0.5"),
            ("POD_IPS", "10.244.0.5,fd00:10:244::5"),
        ])
    );

    // A single-stack status without the plural lists still answers both.
    let mut single = p.clone();
    if let Some(status) = single.status.as_mut() {
        status.pod_ips = None;
        status.host_ips = None;
    }
    let env = env_of(&single, &inputs());
    assert_eq!(env.get("POD_IPS"), Some("10.244.0.5"));
    assert_eq!(env.get("HOST_IPS"), Some("172.18.0.2"));

    for bad in [field("status.phase"), field("metadata.labels")] {
        let p = pod(json!([{"name": "app", "env": [{"name": "X", "valueFrom": bad}]}]));
        let err = resolve(&p, "app", &inputs()).expect_err("unsupported");
        assert!(matches!(err, EnvError::Unresolvable { .. }), "{err:?}");
    }
    let v2 = json!({"fieldRef": {"apiVersion": "v2", "fieldPath": "metadata.name"}});
    let p = pod(json!([{"name": "app", "env": [{"name": "X", "valueFrom": v2}]}]));
    assert_eq!(
        resolve(&p, "app", &inputs())
            .expect_err("a version")
            .to_string(),
        "variable X of container app: unsupported fieldRef apiVersion \"v2\""
    );
}

fn allocatable() -> BTreeMap<String, ApiQuantity> {
    [
        ("cpu", "4"),
        ("memory", "8Gi"),
        ("ephemeral-storage", "100Gi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ApiQuantity(v.to_string())))
    .collect()
}

#[test]
fn resource_field_refs_divide_and_round_up() {
    let p = pod_with(
        json!([
            {"name": "app",
             "resources": {"limits": {"cpu": "1500m", "memory": "129e6", "hugepages-2Mi": "4Mi"},
                           "requests": {"cpu": "250m", "memory": "64Mi"}},
             "env": [
                resource("CPU_LIMIT", "limits.cpu", None, None),
                resource("CPU_LIMIT_M", "limits.cpu", Some("1m"), None),
                resource("CPU_REQUEST", "requests.cpu", None, None),
                resource("CPU_REQUEST_M", "requests.cpu", Some("1m"), None),
                resource("MEM_LIMIT_MI", "limits.memory", Some("1Mi"), None),
                resource("MEM_REQUEST", "requests.memory", None, None),
                resource("MEM_REQUEST_ZERO_DIVISOR", "requests.memory", Some("0"), None),
                resource("EPH_REQUEST", "requests.ephemeral-storage", None, None),
                resource("HUGE", "limits.hugepages-2Mi", Some("1Mi"), None),
                resource("SIDE_CPU", "limits.cpu", Some("1m"), Some("side")),
                resource("SIDE_MEM", "limits.memory", Some("1Mi"), Some("side")),
                resource("INIT_CPU", "limits.cpu", None, Some("setup")),
             ]},
            {"name": "side", "resources": {"limits": {"cpu": "100m"}}},
        ]),
        json!({"initContainers": [{"name": "setup"}]}),
    );
    let mut inputs = inputs();
    // The side container's memory limit is unset, so the Node is needed.
    assert!(needs(&p, "app").expect("needs").node_allocatable);
    inputs.node_allocatable = Some(allocatable());
    assert_eq!(
        without_services(&env_of(&p, &inputs)),
        map(&[
            ("CPU_LIMIT", "2"),
            ("CPU_LIMIT_M", "1500"),
            ("CPU_REQUEST", "1"),
            ("CPU_REQUEST_M", "250"),
            ("MEM_LIMIT_MI", "124"),
            ("MEM_REQUEST", "67108864"),
            ("MEM_REQUEST_ZERO_DIVISOR", "67108864"),
            // No request set: zero, and requests never fall back.
            ("EPH_REQUEST", "0"),
            ("HUGE", "4"),
            ("SIDE_CPU", "100"),
            ("SIDE_MEM", "8192"),
            // Init containers keep their missing limits.
            ("INIT_CPU", "0"),
        ])
    );
}

#[test]
fn a_missing_limit_falls_back_to_the_pod_level_limit_then_the_node() {
    let env = json!([
        resource("CPU", "limits.cpu", Some("1m"), None),
        resource("MEM", "limits.memory", Some("1Gi"), None),
        resource("EPH", "limits.ephemeral-storage", Some("1Gi"), None),
    ]);
    let plain = pod(json!([{"name": "app", "env": env}]));
    assert!(needs(&plain, "app").expect("needs").node_allocatable);
    let err = resolve(&plain, "app", &inputs()).expect_err("no Node");
    assert!(matches!(err, EnvError::NoAllocatable { .. }), "{err:?}");
    let mut with_node = inputs();
    with_node.node_allocatable = Some(allocatable());
    let got = without_services(&env_of(&plain, &with_node));
    assert_eq!(got, map(&[("CPU", "4000"), ("MEM", "8"), ("EPH", "100")]));

    // A zero limit counts as unset; a pod-level limit stands in for cpu and memory.
    let pod_level = pod_with(
        json!([{"name": "app", "env": env, "resources": {"limits": {"cpu": "0"}}}]),
        json!({"resources": {"limits": {"cpu": "2", "memory": "3Gi"}}}),
    );
    let got = without_services(&env_of(&pod_level, &with_node));
    assert_eq!(got, map(&[("CPU", "2000"), ("MEM", "3"), ("EPH", "100")]));
    // The Node lists no ephemeral storage: the limit stays unset and reads as zero.
    let mut no_storage = with_node.clone();
    if let Some(a) = no_storage.node_allocatable.as_mut() {
        a.remove("ephemeral-storage");
    }
    assert_eq!(env_of(&pod_level, &no_storage).get("EPH"), Some("0"));

    // Covered by pod-level limits, cpu and memory need no Node.
    let covered = pod_with(
        json!([{"name": "app", "env": [resource("CPU", "limits.cpu", None, None)]}]),
        json!({"resources": {"limits": {"cpu": "2"}}}),
    );
    assert!(!needs(&covered, "app").expect("needs").node_allocatable);
    assert_eq!(env_of(&covered, &inputs()).get("CPU"), Some("2"));
}

#[test]
fn bad_resource_refs_are_named() {
    for (var, reason) in [
        (
            resource("X", "limits.gpu", None, None),
            "unsupported resource \"limits.gpu\"",
        ),
        (
            resource("X", "usage.cpu", None, None),
            "unsupported resource \"usage.cpu\"",
        ),
        (
            resource("X", "limits.cpu", None, Some("ghost")),
            "no container \"ghost\" in the pod",
        ),
        (
            resource("X", "requests.cpu", Some("lots"), None),
            "\"lots\" is not a quantity",
        ),
    ] {
        let p = pod(json!([{"name": "app", "env": [var]}]));
        let err = resolve(&p, "app", &inputs()).expect_err("an error");
        assert_eq!(
            err.to_string(),
            format!("variable X of container app: {reason}")
        );
    }
}
