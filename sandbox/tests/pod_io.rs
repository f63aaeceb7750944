//! The pod subresources that reach into the node, checked from the client side: port-forward
//! through kube-rs (WebSocket channels) and kubectl (SPDY tunnelled in WebSocket, and plain
//! SPDY), and logs through kubectl and kube-rs. One sandbox serves every scenario.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use tether_tests::sandbox::Sandbox;
use tether_tests::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: echo}
spec:
  containers:
  - name: tcp
    image: tether-sandbox/tcp-echo
    args: ["--port", "9000"]
  - name: http
    image: tether-sandbox/http-echo
    args: ["--port", "8080"]
    readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers:
  - name: main
    image: tether-sandbox/host
    command: ["sh", "-c", "echo attempt; sleep 0.3; exit 1"]
---
apiVersion: v1
kind: Pod
metadata: {name: pending}
spec:
  containers:
  - name: main
    image: registry.example/not-mapped:1
"#;

/// Ends a child we started when the scenario is done with it.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(sb: &Sandbox, rt: &tokio::runtime::Runtime) -> kube::Api<Pod> {
    kube::Api::namespaced(rt.block_on(sb.client()), "default")
}

/// 8 MiB echoed through one port while an HTTP request goes through the other, both in one
/// kube-rs port-forward; the forward ends once both connections are dropped.
fn kube_rs_two_ports(pods: &kube::Api<Pod>, rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        let mut pf = pods.portforward("echo", &[9000, 8080]).await.unwrap();
        let mut echo = pf.take_stream(9000).unwrap();
        let mut http = pf.take_stream(8080).unwrap();
        let sent: Vec<u8> = (0..8u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        let (mut rd, mut wr) = tokio::io::split(&mut echo);
        let write = async {
            wr.write_all(&sent).await.unwrap();
        };
        let read = async {
            let mut got = vec![0u8; sent.len()];
            rd.read_exact(&mut got).await.unwrap();
            got
        };
        let web = async {
            http.write_all(b"GET /two-ports HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            // Channel framing has no end-of-stream for one port (the WebSocket closes when
            // every port is done), so read until the answer is in.
            let mut body = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&body).contains("client:") {
                let n = http.read(&mut buf).await.unwrap();
                assert!(n > 0, "the HTTP answer ended early");
                body.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&body).into_owned()
        };
        let ((), got, body) = tokio::time::timeout(WAIT, async { tokio::join!(write, read, web) })
            .await
            .expect("the transfers finish");
        assert!(got == sent, "the echoed bytes differ from what was sent");
        assert!(body.contains("path: /two-ports"), "{body}");
        drop(echo);
        drop(http);
        let _ = pf.join().await;
    });
}

/// A port nothing listens on is reported on the port's error channel.
fn kube_rs_refused(pods: &kube::Api<Pod>, rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        let mut pf = pods.portforward("echo", &[9999]).await.unwrap();
        let error = pf.take_error(9999).unwrap();
        let message = tokio::time::timeout(WAIT, error)
            .await
            .expect("an error in time")
            .expect("an error message");
        assert!(message.contains("port 9999"), "{message}");
        assert!(message.contains("refused"), "{message}");
        let _ = pf.join().await;
    });
}

/// A pod that is not running cannot be forwarded to, and the answer says why.
fn not_running(pods: &kube::Api<Pod>, rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        let err = match pods.portforward("pending", &[80]).await {
            Ok(_) => panic!("a port-forward to a pending pod was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("400") || err.contains("Bad"), "{err}");
        let err = match pods.portforward("nobody", &[80]).await {
            Ok(_) => panic!("a port-forward to a missing pod was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("404") || err.contains("Not Found"), "{err}");
    });
}

/// `kubectl port-forward` on a free local port; returns once it listens.
fn kubectl_port_forward(sb: &Sandbox, websockets: bool, target: &str) -> (Reaped, u16) {
    let mut cmd = sb.kubectl_cmd(&["port-forward", target, ":8080"]);
    cmd.env(
        "KUBECTL_PORT_FORWARD_WEBSOCKETS",
        if websockets { "true" } else { "false" },
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("kubectl runs");
    let stdout = child.stdout.take().unwrap();
    let child = Reaped(child);
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let port = lines
        .find_map(|l| {
            l.strip_prefix("Forwarding from 127.0.0.1:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("kubectl port-forward listens");
    // kubectl reports every connection on stdout: keep reading, or it dies of SIGPIPE.
    std::thread::spawn(move || lines.for_each(drop));
    (child, port)
}

/// Bulk and concurrent requests through kubectl, over both of its transports; a second
/// round on the same port-forward after the first round's connections were forgotten.
fn kubectl_transports(sb: &Sandbox) {
    for websockets in [true, false] {
        let (_pf, port) = kubectl_port_forward(sb, websockets, "pod/echo");
        for _round in 0..2 {
            kubectl_fetches(port, websockets);
        }
    }
}

fn kubectl_fetches(port: u16, websockets: bool) {
    let fetches: Vec<_> = (0..3)
        .map(|_| {
            Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "30",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{size_download}",
                ])
                .arg(format!("http://127.0.0.1:{port}/bytes?n=4194304"))
                .stdout(Stdio::piped())
                .spawn()
                .expect("curl runs")
        })
        .collect();
    for f in fetches {
        let out = f.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "4194304",
            "websockets={websockets}"
        );
    }
}

fn logs(sb: &Sandbox, pods: &kube::Api<Pod>, rt: &tokio::runtime::Runtime) {
    let http = sb.ok(&["logs", "echo", "-c", "http"]);
    assert!(http.contains("listening on 0.0.0.0:8080"), "{http}");
    let last = sb.ok(&["logs", "echo", "-c", "http", "--tail=1"]);
    assert_eq!(last.trim().lines().count(), 1, "{last}");
    // The server asks for a container when there are several (kubectl picks one itself).
    let err = rt
        .block_on(pods.logs("echo", &LogParams::default()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a container name must be specified for pod echo, choose one of: [tcp http]"),
        "{err}"
    );
    let limited = rt
        .block_on(pods.logs(
            "echo",
            &LogParams {
                container: Some("http".into()),
                limit_bytes: Some(9),
                ..LogParams::default()
            },
        ))
        .unwrap();
    assert_eq!(limited, "http-echo");

    // A restarted container's previous output.
    let previous = wait_for("crasher to restart", WAIT, || {
        let out = sb.kubectl(&["logs", "crasher", "--previous"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert_eq!(previous.trim(), "attempt");
    let never = sb.kubectl(&["logs", "echo", "-c", "tcp", "--previous"]);
    let err = String::from_utf8_lossy(&never.stderr);
    assert!(
        err.contains("previous terminated container \"tcp\" in pod \"echo\" not found"),
        "{err}"
    );

    // `-f` streams until the pod is deleted.
    let mut follow = sb
        .kubectl_cmd(&["logs", "-f", "echo", "-c", "http"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("kubectl logs -f");
    let stdout = follow.stdout.take().unwrap();
    let follow = Reaped(follow);
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    rt.block_on(async {
        let mut pf = pods.portforward("echo", &[8080]).await.unwrap();
        let mut s = pf.take_stream(8080).unwrap();
        s.write_all(b"GET /followed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.unwrap();
    });
    let seen = wait_for("the request in the followed log", WAIT, || {
        lines_rx.try_iter().find(|l| l.contains("GET /followed"))
    });
    assert!(seen.contains("200"), "{seen}");
    sb.ok(&["delete", "pod", "echo", "--wait=false"]);
    let mut follow = follow;
    wait_for("kubectl logs -f to end with the pod", WAIT, || {
        follow.0.try_wait().ok().flatten()
    });
}

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn port_forward_and_logs() {
    let sb = Sandbox::start();
    sb.apply(PODS);
    sb.ok(&["wait", "--for=condition=Ready", "pod/echo", "--timeout=60s"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pods = client(&sb, &rt);
    kube_rs_two_ports(&pods, &rt);
    kube_rs_refused(&pods, &rt);
    not_running(&pods, &rt);
    kubectl_transports(&sb);
    logs(&sb, &pods, &rt);
}
