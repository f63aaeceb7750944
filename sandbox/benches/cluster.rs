//! Cluster benchmark: how long a pod takes from create to Ready, and bulk transfer from a pod
//! through a kube-rs port-forward and through `kubectl port-forward`, against the baseline of
//! the direct path (a client in the node's network namespace talking to the pod IP).
//!
//! Needs root (the sandbox runs pods in network namespaces), `curl` and `kubectl`. Run with
//! `cargo bench -p tether-sandbox --bench cluster` (release build); prints one table.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, Config};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Pods started one at a time, and then all at once.
const PODS: usize = 20;
/// Bytes per transfer, and transfers per path (the table shows the median).
const BULK: u64 = 256 << 20;
const RUNS: usize = 3;
const WAIT: Duration = Duration::from_secs(60);

struct Sandbox(tempfile::TempDir);

impl Sandbox {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_tether-sandbox"))
            .args(args)
            .arg("--state-dir")
            .arg(self.0.path())
            .output()
            .expect("tether-sandbox runs")
    }

    fn kubeconfig(&self) -> std::path::PathBuf {
        self.0.path().join("kubeconfig")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.cmd(&["down"]);
    }
}

/// Ends a child we started (kubectl port-forward) when the benchmark is done with it.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"bench": "yes"}},
        "spec": {"containers": [{"name": "web", "image": "tether-sandbox/http-echo",
            "ports": [{"containerPort": 8080}]}]}
    }))
    .expect("pod")
}

fn is_ready(pod: Option<&Pod>) -> bool {
    pod.and_then(|p| p.status.as_ref()?.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Creates `name` and returns how long it took until the API reported it Ready.
async fn start_pod(pods: &Api<Pod>, name: &str) -> Duration {
    let started = Instant::now();
    pods.create(&PostParams::default(), &pod(name))
        .await
        .expect("create pod");
    tokio::time::timeout(WAIT, await_condition(pods.clone(), name, is_ready))
        .await
        .expect("pod ready in time")
        .expect("watch");
    started.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mib_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / took.as_secs_f64()
}

/// `curl` fetching `/bytes` from `url`, optionally inside a network namespace: MiB/s.
fn curl(netns: Option<&str>, url: &str) -> f64 {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    let out = cmd
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{time_total}",
        ])
        .arg(format!("{url}/bytes?n={BULK}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let size: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let secs: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
    assert_eq!(
        size,
        BULK,
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    mib_per_s(size, Duration::from_secs_f64(secs))
}

/// The same transfer through kube-rs's port-forward, read in this process: MiB/s.
async fn kube_rs(pods: &Api<Pod>, name: &str) -> f64 {
    let started = Instant::now();
    let mut pf = pods.portforward(name, &[8080]).await.expect("portforward");
    let mut stream = pf.take_stream(8080).expect("stream");
    stream
        .write_all(
            format!("GET /bytes?n={BULK} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("request");
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let took = started.elapsed();
    drop(stream);
    let _ = pf.join().await;
    // The status line and headers come on top of the body.
    assert!(total >= BULK, "read {total} bytes");
    mib_per_s(BULK, took)
}

/// `kubectl port-forward` to the pod, on a free local port; returns once it listens.
fn kubectl_port_forward(sandbox: &Sandbox, name: &str) -> (Reaped, u16) {
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", sandbox.kubeconfig())
        .args(["port-forward", &format!("pod/{name}"), ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl runs");
    let stdout = child.stdout.take().expect("stdout");
    let child = Reaped(child);
    // "Forwarding from 127.0.0.1:40123 -> 8080"
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let port = lines
        .find_map(|l| {
            let rest = l.strip_prefix("Forwarding from 127.0.0.1:")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .expect("kubectl port-forward listens");
    // kubectl reports every connection on stdout: keep reading, or it dies of SIGPIPE.
    std::thread::spawn(move || lines.for_each(drop));
    (child, port)
}

#[tokio::main]
async fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("the cluster benchmark needs root (pods run in network namespaces); skipped");
        return;
    }
    let sandbox = Sandbox(tempfile::tempdir().expect("temp dir"));
    let out = sandbox.cmd(&["up"]);
    assert!(
        out.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kubeconfig = kube::config::Kubeconfig::read_from(sandbox.kubeconfig()).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let client = Client::try_from(config).expect("client");
    let pods: Api<Pod> = Api::namespaced(client, "default");

    let mut one_by_one = Vec::with_capacity(PODS);
    for i in 0..PODS {
        one_by_one.push(start_pod(&pods, &format!("seq-{i}")).await);
    }
    one_by_one.sort();
    let started = Instant::now();
    stream::iter(0..PODS)
        .map(|i| {
            let pods = pods.clone();
            async move { start_pod(&pods, &format!("par-{i}")).await }
        })
        .buffer_unordered(PODS)
        .collect::<Vec<_>>()
        .await;
    let all_at_once = started.elapsed();

    let target = "seq-0";
    let ip = pods
        .get(target)
        .await
        .expect("pod")
        .status
        .and_then(|s| s.pod_ip)
        .expect("pod IP");
    let prefix = std::fs::read_to_string(sandbox.0.path().join("netns-prefix")).expect("prefix");
    let node_ns = format!("{}-node", prefix.trim());
    let direct: Vec<f64> = (0..RUNS)
        .map(|_| curl(Some(&node_ns), &format!("http://{ip}:8080")))
        .collect();
    let (_kubectl, port) = kubectl_port_forward(&sandbox, target);
    let kubectl: Vec<f64> = (0..RUNS)
        .map(|_| curl(None, &format!("http://127.0.0.1:{port}")))
        .collect();
    let mut kube = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        kube.push(kube_rs(&pods, target).await);
    }

    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!("| measure | result |");
    println!("|---|---|");
    println!(
        "| pod create → Ready, one at a time ({PODS}) | median {}, max {} |",
        ms(one_by_one[PODS / 2]),
        ms(one_by_one[PODS - 1])
    );
    println!(
        "| {PODS} pods created at once → all Ready | {} |",
        ms(all_at_once)
    );
    let mib = BULK >> 20;
    println!(
        "| {mib} MiB from a pod, node namespace → pod IP (baseline) | {:.0} MiB/s |",
        median(direct)
    );
    println!(
        "| {mib} MiB, `kubectl port-forward` + curl | {:.0} MiB/s |",
        median(kubectl)
    );
    println!(
        "| {mib} MiB, kube-rs `Api::portforward` | {:.0} MiB/s |",
        median(kube)
    );
}
