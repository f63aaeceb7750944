//! The real kubectl against the sandbox's demo cluster, for what a user of a real cluster
//! does with it: nodes, exec, logs, port-forward, a rollout, cluster DNS at kube-dns's
//! address, and `create token` (TokenRequest). With `TETHER_SANDBOX_CONTROL_PLANE=upstream`
//! (scripts/test.sh runs it so), also what only the real API server offers: its post-start
//! hooks in `/livez?verbose`, `auth can-i` (RBAC), and tokens that are JWTs.

use std::process::Command;
use std::time::Duration;

use tether_tests::sandbox::Sandbox;
use tether_tests::{Proc, check, run, text};

fn upstream() -> bool {
    std::env::var("TETHER_SANDBOX_CONTROL_PLANE").is_ok_and(|v| v == "upstream")
}

#[test]
#[ignore = "needs root (network namespaces); as root: cargo test -- --include-ignored"]
fn kubectl_does_what_it_does_on_a_real_cluster() {
    let sb = Sandbox::start_with(&["--demo"]);

    let nodes = sb.ok(&["get", "nodes", "--no-headers"]);
    assert!(
        nodes.starts_with("sandbox ") && nodes.contains(" Ready "),
        "{nodes}"
    );

    // The container's environment has the Services' variables, as a kubelet sets them.
    let env = sb.ok(&["-n", "demo", "exec", "deploy/web", "--", "env"]);
    assert!(env.contains("WEB_SERVICE_HOST=10.96."), "{env}");
    assert!(env.contains("KUBERNETES_SERVICE_HOST=10.96.0.1"), "{env}");
    let logs = sb.kubectl(&["-n", "demo", "logs", "deploy/web"]);
    assert!(logs.status.success(), "{}", text(&logs));

    // port-forward to a Service: kubectl picks a ready pod and forwards to its target port.
    let mut forward = Proc::start(
        "kubectl port-forward svc/web",
        &mut sb.kubectl_cmd(&["-n", "demo", "port-forward", "svc/web", ":80"]),
    );
    let line = forward.wait_line(Duration::from_secs(30), |l| {
        l.starts_with("Forwarding from 127.0.0.1:")
    });
    let port = line
        .trim_start_matches("Forwarding from 127.0.0.1:")
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    let body = check(Command::new("curl").args([
        "-sS",
        "--max-time",
        "10",
        &format!("http://127.0.0.1:{port}/"),
    ]));
    assert!(!body.is_empty(), "web answered through port-forward");
    drop(forward);

    // A rollout: a changed template replaces the pods, and kubectl sees it complete.
    sb.ok(&["-n", "demo", "set", "env", "deploy/web", "ROLLED=1"]);
    sb.ok(&[
        "-n",
        "demo",
        "rollout",
        "status",
        "deploy/web",
        "--timeout=90s",
    ]);
    let env = sb.ok(&["-n", "demo", "exec", "deploy/web", "--", "env"]);
    assert!(env.contains("ROLLED=1"), "{env}");

    // Cluster DNS at kube-dns's address, from the node.
    let cluster_ip = sb.jsonpath("demo", &["svc", "web"], "{.spec.clusterIP}");
    let node = format!("{}-node", sb.netns_prefix());
    let answer = check(Command::new("ip").args([
        "netns",
        "exec",
        &node,
        "dig",
        "+short",
        "+time=3",
        "+tries=2",
        "@10.96.0.10",
        "web.demo.svc.cluster.local",
    ]));
    assert_eq!(answer.trim(), cluster_ip);

    // TokenRequest: a service account's token, which the API server then accepts (and a
    // made-up one it does not).
    let token = sb.ok(&["-n", "demo", "create", "token", "default"]);
    let with = |t: &str| sb.kubectl(&["--token", t, "get", "--raw", "/api"]);
    let accepted = with(token.trim());
    assert!(accepted.status.success(), "{}", text(&accepted));
    let refused = with("sbx.made-up");
    assert!(!refused.status.success(), "{}", text(&refused));

    if !upstream() {
        return;
    }
    let livez = sb.ok(&["get", "--raw", "/livez?verbose"]);
    assert!(
        livez.contains("[+]poststarthook/rbac/bootstrap-roles ok"),
        "{livez}"
    );
    assert_eq!(sb.ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");
    let denied = run(&mut sb.kubectl_cmd(&[
        "auth",
        "can-i",
        "list",
        "secrets",
        "--as",
        "system:serviceaccount:demo:default",
    ]));
    assert_eq!(String::from_utf8_lossy(&denied.stdout).trim(), "no");
    let token = sb.ok(&["-n", "demo", "create", "token", "default"]);
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
}
