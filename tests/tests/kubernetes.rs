//! `tether connect` against a Kubernetes cluster (the sandbox with its demo namespace), from a
//! workstation whose only way into the cluster is the API server: the manager is installed,
//! the tunnel is a pod port-forward, and Services, pod IPs and cluster names work until
//! `tether quit` leaves the workstation as it was.
//!
//! One sandbox serves the whole session, so the steps run in order in one test, as a user
//! would type them. Needs root (network namespaces, TUN) and the workspace built
//! (`cargo build --workspace`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tether_tests::sandbox::{OUTSIDE_IP, OUTSIDE_NAME, SandboxCluster, alive};
use tether_tests::{bin, check, run, text, wait_for};

/// Requests to `web` that must have reached both replicas.
const WEB_REQUESTS: usize = 20;
/// The promise: after the manager pod is replaced, requests work again within this.
const RECOVERY: Duration = Duration::from_secs(10);

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn connect_reaches_the_cluster_survives_a_new_manager_and_quit_restores_the_workstation() {
    let c = SandboxCluster::start();
    let before = c.snapshot();

    // Credentials the cluster rejects: one clear error naming the context, nothing installed.
    let kubeconfig = std::fs::read_to_string(&c.kubeconfig).expect("the sandbox's kubeconfig");
    let bad: String = kubeconfig
        .lines()
        .map(|l| match l.split_once("token:") {
            Some((indent, _)) => format!("{indent}token: not-the-token\n"),
            None => format!("{l}\n"),
        })
        .collect();
    assert_ne!(bad, kubeconfig, "the kubeconfig has a token");
    let bad_path = c.dir().join("bad-kubeconfig");
    std::fs::write(&bad_path, bad).expect("write the bad kubeconfig");
    let start = Instant::now();
    let out = run(c.connect_command().arg("--kubeconfig").arg(&bad_path));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    for part in ["tether-sandbox", "rejected the credentials"] {
        assert!(
            text(&out).contains(part),
            "the error names {part:?}: {}",
            text(&out)
        );
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(c.snapshot(), before, "nothing changed in the workstation");
    let namespaces = check(c.kubectl().args(["get", "namespaces", "-o", "name"]));
    assert!(!namespaces.contains("namespace/tether\n"), "{namespaces}");

    // A fresh cluster: connect installs the manager.
    let (connected, progress) = c.connect();
    assert_eq!(connected["event"], "connected", "{connected}");
    assert_eq!(connected["mode"], "kubernetes", "{connected}");
    assert_eq!(connected["namespace"], "demo", "{connected}");
    assert!(
        progress.contains("created deployment/tether-manager"),
        "{progress}"
    );
    let manager_uid = c.jsonpath(
        "tether",
        &["deployment", "tether-manager"],
        "{.metadata.uid}",
    );
    assert!(!manager_uid.is_empty());

    web_is_answered_by_both_replicas_and_never_by_flaky(&c);
    services_and_names_resolve_through_the_tunnel(&c);
    status_says_what_is_connected(&c);

    // Connecting again reports the connection and changes nothing.
    let again = run(c.connect_command().args(["--output", "json"]));
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    assert!(
        text(&again).contains("already-connected"),
        "{}",
        text(&again)
    );

    requests_work_again_after_the_manager_pod_is_replaced(&c);

    // quit: the workstation is as it was.
    let pid = pid_of(&c);
    let manager = c.status()["manager"]["address"].clone();
    let out = check(c.tether().args(["quit", "--output", "json"]));
    let quit = tether_tests::events::parse_all(&out).remove(0);
    assert_eq!(quit["event"], "disconnected", "{quit}");
    assert_eq!(
        quit["manager"], manager,
        "quit names the current manager pod"
    );
    c.wait_daemon_gone(pid, Duration::from_secs(10));
    assert_eq!(c.snapshot(), before, "quit restores the workstation");
    assert_eq!(c.status()["event"], "not-connected");

    // A Service subnet the workstation already routes elsewhere is refused, naming both and
    // the way out, and nothing is left behind.
    let ip = |args: &[&str]| {
        check(
            std::process::Command::new("ip")
                .args(["-n", &c.workstation])
                .args(args),
        )
    };
    ip(&["route", "add", "10.96.0.0/24", "dev", "lo"]);
    let with_route = c.snapshot();
    let refused = run(&mut c.connect_command());
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    for part in ["10.96.0.0/24", "lo", "--never-proxy"] {
        assert!(
            text(&refused).contains(part),
            "the refusal names {part:?}: {}",
            text(&refused)
        );
    }
    assert_eq!(c.snapshot(), with_route, "after the refusal");
    ip(&["route", "del", "10.96.0.0/24", "dev", "lo"]);
    assert_eq!(c.snapshot(), before);

    // Connecting again reuses the installed manager, untouched.
    let rv = c.jsonpath(
        "tether",
        &["deployment", "tether-manager"],
        "{.metadata.resourceVersion}",
    );
    let (_, progress) = c.connect();
    assert!(
        progress.contains("using the installed traffic manager"),
        "{progress}"
    );
    assert!(!progress.contains("created"), "{progress}");
    let rv_after = c.jsonpath(
        "tether",
        &["deployment", "tether-manager"],
        "{.metadata.resourceVersion}",
    );
    assert_eq!(rv_after, rv, "the manager was reused as it was");
    assert!(c.curl("http://web.demo/").is_some());

    // A daemon killed outright: the next `tether quit` undoes what it left.
    let pid = pid_of(&c);
    check(std::process::Command::new("kill").args(["-KILL", &pid.to_string()]));
    c.wait_daemon_gone(pid, Duration::from_secs(10));
    assert_ne!(c.snapshot(), before, "the resolver file is still tether's");
    let out = check(c.tether().args(["quit", "--output", "json"]));
    assert!(out.contains("cleaned-up"), "{out}");
    tether_tests::events::parse_all(&out);
    assert_eq!(
        c.snapshot(),
        before,
        "quit after SIGKILL restores the workstation"
    );

    // uninstall leaves nothing of tether's in the cluster.
    let out = check(c.tether().args(["uninstall", "--output", "json"]));
    assert!(out.contains("deployment/tether/tether-manager"), "{out}");
    for kind in [
        "namespaces",
        "clusterroles",
        "clusterrolebindings",
        "deployments",
        "pods",
        "secrets",
        "serviceaccounts",
    ] {
        let left = check(c.kubectl().args([
            "get",
            kind,
            "-A",
            "-l",
            "app.kubernetes.io/part-of=tether",
            "-o",
            "name",
        ]));
        assert!(left.trim().is_empty(), "tether's {kind} left: {left}");
    }
    let namespaces = check(c.kubectl().args(["get", "namespaces", "-o", "name"]));
    assert!(!namespaces.contains("namespace/tether\n"), "{namespaces}");
}

fn pid_of(c: &SandboxCluster) -> u32 {
    let status = c.status();
    let pid = status["pid"]
        .as_u64()
        .expect("status names the daemon's pid") as u32;
    assert!(alive(pid), "daemon {pid} runs");
    pid
}

fn web_is_answered_by_both_replicas_and_never_by_flaky(c: &SandboxCluster) {
    let replicas: BTreeSet<String> = check(c.kubectl().args([
        "-n",
        "demo",
        "get",
        "pods",
        "-l",
        "app=web,track=stable",
        "-o=jsonpath={.items[*].metadata.name}",
    ]))
    .split_whitespace()
    .map(str::to_owned)
    .collect();
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    let mut answered = BTreeSet::new();
    for _ in 0..WEB_REQUESTS {
        let body = c
            .curl("http://web.demo/")
            .unwrap_or_else(|| panic!("curl http://web.demo/ failed\n{}", c.daemon_log()));
        assert!(!body.contains("flaky"), "an unready pod answered: {body}");
        let hostname = body
            .lines()
            .find_map(|l| l.strip_prefix("hostname: "))
            .unwrap_or_else(|| panic!("no hostname in {body}"));
        answered.insert(hostname.to_owned());
    }
    assert_eq!(answered, replicas, "web's answers came from both replicas");
}

fn services_and_names_resolve_through_the_tunnel(c: &SandboxCluster) {
    // api by its ClusterIP, and through its NodePort on the node.
    let api_ip = c.jsonpath("demo", &["svc", "api"], "{.spec.clusterIP}");
    let body = c
        .curl(&format!("http://{api_ip}:8080/"))
        .expect("api answers on its ClusterIP");
    assert!(body.contains("hostname: api-"), "{body}");
    let node_ip = c.jsonpath("", &["nodes"], "{.items[0].status.addresses[0].address}");
    if let Some(body) = c.curl(&format!("http://{node_ip}:30080/")) {
        assert!(body.contains("hostname: api-"), "{body}");
    } else {
        panic!("api does not answer on its NodePort {node_ip}:30080");
    }

    // The short name resolves in the namespace given to connect (-n demo).
    let web_ip = c.jsonpath("demo", &["svc", "web"], "{.spec.clusterIP}");
    assert_eq!(c.dig(&["+search", "web"]), std::slice::from_ref(&web_ip));
    assert_eq!(c.dig(&["web.demo.svc.cluster.local"]), [web_ip]);

    // Headless: the ready pods' IPs; ExternalName: a CNAME; a pod record.
    let db_ips: Vec<String> = {
        let mut ips: Vec<String> = check(c.kubectl().args([
            "-n",
            "demo",
            "get",
            "pods",
            "db-0",
            "db-1",
            "-o=jsonpath={.items[*].status.podIP}",
        ]))
        .split_whitespace()
        .map(str::to_owned)
        .collect();
        ips.sort();
        ips
    };
    assert_eq!(db_ips.len(), 2);
    assert_eq!(c.dig(&["db.demo.svc.cluster.local"]), db_ips);
    assert_eq!(
        c.dig(&["-t", "CNAME", "legacy.demo.svc.cluster.local"]),
        ["legacy.example.com."]
    );
    let dashed = db_ips[0].replace('.', "-");
    assert_eq!(
        c.dig(&[&format!("{dashed}.demo.pod.cluster.local")]),
        [db_ips[0].clone()]
    );

    // Names outside the cluster still resolve as before.
    assert_eq!(c.dig(&[OUTSIDE_NAME]), [OUTSIDE_IP]);

    // UDP to the udp Service, found by name.
    let udp_ip = c.dig(&["udp.demo.svc.cluster.local"]);
    assert_eq!(udp_ip.len(), 1, "{udp_ip:?}");
    let echo = check(c.shell(bin("tether-testkit")).args([
        "udp-ping",
        "--to",
        &format!("{}:9001", udp_ip[0]),
        "--message",
        "hello through tether",
    ]));
    assert_eq!(echo.trim(), "hello through tether");
}

fn status_says_what_is_connected(c: &SandboxCluster) {
    let status = c.status();
    assert_eq!(status["state"], "connected", "{status}");
    assert_eq!(status["mode"], "kubernetes", "{status}");
    assert_eq!(status["context"], "tether-sandbox", "{status}");
    assert!(
        status["cluster"]
            .as_str()
            .is_some_and(|s| s.starts_with("https://127.0.0.1:")),
        "{status}"
    );
    assert_eq!(status["namespace"], "demo", "{status}");
    assert_eq!(
        status["manager"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{status}"
    );
    assert!(
        status["manager"]["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("tether/tether-manager-")),
        "{status}"
    );
    let routes = status["routes"].as_array().expect("routes");
    // The demo's Services are in 10.96.0.0/12 and its pods in 10.244.0.0/16.
    for prefix in ["10.96.", "10.244."] {
        assert!(
            routes
                .iter()
                .any(|r| r.as_str().is_some_and(|r| r.starts_with(prefix))),
            "no route for {prefix}*: {status}"
        );
    }
    assert_eq!(status["dns"]["mode"], "resolv-conf", "{status}");
    assert_eq!(status["dns"]["domain"], "cluster.local", "{status}");
    assert_eq!(
        status["dns"]["search"][0], "demo.svc.cluster.local",
        "{status}"
    );
    assert_eq!(status["reconnects"], 0, "{status}");

    let human = check(c.tether().arg("status"));
    for part in [
        "Connected (kubernetes)",
        "tether-sandbox",
        "demo",
        "resolv-conf",
    ] {
        assert!(human.contains(part), "status lacks {part:?}:\n{human}");
    }
}

fn requests_work_again_after_the_manager_pod_is_replaced(c: &SandboxCluster) {
    let old = c.status()["manager"]["address"]
        .as_str()
        .expect("the manager pod")
        .to_owned();
    let pod = old.trim_start_matches("tether/");
    let deleted = Instant::now();
    check(
        c.kubectl()
            .args(["-n", "tether", "delete", "pod", pod, "--wait=false"]),
    );
    let status = wait_for(
        "the daemon to reconnect to a new manager pod",
        RECOVERY,
        || {
            let status = c.status();
            (status["state"] == "connected" && status["manager"]["address"] != old.as_str())
                .then_some(status)
        },
    );
    assert_eq!(status["reconnects"], 1, "{status}");
    wait_for("web to answer through the new manager", RECOVERY, || {
        c.curl("http://web.demo/")
    });
    let recovered = deleted.elapsed();
    eprintln!("requests work again {recovered:?} after the manager pod was deleted");
    assert!(recovered < RECOVERY, "recovered after {recovered:?}");
    assert!(c.dig(&["db.demo.svc.cluster.local"]).len() == 2);
}

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn an_unreachable_cluster_is_one_clear_error_naming_the_context_within_seconds() {
    tether_tests::remove_leftovers();
    // A laptop with no way anywhere: the API server's address cannot be reached.
    let laptop = tether_tests::Netns::new(tether_tests::unique("kube"));
    laptop.set_resolv_conf("nameserver 192.0.2.53\n");
    let dir = laptop.log_dir();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: far-away\n\
         clusters:\n- name: far\n  cluster:\n    server: https://192.0.2.1:6443\n\
         contexts:\n- name: far-away\n  context:\n    cluster: far\n    user: me\n\
         users:\n- name: me\n  user:\n    token: not-a-real-token\n",
    )
    .expect("write the kubeconfig");
    let before = laptop.snapshot();
    let state = dir.join("tether");
    let start = Instant::now();
    let out = run(laptop
        .cmd(bin("tether"))
        .arg("--state-dir")
        .arg(&state)
        .args(["connect", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--resolv-conf")
        .arg(laptop.resolv_conf_path()));
    let elapsed = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    for part in ["far-away", "https://192.0.2.1:6443", "kubectl"] {
        assert!(stderr.contains(part), "the error names {part:?}: {stderr}");
    }
    assert!(
        elapsed < Duration::from_secs(10),
        "failed after {elapsed:?}"
    );
    assert_eq!(laptop.snapshot(), before, "nothing changed on the laptop");
    let status = check(
        laptop
            .cmd(bin("tether"))
            .arg("--state-dir")
            .arg(&state)
            .arg("status"),
    );
    assert_eq!(status.trim(), "Not connected.");
}
