//! Ingress hosts on the workstation while tether is connected, as a developer meets them:
//! the demo's `shop.example.test` (no public DNS knows it) resolves to the ingress
//! controller through the tunnel and `curl http://shop.example.test/` is answered by web
//! through the controller, Host header intact; an Ingress made while connected resolves at
//! once and stops resolving when deleted; a host public DNS knows stays public unless
//! `--ingress-hosts=override`; `--no-ingress-hosts` turns it all off. `status` and `list`
//! show the hosts, and the workstation is as it was after each session.
//!
//! One sandbox serves the whole session. Needs root (network namespaces, TUN) and the
//! workspace built (`cargo build --workspace`).

use std::time::Duration;

use serde_json::Value;
use tether_tests::intercepting::{hostname, tether_json};
use tether_tests::sandbox::{OUTSIDE_IP, OUTSIDE_NAME, SandboxCluster};
use tether_tests::{check, wait_for};

const DEADLINE: Duration = Duration::from_secs(30);

fn ingress(name: &str, host: &str) -> String {
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: demo}}
spec:
  rules:
    - host: {host}
      http:
        paths:
          - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
"#
    )
}

/// Waits until the controller has given Ingress `name` an address.
fn wait_address(c: &SandboxCluster, name: &str) -> String {
    wait_for(&format!("an address on ingress/{name}"), DEADLINE, || {
        let ip = c.jsonpath(
            "demo",
            &["ingress", name],
            "{.status.loadBalancer.ingress[0].ip}",
        );
        (!ip.trim().is_empty()).then(|| ip.trim().to_owned())
    })
}

fn ingress_hosts(status: &Value) -> Vec<(String, String)> {
    status["ingress_hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["host"].as_str().unwrap_or("").to_owned(),
                h["address"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Waits until `name` resolves in the workstation to exactly `want` (empty: not at all).
fn wait_resolves(c: &SandboxCluster, name: &str, want: &[&str]) {
    wait_for(&format!("{name} to resolve to {want:?}"), DEADLINE, || {
        (c.dig(&[name]) == want).then_some(())
    });
}

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn ingress_hosts_resolve_to_the_controller_while_connected() {
    let c = SandboxCluster::start();
    let before = c.snapshot();
    c.sandbox.apply(&ingress("public", OUTSIDE_NAME));
    let lb = wait_address(&c, "shop");
    wait_address(&c, "public");
    let controller = c.jsonpath(
        "ingress-nginx",
        &["svc", "ingress-nginx-controller"],
        "{.spec.clusterIP}",
    );
    let controller = controller.trim();
    // Not connected: the name is nobody's.
    assert_eq!(c.dig(&["shop.example.test"]), Vec::<String>::new());

    let (connected, _) = c.connect();
    assert_eq!(connected["event"], "connected", "{connected}");
    wait_resolves(&c, "shop.example.test", &[controller]);
    let body = c
        .curl("http://shop.example.test/")
        .unwrap_or_else(|| panic!("curl shop.example.test\n{}", c.daemon_log()));
    assert!(hostname(&body).starts_with("web-"), "{body}");
    assert!(
        body.contains("host: shop.example.test\n"),
        "the Host header arrives: {body}"
    );
    assert!(
        body.contains("x-forwarded-host: shop.example.test"),
        "through the controller: {body}"
    );
    // Public DNS knows this one: it stays public.
    assert_eq!(c.dig(&[OUTSIDE_NAME]), [OUTSIDE_IP]);

    let status = c.status();
    let hosts = ingress_hosts(&status);
    assert!(
        hosts.contains(&("shop.example.test".into(), controller.into())),
        "{status}"
    );
    let (_, events, out) = tether_json(&c, &["list", "-n", "demo"]);
    let shop = events[0]["ingresses"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["name"] == "shop"))
        .unwrap_or_else(|| panic!("no ingress shop in {out}"));
    assert_eq!(shop["hosts"][0], "shop.example.test", "{out}");
    assert_eq!(shop["address"], lb.as_str(), "{out}");
    let text = tether_tests::text(&tether_tests::run(c.tether().arg("status")));
    assert!(text.contains("shop.example.test -> "), "{text}");

    // Made while connected: resolves once the controller gives it an address; gone with it.
    c.sandbox.apply(&ingress("late", "late.example.test"));
    wait_address(&c, "late");
    wait_resolves(&c, "late.example.test", &[controller]);
    c.sandbox.ok(&["-n", "demo", "delete", "ingress", "late"]);
    wait_resolves(&c, "late.example.test", &[]);
    check(c.tether().arg("quit"));
    assert_eq!(c.snapshot(), before, "the workstation after the session");

    // Override: the Ingress wins over public DNS.
    let (connected, _) = c.connect_with(&["--ingress-hosts=override"]);
    assert_eq!(connected["event"], "connected", "{connected}");
    wait_resolves(&c, OUTSIDE_NAME, &[controller]);
    check(c.tether().arg("quit"));

    // Off: nothing resolves that public DNS does not know.
    let (connected, _) = c.connect_with(&["--no-ingress-hosts"]);
    assert_eq!(connected["event"], "connected", "{connected}");
    assert_eq!(c.dig(&["shop.example.test"]), Vec::<String>::new());
    assert_eq!(c.dig(&[OUTSIDE_NAME]), [OUTSIDE_IP]);
    assert_eq!(ingress_hosts(&c.status()), Vec::new());
    check(c.tether().arg("quit"));
    assert_eq!(c.snapshot(), before, "the workstation after the sessions");
}
