//! Deployments rolled out as a user sees it with the real kubectl: `rollout status`,
//! `set image`, `rollout history` and `rollout undo`, and the Service's endpoints following
//! the pods, which the sandbox's kubelet runs and probes.

use std::time::Duration;

use tether_tests::sandbox::Sandbox;
use tether_tests::wait_for;

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: tether-sandbox/http-echo:1.27
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#;

const WAIT: Duration = Duration::from_secs(60);

/// Waits until `kubectl rollout status` reports success (the kubelet runs the pods).
fn roll_out(sb: &Sandbox) -> String {
    wait_for("the rollout to finish", WAIT, || {
        let out = sb.kubectl(&["rollout", "status", "deployment/web", "--timeout=5s"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
}

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn rollout_status_history_and_undo() {
    let sb = Sandbox::start();
    sb.apply(APP);
    let status = roll_out(&sb);
    assert!(status.contains("successfully rolled out"), "{status}");
    // A plain `rollout status` (no timeout shorter than the test's) agrees.
    sb.ok(&["rollout", "status", "deployment/web", "--timeout=20s"]);

    let ips = wait_for("two endpoints", WAIT, || {
        let ips = sb.ok(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ]);
        (ips.split_whitespace().count() == 2).then_some(ips)
    });
    let slice_port = sb.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "jsonpath={.items[0].ports[0].port}",
    ]);
    assert_eq!(slice_port, "8080", "the named targetPort resolved ({ips})");

    sb.ok(&[
        "set",
        "image",
        "deployment/web",
        "web=tether-sandbox/http-echo:1.28",
    ]);
    roll_out(&sb);
    let history = sb.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    let rs = sb.ok(&[
        "get",
        "rs",
        "-l",
        "app=web",
        "-o",
        r#"jsonpath={range .items[*]}{.spec.replicas}{" "}{end}"#,
    ]);
    let mut counts: Vec<&str> = rs.split_whitespace().collect();
    counts.sort();
    assert_eq!(counts, vec!["0", "2"], "the old ReplicaSet was scaled to 0");

    sb.ok(&["rollout", "undo", "deployment/web"]);
    roll_out(&sb);
    let image = sb.ok(&["get", "deployment/web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}"]);
    assert_eq!(image, "tether-sandbox/http-echo:1.27 3");
}
