//! RBAC as a real cluster enforces it: a developer whose Role grants the usual verbs in
//! their own namespace (and the use of the manager an admin installed) may intercept there,
//! and `tether intercept` of a workload in a namespace they have no rights in is refused
//! before anything changes, naming what is missing; the workload is exactly as it was.
//!
//! Only the real API server can judge this: the builtin control plane stores RBAC objects but
//! does not enforce them. So the sandbox here is always `--control-plane upstream`, and the
//! tests live in `upstream_only`, which scripts/test.sh leaves out of the builtin run and
//! reports as skipped there, with that reason. Needs root (network namespaces, TUN), the
//! workspace built and scripts/build-upstream.sh's binaries.

mod upstream_only {
    use std::time::{Duration, Instant};

    use serde_json::Value;
    use tether_tests::sandbox::SandboxCluster;
    use tether_tests::{check, run, text};

    /// The developer `alice`, a ServiceAccount in `dev`. Her rights are what `tether rbac`
    /// prints for her: a developer's Role in `dev`, and the use of the manager an admin
    /// installed in `tether`. Nothing in `demo`.
    const ALICE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: dev}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: alice, namespace: dev}
"#;

    /// A workload of alice's own, like demo's web.
    const DEV_WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: dev}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: http-echo
          image: tether-sandbox/http-echo
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: dev}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#;

    /// `kubectl get -o json` of demo's web, exactly: a refused intercept writes nothing, so
    /// not even a resourceVersion may differ.
    fn demo_web(c: &SandboxCluster) -> Value {
        let out =
            check(
                c.kubectl()
                    .args(["-n", "demo", "get", "deploy/web", "svc/web", "-o", "json"]),
            );
        serde_json::from_str(&out).expect("kubectl JSON")
    }

    /// `tether ARGS --output json`: the exit code and everything it printed.
    fn tether(c: &SandboxCluster, args: &[&str]) -> (Option<i32>, String) {
        let out = run(c.tether().args(args).args(["--output", "json"]));
        (out.status.code(), text(&out))
    }

    #[test]
    #[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
    fn a_developer_intercepts_only_where_their_role_allows() {
        let c = SandboxCluster::start_with(&["--control-plane", "upstream"]);

        // An admin installs the manager (connect, then quit: the manager stays).
        c.connect();
        check(c.tether().arg("quit"));

        c.sandbox.apply(ALICE);
        let roles = check(
            c.tether()
                .args(["rbac", "-n", "dev", "--service-account", "dev:alice"]),
        );
        assert!(roles.contains("kind: ClusterRoleBinding"), "{roles}");
        c.sandbox.apply(&roles);
        c.sandbox.apply(DEV_WEB);
        c.sandbox.ok(&[
            "-n",
            "dev",
            "rollout",
            "status",
            "deploy/web",
            "--timeout=60s",
        ]);
        let token = c
            .sandbox
            .ok(&["-n", "dev", "create", "token", "alice", "--duration=2h"]);
        let alice = c.dir().join("alice.kubeconfig");
        std::fs::copy(&c.kubeconfig, &alice).expect("copy the kubeconfig");
        let path = alice.to_str().expect("a UTF-8 path");
        let as_alice = |args: &[&str]| {
            let mut all = vec!["--kubeconfig", path];
            all.extend_from_slice(args);
            c.sandbox.ok(&all)
        };
        as_alice(&[
            "config",
            "set-credentials",
            "alice",
            "--token",
            token.trim(),
        ]);
        as_alice(&["config", "set-context", "--current", "--user", "alice"]);
        // (`auth can-i` exits 1 when the answer is no.)
        let can_i = c.sandbox.kubectl(&[
            "--kubeconfig",
            path,
            "auth",
            "can-i",
            "patch",
            "deployments",
            "-n",
            "demo",
        ]);
        assert_eq!(String::from_utf8_lossy(&can_i.stdout).trim(), "no");
        let before = demo_web(&c);

        // Installing a manager takes more than her rights: the refusal says who can.
        let (code, out) = tether(
            &c,
            &[
                "connect",
                "--kubeconfig",
                path,
                "--manager-namespace",
                "tether2",
            ],
        );
        assert_eq!(code, Some(4), "{out}");
        assert!(
            out.contains("ask a cluster admin to install it once"),
            "{out}"
        );
        assert!(out.contains("tether rbac"), "{out}");

        // alice connects with her own credentials; demo is her default namespace.
        let (connected, _) = c.connect_with(&["--kubeconfig", path]);
        assert_eq!(connected["event"], "connected", "{connected}");

        // Refused up front: exit 4, the missing permissions named, nothing changed.
        let (code, out) = tether(&c, &["intercept", "web", "--port", "8080"]);
        assert_eq!(code, Some(4), "{out}\n{}", c.daemon_log());
        for part in [
            "get deployments",
            "in namespace demo",
            "nothing was changed",
        ] {
            assert!(out.contains(part), "the refusal names {part:?}: {out}");
        }
        assert_eq!(demo_web(&c), before, "a refused intercept changed demo/web");

        // In her own namespace the same command works: the Role's verbs are enough.
        let (code, out) = tether(&c, &["intercept", "web", "-n", "dev", "--port", "8080"]);
        assert_eq!(code, Some(0), "{out}\n{}", c.daemon_log());
        let (code, out) = tether(&c, &["leave", "web"]);
        assert_eq!(code, Some(0), "{out}");
        // `run` there too, with an intercept of its own, on her session.
        let (code, out) = tether(
            &c,
            &[
                "run",
                "-n",
                "dev",
                "--intercept",
                "web",
                "--port",
                "8090",
                "--",
                "true",
            ],
        );
        assert_eq!(code, Some(0), "{out}\n{}", c.daemon_log());
        // doctor needs no more than her Role: every step passes in dev (the node port
        // check, which needs Nodes, does not apply to a ClusterIP Service). Waited for:
        // until kube-proxy follows the rollouts `run` made, the ClusterIP may still point
        // at a pod that is gone, which doctor rightly reports at step 7.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, out) = tether(
                &c,
                &["doctor", "svc/web", "-n", "dev", "--kubeconfig", path],
            );
            if code == Some(0) {
                assert!(!out.contains("\"failed\""), "{out}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "doctor kept failing for 30 s: {out}"
            );
        }
        let (code, out) = tether(
            &c,
            &[
                "uninstall",
                "--agent",
                "web",
                "-n",
                "dev",
                "--kubeconfig",
                path,
            ],
        );
        assert_eq!(code, Some(0), "{out}\n{}", c.daemon_log());
        check(c.tether().arg("quit"));
        assert_eq!(demo_web(&c), before, "demo/web changed");
    }
}
