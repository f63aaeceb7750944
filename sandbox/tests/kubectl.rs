//! The real kubectl against a sandbox: what a user would type, and what they would see.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use tether_tests::sandbox::Sandbox;
use tether_tests::wait_for;

const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web, tier: front}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
        env:
        - {name: MODE, value: "one"}
        - {name: KEEP, value: "yes"}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - name: http
    port: 80
"#;

const WAIT: Duration = Duration::from_secs(20);

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn version_and_api_resources() {
    let sb = Sandbox::start();
    let version: serde_json::Value =
        serde_json::from_str(&sb.ok(&["version", "-o", "json"])).unwrap();
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.33.0");
    let resources = sb.ok(&["api-resources"]);
    for (name, api_version) in [
        ("namespaces", "v1"),
        ("nodes", "v1"),
        ("pods", "v1"),
        ("services", "v1"),
        ("endpoints", "v1"),
        ("endpointslices", "discovery.k8s.io/v1"),
        ("deployments", "apps/v1"),
        ("replicasets", "apps/v1"),
        ("serviceaccounts", "v1"),
        ("secrets", "v1"),
        ("configmaps", "v1"),
        ("events", "v1"),
        ("roles", "rbac.authorization.k8s.io/v1"),
        ("rolebindings", "rbac.authorization.k8s.io/v1"),
        ("clusterroles", "rbac.authorization.k8s.io/v1"),
        ("clusterrolebindings", "rbac.authorization.k8s.io/v1"),
        ("servicecidrs", "networking.k8s.io/v1"),
    ] {
        assert!(
            resources
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains(api_version)),
            "{name} ({api_version}) missing from:\n{resources}"
        );
    }
    let raw = sb.ok(&["get", "--raw", "/healthz"]);
    assert_eq!(raw, "ok");
}

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn bootstrap_objects_are_there() {
    let sb = Sandbox::start();
    let namespaces = sb.ok(&["get", "namespaces", "-o", "name"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            namespaces.contains(&format!("namespace/{ns}")),
            "{namespaces}"
        );
    }
    assert_eq!(
        sb.ok(&["get", "node", "sandbox", "-o", "jsonpath={.spec.podCIDRs}"]),
        r#"["10.244.0.0/24"]"#
    );
    assert_eq!(
        sb.ok(&[
            "get",
            "svc",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}:{.spec.ports[0].port}"
        ]),
        "10.96.0.1:443"
    );
    assert_eq!(
        sb.ok(&[
            "get",
            "svc",
            "-n",
            "kube-system",
            "kube-dns",
            "-o",
            "jsonpath={.spec.clusterIP}"
        ]),
        "10.96.0.10"
    );
    assert_eq!(
        sb.ok(&[
            "get",
            "servicecidr",
            "kubernetes",
            "-o",
            "jsonpath={.spec.cidrs}"
        ]),
        r#"["10.96.0.0/16"]"#
    );
    let table = sb.ok(&["get", "svc", "-A"]);
    assert!(
        table.contains("kube-dns") && table.contains("53/UDP,53/TCP,9153/TCP"),
        "{table}"
    );
    // Namespaces get their default ServiceAccount from the controller.
    sb.ok(&["create", "namespace", "fresh"]);
    wait_for("the default ServiceAccount in fresh", WAIT, || {
        sb.kubectl(&["get", "sa", "default", "-n", "fresh"])
            .status
            .success()
            .then_some(())
    });
    let describe = sb.ok(&["describe", "node", "sandbox"]);
    assert!(
        describe.contains("PodCIDRs:") && describe.contains("10.244.0.0/24"),
        "{describe}"
    );
}

/// Every served resource: apply one object, then get and describe it.
#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn get_and_describe_every_resource() {
    let sb = Sandbox::start();
    sb.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: default, labels: {app: p}}
spec:
  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: e, namespace: default}
subsets: [{addresses: [{ip: 10.244.0.5}], ports: [{port: 80}]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: es, namespace: default, labels: {kubernetes.io/service-name: e}}
addressType: IPv4
endpoints: [{addresses: [10.244.0.5]}]
ports: [{port: 80}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs, namespace: default}
spec:
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: default}
stringData: {password: hunter2}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm, namespace: default}
data: {a: b}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa, namespace: default}
---
apiVersion: v1
kind: Event
metadata: {name: ev, namespace: default}
involvedObject: {kind: Pod, name: p, namespace: default}
reason: Testing
message: hello
type: Normal
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: r, namespace: default}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: rb, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}
subjects: [{kind: ServiceAccount, name: sa, namespace: default}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: cr}
rules: [{apiGroups: [""], resources: [services], verbs: [list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: crb}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cr}
subjects: [{kind: ServiceAccount, name: sa, namespace: default}]
"#,
    );
    for (kind, name) in [
        ("pod", "p"),
        ("endpoints", "e"),
        ("endpointslice", "es"),
        ("replicaset", "rs"),
        ("secret", "s"),
        ("configmap", "cm"),
        ("serviceaccount", "sa"),
        ("role", "r"),
        ("rolebinding", "rb"),
        ("clusterrole", "cr"),
        ("clusterrolebinding", "crb"),
        ("service", "kubernetes"),
        ("namespace", "default"),
        ("node", "sandbox"),
        ("servicecidr", "kubernetes"),
    ] {
        let got = sb.ok(&["get", kind, name, "-o", "name"]);
        assert!(got.trim().ends_with(&format!("/{name}")), "{kind}: {got}");
        // kubectl 1.32 describes ServiceCIDRs through networking.k8s.io/v1beta1, which a 1.33
        // server does not serve by default (and neither does the sandbox).
        if kind == "servicecidr" {
            continue;
        }
        let described = sb.ok(&["describe", kind, name]);
        assert!(
            described.contains(name),
            "describe {kind} {name}:\n{described}"
        );
    }
    // Defaults a real server fills in, and the Secret's stringData turned into data.
    let pod: serde_json::Value =
        serde_json::from_str(&sb.ok(&["get", "pod", "p", "-o", "json"])).unwrap();
    assert_eq!(pod["spec"]["restartPolicy"], "Always");
    assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(
        sb.ok(&["get", "secret", "s", "-o", "jsonpath={.data.password}"]),
        "aHVudGVyMg=="
    );
    let events = sb.ok(&["get", "events"]);
    assert!(
        events.contains("Testing") && events.contains("pod/p"),
        "{events}"
    );
    let pods = sb.ok(&[
        "get",
        "pods",
        "--field-selector",
        "metadata.name=p,status.phase=Pending",
        "-o",
        "name",
    ]);
    assert_eq!(pods.trim(), "pod/p");
}

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn apply_then_reapply_after_an_edit() {
    let sb = Sandbox::start();
    let first = sb.apply(SHOP);
    assert!(
        first.contains("namespace/shop created") && first.contains("deployment.apps/web created"),
        "{first}"
    );
    let svc: serde_json::Value =
        serde_json::from_str(&sb.ok(&["get", "svc", "web", "-n", "shop", "-o", "json"])).unwrap();
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["sessionAffinity"], "None");
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.96."), "{ip}");

    let edited = SHOP
        .replace("replicas: 2", "replicas: 3")
        .replace(r#"value: "one""#, r#"value: "two""#);
    let second = sb.apply(&edited);
    assert!(
        second.contains("deployment.apps/web configured")
            && second.contains("service/web unchanged"),
        "{second}"
    );
    let deploy: serde_json::Value =
        serde_json::from_str(&sb.ok(&["get", "deploy", "web", "-n", "shop", "-o", "json"]))
            .unwrap();
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(deploy["metadata"]["generation"], 2);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        "two"
    );
    assert_eq!(
        deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        "25%"
    );
    // The Service keeps its address across applies.
    assert_eq!(
        sb.ok(&[
            "get",
            "svc",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.clusterIP}"
        ]),
        ip
    );
    let third = sb.apply(&edited);
    assert!(third.contains("deployment.apps/web unchanged"), "{third}");
}

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn patch_label_annotate_scale() {
    let sb = Sandbox::start();
    sb.apply(SHOP);
    let d = ["-n", "shop", "deployment/web"];
    let patch =
        |kind: &str, body: &str| sb.ok(&["patch", d[0], d[1], d[2], "--type", kind, "-p", body]);
    patch("merge", r#"{"metadata":{"labels":{"patched":"merge"}}}"#);
    patch(
        "json",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"nginx:1.28"}]"#,
    );
    patch(
        "strategic",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"MODE","value":"three"}]}]}}}}"#,
    );
    let deploy: serde_json::Value =
        serde_json::from_str(&sb.ok(&["get", "-n", "shop", "deployment/web", "-o", "json"]))
            .unwrap();
    assert_eq!(deploy["metadata"]["labels"]["patched"], "merge");
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.28");
    assert_eq!(
        container["env"],
        serde_json::json!([{"name": "MODE", "value": "three"}, {"name": "KEEP", "value": "yes"}])
    );
    assert_eq!(
        container["ports"][0]["containerPort"], 80,
        "strategic merge kept the ports"
    );

    sb.ok(&["label", "-n", "shop", "deployment/web", "team=blue"]);
    sb.ok(&["annotate", "-n", "shop", "deployment/web", "note=hello"]);
    sb.ok(&["scale", "-n", "shop", "deployment/web", "--replicas=5"]);
    let got = sb.ok(&[
        "get",
        "-n",
        "shop",
        "deployment/web",
        "-o",
        "jsonpath={.metadata.labels.team} {.metadata.annotations.note} {.spec.replicas}",
    ]);
    assert_eq!(got, "blue hello 5");
    assert_eq!(
        sb.ok(&[
            "get",
            "deploy",
            "-n",
            "shop",
            "-l",
            "team in (blue,red),app=web",
            "-o",
            "name"
        ])
        .trim(),
        "deployment.apps/web"
    );
    assert_eq!(
        sb.ok(&[
            "get",
            "deploy",
            "-n",
            "shop",
            "-l",
            "team notin (blue)",
            "-o",
            "name"
        ])
        .trim(),
        ""
    );
    assert_eq!(
        sb.ok(&["get", "deploy", "-n", "shop", "-l", "!team", "-o", "name"])
            .trim(),
        ""
    );
    // Server-side apply is not supported: 415, as from a server without it.
    let err = sb.fails_stdin(&["apply", "--server-side", "-f", "-"], SHOP);
    assert!(
        err.contains("UnsupportedMediaType") || err.contains("unknown format"),
        "{err}"
    );
}

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn delete_cascades_to_owned_objects_and_namespace_contents() {
    let sb = Sandbox::start();
    sb.apply(SHOP);
    let uid = sb.ok(&[
        "get",
        "-n",
        "shop",
        "deployment/web",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let rs = format!(
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-1
  namespace: shop
  ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: web, uid: {uid}, controller: true}}]
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: nginx}}]}}
"#
    );
    sb.apply(&rs);
    sb.ok(&["get", "-n", "shop", "rs/web-1"]);
    sb.ok(&["delete", "-n", "shop", "deployment/web"]);
    wait_for("the owned ReplicaSet to be collected", WAIT, || {
        let out = sb.kubectl(&["get", "-n", "shop", "rs/web-1"]);
        String::from_utf8_lossy(&out.stderr)
            .contains("NotFound")
            .then_some(())
    });
    // kubectl waits until the namespace is gone; its Service went with it.
    sb.ok(&["delete", "namespace", "shop"]);
    let err = sb.fails(&["get", "--raw", "/api/v1/namespaces/shop/services/web"]);
    assert!(err.contains("NotFound"), "{err}");
    let err = sb.fails(&["get", "namespace", "shop"]);
    assert!(err.contains(r#"namespaces "shop" not found"#), "{err}");
}

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn get_watch_receives_events() {
    let sb = Sandbox::start();
    let mut child = sb
        .kubectl_cmd(&[
            "get",
            "configmaps",
            "-n",
            "default",
            "-w",
            "--output-watch-events",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    // Lines are table rows (the server prints them): EVENT NAME DATA AGE.
    let mut expect = |event: &str, name: &str| {
        wait_for(&format!("a {event} line for {name}"), WAIT, || {
            while let Ok(line) = lines_rx.try_recv() {
                seen.push(line);
            }
            seen.iter()
                .any(|l| l.split_whitespace().take(2).eq([event, name]))
                .then_some(())
        })
    };
    // The initial list includes the namespace's CA ConfigMap.
    expect("ADDED", "kube-root-ca.crt");
    sb.ok(&["create", "configmap", "watched", "--from-literal=a=b"]);
    expect("ADDED", "watched");
    sb.ok(&["label", "configmap", "watched", "x=y"]);
    expect("MODIFIED", "watched");
    sb.ok(&["delete", "configmap", "watched"]);
    expect("DELETED", "watched");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn errors_read_like_a_real_server() {
    let sb = Sandbox::start();
    let err = sb.fails(&[
        "create",
        "service",
        "clusterip",
        "x",
        "--tcp=80:80",
        "--clusterip",
        "1.1.1.1",
    ]);
    assert!(
        err.contains(r#"Service "x" is invalid: spec.clusterIPs: Invalid value: []string{"1.1.1.1"}: failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/16"#),
        "{err}"
    );
    let err = sb.fails(&["get", "svc", "nope"]);
    assert!(
        err.contains(r#"Error from server (NotFound): services "nope" not found"#),
        "{err}"
    );
    let err = sb.fails(&["get", "widgets"]);
    assert!(
        err.contains(r#"the server doesn't have a resource type "widgets""#),
        "{err}"
    );
    let err = sb.fails(&["get", "pods", "--token", "not-the-token"]);
    assert!(err.contains("Unauthorized"), "{err}");
    let err = sb.fails(&["run", "Bad_Name", "--image", "nginx"]);
    assert!(
        err.contains(r#"The Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name""#),
        "{err}"
    );
    let err = sb.ok_stdin(
        &["create", "-f", "-", "-o", "name"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dup}\n",
    );
    assert_eq!(err.trim(), "configmap/dup");
    let stderr = sb.fails_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dup}\n",
    );
    assert!(
        stderr.contains(r#"configmaps "dup" already exists"#),
        "{stderr}"
    );
    let invalid = "apiVersion: v1\nkind: Pod\nmetadata: {name: empty}\nspec: {containers: []}\n";
    let stderr = sb.fails_stdin(&["apply", "-f", "-"], invalid);
    assert!(
        stderr.contains(r#"The Pod "empty" is invalid: spec.containers: Required value"#),
        "{stderr}"
    );
    // A stale resourceVersion is a conflict.
    let mut cm: serde_json::Value =
        serde_json::from_str(&sb.ok(&["get", "cm", "dup", "-o", "json"])).unwrap();
    sb.ok(&["label", "cm", "dup", "bump=1"]);
    cm["data"] = serde_json::json!({"x": "y"});
    let stderr = sb.fails_stdin(&["replace", "-f", "-"], &cm.to_string());
    assert!(
        stderr.contains(
            "the object has been modified; please apply your changes to the latest version"
        ),
        "{stderr}"
    );
}

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn node_ports_are_allocated_and_conflicts_rejected() {
    let sb = Sandbox::start();
    let svc = |name: &str, node_port: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: NodePort\n  ports: [{{port: 80{node_port}}}]\n"
        )
    };
    sb.apply(&svc("np1", ", nodePort: 30080"));
    sb.apply(&svc("np2", ""));
    let port = sb.ok(&[
        "get",
        "svc",
        "np2",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let port: u16 = port.parse().unwrap();
    assert!((30000..=32767).contains(&port) && port != 30080);
    let stderr = sb.fails_stdin(&["apply", "-f", "-"], &svc("np3", ", nodePort: 30080"));
    assert!(
        stderr.contains(
            "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        ),
        "{stderr}"
    );
    let table = sb.ok(&["get", "svc", "np1"]);
    assert!(table.contains("80:30080/TCP"), "{table}");
}

/// `kubectl create <kind>` sends protobuf bodies; they decode to the same objects as JSON.
#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn typed_create_commands() {
    let sb = Sandbox::start();
    sb.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
        "--port=8080",
    ]);
    sb.ok(&["create", "service", "nodeport", "web", "--tcp=80:8080"]);
    sb.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=user=admin",
    ]);
    sb.ok(&["create", "serviceaccount", "robot"]);
    let deploy: serde_json::Value =
        serde_json::from_str(&sb.ok(&["get", "deploy", "web", "-o", "json"])).unwrap();
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(deploy["spec"]["selector"]["matchLabels"]["app"], "web");
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (container["name"].as_str(), container["image"].as_str()),
        (Some("nginx"), Some("nginx:1.27"))
    );
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    let svc: serde_json::Value =
        serde_json::from_str(&sb.ok(&["get", "svc", "web", "-o", "json"])).unwrap();
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert!(
        svc["spec"]["ports"][0]["nodePort"]
            .as_u64()
            .is_some_and(|p| (30000..=32767).contains(&p)),
        "{svc}"
    );
    assert_eq!(
        sb.ok(&["get", "secret", "creds", "-o", "jsonpath={.data.user}"]),
        "YWRtaW4="
    );
    sb.ok(&["get", "serviceaccount", "robot"]);
}
