//! `tether doctor` against the sandbox's demo, as a developer whose Service does not answer
//! uses it: web passes every step and warns about the never-ready flaky pod its selector
//! also matches; flaky fails at readiness with its probe named; a selector typo, a missing
//! Service and a targetPort no container declares each fail at their step with what to do;
//! without a connection the in-cluster steps still run and the last one says to connect.
//! Nothing in the cluster changes.
//!
//! One sandbox serves the whole session. Needs root (network namespaces, TUN) and the
//! workspace built (`cargo build --workspace`).

use serde_json::Value;
use tether_tests::intercepting::{objects_of, tether_json};
use tether_tests::sandbox::SandboxCluster;

const BROKEN: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: typo, namespace: demo}
spec:
  selector: {app: wbe}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: badport, namespace: demo}
spec:
  selector: {app: api}
  ports: [{name: http, port: 8080, targetPort: 9999}]
"#;

/// `tether doctor ARGS -n demo -o json`: its exit code, its one event, and all it printed.
fn doctor(c: &SandboxCluster, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-n", "demo"]);
    let (code, events, out) = tether_json(c, &all);
    let event = events.into_iter().find(|e| e["event"] == "doctor");
    (code, event.unwrap_or(Value::Null), out)
}

/// The steps of the walk of `service` as (number, outcome), and all their details as text.
fn steps(event: &Value, service: &str) -> (Vec<(u64, String)>, String) {
    let walk = event["services"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["service"] == service))
        .unwrap_or_else(|| panic!("no walk of {service}: {event}"));
    let steps = walk["steps"].as_array().expect("steps");
    let outcomes = steps
        .iter()
        .map(|s| {
            (
                s["step"].as_u64().unwrap_or(0),
                s["outcome"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    (outcomes, walk.to_string())
}

/// `doctor svc/SERVICE` exits 1, its walk ends failed at `step`, and says `needle`.
fn fails_at(c: &SandboxCluster, service: &str, step: u64, needle: &str) {
    let (code, event, out) = doctor(c, &[&format!("svc/{service}")]);
    assert_eq!(code, Some(1), "{out}");
    let (got, text) = steps(&event, service);
    assert_eq!(got.last(), Some(&(step, "failed".to_owned())), "{text}");
    assert!(text.contains(needle), "{needle:?} in {text}");
}

fn outcomes(list: &[(&str, u64)]) -> Vec<(u64, String)> {
    list.iter().map(|(o, n)| (*n, (*o).to_owned())).collect()
}

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn doctor_walks_a_service_to_its_first_broken_step() {
    let c = SandboxCluster::start();
    c.sandbox.apply(BROKEN);
    let before = objects_of(&c, &["deploy,svc"]);

    // Bad input: one clear error, exit 2.
    let (code, _, out) = doctor(&c, &["pod/web"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("svc/NAME or deploy/NAME"), "{out}");

    // Not connected, no manager yet: the API's steps run, the dials say what they need.
    let (code, event, out) = doctor(&c, &["svc/web"]);
    assert_eq!(code, Some(0), "{out}");
    let (got, text) = steps(&event, "web");
    assert_eq!(
        got,
        outcomes(&[
            ("passed", 1),
            ("passed", 2),
            ("warned", 3),
            ("passed", 4),
            ("passed", 5),
            ("skipped", 6),
            ("skipped", 7),
            ("skipped", 8)
        ]),
        "{text}"
    );
    assert!(
        text.contains("flaky-"),
        "the warning names the flaky pod: {text}"
    );
    assert!(
        text.contains("readiness probe http-get :8080 (http)/healthz"),
        "{text}"
    );
    assert!(text.contains("tether connect"), "{text}");

    let (connected, _) = c.connect();
    assert_eq!(connected["event"], "connected", "{connected}");

    // Healthy: every step passes (flaky is a warning), from inside and from here.
    let (code, event, out) = doctor(&c, &["svc/web"]);
    assert_eq!(code, Some(0), "{out}\n{}", c.daemon_log());
    let (got, text) = steps(&event, "web");
    assert_eq!(
        got,
        outcomes(&[
            ("passed", 1),
            ("passed", 2),
            ("warned", 3),
            ("passed", 4),
            ("passed", 5),
            ("passed", 6),
            ("passed", 7),
            ("passed", 8)
        ]),
        "{text}"
    );
    assert!(text.contains("GET / answers 200"), "{text}");
    assert!(text.contains("web.demo resolves to"), "{text}");
    // The flaky pod's probe, asked again from inside the cluster.
    assert!(
        text.contains("asked now from inside the cluster: GET /healthz answers 5"),
        "{text}"
    );
    assert_eq!(event["healthy"], true, "{event}");

    // deploy/api: every Service that selects it. Its NodePort Service passes, the node
    // port dialled too; badport, which selects it too, fails, and so does the walk.
    let (code, event, out) = doctor(&c, &["deploy/api"]);
    assert_eq!(code, Some(1), "{out}");
    let (got, text) = steps(&event, "api");
    assert!(
        got.len() == 8 && got.iter().all(|(_, o)| o == "passed"),
        "{text}"
    );
    assert!(
        text.contains("NodePort 10.244.0.1:30080: GET / answers 200"),
        "{text}"
    );
    let (got, text) = steps(&event, "badport");
    assert_eq!(got.last(), Some(&(5, "failed".to_owned())), "{text}");

    // A LoadBalancer Service: its address is dialled from inside too.
    c.sandbox.ok(&[
        "-n",
        "demo",
        "expose",
        "deploy/web",
        "--type=LoadBalancer",
        "--name=web-lb",
        "--port=80",
        "--target-port=http",
    ]);
    let lb = tether_tests::wait_for(
        "an address for web-lb",
        std::time::Duration::from_secs(30),
        || {
            let ip = c.jsonpath(
                "demo",
                &["svc", "web-lb"],
                "{.status.loadBalancer.ingress[0].ip}",
            );
            (!ip.trim().is_empty()).then(|| ip.trim().to_owned())
        },
    );
    // A new Service answers once kube-proxy has synced it: until then doctor rightly
    // fails step 7, so it is asked again until it passes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let event = loop {
        let (code, event, out) = doctor(&c, &["svc/web-lb"]);
        if code == Some(0) {
            break event;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "doctor svc/web-lb kept failing: {out}"
        );
    };
    let (got, text) = steps(&event, "web-lb");
    assert!(
        got.len() == 8 && got.iter().all(|(_, o)| o == "passed"),
        "{text}"
    );
    assert!(
        text.contains(&format!("LoadBalancer {lb}:80: GET / answers 200")),
        "{text}"
    );
    c.sandbox.ok(&["-n", "demo", "delete", "svc", "web-lb"]);

    // Never ready: step 3 fails with the probe and the log.
    fails_at(
        &c,
        "flaky",
        3,
        "readiness probe http-get :8080 (http)/healthz",
    );
    fails_at(&c, "flaky", 3, "0 of 1 matching pods are ready");

    // A selector typo: the near label named.
    fails_at(
        &c,
        "typo",
        2,
        "selector app=wbe matches no pod; 3 pods have app=web",
    );

    // A targetPort no container declares: the port, and what they do declare.
    fails_at(
        &c,
        "badport",
        5,
        "declares targetPort 9999; they declare: 9090/TCP",
    );

    // No such Service: the near name.
    let (code, event, out) = doctor(&c, &["svc/wbe"]);
    assert_eq!(code, Some(1), "{out}");
    let (got, text) = steps(&event, "wbe");
    assert_eq!(got, outcomes(&[("failed", 1)]), "{text}");
    assert!(text.contains("near names in demo: web"), "{text}");

    // The text output reads as a walk.
    let out = tether_tests::text(&tether_tests::run(
        c.tether().args(["doctor", "svc/typo", "-n", "demo"]),
    ));
    assert!(out.contains("FAIL 2. its selector matches pods"), "{out}");
    assert!(out.contains("kubectl -n demo edit svc/typo"), "{out}");

    assert_eq!(
        objects_of(&c, &["deploy,svc"]),
        before,
        "doctor changed nothing"
    );
    tether_tests::check(c.tether().arg("quit"));
}
