//! Ingress in the sandbox, as a developer meets it on a cluster with ingress-nginx: the
//! demo's `shop` Ingress gets the controller's load-balancer address, and from the
//! workstation, without tether, a request for `shop.example.test` at that address is
//! answered by web through nginx with its Host header intact. An Ingress of one's own routes
//! Exact and Prefix paths (element-wise: `/foobar` is not under `/foo`) and everything else to
//! its default backend; editing it changes the routing, deleting it removes its routes.
//!
//! Runs on either control plane (`TETHER_SANDBOX_CONTROL_PLANE=upstream`: the real API
//! server, RBAC and admission judge the same steps). Needs root (network namespaces), nginx
//! (Debian's nginx-light) and the workspace built (`cargo build --workspace`).

use std::time::Duration;

use tether_tests::sandbox::SandboxCluster;
use tether_tests::{run, wait_for};

/// How long an address may take to be written, and a routing change to be served.
const SETTLE: Duration = Duration::from_secs(60);

/// A GET to `address` for `host` from the workstation: status and body, None when the
/// request failed (nothing answered).
fn get(c: &SandboxCluster, address: &str, host: &str, path: &str) -> Option<(u16, String)> {
    let resolve = format!("{host}:80:{address}");
    let url = format!("http://{host}{path}");
    let out = run(c.shell("curl").args([
        "-sS",
        "--max-time",
        "5",
        "--resolve",
        &resolve,
        "-w",
        "\n%{http_code}",
        &url,
    ]));
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_owned()))
}

/// Which workload answered: the `hostname:` line's pod name up to its ReplicaSet hash
/// (`web`, `api`, `fallback`), or the status code when no pod did.
fn answered_by(c: &SandboxCluster, address: &str, host: &str, path: &str) -> Option<String> {
    let (code, body) = get(c, address, host, path)?;
    if code != 200 {
        return Some(code.to_string());
    }
    let pod = body.lines().find_map(|l| l.strip_prefix("hostname: "))?;
    let parts: Vec<&str> = pod.split('-').collect();
    Some(parts[..parts.len().saturating_sub(2)].join("-"))
}

/// Waits until `host` + `path` is answered by `want` (a workload's name or a status code).
fn wait_routed(c: &SandboxCluster, address: &str, host: &str, path: &str, want: &str) {
    let mut last = None;
    let what = format!("{host}{path} to be answered by {want}");
    wait_for(&what, SETTLE, || {
        last = answered_by(c, address, host, path);
        (last.as_deref() == Some(want)).then_some(())
    });
}

#[test]
#[ignore = "needs root (network namespaces); as root: cargo test -- --include-ignored"]
fn ingress_rules_route_by_host_and_path_through_nginx() {
    let c = SandboxCluster::start();
    let kubectl = |args: &[&str]| c.sandbox.ok(args);

    // The demo's Ingress gets the controller's load-balancer address, shown by kubectl.
    let address = wait_for("the shop Ingress to get an address", SETTLE, || {
        let ip = c.jsonpath(
            "demo",
            &["ingress", "shop"],
            "{.status.loadBalancer.ingress[*].ip}",
        );
        (!ip.trim().is_empty()).then(|| ip.trim().to_owned())
    });
    let controller_ip = c.jsonpath(
        "ingress-nginx",
        &["svc", "ingress-nginx-controller"],
        "{.status.loadBalancer.ingress[*].ip}",
    );
    assert_eq!(
        address,
        controller_ip.trim(),
        "the controller Service's address"
    );
    let row = kubectl(&["-n", "demo", "get", "ingress", "shop", "--no-headers"]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..5],
        ["shop", "nginx", "shop.example.test", address.as_str(), "80"],
        "NAME CLASS HOSTS ADDRESS PORTS: {row}"
    );
    let class = kubectl(&["get", "ingressclass", "nginx", "--no-headers"]);
    assert!(class.contains("tether-sandbox/ingress-nginx"), "{class}");

    // From the workstation, no tether: web answers through nginx, which keeps the Host
    // header and says who asked.
    wait_routed(&c, &address, "shop.example.test", "/", "web");
    let (_, body) = get(&c, &address, "shop.example.test", "/cart?x=1").unwrap();
    for want in [
        "path: /cart?x=1",
        "host: shop.example.test",
        "x-forwarded-host: shop.example.test",
        "x-forwarded-proto: http",
        "x-forwarded-for: ",
    ] {
        assert!(body.contains(want), "{want:?} in {body}");
    }
    let out = run(c.shell("curl").args([
        "-sS",
        "--max-time",
        "5",
        "-H",
        "Host: shop.example.test",
        &format!("http://{address}/"),
    ]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hostname: web-"),
        "{}",
        tether_tests::text(&out)
    );

    // An Ingress of one's own: Exact and Prefix paths to two Services, and a default
    // backend of a third.
    kubectl(&[
        "-n",
        "demo",
        "create",
        "deployment",
        "fallback",
        "--image=tether-sandbox/http-echo",
        "--port=8080",
    ]);
    kubectl(&[
        "-n",
        "demo",
        "expose",
        "deployment",
        "fallback",
        "--port=80",
        "--target-port=8080",
    ]);
    kubectl(&[
        "-n",
        "demo",
        "rollout",
        "status",
        "deployment/fallback",
        "--timeout=60s",
    ]);
    c.sandbox.apply(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: routes
  namespace: demo
spec:
  defaultBackend:
    service: {name: fallback, port: {number: 80}}
  rules:
  - host: routes.example.test
    http:
      paths:
      - path: /exact
        pathType: Exact
        backend:
          service: {name: api, port: {number: 8080}}
      - path: /foo
        pathType: Prefix
        backend:
          service: {name: web, port: {name: http}}
",
    );
    // No class named: the default class's, as the API server's admission sets it.
    let class = c.jsonpath("demo", &["ingress", "routes"], "{.spec.ingressClassName}");
    assert_eq!(class.trim(), "nginx");
    let host = "routes.example.test";
    // Both new routes served (the new Service's endpoints may take a moment to be
    // forwarded by kube-proxy).
    wait_routed(&c, &address, host, "/exact", "api");
    wait_routed(&c, &address, host, "/", "fallback");
    for (path, want) in [
        ("/exact", "api"),
        ("/exact/", "fallback"),
        ("/exact/more", "fallback"),
        ("/foo", "web"),
        ("/foo/", "web"),
        ("/foo/bar", "web"),
        ("/foobar", "fallback"),
        ("/", "fallback"),
    ] {
        // Waited for, not asked once: for a moment after a reload nginx's old workers may
        // still take a connection with the configuration before `routes`.
        wait_routed(&c, &address, host, path, want);
    }
    // A host no rule names goes to the default backend too.
    wait_routed(&c, &address, "unknown.example.test", "/foo", "fallback");
    let status = wait_for("routes to get an address", SETTLE, || {
        let ip = c.jsonpath(
            "demo",
            &["ingress", "routes"],
            "{.status.loadBalancer.ingress[*].ip}",
        );
        (!ip.trim().is_empty()).then_some(ip)
    });
    assert_eq!(status.trim(), address);

    // `kubectl create ingress` (a protobuf body) works as well; `/*` is Prefix `/`.
    kubectl(&[
        "-n",
        "demo",
        "create",
        "ingress",
        "quick",
        "--rule=quick.example.test/*=web:80",
    ]);
    wait_routed(&c, &address, "quick.example.test", "/any/where", "web");
    kubectl(&["-n", "demo", "delete", "ingress", "quick"]);

    // Editing the Ingress changes the routing: /foo moves to api.
    kubectl(&[
        "-n",
        "demo",
        "patch",
        "ingress",
        "routes",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/rules/0/http/paths/1/backend/service", "value": {"name": "api", "port": {"number": 8080}}}]"#,
    ]);
    wait_routed(&c, &address, host, "/foo/bar", "api");
    wait_routed(&c, &address, host, "/foobar", "fallback");

    // Deleting it removes its routes and its default backend: nothing matches (404), and
    // the demo's Ingress still answers. (Right after a reload, nginx's old worker may still
    // take a connection or two, so each change is waited for.)
    kubectl(&["-n", "demo", "delete", "ingress", "routes"]);
    wait_routed(&c, &address, host, "/foo/bar", "404");
    wait_routed(&c, &address, "unknown.example.test", "/", "404");
    wait_routed(&c, &address, "shop.example.test", "/", "web");
}
