//! The sandbox as a cluster, checked with the real kubectl and plain tools run inside its
//! network namespaces: `up --demo`, pod IPs, Services by ClusterIP, NodePort and name, every
//! DNS record kind, traffic spread over ready replicas and never to an unready pod, a rolling
//! update, `kubectl logs -f`, `kubectl port-forward` and a kube-rs port-forward, a pod using
//! kube-rs's in-cluster configuration, and `down` (also after SIGKILL) leaving nothing behind.
//!
//! One sandbox serves every scenario of the demo (starting one costs a few seconds); the
//! scenarios only read the demo or add objects of their own.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tether_tests::sandbox::Sandbox;
use tether_tests::{run, wait_for};

const WAIT: Duration = Duration::from_secs(60);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Namespaces, links and nftables rules of the host, to compare before and after.
fn host_network() -> (String, String, String) {
    let show = |args: &[&str]| text(&run(Command::new(args[0]).args(&args[1..])).stdout);
    (
        show(&["ip", "-o", "link", "show"]),
        show(&["ip", "route", "show", "table", "all"]),
        show(&["nft", "list", "ruleset"]),
    )
}

fn netns_list() -> String {
    text(&run(Command::new("ip").args(["netns", "list"])).stdout)
}

struct Cluster {
    sandbox: Sandbox,
    prefix: String,
}

impl Cluster {
    fn start() -> Cluster {
        let sandbox = Sandbox::start_with(&["--demo"]);
        let prefix = sandbox.netns_prefix();
        Cluster { sandbox, prefix }
    }

    fn jsonpath(&self, args: &[&str], path: &str) -> String {
        let mut all: Vec<&str> = args.to_vec();
        let expr = format!("jsonpath={path}");
        all.extend(["-o", &expr]);
        self.sandbox.ok(&all)
    }

    /// The network namespace of a pod, found by its UID.
    fn pod_netns(&self, ns: &str, pod: &str) -> String {
        let uid = self.jsonpath(&["get", "pod", "-n", ns, pod], "{.metadata.uid}");
        let short: String = uid.chars().filter(|c| *c != '-').take(12).collect();
        format!("{}-p{short}", self.prefix)
    }

    fn node_netns(&self) -> String {
        format!("{}-node", self.prefix)
    }

    /// Names of the demo pods of one app label that are Ready.
    fn ready_pods(&self, selector: &str) -> Vec<String> {
        let out = self.jsonpath(
            &["get", "pods", "-n", "demo", "-l", selector],
            r#"{range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
        );
        out.lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, ready)| *ready == "True")
            .map(|(name, _)| name.to_string())
            .collect()
    }
}

/// Runs a command inside a network namespace.
fn in_netns(netns: &str, args: &[&str]) -> Output {
    run(Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .stdin(Stdio::null()))
}

fn in_netns_ok(netns: &str, args: &[&str]) -> String {
    let out = in_netns(netns, args);
    assert!(
        out.status.success(),
        "{args:?} in {netns} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn curl(netns: &str, url: &str) -> String {
    in_netns_ok(netns, &["curl", "-sS", "--max-time", "5", url])
}

fn dig(netns: &str, args: &[&str]) -> String {
    let mut all = vec![
        "dig",
        "@10.96.0.10",
        "+time=2",
        "+tries=2",
        "+noall",
        "+answer",
    ];
    all.extend(args);
    in_netns_ok(netns, &all)
}

fn dig_status(netns: &str, name: &str) -> String {
    let out = in_netns_ok(netns, &["dig", "@10.96.0.10", "+time=2", "+tries=2", name]);
    out.lines()
        .find_map(|l| l.split("status: ").nth(1))
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_default()
        .to_string()
}

/// A UDP exchange from inside a network namespace (a thread that enters it).
fn udp_exchange(netns: &str, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let file = std::fs::File::open(format!("/run/netns/{netns}")).expect("open netns");
    let payload = payload.to_vec();
    std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns");
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..5 {
            sock.send_to(&payload, to).expect("send");
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                return buf[..n].to_vec();
            }
        }
        panic!("no UDP answer from {to}");
    })
    .join()
    .expect("udp thread")
}

fn demo_cluster_scenarios(c: &Cluster) {
    let s = &c.sandbox;
    // Nodes and pods as kubectl shows them.
    let nodes = s.ok(&["get", "nodes"]);
    assert!(nodes.contains(" Ready "), "{nodes}");
    let wide = s.ok(&["get", "pods", "-n", "demo", "-o", "wide"]);
    assert!(wide.contains("10.244.0."), "pod IPs in:\n{wide}");

    let web_pods = c.ready_pods("app=web,track=stable");
    assert_eq!(web_pods.len(), 2, "two ready web replicas");
    let flaky_pods = c.jsonpath(
        &["get", "pods", "-n", "demo", "-l", "track=flaky"],
        "{.items[*].metadata.name}",
    );
    assert!(!flaky_pods.is_empty());
    assert!(
        c.ready_pods("track=flaky").is_empty(),
        "flaky is never ready"
    );

    // From the api pod: web by ClusterIP spreads over both replicas and never reaches flaky.
    let api_pod = &c.ready_pods("app=api")[0];
    let client = c.pod_netns("demo", api_pod);
    let web_ip = c.jsonpath(&["get", "svc", "-n", "demo", "web"], "{.spec.clusterIP}");
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let body = curl(&client, &format!("http://{web_ip}/"));
        let pod = web_pods
            .iter()
            .find(|p| body.contains(p.as_str()))
            .unwrap_or_else(|| panic!("answer names no web pod: {body}"));
        assert!(!body.contains(flaky_pods.trim()), "flaky answered: {body}");
        seen.insert(pod.clone());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "both replicas answer");
    // flaky's own Service has no ready endpoint: refused, not hanging.
    let flaky_ip = c.jsonpath(&["get", "svc", "-n", "demo", "flaky"], "{.spec.clusterIP}");
    let refused = in_netns(
        &client,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            &format!("http://{flaky_ip}/"),
        ],
    );
    assert!(!refused.status.success());

    // NodePort on the node address and a numeric targetPort.
    let body = curl(&client, "http://10.244.0.1:30080/");
    assert!(body.contains(api_pod.as_str()), "{body}");

    // DNS, every record kind.
    let answer = dig(&client, &["web.demo.svc.cluster.local"]);
    assert!(answer.contains(&web_ip), "{answer}");
    let db_ips = c.jsonpath(
        &["get", "pods", "-n", "demo", "-l", "app=db"],
        "{.items[*].status.podIP}",
    );
    let answer = dig(&client, &["db.demo.svc.cluster.local"]);
    for ip in db_ips.split_whitespace() {
        assert!(answer.contains(ip), "headless db answers {ip}: {answer}");
    }
    let db0_ip = c.jsonpath(&["get", "pod", "-n", "demo", "db-0"], "{.status.podIP}");
    let answer = dig(&client, &["db-0.db.demo.svc.cluster.local"]);
    assert!(answer.contains(&db0_ip), "{answer}");
    let answer = dig(
        &client,
        &["SRV", "_postgres._tcp.db.demo.svc.cluster.local"],
    );
    assert!(answer.contains("5432"), "{answer}");
    let answer = dig(&client, &["legacy.demo.svc.cluster.local"]);
    assert!(
        answer.contains("CNAME") && answer.contains("legacy.example.com"),
        "{answer}"
    );
    let pod_name = format!("{}.demo.pod.cluster.local", db0_ip.replace('.', "-"));
    let answer = dig(&client, &[&pod_name]);
    assert!(answer.contains(&db0_ip), "{answer}");
    assert_eq!(
        dig_status(&client, "nope.demo.svc.cluster.local"),
        "NXDOMAIN"
    );
    let answer = dig(&client, &["-x", &web_ip]);
    assert!(answer.contains("web.demo.svc.cluster.local."), "{answer}");
    let answer = dig(&client, &["-x", &db0_ip]);
    assert!(
        answer.contains("db-0.db.demo.svc.cluster.local."),
        "{answer}"
    );

    // UDP through a ClusterIP.
    let udp_ip = c.jsonpath(&["get", "svc", "-n", "demo", "udp"], "{.spec.clusterIP}");
    let to: SocketAddr = format!("{udp_ip}:9001").parse().unwrap();
    assert_eq!(
        udp_exchange(&client, to, b"ping over udp"),
        b"ping over udp"
    );

    // TCP echo to a headless pod by its address.
    let db_netns_echo = {
        let mut out = Vec::new();
        let file = std::fs::File::open(format!("/run/netns/{client}")).unwrap();
        let addr: SocketAddr = format!("{db0_ip}:5432").parse().unwrap();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    rustix::thread::move_into_link_name_space(
                        file.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .unwrap();
                    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                        .expect("connect to db-0");
                    conn.write_all(b"hello db").unwrap();
                    conn.shutdown(std::net::Shutdown::Write).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    conn.read_to_end(&mut out).unwrap();
                })
                .join()
                .unwrap();
        });
        out
    };
    assert_eq!(db_netns_echo, b"hello db");
}

/// A pod resolves Services by short name through its resolv.conf, and lists Services with
/// kube-rs's in-cluster configuration.
fn pod_view_scenarios(c: &Cluster) {
    let s = &c.sandbox;
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/in_cluster");
    assert!(
        example.exists(),
        "{} is built by `cargo build --all-targets`",
        example.display()
    );
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: demo}}
spec:
  restartPolicy: Never
  containers:
    - name: client
      image: tether-sandbox/host
      command: ["sh", "-c", "cat /etc/resolv.conf; getent hosts web; curl -sS --max-time 5 http://web/; echo; {} && echo in-cluster-ok"]
"#,
        example.display()
    );
    s.apply(&manifest);
    let phase = wait_for("the client pod to finish", WAIT, || {
        let phase = c.jsonpath(&["get", "pod", "-n", "demo", "client"], "{.status.phase}");
        (phase == "Succeeded" || phase == "Failed").then_some(phase)
    });
    let logs = s.ok(&["logs", "-n", "demo", "client"]);
    assert_eq!(phase, "Succeeded", "client pod logs:\n{logs}");
    assert!(
        logs.contains("search demo.svc.cluster.local svc.cluster.local cluster.local"),
        "{logs}"
    );
    assert!(logs.contains("ndots:5"), "{logs}");
    let web_ip = c.jsonpath(&["get", "svc", "-n", "demo", "web"], "{.spec.clusterIP}");
    assert!(logs.contains(&web_ip), "getent hosts web: {logs}");
    assert!(logs.contains("service demo/web"), "{logs}");
    assert!(logs.contains("in-cluster-ok"), "{logs}");
    s.ok(&["delete", "pod", "-n", "demo", "client", "--wait=true"]);
}

/// `kubectl logs -f` sees a request served while it follows.
fn logs_follow_scenario(c: &Cluster) {
    let s = &c.sandbox;
    let pod = c.ready_pods("app=api")[0].clone();
    let mut follow = s
        .kubectl_cmd(&["logs", "-f", "-n", "demo", &pod])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let node = c.node_netns();
    let marker = "/followed-request-marker";
    let mut stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains(marker) {
                return true;
            }
        }
        false
    });
    curl(&node, &format!("http://10.244.0.1:30080{marker}"));
    wait_for("kubectl logs -f to show the request", WAIT, || {
        reader.is_finished().then_some(())
    });
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(reader.join().unwrap(), "kubectl logs -f showed the request");
}

/// `kubectl port-forward` carries HTTP to a pod.
fn kubectl_port_forward_scenario(c: &Cluster) {
    let s = &c.sandbox;
    let pod = c.ready_pods("app=web,track=stable")[0].clone();
    let local = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut pf = s
        .kubectl_cmd(&[
            "port-forward",
            "-n",
            "demo",
            &format!("pod/{pod}"),
            &format!("{local}:8080"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let result = std::panic::catch_unwind(|| {
        let body = wait_for("kubectl port-forward to answer", WAIT, || {
            let out = run(Command::new("curl").args([
                "-sS",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{local}/through-kubectl"),
            ]));
            out.status.success().then(|| text(&out.stdout))
        });
        assert!(body.contains(pod.as_str()), "{body}");
        // Several connections over the same forward.
        for i in 0..5 {
            let out = run(Command::new("curl").args([
                "-sS",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{local}/again-{i}"),
            ]));
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
    });
    let _ = pf.kill();
    let _ = pf.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// A kube-rs port-forward carries an HTTP request to a pod.
fn kube_port_forward_scenario(c: &Cluster) {
    use k8s_openapi::api::core::v1::Pod;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pod = c.ready_pods("app=web,track=stable")[0].clone();
    let kubeconfig = c.sandbox.kubeconfig.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let name = pod.clone();
    let body = rt.block_on(async move {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let pods: kube::Api<Pod> = kube::Api::namespaced(client, "demo");
        let mut pf = pods.portforward(&name, &[8080]).await.expect("portforward");
        let mut stream = pf.take_stream(8080).expect("stream");
        stream
            .write_all(b"GET /through-kube-rs HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut body))
            .await
            .expect("answer in time")
            .unwrap();
        drop(stream);
        let _ = pf.join().await;
        String::from_utf8_lossy(&body).into_owned()
    });
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains(pod.as_str()), "{body}");
}

/// Changing the template rolls the Deployment: new pods become ready, old ones go.
fn rolling_update_scenario(c: &Cluster) {
    let s = &c.sandbox;
    let before: BTreeSet<String> = c.ready_pods("app=web,track=stable").into_iter().collect();
    s.ok(&["set", "env", "-n", "demo", "deployment/web", "ROLLOUT=2"]);
    s.ok(&[
        "rollout",
        "status",
        "-n",
        "demo",
        "deployment/web",
        "--timeout=60s",
    ]);
    let after: BTreeSet<String> = wait_for("the old web pods to go", WAIT, || {
        let pods = c.jsonpath(
            &["get", "pods", "-n", "demo", "-l", "app=web,track=stable"],
            "{.items[*].metadata.name}",
        );
        let pods: BTreeSet<String> = pods.split_whitespace().map(str::to_string).collect();
        (pods.len() == 2 && pods.is_disjoint(&before)).then_some(pods)
    });
    assert_eq!(
        c.ready_pods("app=web,track=stable").len(),
        2,
        "new pods {after:?} are ready"
    );
    let rs = s.ok(&["get", "rs", "-n", "demo", "-l", "app=web"]);
    assert!(rs.lines().count() >= 3, "old and new ReplicaSets:\n{rs}");
}

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn demo_cluster_works_and_leaves_nothing_behind() {
    let before = host_network();
    let c = Cluster::start();
    assert!(netns_list().contains(&c.node_netns()), "{}", netns_list());
    demo_cluster_scenarios(&c);
    pod_view_scenarios(&c);
    logs_follow_scenario(&c);
    kubectl_port_forward_scenario(&c);
    kube_port_forward_scenario(&c);
    rolling_update_scenario(&c);

    // A crash leaves namespaces and pod processes; the next `up` removes them and starts
    // afresh, and `down` removes everything.
    let pid: i32 = std::fs::read_to_string(c.sandbox.dir().join("tether-sandbox.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = run(Command::new("kill").args(["-9", &pid.to_string()]));
    wait_for("the server to die", WAIT, || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z")))
        .then_some(())
    });
    assert!(netns_list().contains(&c.prefix), "leftovers after a crash");
    c.sandbox.up();
    let ready = c.sandbox.ok(&["get", "nodes"]);
    assert!(ready.contains(" Ready "), "{ready}");
    c.sandbox.down();
    let list = netns_list();
    assert!(!list.contains(&c.prefix), "namespaces left: {list}");
    assert_eq!(host_network(), before, "the host's network is unchanged");

    // Crash again, then `down` alone cleans up.
    c.sandbox.up();
    let pid: i32 = std::fs::read_to_string(c.sandbox.dir().join("tether-sandbox.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = run(Command::new("kill").args(["-9", &pid.to_string()]));
    wait_for("the server to die", WAIT, || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s.contains(") Z"))
            .then_some(())
    });
    c.sandbox.down();
    let list = netns_list();
    assert!(!list.contains(&c.prefix), "namespaces left: {list}");
}
