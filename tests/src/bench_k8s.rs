//! tether-bench-k8s: `tether connect` against the sandbox cluster, in one run, side by side
//! with the two baselines a user has without tether:
//!
//! - **direct**: a client in the node's network namespace talking to the pod IP (no API
//!   server, no tunnel: the fastest path there is);
//! - **kubectl port-forward** to the same pod, run in the workstation, through the same API
//!   server tether uses;
//! - **through tether**: the workstation talking to the pod IP (and to the Service by name)
//!   over `tether connect`.
//!
//! It measures bulk throughput (one HTTP download from `web`'s http-echo) and request latency
//! (small keep-alive requests one after another), the time from `tether connect` to the
//! first answer from `web.demo` (cold: the manager gets installed; warm: it is there), DNS
//! lookup latency through tether, the resident memory of the daemon and the manager, and then
//! connect time, DNS latency and daemon memory again with 5,000 more Services in 200
//! namespaces. For intercepts it compares, from the node to one `web` pod, the app with no
//! sidecar, the app through the dormant sidecar and the workstation through the intercept,
//! and times `tether intercept` to the first intercepted answer, cold and warm. Rootless,
//! as uid 65534, it measures the same download and requests from inside `tether run` beside
//! root `tether connect`, and both kinds of `tether run` to CMD's first answer. Build with
//! `cargo build --release --workspace`, run
//! `target/release/tether-bench-k8s` as root (it needs `kubectl`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tether_tests::rootless::Home;
use tether_tests::sandbox::SandboxCluster;
use tether_tests::{bin, check, have_root};

/// Size of one bulk download.
const BULK_BYTES: u64 = 1 << 30;
/// Downloads per path; the median is reported.
const BULK_RUNS: usize = 3;
/// Requests per latency measurement.
const REQUESTS: &str = "5000";
/// DNS queries per latency measurement.
const QUERIES: &str = "2000";
/// The extra Services: this many namespaces with this many Services each.
const NAMESPACES: usize = 200;
const SERVICES_PER_NAMESPACE: usize = 25;
/// The local port of `kubectl port-forward` in the workstation.
const KUBECTL_PORT: u16 = 18080;
/// http-echo's port in the `web` pods.
const WEB_PORT: u16 = 8080;

fn main() {
    if !have_root() {
        eprintln!("tether-bench-k8s needs root (the sandbox's network namespaces, TUN)");
        std::process::exit(2);
    }
    // `--control-plane builtin|upstream`: which API server the sandbox runs (passed on to
    // `tether-sandbox up` through its environment variable).
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {}
        [flag, which]
            if flag == "--control-plane" && (which == "builtin" || which == "upstream") =>
        {
            // SAFETY: nothing else runs yet; no other thread reads the environment.
            unsafe { std::env::set_var("TETHER_SANDBOX_CONTROL_PLANE", which) };
        }
        _ => {
            eprintln!("usage: tether-bench-k8s [--control-plane builtin|upstream]");
            std::process::exit(2);
        }
    }
    let control_plane =
        std::env::var("TETHER_SANDBOX_CONTROL_PLANE").unwrap_or_else(|_| "builtin".into());
    println!("control plane: {control_plane}");
    let c = SandboxCluster::start();
    let node = format!("{}-node", c.netns_prefix);
    let pod = first_word(&c.jsonpath(
        "demo",
        &["pods", "-l", "app=web,track=stable"],
        "{.items[*].metadata.name}",
    ));
    let pod_ip = c.jsonpath("demo", &["pod", &pod], "{.status.podIP}");
    let pod_url = format!("http://{pod_ip}:{WEB_PORT}");
    let service_url = "http://web.demo";
    let kit = bin("tether-testkit");
    eprintln!("benchmarking against pod demo/{pod} ({pod_ip})");

    // Cold: the first connect installs the manager.
    let (cold, daemon) = connect_to_first_answer(&c, service_url);
    eprintln!("cold connect to first answer: {cold:.0} ms");

    let in_node = || {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node]).arg(&kit);
        cmd
    };
    let in_workstation = || {
        let mut cmd = c.shell(&kit);
        cmd.env_remove("RUST_LOG");
        cmd
    };

    let direct = measure("direct", &in_node, &pod_url);

    let kubectl = {
        let _forward = KubectlForward::start(&c, &pod);
        measure(
            "kubectl port-forward",
            &in_workstation,
            &format!("http://127.0.0.1:{KUBECTL_PORT}"),
        )
    };

    let tether = measure("tether", &in_workstation, &pod_url);
    let by_name = median(
        (0..BULK_RUNS)
            .map(|_| download(in_workstation(), service_url))
            .collect(),
    );
    eprintln!("tether, web.demo by name: {by_name:.0} MiB/s");
    let dns = dns_latency(&c, "web.demo.svc.cluster.local");
    let daemon_rss = rss_mib(daemon);
    let manager_rss = manager_rss_mib(&c);
    let intercepts = intercept_figures(&c, &node, in_node);
    check(c.tether().arg("quit"));
    c.wait_daemon_gone(daemon, Duration::from_secs(10));

    let (warm, daemon) = connect_to_first_answer(&c, service_url);
    eprintln!("warm connect to first answer: {warm:.0} ms");
    check(c.tether().arg("quit"));
    c.wait_daemon_gone(daemon, Duration::from_secs(10));
    let rootless = rootless_figures(&c, &in_workstation, service_url);

    let created = Instant::now();
    create_services(&c);
    eprintln!(
        "created {} Services in {NAMESPACES} namespaces in {:.1} s",
        NAMESPACES * SERVICES_PER_NAMESPACE,
        created.elapsed().as_secs_f64()
    );
    let (many_warm, daemon) = connect_to_first_answer(&c, service_url);
    let last = format!(
        "svc-{}.bench-{}.svc.cluster.local",
        SERVICES_PER_NAMESPACE - 1,
        NAMESPACES - 1
    );
    let many_dns = dns_latency(&c, &last);
    let many_rss = rss_mib(daemon);
    check(c.tether().arg("quit"));
    c.wait_daemon_gone(daemon, Duration::from_secs(10));

    println!("| measure | direct (node → pod) | kubectl port-forward | through tether |");
    println!("|---|---|---|---|");
    println!(
        "| 1 GiB download, one stream (MiB/s, median of {BULK_RUNS}) | {:.0} | {:.0} | {:.0} ({:.2}× kubectl) |",
        direct.mib_s,
        kubectl.mib_s,
        tether.mib_s,
        tether.mib_s / kubectl.mib_s
    );
    for (i, name) in ["p50", "p90", "p99"].iter().enumerate() {
        println!(
            "| request latency {name} (µs) | {} | {} | {} |",
            direct.latency[i], kubectl.latency[i], tether.latency[i]
        );
    }
    println!();
    println!("| measure | result |");
    println!("|---|---|");
    println!(
        "| 1 GiB download through tether from `web.demo` (ClusterIP, by name) | {by_name:.0} MiB/s |"
    );
    println!("| `tether connect` → first answer, cold (manager installed) | {cold:.0} ms |");
    println!("| `tether connect` → first answer, warm (manager there) | {warm:.0} ms |");
    println!(
        "| `tether connect` → first answer, warm, with {} more Services in {NAMESPACES} namespaces | {many_warm:.0} ms |",
        NAMESPACES * SERVICES_PER_NAMESPACE
    );
    println!(
        "| DNS lookup through tether p50 / p90 / p99 (µs) | {} / {} / {} |",
        dns[0], dns[1], dns[2]
    );
    println!(
        "| DNS lookup with the extra Services p50 / p90 / p99 (µs) | {} / {} / {} |",
        many_dns[0], many_dns[1], many_dns[2]
    );
    println!("| tether daemon RSS after the transfers | {daemon_rss:.1} MiB |");
    println!("| tether daemon RSS with the extra Services | {many_rss:.1} MiB |");
    println!("| manager (tether-agent) RSS after the transfers | {manager_rss:.1} MiB |");
    intercepts.print();
    rootless.print();
}

/// Rootless `tether run` as uid 65534 (a namespace and device of its own, no root): the
/// downloads and requests of [`measure`] from inside one run, beside root `tether connect`
/// to the same pod (looked up again: the intercepts before replaced the pods); and the time
/// from `tether run` to CMD's first answer from `web.demo`, rootless and as root (warm).
struct RootlessFigures {
    root: Figures,
    inside: Figures,
    startup_ms: f64,
    root_startup_ms: f64,
}

fn rootless_figures(
    c: &SandboxCluster,
    in_workstation: &dyn Fn() -> Command,
    service_url: &str,
) -> RootlessFigures {
    let pod = first_word(&c.jsonpath(
        "demo",
        &["pods", "-l", "app=web,track=stable"],
        "{.items[*].metadata.name}",
    ));
    let pod_ip = c.jsonpath("demo", &["pod", &pod], "{.status.podIP}");
    let pod_url = format!("http://{pod_ip}:{WEB_PORT}");
    let (_, daemon) = connect_to_first_answer(c, service_url);
    let root = measure("tether connect (root)", in_workstation, &pod_url);
    check(c.tether().arg("quit"));
    c.wait_daemon_gone(daemon, Duration::from_secs(10));
    let home = Home::new(c);
    let kit = bin("tether-testkit");
    let kit = kit.display();
    let script = format!(
        "for i in $(seq {BULK_RUNS}); do {kit} http-download --url '{pod_url}/bytes?n={BULK_BYTES}'; done; {kit} http-latency --requests {REQUESTS} --url {pod_url}/"
    );
    let rootless_run = |script: &str| {
        let mut cmd = home.command(c, "0666", bin("tether"));
        cmd.args(["run", "-n", "demo", "--quiet", "--", "sh", "-c", script]);
        cmd
    };
    let out = check(&mut rootless_run(&script));
    let lines: Vec<&str> = out.lines().collect();
    let (downloads, latency) = lines.split_at(lines.len() - 1);
    let inside = Figures {
        mib_s: median(
            downloads
                .iter()
                .map(|l| l.trim().parse().expect("http-download prints MiB/s"))
                .collect(),
        ),
        latency: percentiles(latency[0]),
    };
    eprintln!(
        "rootless run: {:.0} MiB/s, latency p50/p90/p99 {:?} µs",
        inside.mib_s, inside.latency
    );
    // CMD prints the time of its first answer; the start is taken just before `run`.
    let first = format!(
        "{kit} http-latency --requests 1 --retry-for 10 --url {service_url}/ >/dev/null; date +%s%N"
    );
    let time_to_answer = |mut cmd: Command| {
        let start = std::time::SystemTime::now();
        let out = check(&mut cmd);
        let answered: u128 = out.trim().parse().expect("date +%s%N");
        let start = start
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos();
        answered.saturating_sub(start) as f64 / 1e6
    };
    let startup_ms = median(
        (0..3)
            .map(|_| time_to_answer(rootless_run(&first)))
            .collect(),
    );
    let root_startup_ms = median(
        (0..3)
            .map(|_| {
                let mut cmd = c.tether();
                cmd.args(["run", "-n", "demo", "--dns-mode", "resolv-conf"])
                    .arg("--resolv-conf")
                    .arg(&c.resolv_conf)
                    .args(["--quiet", "--", "sh", "-c", &first]);
                time_to_answer(cmd)
            })
            .collect(),
    );
    eprintln!(
        "tether run to first answer: rootless {startup_ms:.0} ms, root {root_startup_ms:.0} ms"
    );
    RootlessFigures {
        root,
        inside,
        startup_ms,
        root_startup_ms,
    }
}

impl RootlessFigures {
    fn print(&self) {
        let root = &self.root;
        println!();
        println!("| measure | root `tether connect` | rootless `tether run` (uid 65534) |");
        println!("|---|---|---|");
        println!(
            "| 1 GiB download from the pod (MiB/s, median of {BULK_RUNS}) | {:.0} | {:.0} ({:.2}× root) |",
            root.mib_s,
            self.inside.mib_s,
            self.inside.mib_s / root.mib_s
        );
        for (i, name) in ["p50", "p90", "p99"].iter().enumerate() {
            println!(
                "| request latency {name} (µs) | {} | {} |",
                root.latency[i], self.inside.latency[i]
            );
        }
        println!(
            "| `tether run` → CMD's first answer from web.demo, warm (median of 3) | {:.0} ms (as root) | {:.0} ms |",
            self.root_startup_ms, self.startup_ms
        );
    }
}

/// An intercept of `web` to a local http-echo in the workstation: the same client (in the node's
/// namespace) and the same pod, answered (a) by the app on its own port, (b) by the app
/// through the dormant sidecar, (c) by the workstation through the intercept; and the time
/// from `tether intercept` to the first answer from the workstation.
struct InterceptFigures {
    app: Figures,
    dormant: Figures,
    intercepted: Figures,
    /// A header-filtered intercept on the port: a request it does not match (the app
    /// answers, through the sidecar's HTTP router), and one it matches (the workstation).
    unmatched: Figures,
    matched: [u64; 3],
    /// The app's latency through the sidecar while a mirror copies every request to the
    /// workstation, and while the mirror's server there is gone.
    mirrored: [u64; 3],
    mirror_gone: [u64; 3],
    cold_ms: f64,
    warm_ms: f64,
}

impl InterceptFigures {
    fn print(&self) {
        println!();
        println!(
            "| measure (client in the node's namespace → one web pod) | (a) app, no sidecar | (b) app through the dormant sidecar | (c) workstation through the intercept |"
        );
        println!("|---|---|---|---|");
        let (a, b, c) = (&self.app, &self.dormant, &self.intercepted);
        println!(
            "| 1 GiB download, one stream (MiB/s, median of {BULK_RUNS}) | {:.0} | {:.0} | {:.0} |",
            a.mib_s, b.mib_s, c.mib_s
        );
        for (i, name) in ["p50", "p90", "p99"].iter().enumerate() {
            println!(
                "| request latency {name} (µs) | {} | {} ({:+}) | {} |",
                a.latency[i],
                b.latency[i],
                b.latency[i] as i64 - a.latency[i] as i64,
                c.latency[i]
            );
        }
        println!();
        println!(
            "| measure (same client and pod) | (a) app, no sidecar | (d) not matching a header filter (app through the HTTP router) | (e) matching it (workstation) |"
        );
        println!("|---|---|---|---|");
        println!(
            "| 1 GiB download, one stream (MiB/s, median of {BULK_RUNS}) | {:.0} | {:.0} | - |",
            a.mib_s, self.unmatched.mib_s
        );
        for (i, name) in ["p50", "p90", "p99"].iter().enumerate() {
            println!(
                "| request latency {name} (µs) | {} | {} ({:+}) | {} |",
                a.latency[i],
                self.unmatched.latency[i],
                self.unmatched.latency[i] as i64 - a.latency[i] as i64,
                self.matched[i]
            );
        }
        println!();
        println!(
            "| app latency through the sidecar (µs) | (b) no mirror | (f) mirror to the workstation | (g) mirror, its server gone |"
        );
        println!("|---|---|---|---|");
        for (i, name) in ["p50", "p90", "p99"].iter().enumerate() {
            println!(
                "| {name} | {} | {} | {} |",
                b.latency[i], self.mirrored[i], self.mirror_gone[i]
            );
        }
        println!();
        println!("| measure | result |");
        println!("|---|---|");
        println!(
            "| `tether intercept` → first answer from the workstation, cold (sidecar injected, one rollout) | {:.0} ms |",
            self.cold_ms
        );
        println!(
            "| `tether intercept` → first answer from the workstation, warm (sidecar there) | {:.0} ms |",
            self.warm_ms
        );
    }
}

fn intercept_figures(
    c: &SandboxCluster,
    node: &str,
    in_node: impl Fn() -> Command,
) -> InterceptFigures {
    let local = workstation_echo(c);
    let cluster_ip = c.jsonpath("demo", &["svc", "web"], "{.spec.clusterIP}");
    let (cold_ms, sidecar_port) = intercept_to_first_answer(c, node, &cluster_ip);
    eprintln!("cold intercept to first answer: {cold_ms:.0} ms");
    let pod = first_word(&c.jsonpath(
        "demo",
        &["pods", "-l", "app=web,track=stable"],
        "{.items[*].metadata.name}",
    ));
    let pod_ip = c.jsonpath("demo", &["pod", &pod], "{.status.podIP}");
    let intercepted = measure(
        "intercepted",
        &in_node,
        &format!("http://{pod_ip}:{sidecar_port}"),
    );
    check(c.tether().args(["leave", "web"]));
    let dormant = measure(
        "dormant sidecar",
        &in_node,
        &format!("http://{pod_ip}:{sidecar_port}"),
    );
    let app = measure(
        "app, no sidecar",
        &in_node,
        &format!("http://{pod_ip}:{WEB_PORT}"),
    );
    let through = format!("http://{pod_ip}:{sidecar_port}");
    check(c.tether().args([
        "intercept",
        "web",
        "--name",
        "filtered",
        "--port",
        "8080",
        "--http-header",
        "x-dev=bench",
    ]));
    let unmatched = measure("not matching a filter", &in_node, &through);
    let matched = latency("matching a filter", &in_node, &through, &["x-dev=bench"]);
    check(c.tether().args(["leave", "filtered"]));
    check(c.tether().args([
        "intercept",
        "web",
        "--name",
        "mirror",
        "--port",
        "8080",
        "--mirror",
    ]));
    let mirrored = latency("app with a mirror", &in_node, &through, &[]);
    drop(local);
    let mirror_gone = latency(
        "app with a mirror, its server gone",
        &in_node,
        &through,
        &[],
    );
    check(c.tether().args(["leave", "mirror"]));
    let _local = workstation_echo(c);
    let (warm_ms, _) = intercept_to_first_answer(c, node, &cluster_ip);
    eprintln!("warm intercept to first answer: {warm_ms:.0} ms");
    check(c.tether().args(["leave", "web"]));
    check(
        c.tether()
            .args(["uninstall", "-n", "demo", "--agent", "web"]),
    );
    InterceptFigures {
        app,
        dormant,
        intercepted,
        unmatched,
        matched,
        mirrored,
        mirror_gone,
        cold_ms,
        warm_ms,
    }
}

/// An http-echo in the workstation on port 8080, answering as `workstation`.
fn workstation_echo(c: &SandboxCluster) -> tether_tests::Proc {
    let mut local = tether_tests::Proc::start(
        "the workstation's http-echo",
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &c.workstation,
                "env",
                "POD_NAME=workstation",
            ])
            .arg(bin("tether-sandbox"))
            .args(["workload", "http-echo", "--port", "8080"]),
    );
    local.wait_line(Duration::from_secs(10), |l| l.contains("listening"));
    local
}

/// Request latency p50/p90/p99 to `base` with `headers` on every request.
fn latency(name: &str, kit: &dyn Fn() -> Command, base: &str, headers: &[&str]) -> [u64; 3] {
    let mut cmd = kit();
    cmd.args(["http-latency", "--requests", REQUESTS, "--url"])
        .arg(format!("{base}/"));
    for h in headers {
        cmd.args(["--header", h]);
    }
    let figures = percentiles(&check(&mut cmd));
    eprintln!("{name}: latency p50/p90/p99 {figures:?} µs");
    figures
}

/// Runs `tether intercept web` and then asks web's ClusterIP from the node until the
/// workstation answers; returns the time in ms and the sidecar's port.
fn intercept_to_first_answer(c: &SandboxCluster, node: &str, cluster_ip: &str) -> (f64, u64) {
    let start = Instant::now();
    let out = check(c.tether().args([
        "intercept",
        "web",
        "-n",
        "demo",
        "--port",
        "8080",
        "--output",
        "json",
    ]));
    let event: serde_json::Value = serde_json::from_str(out.trim()).expect("intercept JSON");
    let url = format!("http://{cluster_ip}/");
    tether_tests::wait_for("the workstation to answer", Duration::from_secs(30), || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                node,
                "curl",
                "-sS",
                "--max-time",
                "2",
                &url,
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .contains("hostname: workstation")
            .then_some(())
    });
    let took = start.elapsed().as_secs_f64() * 1000.0;
    (
        took,
        event["intercept"]["sidecar_port"]
            .as_u64()
            .expect("the sidecar's port"),
    )
}

struct Figures {
    mib_s: f64,
    /// p50, p90, p99 in µs.
    latency: [u64; 3],
}

/// Bulk downloads and a latency run to `base` with testkit commands from `kit`.
fn measure(name: &str, kit: &dyn Fn() -> Command, base: &str) -> Figures {
    let bulk: Vec<f64> = (0..BULK_RUNS).map(|_| download(kit(), base)).collect();
    let mut cmd = kit();
    let out = check(
        cmd.args(["http-latency", "--requests", REQUESTS, "--url"])
            .arg(format!("{base}/")),
    );
    let latency = percentiles(&out);
    let figures = Figures {
        mib_s: median(bulk),
        latency,
    };
    eprintln!(
        "{name}: {:.0} MiB/s, latency p50/p90/p99 {:?} µs",
        figures.mib_s, figures.latency
    );
    figures
}

fn download(mut kit: Command, base: &str) -> f64 {
    let out = check(
        kit.args(["http-download", "--url"])
            .arg(format!("{base}/bytes?n={BULK_BYTES}")),
    );
    out.trim().parse().expect("http-download prints MiB/s")
}

fn percentiles(out: &str) -> [u64; 3] {
    let v: Vec<u64> = out
        .split_whitespace()
        .map(|w| w.parse().expect("µs figures"))
        .collect();
    v.try_into()
        .unwrap_or_else(|v| panic!("three percentiles, got {v:?}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `tether connect` and then requests `url` until it answers; returns the time from
/// the start of `connect` to that answer in ms, and the daemon's PID.
fn connect_to_first_answer(c: &SandboxCluster, url: &str) -> (f64, u32) {
    let start = Instant::now();
    let (connected, progress) = c.connect();
    let mut first = c.shell(bin("tether-testkit"));
    check(first.args([
        "http-latency",
        "--requests",
        "1",
        "--retry-for",
        "10",
        "--url",
        &format!("{url}/"),
    ]));
    let took = start.elapsed().as_secs_f64() * 1000.0;
    let pid = connected["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("connect names the daemon's pid: {connected} {progress}"));
    (took, pid as u32)
}

fn dns_latency(c: &SandboxCluster, name: &str) -> [u64; 3] {
    let out = check(c.shell(bin("tether-testkit")).args([
        "dns-latency",
        "--queries",
        QUERIES,
        "--name",
        name,
    ]));
    percentiles(&out)
}

fn first_word(s: &str) -> String {
    s.split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("expected a name, got {s:?}"))
        .to_owned()
}

/// `kubectl port-forward` in the workstation, stopped on drop.
struct KubectlForward(Child);

impl KubectlForward {
    fn start(c: &SandboxCluster, pod: &str) -> KubectlForward {
        let kubectl = std::env::var("TETHER_KUBECTL").unwrap_or_else(|_| "kubectl".into());
        // `ip netns exec` execs kubectl, so the child is kubectl itself.
        let mut child = Command::new("ip")
            .args(["netns", "exec", &c.workstation, &kubectl, "--kubeconfig"])
            .arg(&c.kubeconfig)
            .args(["-n", "demo", "port-forward", &format!("pod/{pod}")])
            .arg(format!("{KUBECTL_PORT}:{WEB_PORT}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        match lines.next() {
            Some(Ok(line)) if line.starts_with("Forwarding from") => {}
            other => panic!("kubectl port-forward did not start: {other:?}"),
        }
        // kubectl reports every connection on stdout: keep reading, or it dies of SIGPIPE.
        std::thread::spawn(move || for _ in lines {});
        KubectlForward(child)
    }
}

impl Drop for KubectlForward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"));
    kib as f64 / 1024.0
}

/// The manager's process: the only `tether-agent` in the sandbox's network namespaces.
fn manager_rss_mib(c: &SandboxCluster) -> f64 {
    let namespaces = check(Command::new("ip").args(["netns", "list"]));
    let pid = namespaces
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(&format!("{}-", c.netns_prefix)))
        .flat_map(|ns| {
            let pids = check(Command::new("ip").args(["netns", "pids", ns]));
            pids.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "tether-agent")
        })
        .expect("the manager runs in one of the sandbox's pods");
    rss_mib(pid)
}

/// 5,000 Services with ClusterIPs, in 200 new namespaces, created through the API.
fn create_services(c: &SandboxCluster) {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let kubeconfig = Kubeconfig::read_from(&c.kubeconfig).expect("the sandbox's kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("a client configuration");
        let client = Client::try_from(config).expect("a client");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        in_parallel((0..NAMESPACES).map(|n| {
            let namespaces = namespaces.clone();
            async move {
                let ns: Namespace = serde_json::from_value(
                    serde_json::json!({"metadata": {"name": format!("bench-{n}")}}),
                )
                .expect("a namespace");
                namespaces.create(&PostParams::default(), &ns).await
            }
        }))
        .await
        .expect("create the namespaces");
        in_parallel((0..NAMESPACES * SERVICES_PER_NAMESPACE).map(|i| {
            let client = client.clone();
            async move {
                let (n, s) = (i / SERVICES_PER_NAMESPACE, i % SERVICES_PER_NAMESPACE);
                let services: Api<Service> = Api::namespaced(client, &format!("bench-{n}"));
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("svc-{s}")},
                    "spec": {
                        "selector": {"app": format!("bench-{s}")},
                        "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                    },
                }))
                .expect("a service");
                services.create(&PostParams::default(), &svc).await
            }
        }))
        .await
        .expect("create the services");
    });
    // The last one created got its ClusterIP.
    let ip = c.jsonpath(
        &format!("bench-{}", NAMESPACES - 1),
        &["svc", &format!("svc-{}", SERVICES_PER_NAMESPACE - 1)],
        "{.spec.clusterIP}",
    );
    assert!(!ip.is_empty(), "the last Service has a ClusterIP");
}

/// Runs `creates` 16 at a time; the first error wins.
async fn in_parallel<T>(
    creates: impl Iterator<Item = impl std::future::Future<Output = kube::Result<T>>>,
) -> kube::Result<Vec<T>> {
    futures::stream::iter(creates)
        .buffer_unordered(16)
        .try_collect()
        .await
}
