//! The manager binary with `--health-listen`: the probes answer, a laptop without two-way
//! streams is refused, and with `--discover` against the sandbox a session's control stream
//! carries the discovered subnets first and every later change.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{Api, PostParams};
use serde_json::json;
use tether_tests::sandbox::Sandbox;
use tether_tests::{wait_for, within};
use tether_tunnel::Session;
use tether_tunnel::wire::capability::{Capabilities, Capability};
use tether_tunnel::wire::control::{ClusterInfo, ControlMessage};
use tether_tunnel::wire::flow::FlowRequest;
use tether_tunnel::wire::frame::{MAX_FRAME, expect_frame};
use tether_tunnel::wire::handshake::{
    HandshakeError, SOFTWARE_VERSION, Terms, client_handshake, client_handshake_with,
};

const AGENT: &str = env!("CARGO_BIN_EXE_tether-agent");
const TOKEN: &str = "s3cret-test-token";
const WAIT: Duration = Duration::from_secs(20);

/// A manager process, killed (by its pid) when dropped.
struct Manager {
    child: Child,
    listen: SocketAddr,
    health: SocketAddr,
    dir: tempfile::TempDir,
}

impl Manager {
    fn start(extra: &[&str], env: &[(&str, &str)]) -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.1\n").unwrap();
        let (listen, health) = (free_port(), free_port());
        let child = Command::new(AGENT)
            .arg("manager")
            .args(["--listen", &listen.to_string()])
            .args(["--health-listen", &health.to_string()])
            .arg("--resolv-conf")
            .arg(&resolv)
            .args(extra)
            .env("TETHER_TOKEN", TOKEN)
            .env("TETHER_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("manager.log")).unwrap())
            .spawn()
            .expect("start tether-agent");
        Manager {
            child,
            listen,
            health,
            dir,
        }
    }

    fn wait_for_status(&self, path: &str, code: u16) {
        wait_for_status(self.health, path, code)
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("manager.log"));
            eprintln!("manager log:\n{}", log.unwrap_or_default());
        }
    }
}

/// Polls `path` until it answers `code`; panics with the last answer at the deadline.
fn wait_for_status(health: SocketAddr, path: &str, code: u16) {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        last = http_get(health, path).ok();
        if last.as_ref().is_some_and(|(c, _)| *c == code) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {path} to answer {code}; last answer {last:?}");
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A one-shot HTTP/1.1 request; returns the status code and body.
fn http_request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path)
}

#[test]
fn direct_mode_answers_the_probes_and_nothing_else() {
    let manager = Manager::start(&["--subnet", "10.20.0.0/16"], &[]);
    manager.wait_for_status("/readyz", 200);
    assert_eq!(
        http_get(manager.health, "/livez").unwrap(),
        (200, "ok\n".into())
    );
    assert_eq!(
        http_get(manager.health, "/readyz").unwrap(),
        (200, "ok\n".into())
    );
    assert_eq!(http_get(manager.health, "/").unwrap().0, 404);
    assert_eq!(http_get(manager.health, "/metrics").unwrap().0, 404);
    assert_eq!(http_get(manager.health, "/readyz/extra").unwrap().0, 404);
    assert_eq!(
        http_request(manager.health, "POST", "/readyz").unwrap().0,
        405
    );
}

/// A laptop from before streams went both ways is told why it cannot connect, with both
/// versions, and the manager logs the same; a current laptop still gets its session.
#[tokio::test]
async fn a_laptop_without_two_way_streams_is_refused_naming_both_versions() {
    let manager = Manager::start(&["--subnet", "10.20.0.0/16"], &[]);
    let health = manager.health;
    tokio::task::spawn_blocking(move || wait_for_status(health, "/readyz", 200))
        .await
        .unwrap();
    let one_way = Terms {
        offers: Capabilities::TUNNEL.without(Capability::TwoWay),
        requires: Capabilities::empty(),
        ..Terms::LAPTOP
    };
    let mut stream = tokio::net::TcpStream::connect(manager.listen)
        .await
        .expect("connect to the manager");
    let refused = within(
        "the refusal",
        WAIT,
        client_handshake_with(&mut stream, TOKEN, one_way),
    )
    .await;
    let Err(HandshakeError::Rejected(reason)) = refused else {
        panic!("expected a rejection, got {refused:?}");
    };
    for part in [
        "two-way",
        SOFTWARE_VERSION,
        "protocol v1",
        "the laptop",
        "the manager",
    ] {
        assert!(reason.contains(part), "{part:?} missing from {reason:?}");
    }
    let (_session, _control, info) = control_stream(manager.listen).await;
    assert_eq!(info.subnets, nets(&["10.20.0.0/16"]));
    let log = std::fs::read_to_string(manager.dir.path().join("manager.log")).unwrap();
    assert!(log.contains("the laptop lacks two-way"), "{log}");
}

/// Opens a session to the manager and its control stream; returns the first ClusterInfo.
async fn control_stream(addr: SocketAddr) -> (Session, tether_tunnel::FlowStream, ClusterInfo) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the manager");
    client_handshake(&mut stream, TOKEN)
        .await
        .expect("handshake");
    // This test laptop takes no streams from the manager.
    let (session, _incoming) = Session::client(stream);
    let mut control = session
        .open(&FlowRequest::Control)
        .await
        .expect("control stream");
    let info = next_cluster_info(&mut control).await;
    (session, control, info)
}

async fn next_cluster_info(control: &mut tether_tunnel::FlowStream) -> ClusterInfo {
    let frame = within(
        "a control message",
        WAIT,
        expect_frame(control, MAX_FRAME, "control"),
    )
    .await
    .expect("a control frame");
    match ControlMessage::decode(&frame).expect("a control message") {
        ControlMessage::ClusterInfo(info) => info,
        other => panic!("expected ClusterInfo, got {other:?}"),
    }
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[tokio::test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
async fn discovering_manager_pushes_subnets_to_sessions() {
    let sb = Sandbox::start();
    let kubeconfig = sb.kubeconfig.to_str().expect("a UTF-8 path").to_owned();
    let manager = Manager::start(
        &["--discover", "--subnet", "192.168.50.0/24"],
        &[("KUBECONFIG", &kubeconfig), ("POD_NAMESPACE", "default")],
    );
    let health = manager.health;
    tokio::task::spawn_blocking(move || wait_for_status(health, "/readyz", 200))
        .await
        .unwrap();

    let (_session, mut control, info) = control_stream(manager.listen).await;
    assert_eq!(info.dns_domain, "cluster.local");
    assert_eq!(
        info.subnets,
        nets(&["192.168.50.0/24", "10.96.0.0/16", "10.244.0.0/24"])
    );

    let cidrs: Api<ServiceCIDR> = Api::all(sb.client().await);
    let extra: ServiceCIDR = serde_json::from_value(
        json!({"metadata": {"name": "extra"}, "spec": {"cidrs": ["10.97.0.0/16"]}}),
    )
    .unwrap();
    cidrs
        .create(&PostParams::default(), &extra)
        .await
        .expect("create a ServiceCIDR");
    let info = next_cluster_info(&mut control).await;
    assert_eq!(
        info.subnets,
        nets(&[
            "192.168.50.0/24",
            "10.96.0.0/16",
            "10.97.0.0/16",
            "10.244.0.0/24"
        ])
    );
}

/// Until the first discovery is done, the manager is alive but not ready (here: forever,
/// the API server does not answer).
#[test]
fn not_ready_before_the_first_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let dead = free_port();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: dead\n\
             clusters: [{{name: dead, cluster: {{server: 'https://{dead}', insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: dead, user: {{token: nope}}}}]\n\
             contexts: [{{name: dead, context: {{cluster: dead, user: dead, namespace: tether}}}}]\n"
        ),
    )
    .unwrap();
    let manager = Manager::start(
        &["--discover"],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    manager.wait_for_status("/livez", 200);
    assert_eq!(
        http_get(manager.health, "/readyz").unwrap(),
        (503, "not ready\n".into())
    );
    // Still not ready after a retry: the manager keeps retrying, it does not give up.
    let log_path = manager.dir.path().join("manager.log");
    let log = wait_for("the manager to retry a failed discovery", WAIT, || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        (log.matches("discovery failed (retrying").count() >= 2).then_some(log)
    });
    assert_eq!(http_get(manager.health, "/readyz").unwrap().0, 503);
    assert!(log.contains("discovery failed (retrying"), "{log}");
}
