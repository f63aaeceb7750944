//! The workload and endpoints controllers together, with a stand-in kubelet that marks pods
//! running and ready and removes pods whose graceful deletion started.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::Controller;
use super::deployments::{Deployments, HASH_LABEL, REVISION};
use super::endpoints::{self, Endpoints};
use super::gc::GarbageCollector;
use super::objects;
use super::replicasets::ReplicaSets;
use crate::admission::{self, Part};
use crate::error::ApiError;
use crate::lifecycle::{self, DeleteOptions};
use crate::resources::{self, ResourceType, Shape};
use crate::store::Store;

fn rt(shape: Shape) -> &'static ResourceType {
    resources::by_shape(shape)
}

fn store() -> Store {
    let store = Store::new(0);
    create(
        &store,
        Shape::Namespace,
        "",
        json!({"metadata": {"name": "default"}}),
    );
    store
}

fn create(store: &Store, shape: Shape, ns: &str, body: Value) -> Value {
    store
        .write(|s| objects::create(s, rt(shape), ns, body))
        .unwrap()
        .value
        .clone()
}

fn get(store: &Store, shape: Shape, name: &str) -> Option<Value> {
    store.read(|s| s.get(rt(shape), "default", name).map(|o| o.value.clone()))
}

fn list(store: &Store, shape: Shape) -> Vec<Value> {
    store.read(|s| {
        s.list(rt(shape), Some("default"), None)
            .map(|o| o.value.clone())
            .collect()
    })
}

/// Runs the controllers until nothing changes.
fn settle(store: &Store) {
    for _ in 0..50 {
        let rv = store.read(|s| s.rv());
        Deployments.resync(store);
        ReplicaSets.resync(store);
        Endpoints.resync(store);
        GarbageCollector.resync(store);
        if store.read(|s| s.rv()) == rv {
            return;
        }
    }
    panic!("controllers did not settle");
}

static NEXT_IP: AtomicUsize = AtomicUsize::new(0);

/// The kubelet's part: pods being deleted go; up to `limit` others start, get an IP and turn
/// ready. Returns how many it made ready.
fn kubelet(store: &Store, limit: usize) -> usize {
    let pod_rt = rt(Shape::Pod);
    let mut made_ready = 0;
    for pod in list(store, Shape::Pod) {
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        if objects::terminating(&pod) {
            let now = DeleteOptions {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            store
                .write(|s| lifecycle::delete(s, pod_rt, "default", &name, &now))
                .unwrap();
            continue;
        }
        if objects::pod_ready(&pod) || made_ready == limit {
            continue;
        }
        made_ready += 1;
        let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
        let ip = format!("10.244.{}.{}", n / 250, n % 250 + 2);
        store
            .write(|s| {
                let mut v = pod.clone();
                v["spec"]["nodeName"] = json!("sandbox");
                let scheduled = objects::update(s, pod_rt, &pod, v, Part::Main)?.value.clone();
                let mut v = scheduled.clone();
                v["status"] = json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": admission::now()}]});
                objects::update(s, pod_rt, &scheduled, v, Part::Status).map(|_| ())
            })
            .unwrap();
    }
    made_ready
}

fn deployment(replicas: i64, image: &str) -> Value {
    json!({"metadata": {"name": "web"}, "spec": {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "web", "image": image, "ports": [{"name": "http", "containerPort": 8080}]}]}}}})
}

fn set_spec(store: &Store, shape: Shape, name: &str, f: impl FnOnce(&mut Value)) {
    store
        .write(|s| {
            let old = s.get(rt(shape), "default", name).unwrap().value.clone();
            let mut new = old.clone();
            f(&mut new);
            objects::update(s, rt(shape), &old, new, Part::Main).map(|_| ())
        })
        .unwrap();
}

/// What `kubectl rollout status` requires to say "successfully rolled out".
fn rolled_out(d: &Value) -> bool {
    let s = &d["status"];
    let want = d["spec"]["replicas"].as_i64().unwrap();
    s["observedGeneration"] == d["metadata"]["generation"]
        && s["updatedReplicas"] == want
        && s["replicas"] == want
        && s["availableReplicas"] == want
}

fn ready_pods(store: &Store) -> usize {
    list(store, Shape::Pod)
        .iter()
        .filter(|p| !objects::terminating(p) && objects::pod_ready(p))
        .count()
}

#[test]
fn deployments_make_replicasets_that_make_pods_and_report_progress() {
    let store = store();
    create(
        &store,
        Shape::Deployment,
        "default",
        deployment(3, "nginx:1"),
    );
    settle(&store);
    let rses = list(&store, Shape::ReplicaSet);
    assert_eq!(rses.len(), 1);
    let rs = &rses[0];
    let hash = rs["metadata"]["labels"][HASH_LABEL].as_str().unwrap();
    assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(rs["spec"]["selector"]["matchLabels"][HASH_LABEL], hash);
    assert_eq!(rs["metadata"]["annotations"][REVISION], "1");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["controller"], true);
    let pods = list(&store, Shape::Pod);
    assert_eq!(pods.len(), 3);
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        let suffix = name.strip_prefix(&format!("web-{hash}-")).unwrap();
        assert_eq!(suffix.len(), 5, "{name}");
        assert_eq!(p["metadata"]["labels"][HASH_LABEL], hash);
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["name"],
            rs["metadata"]["name"]
        );
    }
    let d = get(&store, Shape::Deployment, "web").unwrap();
    assert!(!rolled_out(&d));
    assert_eq!(d["metadata"]["annotations"][REVISION], "1");

    kubelet(&store, usize::MAX);
    settle(&store);
    let d = get(&store, Shape::Deployment, "web").unwrap();
    assert!(rolled_out(&d), "{}", d["status"]);
    let progressing = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap();
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable");
    assert_eq!(d["status"]["conditions"][0]["type"], "Available");
    assert_eq!(d["status"]["conditions"][0]["status"], "True");
    let rs = get(
        &store,
        Shape::ReplicaSet,
        rs["metadata"]["name"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(rs["status"]["readyReplicas"], 3);
    assert_eq!(rs["status"]["fullyLabeledReplicas"], 3);

    // Scaling down deletes pods, gracefully since they are on the node.
    set_spec(&store, Shape::Deployment, "web", |d| {
        d["spec"]["replicas"] = json!(1)
    });
    settle(&store);
    let terminating = list(&store, Shape::Pod)
        .iter()
        .filter(|p| objects::terminating(p))
        .count();
    assert_eq!(terminating, 2);
    kubelet(&store, usize::MAX);
    settle(&store);
    assert_eq!(list(&store, Shape::Pod).len(), 1);
    assert!(rolled_out(&get(&store, Shape::Deployment, "web").unwrap()));
}

#[test]
fn rolling_updates_keep_availability_and_retire_the_old_replicaset() {
    let store = store();
    create(
        &store,
        Shape::Deployment,
        "default",
        deployment(4, "nginx:1"),
    );
    settle(&store);
    kubelet(&store, usize::MAX);
    settle(&store);
    let old_rs = list(&store, Shape::ReplicaSet)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    set_spec(&store, Shape::Deployment, "web", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2")
    });
    let mut steps = 0;
    loop {
        settle(&store);
        let ready = ready_pods(&store);
        assert!(
            ready >= 3,
            "ready pods fell to {ready} (replicas 4, maxUnavailable 1)"
        );
        let total = list(&store, Shape::Pod)
            .iter()
            .filter(|p| !objects::terminating(p))
            .count();
        assert!(total <= 5, "{total} pods exceed replicas + maxSurge");
        if rolled_out(&get(&store, Shape::Deployment, "web").unwrap()) {
            break;
        }
        kubelet(&store, 1);
        steps += 1;
        assert!(steps < 30, "rollout did not finish");
    }
    assert!(steps >= 3, "the rollout went in steps ({steps})");
    let old = get(&store, Shape::ReplicaSet, &old_rs).unwrap();
    assert_eq!(old["spec"]["replicas"], 0);
    let d = get(&store, Shape::Deployment, "web").unwrap();
    assert_eq!(d["metadata"]["annotations"][REVISION], "2");
    assert_eq!(list(&store, Shape::ReplicaSet).len(), 2);

    // Undo: the old template again makes the old ReplicaSet the newest revision.
    let old_template = {
        let mut t = old["spec"]["template"].clone();
        t["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove(HASH_LABEL);
        t
    };
    set_spec(&store, Shape::Deployment, "web", |d| {
        d["spec"]["template"] = old_template
    });
    for _ in 0..30 {
        settle(&store);
        kubelet(&store, 1);
    }
    settle(&store);
    let old = get(&store, Shape::ReplicaSet, &old_rs).unwrap();
    assert_eq!(old["metadata"]["annotations"][REVISION], "3");
    assert_eq!(old["spec"]["replicas"], 4);
    assert!(rolled_out(&get(&store, Shape::Deployment, "web").unwrap()));
}

#[test]
fn recreate_scales_old_pods_away_before_new_ones_start() {
    let store = store();
    let mut d = deployment(2, "nginx:1");
    d["spec"]["strategy"] = json!({"type": "Recreate"});
    create(&store, Shape::Deployment, "default", d);
    settle(&store);
    kubelet(&store, usize::MAX);
    settle(&store);
    set_spec(&store, Shape::Deployment, "web", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2")
    });
    settle(&store);
    let pods = list(&store, Shape::Pod);
    assert!(pods.iter().all(objects::terminating), "old pods stop first");
    kubelet(&store, usize::MAX);
    settle(&store);
    kubelet(&store, usize::MAX);
    settle(&store);
    assert!(rolled_out(&get(&store, Shape::Deployment, "web").unwrap()));
}

fn service(body: Value) -> Value {
    json!({"metadata": {"name": "web"}, "spec": body})
}

fn slice_of(store: &Store) -> Vec<Value> {
    list(store, Shape::EndpointSlice)
        .into_iter()
        .filter(|s| s["metadata"]["labels"][endpoints::SERVICE_NAME_LABEL] == "web")
        .collect()
}

#[test]
fn endpoints_follow_ready_pods_and_resolve_named_ports() {
    let store = store();
    create(
        &store,
        Shape::Deployment,
        "default",
        deployment(2, "nginx:1"),
    );
    create(
        &store,
        Shape::Service,
        "default",
        service(json!({"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "metrics", "port": 9090}]})),
    );
    settle(&store);
    let ep = get(&store, Shape::Endpoints, "web").unwrap();
    assert!(
        ep["subsets"].is_null() || ep["subsets"] == json!([]),
        "{ep}"
    );
    assert_eq!(ep["metadata"]["ownerReferences"][0]["kind"], "Service");
    let slices = slice_of(&store);
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0]["addressType"], "IPv4");
    assert_eq!(
        slices[0]["metadata"]["labels"][endpoints::MANAGED_BY_LABEL],
        endpoints::MANAGED_BY
    );

    // One pod ready, one not.
    kubelet(&store, 1);
    let not_ready = list(&store, Shape::Pod)
        .into_iter()
        .find(|p| !objects::pod_ready(p))
        .unwrap();
    let name = not_ready["metadata"]["name"].as_str().unwrap().to_string();
    store
        .write(|s| {
            let mut v = not_ready.clone();
            v["status"] = json!({"phase": "Running", "podIP": "10.244.0.99",
                "conditions": [{"type": "Ready", "status": "False"}]});
            objects::update(s, rt(Shape::Pod), &not_ready, v, Part::Status).map(|_| ())
        })
        .unwrap();
    settle(&store);
    let ep = get(&store, Shape::Endpoints, "web").unwrap();
    let subset = &ep["subsets"][0];
    assert_eq!(subset["addresses"].as_array().unwrap().len(), 1);
    assert_eq!(subset["notReadyAddresses"][0]["ip"], "10.244.0.99");
    assert_eq!(
        subset["notReadyAddresses"][0]["targetRef"]["name"],
        name.as_str()
    );
    let mut ports: Vec<(String, i64)> = subset["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["port"].as_i64().unwrap(),
            )
        })
        .collect();
    ports.sort();
    assert_eq!(ports, vec![("http".into(), 8080), ("metrics".into(), 9090)]);
    let slices = slice_of(&store);
    assert_eq!(slices.len(), 1);
    let eps = slices[0]["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    let unready = eps
        .iter()
        .find(|e| e["addresses"][0] == "10.244.0.99")
        .unwrap();
    assert_eq!(
        unready["conditions"],
        json!({"ready": false, "serving": false, "terminating": false})
    );
    assert_eq!(unready["nodeName"], "sandbox");

    // Nothing changes, nothing is written.
    let rv = store.read(|s| s.rv());
    Endpoints.resync(&store);
    assert_eq!(store.read(|s| s.rv()), rv);

    // publishNotReadyAddresses: every pod counts as ready.
    set_spec(&store, Shape::Service, "web", |s| {
        s["spec"]["publishNotReadyAddresses"] = json!(true)
    });
    settle(&store);
    let ep = get(&store, Shape::Endpoints, "web").unwrap();
    assert_eq!(ep["subsets"][0]["addresses"].as_array().unwrap().len(), 2);
    assert!(ep["subsets"][0]["notReadyAddresses"].is_null());

    // A terminating pod leaves Endpoints but stays in the slice as terminating.
    set_spec(&store, Shape::Service, "web", |s| {
        s["spec"]["publishNotReadyAddresses"] = json!(false)
    });
    let ready_pod = list(&store, Shape::Pod)
        .into_iter()
        .find(objects::pod_ready)
        .unwrap();
    let ready_name = ready_pod["metadata"]["name"].as_str().unwrap().to_string();
    store
        .write(|s| {
            lifecycle::delete(
                s,
                rt(Shape::Pod),
                "default",
                &ready_name,
                &DeleteOptions::default(),
            )
        })
        .unwrap();
    Endpoints.resync(&store);
    let ep = get(&store, Shape::Endpoints, "web").unwrap();
    assert!(ep["subsets"][0]["addresses"].is_null(), "{ep}");
    let slices = slice_of(&store);
    let gone = slices[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["targetRef"]["name"] == ready_name.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        gone["conditions"],
        json!({"ready": false, "serving": true, "terminating": true})
    );
}

#[test]
fn pods_resolving_a_named_port_differently_get_separate_slices() {
    let store = store();
    create(
        &store,
        Shape::Service,
        "default",
        service(
            json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
        ),
    );
    for (name, port, ip) in [
        ("a", 8080, "10.244.0.5"),
        ("b", 9000, "10.244.0.6"),
        ("c", 0, "10.244.0.7"),
    ] {
        let ports = if port == 0 {
            json!([])
        } else {
            json!([{"name": "http", "containerPort": port}])
        };
        let pod = create(
            &store,
            Shape::Pod,
            "default",
            json!({"metadata": {"name": name, "labels": {"app": "web"}}, "spec": {
                "hostname": name, "subdomain": "web",
                "containers": [{"name": "c", "image": "x", "ports": ports}]}}),
        );
        store
            .write(|s| {
                let mut v = pod.clone();
                v["status"] = json!({"phase": "Running", "podIP": ip,
                    "conditions": [{"type": "Ready", "status": "True"}]});
                objects::update(s, rt(Shape::Pod), &pod, v, Part::Status).map(|_| ())
            })
            .unwrap();
    }
    settle(&store);
    let mut slices: Vec<(i64, String, String)> = slice_of(&store)
        .iter()
        .map(|s| {
            (
                s["ports"][0]["port"].as_i64().unwrap(),
                s["endpoints"][0]["addresses"][0]
                    .as_str()
                    .unwrap()
                    .to_string(),
                s["endpoints"][0]["hostname"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    slices.sort();
    assert_eq!(
        slices,
        vec![
            (8080, "10.244.0.5".into(), "a".into()),
            (9000, "10.244.0.6".into(), "b".into())
        ],
        "the pod without the port is left out"
    );
    let ep = get(&store, Shape::Endpoints, "web").unwrap();
    assert_eq!(ep["subsets"].as_array().unwrap().len(), 2);
}

#[test]
fn selectorless_services_are_left_alone() {
    let store = store();
    create(
        &store,
        Shape::Service,
        "default",
        service(json!({"ports": [{"port": 80}]})),
    );
    settle(&store);
    assert!(get(&store, Shape::Endpoints, "web").is_none());
    assert!(slice_of(&store).is_empty());
}

#[test]
fn graceful_deletion_only_shortens() {
    let store = store();
    let pod_rt = rt(Shape::Pod);
    let pod = create(
        &store,
        Shape::Pod,
        "default",
        json!({"metadata": {"name": "p"}, "spec": {"nodeName": "sandbox", "terminationGracePeriodSeconds": 20,
            "containers": [{"name": "c", "image": "x"}]}}),
    );
    let delete = |grace: Option<i64>| -> Result<Value, ApiError> {
        let opts = DeleteOptions {
            grace_period_seconds: grace,
            ..Default::default()
        };
        store
            .write(|s| lifecycle::delete(s, pod_rt, "default", "p", &opts))
            .map(|o| o.value.clone())
    };
    let held = delete(None).unwrap();
    assert_eq!(held["metadata"]["deletionGracePeriodSeconds"], 20);
    assert!(
        held["metadata"]["deletionTimestamp"].as_str().unwrap()
            > pod["metadata"]["creationTimestamp"].as_str().unwrap()
    );
    assert_eq!(
        delete(Some(60)).unwrap()["metadata"]["deletionGracePeriodSeconds"],
        20
    );
    assert_eq!(
        delete(Some(5)).unwrap()["metadata"]["deletionGracePeriodSeconds"],
        5
    );
    // Status writes during the grace period keep the object.
    let current = get(&store, Shape::Pod, "p").unwrap();
    let mut v = current.clone();
    v["status"]["phase"] = json!("Running");
    store
        .write(|s| objects::update(s, pod_rt, &current, v, Part::Status).map(|_| ()))
        .unwrap();
    assert!(get(&store, Shape::Pod, "p").is_some());
    delete(Some(0)).unwrap();
    assert!(get(&store, Shape::Pod, "p").is_none());

    // Unscheduled pods go at once.
    create(
        &store,
        Shape::Pod,
        "default",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    );
    delete(None).unwrap();
    assert!(get(&store, Shape::Pod, "p").is_none());
}
