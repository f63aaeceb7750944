//! `tether intercept` against the sandbox's demo, as a developer uses it: web (named
//! targetPort, two replicas) and api (numeric targetPort, NodePort) go to two servers on the
//! workstation; requests from a pod by name, ClusterIP and NodePort, and from the workstation
//! itself, are answered there; `leave`, a conflict, a replaced manager pod and a SIGKILLed
//! daemon behave; the env file matches `kubectl exec -- env`; and `uninstall` leaves the
//! workloads and Services exactly as they were.
//!
//! One sandbox serves the whole session, so the steps run in order in one test. Needs root
//! (network namespaces, TUN) and the workspace built (`cargo build --workspace`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tether_tests::intercepting::{
    all_answered_by, hostname, local_server, objects_of, tether_json, wait_answered_by,
};
use tether_tests::sandbox::{SandboxCluster, alive};
use tether_tests::{Proc, check, wait_for};

use tether_tests::intercepting::RECOVERY;

/// Deployments and Services as `kubectl get -o json` shows them, without what the
/// controllers and the API server change on every write (status, resourceVersion,
/// generation, the Deployment's revision counter).
fn objects(c: &SandboxCluster) -> Value {
    objects_of(c, &["deploy/web", "deploy/api", "svc/web", "svc/api"])
}

const EXTRA: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: demo}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      containers:
        - {name: client, image: tether-sandbox/host, command: ["sleep", "infinity"]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cache, namespace: demo}
spec:
  selector: {matchLabels: {app: cache}}
  template:
    metadata: {labels: {app: cache}}
    spec:
      containers:
        - {name: cache, image: tether-sandbox/tcp-echo, args: ["--port", "6379"], ports: [{containerPort: 6379}]}
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: demo}
spec:
  clusterIP: None
  selector: {app: cache}
  ports: [{port: 6379}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop, namespace: demo}
spec:
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      containers:
        - name: shop
          image: tether-sandbox/http-echo
          args: ["--port", "7070"]
          ports: [{name: web, containerPort: 7070}]
          # Slow to become Ready, so that an interrupted intercept meets a rollout under way.
          readinessProbe: {httpGet: {path: /healthz, port: web}, initialDelaySeconds: 4, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: demo}
spec:
  selector: {app: shop}
  ports: [{port: 80, targetPort: web}]
---
apiVersion: v1
kind: Secret
metadata: {name: web-secret, namespace: demo}
stringData: {API_TOKEN: s3cret}
"#;

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn intercepts_send_a_services_traffic_to_the_workstation_and_uninstall_restores_it() {
    let c = SandboxCluster::start();
    c.sandbox.apply(EXTRA);
    // The user's own environment changes, before tether touches anything.
    check(c.kubectl().args([
        "-n",
        "demo",
        "set",
        "env",
        "deploy/web",
        "GREETING=hello world",
    ]));
    check(c.kubectl().args([
        "-n",
        "demo",
        "set",
        "env",
        "deploy/web",
        "--from=secret/web-secret",
    ]));
    for d in ["web", "client", "cache", "shop"] {
        check(c.kubectl().args([
            "-n",
            "demo",
            "rollout",
            "status",
            &format!("deploy/{d}"),
            "--timeout=60s",
        ]));
    }
    let before = objects(&c);

    // Not connected: one clear error.
    let (code, _, out) = tether_json(&c, &["intercept", "web", "-n", "demo", "--port", "8080"]);
    assert_eq!(code, Some(6), "{out}");
    assert!(out.contains("tether connect"), "{out}");

    let (connected, _) = c.connect();
    assert_eq!(connected["event"], "connected", "{connected}");
    let _web_local = local_server(&c, "laptop-web", 8080);
    let _api_local = local_server(&c, "laptop-api", 8081);

    // Bad input: clear errors, exit code 2, nothing changed.
    for (args, part) in [
        (
            vec!["intercept", "nosuch", "--port", "8080"],
            "no Deployment nosuch",
        ),
        (vec!["intercept", "client", "--port", "8080"], "no Service"),
        (
            vec!["intercept", "web", "--port", "8080:grpc"],
            "has no port grpc",
        ),
        (vec!["intercept", "cache", "--port", "8080"], "headless"),
        (
            vec!["intercept", "sts/web", "--port", "8080"],
            "not a Deployment",
        ),
    ] {
        let (code, _, out) = tether_json(&c, &args);
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(out.contains(part), "{args:?} names {part:?}: {out}");
    }
    assert_eq!(objects(&c), before, "bad input changed nothing");

    // Ctrl-C while the sidecar rolls out: the command says it undid it, and it did.
    let shop = ["deploy/shop", "svc/shop"];
    let shop_before = objects_of(&c, &shop);
    let mut interrupted = Proc::start(
        "tether intercept shop",
        c.tether()
            .args(["intercept", "shop", "--port", "8082"])
            .stderr(std::process::Stdio::piped()),
    );
    let stderr = interrupted.take_stderr();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut seen = Vec::new();
    for line in lines.by_ref().map_while(Result::ok) {
        let rolling = line.contains("Rolling out deploy/shop");
        seen.push(line);
        if rolling {
            // The shell waits for tether; Ctrl-C is tether's to handle.
            for child in interrupted.children() {
                check(Command::new("kill").args(["-INT", &child.to_string()]));
            }
            break;
        }
    }
    // The rest of its stderr: what it says while it undoes the injection.
    seen.extend(lines.map_while(Result::ok));
    let status = interrupted.wait(RECOVERY);
    assert_eq!(status.code(), Some(130), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("is as it was")), "{seen:?}");
    assert_eq!(
        objects_of(&c, &shop),
        shop_before,
        "Ctrl-C left shop as it was"
    );

    // web (named port, two replicas) and api (numeric port, NodePort).
    let env_file = c.dir().join("web.env");
    let env_path = env_file.to_string_lossy().into_owned();
    let (code, events, out) = tether_json(
        &c,
        &[
            "intercept",
            "web",
            "--port",
            "8080",
            "--env-file",
            &env_path,
        ],
    );
    assert_eq!(code, Some(0), "{out}\n{}", c.daemon_log());
    assert_eq!(events[0]["event"], "intercepted", "{out}");
    assert_eq!(
        events[0]["intercept"]["pods"].as_array().map(Vec::len),
        Some(2),
        "{out}"
    );
    let (code, _, out) = tether_json(&c, &["intercept", "deploy/api", "--port", "8081"]);
    assert_eq!(code, Some(0), "{out}\n{}", c.daemon_log());

    let web_ip = c.jsonpath("demo", &["svc", "web"], "{.spec.clusterIP}");
    let node_ip = c.jsonpath("", &["nodes"], "{.items[0].status.addresses[0].address}");
    all_answered_by(&c, "http://web/", "laptop-web", 8);
    all_answered_by(&c, &format!("http://{web_ip}/"), "laptop-web", 4);
    all_answered_by(&c, "http://api:8080/", "laptop-api", 4);
    all_answered_by(&c, &format!("http://{node_ip}:30080/"), "laptop-api", 4);
    let from_laptop = c
        .curl("http://web.demo/")
        .expect("curl web from the workstation");
    assert_eq!(hostname(&from_laptop), "laptop-web", "{from_laptop}");

    // The env file is the container's environment, key by key, in a pod the rollout made
    // (the old ones may still be terminating).
    let pods = check(c.kubectl().args([
        "-n",
        "demo",
        "get",
        "pods",
        "-l",
        "app=web,track=stable",
        r#"-o=jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    ]));
    let pod = pods
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.contains(' '))
        .unwrap_or_else(|| panic!("no web pod that is not terminating: {pods}"));
    let exec_env: BTreeMap<String, String> = check(c.kubectl().args([
        "-n",
        "demo",
        "exec",
        pod.trim(),
        "-c",
        "http-echo",
        "--",
        "env",
    ]))
    .lines()
    .filter_map(|l| l.split_once('='))
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let file_env: BTreeMap<String, String> = std::fs::read_to_string(&env_file)
        .expect("the env file")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let compared = |k: &str| {
        k == "GREETING"
            || k == "API_TOKEN"
            || k.ends_with("_SERVICE_HOST")
            || k.contains("_SERVICE_PORT")
            || k.contains("_PORT_")
    };
    let pick = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.iter()
            .filter(|(k, _)| compared(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(pick(&file_env), pick(&exec_env));
    assert_eq!(
        file_env.get("GREETING").map(String::as_str),
        Some("hello world")
    );
    assert_eq!(
        file_env.get("API_TOKEN").map(String::as_str),
        Some("s3cret")
    );
    assert!(file_env.contains_key("WEB_SERVICE_HOST"), "{file_env:?}");

    // list shows who holds what.
    let (code, events, out) = tether_json(&c, &["list", "-n", "demo"]);
    assert_eq!(code, Some(0), "{out}");
    let workloads = events[0]["workloads"]
        .as_array()
        .expect("workloads")
        .clone();
    let web = workloads
        .iter()
        .find(|w| w["name"] == "web")
        .expect("web listed");
    assert_eq!(web["agent"], "active", "{web}");
    assert_eq!(web["intercepts"][0]["local"], "127.0.0.1:8080", "{web}");
    let flaky = workloads
        .iter()
        .find(|w| w["name"] == "flaky")
        .expect("flaky listed");
    assert_eq!(flaky["agent"], "none", "{flaky}");

    // A second claim on the same port names who holds it, and changes nothing.
    let (code, _, out) = tether_json(
        &c,
        &["intercept", "web", "--name", "other", "--port", "9999"],
    );
    assert_eq!(code, Some(5), "{out}");
    assert!(
        out.contains("already intercepted by intercept web"),
        "{out}"
    );

    // The user scales during the intercept; their change survives the restore.
    check(
        c.kubectl()
            .args(["-n", "demo", "scale", "deploy/web", "--replicas=3"]),
    );
    check(c.kubectl().args([
        "-n",
        "demo",
        "rollout",
        "status",
        "deploy/web",
        "--timeout=60s",
    ]));
    wait_for("the third replica to be claimed", RECOVERY, || {
        let status = c.status();
        let web = status["intercepts"]
            .as_array()?
            .iter()
            .find(|i| i["name"] == "web")?
            .clone();
        (web["pods"].as_array()?.len() == 3).then_some(())
    });
    all_answered_by(&c, "http://web/", "laptop-web", 6);

    // The manager pod replaced: intercepts do not go through it.
    check(c.kubectl().args([
        "-n",
        "tether",
        "delete",
        "pod",
        "-l",
        "app.kubernetes.io/name=tether-manager",
        "--wait=false",
    ]));
    all_answered_by(&c, "http://web/", "laptop-web", 3);

    // leave web: its pods answer again, api stays intercepted, no pod restarted.
    let pods_before = check(c.kubectl().args([
        "-n",
        "demo",
        "get",
        "pods",
        "-l",
        "app=web,track=stable",
        "-o=jsonpath={.items[*].metadata.uid}",
    ]));
    let (code, events, out) = tether_json(&c, &["leave", "web"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(events[0]["event"], "left", "{out}");
    wait_answered_by(&c, "http://web/", "web-");
    all_answered_by(&c, "http://api:8080/", "laptop-api", 3);
    let pods_after = check(c.kubectl().args([
        "-n",
        "demo",
        "get",
        "pods",
        "-l",
        "app=web,track=stable",
        "-o=jsonpath={.items[*].metadata.uid}",
    ]));
    assert_eq!(pods_before, pods_after, "leave restarts no pod");

    // Warm intercept again, then SIGKILL the daemon: the pods serve web by themselves.
    let (code, _, out) = tether_json(&c, &["intercept", "web", "--port", "8080"]);
    assert_eq!(code, Some(0), "{out}");
    wait_answered_by(&c, "http://web/", "laptop-web");
    let pid = c.status()["pid"].as_u64().expect("pid") as u32;
    check(Command::new("kill").args(["-KILL", &pid.to_string()]));
    wait_for("the daemon to die", RECOVERY, || {
        (!alive(pid)).then_some(())
    });
    wait_answered_by(&c, "http://web/", "web-");
    wait_answered_by(&c, "http://api:8080/", "api-");
    check(c.tether().arg("quit"));

    // uninstall: the workloads and Services are as before (with the user's scale kept), and
    // no pod has a tether container.
    let (code, _, out) = tether_json(&c, &["uninstall", "-n", "demo"]);
    assert_eq!(code, Some(0), "{out}");
    let mut expected = before.clone();
    for item in expected["items"].as_array_mut().expect("items") {
        if item["kind"] == "Deployment" && item["metadata"]["name"] == "web" {
            item["spec"]["replicas"] = 3.into();
        }
    }
    assert_eq!(
        objects(&c),
        expected,
        "uninstall restores the objects exactly"
    );
    // The old ReplicaSets' pods may still be terminating when uninstall returns.
    wait_for(
        "no pod to run tether-agent",
        Duration::from_secs(60),
        || {
            let containers = check(c.kubectl().args([
                "get",
                "pods",
                "-A",
                "-o=jsonpath={.items[*].spec.containers[*].name}",
            ]));
            (!containers.contains("tether-agent")).then_some(())
        },
    );
    wait_answered_by(&c, "http://web/", "web-");
}
