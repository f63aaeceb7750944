//! Personal intercepts against the sandbox's demo, as two developers sharing a cluster use
//! them: header-filtered intercepts of web side by side, routed request by request on one
//! keep-alive connection; a path prefix; h2c and gRPC routed by header; `--http-header auto`;
//! a filter refused on a port that declares another appProtocol; mirrors that see every
//! request while the app answers; and `uninstall` restoring every spec exactly.
//!
//! One sandbox serves the whole session, so the steps run in order in one test. Needs root
//! (network namespaces, TUN) and the workspace built (`cargo build --workspace`).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tether_tests::intercepting::{
    RECOVERY, curl_from_pod, hostname, in_client, objects_of, tether_json,
};
use tether_tests::sandbox::SandboxCluster;
use tether_tests::{Proc, bin, check, wait_for};

/// The workloads this scenario changes, and their Services.
const OBJECTS: [&str; 6] = [
    "deploy/web",
    "deploy/grpc",
    "deploy/api",
    "svc/web",
    "svc/grpc",
    "svc/grpc-raw",
];

fn extra() -> String {
    let testkit = bin("tether-testkit").to_string_lossy().into_owned();
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client, namespace: demo}}
spec:
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      containers:
        - {{name: client, image: tether-sandbox/host, command: ["sleep", "infinity"]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: grpc, namespace: demo}}
spec:
  selector: {{matchLabels: {{app: grpc}}}}
  template:
    metadata: {{labels: {{app: grpc}}}}
    spec:
      containers:
        - name: grpc
          image: tether-sandbox/host
          command: ["{testkit}", "h2-echo", "--listen", "0.0.0.0:9090", "--name", "grpc-app"]
          ports: [{{name: grpc, containerPort: 9090}}]
---
apiVersion: v1
kind: Service
metadata: {{name: grpc, namespace: demo}}
spec:
  selector: {{app: grpc}}
  ports: [{{port: 9090, targetPort: grpc, appProtocol: kubernetes.io/h2c}}]
---
apiVersion: v1
kind: Service
metadata: {{name: grpc-raw, namespace: demo}}
spec:
  selector: {{app: grpc}}
  ports: [{{port: 9091, targetPort: 9090, appProtocol: mysql}}]
"#
    )
}

/// A server on the workstation that speaks HTTP/1.1, h2c and gRPC, answering as `name`.
fn local_h2_server(c: &SandboxCluster, name: &str, port: u16) -> Proc {
    let mut p = Proc::start(
        name,
        Command::new("ip")
            .args(["netns", "exec", &c.workstation])
            .arg(bin("tether-testkit"))
            .args(["h2-echo", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--name", name]),
    );
    p.wait_line(Duration::from_secs(10), |l| l == "ready");
    p
}

fn curl_header(c: &SandboxCluster, url: &str, header: Option<&str>) -> String {
    let mut args = vec!["curl", "-sS", "--max-time", "5"];
    if let Some(h) = header {
        args.extend(["-H", h]);
    }
    args.push(url);
    let out = tether_tests::run(
        c.kubectl()
            .args(["-n", "demo", "exec", "deploy/client", "--"])
            .args(&args),
    );
    assert!(
        out.status.success(),
        "curl {url} with {header:?}: {}\n{}",
        tether_tests::text(&out),
        c.daemon_log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Who answers `url` with `header`, from the client pod.
fn answered_by(c: &SandboxCluster, url: &str, header: Option<&str>) -> String {
    hostname(&curl_header(c, url, header)).to_owned()
}

/// Waits until `url` is answered by `who` (a prefix). After a rollout the API shows the new
/// endpoints before the node's proxy programs them (about 300 ms against the real control
/// plane), and a connection that meets the old rules keeps them until it times out.
/// Three answers in a row, since the proxy picks one endpoint at random per connection.
fn settled(c: &SandboxCluster, url: &str, header: Option<&str>, who: &str) {
    let mut in_a_row = 0;
    wait_for(&format!("{url} to be answered by {who}"), RECOVERY, || {
        let mut args = vec!["curl", "-sS", "--max-time", "1"];
        if let Some(h) = header {
            args.extend(["-H", h]);
        }
        args.push(url);
        let answered = in_client(c, &args).is_some_and(|b| hostname(&b).starts_with(who));
        in_a_row = if answered { in_a_row + 1 } else { 0 };
        (in_a_row == 3).then_some(())
    });
}

fn intercept_ok(c: &SandboxCluster, args: &[&str]) -> Value {
    let mut all = vec!["intercept"];
    all.extend_from_slice(args);
    let (code, events, out) = tether_json(c, &all);
    assert_eq!(code, Some(0), "{args:?}: {out}\n{}", c.daemon_log());
    assert_eq!(events[0]["event"], "intercepted", "{out}");
    events[0].clone()
}

fn leave(c: &SandboxCluster, name: &str) {
    let (code, _, out) = tether_json(c, &["leave", name]);
    assert_eq!(code, Some(0), "{out}");
}

/// The demo's web as `tether list -o json` shows it.
fn listed_web(c: &SandboxCluster) -> Value {
    let (code, events, out) = tether_json(c, &["list", "-n", "demo"]);
    assert_eq!(code, Some(0), "{out}");
    events[0]["workloads"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["name"] == "web").cloned())
        .expect("web listed")
}

fn rolled_out(c: &SandboxCluster, deploy: &str) {
    check(c.kubectl().args([
        "-n",
        "demo",
        "rollout",
        "status",
        &format!("deploy/{deploy}"),
        "--timeout=60s",
    ]));
}

/// Waits until every pod of `app` runs exactly `containers`. A rollout counts
/// as complete while the old ReplicaSet's pods are still terminating, so they
/// may be listed for a moment after `leave` or `rollout status` returns.
fn pods_run(c: &SandboxCluster, app: &str, containers: &str, what: &str) {
    wait_for(what, Duration::from_secs(60), || {
        let running = c.jsonpath(
            "demo",
            &["pods", "-l", &format!("app={app}")],
            "{.items[*].spec.containers[*].name}",
        );
        (running.trim() == containers).then_some(())
    });
}

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn personal_intercepts_share_a_service_request_by_request_and_uninstall_restores_it() {
    let c = SandboxCluster::start();
    c.sandbox.apply(&extra());
    // api gets a second port that no Service targets: --replace must take it too.
    check(c.kubectl().args([
        "-n",
        "demo",
        "patch",
        "deploy/api",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/template/spec/containers/0/ports/-","value":{"name":"metrics","containerPort":9100}}]"#,
    ]));
    for d in ["web", "client", "grpc", "api"] {
        rolled_out(&c, d);
    }
    let before = objects_of(&c, &OBJECTS);
    let (connected, _) = c.connect();
    assert_eq!(connected["event"], "connected", "{connected}");
    let _one = local_h2_server(&c, "laptop-one", 8091);
    let _two = local_h2_server(&c, "laptop-two", 8092);

    // Two developers' header filters on web, side by side.
    intercept_ok(
        &c,
        &[
            "web",
            "--name",
            "one",
            "--port",
            "8091",
            "--http-header",
            "x-dev=one",
        ],
    );
    let two = intercept_ok(
        &c,
        &[
            "web",
            "--name",
            "two",
            "--port",
            "8092",
            "--http-header",
            "X-Dev=two",
        ],
    );
    assert_eq!(
        two["intercept"]["route"]["filter"]["headers"][0]["name"], "x-dev",
        "{two}"
    );
    // Filters that may take the same requests are refused, naming the holder; so is a
    // global intercept.
    for args in [
        vec![
            "intercept",
            "web",
            "--name",
            "three",
            "--port",
            "8093",
            "--http-header",
            "x-dev=one",
        ],
        vec![
            "intercept",
            "web",
            "--name",
            "three",
            "--port",
            "8093",
            "--http-header-regex",
            "x-dev=o.*",
        ],
        vec!["intercept", "web", "--name", "three", "--port", "8093"],
    ] {
        let (code, _, out) = tether_json(&c, &args);
        assert_eq!(code, Some(5), "{args:?}: {out}");
        assert!(
            out.contains("already intercepted by intercept one")
                || out.contains("already intercepted by intercept two"),
            "{out}"
        );
    }
    settled(&c, "http://web/", Some("x-dev: one"), "laptop-one");
    assert_eq!(
        answered_by(&c, "http://web/", Some("x-dev: one")),
        "laptop-one"
    );
    assert_eq!(
        answered_by(&c, "http://web/", Some("x-dev: two")),
        "laptop-two"
    );
    assert!(answered_by(&c, "http://web/", None).starts_with("web-"));
    assert!(answered_by(&c, "http://web/", Some("x-dev: three")).starts_with("web-"));

    // One keep-alive connection: app, one, app, two, routed request by request.
    let out = in_client(
        &c,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-w",
            "connects=%{num_connects}\n",
            "http://web/a",
            "--next",
            "-H",
            "x-dev: one",
            "-w",
            "connects=%{num_connects}\n",
            "http://web/b",
            "--next",
            "-w",
            "connects=%{num_connects}\n",
            "http://web/c",
            "--next",
            "-H",
            "x-dev: two",
            "-w",
            "connects=%{num_connects}\n",
            "http://web/d",
        ],
    )
    .expect("curl with --next");
    let who: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("hostname: "))
        .map(|h| {
            if h.starts_with("web-") {
                "app".to_owned()
            } else {
                h.to_owned()
            }
        })
        .collect();
    assert_eq!(who, ["app", "laptop-one", "app", "laptop-two"], "{out}");
    let connects: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("connects="))
        .collect();
    assert_eq!(
        connects,
        ["1", "0", "0", "0"],
        "one connection for all four: {out}"
    );

    // The list shows both filters; leaving the second keeps the first.
    let web = listed_web(&c);
    let routes: BTreeSet<String> = web["intercepts"]
        .as_array()
        .expect("intercepts")
        .iter()
        .map(|i| i["route"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        routes,
        BTreeSet::from(["x-dev=one".to_owned(), "x-dev=two".to_owned()]),
        "{web}"
    );
    leave(&c, "two");
    assert!(answered_by(&c, "http://web/", Some("x-dev: two")).starts_with("web-"));
    assert_eq!(
        answered_by(&c, "http://web/", Some("x-dev: one")),
        "laptop-one"
    );

    // What does not speak HTTP goes to the app past the filter, and is counted.
    let _ = in_client(
        &c,
        &[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/web/80; printf '\\x16\\x03\\x01\\x00\\x05hello' >&3; timeout 2 cat <&3 >/dev/null; true",
        ],
    );
    wait_for(
        "the connection that was not HTTP to be counted",
        RECOVERY,
        || (listed_web(&c)["not_http"].as_u64()? >= 1).then_some(()),
    );
    leave(&c, "one");

    // A path prefix.
    intercept_ok(
        &c,
        &[
            "web",
            "--name",
            "v2",
            "--port",
            "8092",
            "--http-path-prefix",
            "/v2",
        ],
    );
    assert_eq!(answered_by(&c, "http://web/v2/users", None), "laptop-two");
    assert!(answered_by(&c, "http://web/v1/users", None).starts_with("web-"));
    leave(&c, "v2");

    // `auto`: a header of this intercept's own, printed and in the env file.
    let env_file = c.dir().join("auto.env");
    let auto = intercept_ok(
        &c,
        &[
            "web",
            "--name",
            "auto",
            "--port",
            "8091",
            "--http-header",
            "auto",
            "--env-file",
            &env_file.to_string_lossy(),
        ],
    );
    let header = auto["intercept"]["header"]
        .as_str()
        .expect("the made-up header")
        .to_owned();
    assert!(header.starts_with("x-tether-intercept: auto-"), "{auto}");
    let env = std::fs::read_to_string(&env_file).expect("the env file");
    assert!(
        env.lines()
            .any(|l| l == format!("TETHER_INTERCEPT_HEADER={header}")),
        "{env}"
    );
    assert_eq!(answered_by(&c, "http://web/", Some(&header)), "laptop-one");
    assert!(answered_by(&c, "http://web/", None).starts_with("web-"));
    leave(&c, "auto");

    // h2c and gRPC, by header, on a Service that declares kubernetes.io/h2c.
    intercept_ok(
        &c,
        &[
            "grpc",
            "--service",
            "grpc",
            "--name",
            "g",
            "--port",
            "8091",
            "--http-header",
            "x-dev=one",
        ],
    );
    let h2c = |header: Option<&str>| {
        let mut args = vec!["curl", "-sS", "--max-time", "5", "--http2-prior-knowledge"];
        if let Some(h) = header {
            args.extend(["-H", h]);
        }
        args.push("http://grpc:9090/h2c");
        hostname(&in_client(&c, &args).expect("h2c curl")).to_owned()
    };
    settled(&c, "http://grpc:9090/", Some("x-dev: one"), "laptop-one");
    assert_eq!(h2c(Some("x-dev: one")), "laptop-one");
    assert_eq!(h2c(None), "grpc-app");
    let testkit = bin("tether-testkit").to_string_lossy().into_owned();
    let grpc = |header: &[&str]| {
        let mut args = vec![
            testkit.as_str(),
            "h2-call",
            "--grpc",
            "--url",
            "http://grpc:9090/demo.Echo/Say",
        ];
        args.extend_from_slice(header);
        in_client(&c, &args).expect("gRPC call")
    };
    assert_eq!(
        grpc(&["--header", "x-dev=one"]),
        "laptop-one\ngrpc-status: 0\n"
    );
    assert_eq!(grpc(&[]), "grpc-app\ngrpc-status: 0\n");
    leave(&c, "g");
    // A filter on a port that declares another protocol is refused, and nothing changes.
    let raw_before = objects_of(&c, &["deploy/grpc", "svc/grpc-raw"]);
    let (code, _, out) = tether_json(
        &c,
        &[
            "intercept",
            "grpc",
            "--service",
            "grpc-raw",
            "--port",
            "8091",
            "--http-header",
            "x-dev=one",
        ],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("appProtocol") && out.contains("mysql"),
        "{out}"
    );
    assert_eq!(objects_of(&c, &["deploy/grpc", "svc/grpc-raw"]), raw_before);

    // A mirror: the app answers everything; the laptop sees every request.
    let mut mirror = local_h2_server(&c, "laptop-mirror", 8093);
    intercept_ok(&c, &["web", "--name", "m", "--port", "8093", "--mirror"]);
    // A mirror coexists with a filtered intercept.
    intercept_ok(
        &c,
        &[
            "web",
            "--name",
            "one",
            "--port",
            "8091",
            "--http-header",
            "x-dev=one",
        ],
    );
    let paths: Vec<String> = (0..5).map(|i| format!("/mirrored/{i}")).collect();
    for p in &paths {
        assert!(
            answered_by(&c, &format!("http://web{p}"), None).starts_with("web-"),
            "{p}"
        );
    }
    assert_eq!(
        answered_by(&c, "http://web/mine", Some("x-dev: one")),
        "laptop-one"
    );
    let seen = RefCell::new(BTreeSet::new());
    mirror.wait_line(RECOVERY, |l| {
        if let Some(p) = l.strip_prefix("request GET ") {
            seen.borrow_mut().insert(p.to_owned());
        }
        paths.iter().all(|p| seen.borrow().contains(p)) && seen.borrow().contains("/mine")
    });
    // With the mirror's server gone, the app answers as before; the copies are dropped.
    drop(mirror);
    for i in 0..3 {
        assert!(answered_by(&c, &format!("http://web/after/{i}"), None).starts_with("web-"));
    }
    wait_for("the dropped copies in tether list", RECOVERY, || {
        let web = listed_web(&c);
        let m = web["intercepts"]
            .as_array()?
            .iter()
            .find(|i| i["name"] == "m")?
            .clone();
        (m["dropped"].as_u64()? >= 3).then_some(())
    });
    leave(&c, "m");
    leave(&c, "one");
    assert!(curl_from_pod(&c, "http://web/").is_some_and(|b| hostname(&b).starts_with("web-")));

    // --replace: api's container stops; every one of its ports comes to the workstation.
    let _api = local_h2_server(&c, "laptop-api", 8094);
    let _metrics = local_h2_server(&c, "laptop-metrics", 9100);
    let replaced = intercept_ok(&c, &["api", "--port", "8094", "--replace"]);
    assert_eq!(replaced["intercept"]["replace"], true, "{replaced}");
    rolled_out(&c, "api");
    pods_run(
        &c,
        "api",
        "tether-agent",
        "api's pods to run no app container",
    );
    let node_ip = c.jsonpath("", &["nodes"], "{.items[0].status.addresses[0].address}");
    let pod_ip = c.jsonpath(
        "demo",
        &["pods", "-l", "app=api"],
        "{.items[0].status.podIP}",
    );
    settled(&c, "http://api:8080/", None, "laptop-api");
    assert_eq!(answered_by(&c, "http://api:8080/", None), "laptop-api");
    assert_eq!(
        answered_by(&c, &format!("http://{node_ip}:30080/"), None),
        "laptop-api"
    );
    assert_eq!(
        answered_by(&c, &format!("http://{}:9100/", pod_ip.trim()), None),
        "laptop-metrics"
    );
    // Nobody else can intercept a replaced workload meanwhile.
    let (code, _, out) = tether_json(
        &c,
        &["intercept", "api", "--name", "other", "--port", "8095"],
    );
    assert_eq!(code, Some(5), "{out}");
    assert!(out.contains("--replace"), "{out}");
    // leave puts the container back, serving.
    leave(&c, "api");
    pods_run(&c, "api", "http-echo", "api's container to be back");
    settled(&c, "http://api:8080/", None, "api-");

    // A daemon killed while it holds a replaced workload: the next connect puts it back.
    intercept_ok(&c, &["api", "--port", "8094", "--replace"]);
    let pid = c.status()["pid"].as_u64().expect("the daemon's pid") as u32;
    check(Command::new("kill").args(["-KILL", &pid.to_string()]));
    c.wait_daemon_gone(pid, RECOVERY);
    check(c.tether().arg("quit"));
    let (connected, _) = c.connect();
    assert_eq!(connected["event"], "connected", "{connected}");
    wait_for(
        "api's container to be put back",
        Duration::from_secs(60),
        || {
            let containers = c.jsonpath(
                "demo",
                &["deploy", "api"],
                "{.spec.template.spec.containers[*].name}",
            );
            (containers.trim() == "http-echo").then_some(())
        },
    );
    rolled_out(&c, "api");
    settled(&c, "http://api:8080/", None, "api-");

    // uninstall restores every spec exactly.
    let (code, _, out) = tether_json(&c, &["uninstall"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        objects_of(&c, &OBJECTS),
        before,
        "uninstall restored every spec"
    );
}
