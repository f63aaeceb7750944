//! Integration tests of the node's network and kube-proxy with real namespaces (they need root
//! and skip themselves without it). Each test has its own state directory, so its namespaces
//! have their own prefix, and a guard that removes them even when the test fails.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::netns::{self, Netns};
use super::network::Node;
use super::{Layout, NODE_IP, proxy};
use crate::resources::{self, Shape};
use crate::store::Store;

const UID_A: &str = "aaaa0001-0000-4000-8000-000000000001";
const UID_B: &str = "bbbb0002-0000-4000-8000-000000000002";

struct TestNode {
    node: Node,
    layout: Layout,
    _dir: tempfile::TempDir,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.node.shutdown();
    }
}

/// A started node (the tests that call this need root, so they are ignored without it).
fn start() -> TestNode {
    let dir = tempfile::tempdir().expect("temp dir");
    let layout = Layout::new(dir.path());
    let node = Node::start(&layout).expect("node starts");
    TestNode {
        node,
        layout,
        _dir: dir,
    }
}

fn put(store: &Store, shape: Shape, value: Value) {
    store
        .write(|s| Ok::<_, ()>(s.put(resources::by_shape(shape), value)))
        .expect("put");
}

fn service(name: &str, ip: &str, port: u16, node_port: u16, proto: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "uid": name},
        "spec": {"type": "NodePort", "clusterIP": ip, "clusterIPs": [ip],
            "ports": [{"name": "p", "port": port, "protocol": proto, "targetPort": "named", "nodePort": node_port}]}})
}

fn slice(service: &str, ip: Ipv4Addr, port: u16, proto: &str, ready: bool) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-{}", proto.to_lowercase()), "namespace": "default",
            "labels": {"kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "ports": [{"name": "p", "port": port, "protocol": proto}],
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": ready}}]})
}

/// Serves TCP on `addr` inside `ns` on a thread: each connection gets `hello <peer ip>` back,
/// and ` from <addr ip>` when `sign` is set.
fn echo_tcp(ns: &Netns, addr: SocketAddr, sign: bool) {
    let listener = ns.bind_tcp(addr).expect("listen");
    listener.set_nonblocking(false).expect("blocking");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let peer = conn
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let from = if sign {
                format!(" from {}", addr.ip())
            } else {
                String::new()
            };
            let _ = conn.write_all(format!("hello {peer}{from}").as_bytes());
        }
    });
}

/// What a TCP server at `addr` says to a client in `ns`.
fn ask_tcp(ns: &Netns, addr: SocketAddr) -> std::io::Result<String> {
    let stream: TcpStream = ns
        .connect_tcp(addr, Duration::from_secs(3))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut stream = stream;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// Whether a TCP connect from `ns` to `addr` is refused (not timed out) within a second.
fn refused(ns: &Netns, addr: SocketAddr) -> bool {
    let started = Instant::now();
    let err = ns.enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)));
    matches!(err, Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused)
        && started.elapsed() < Duration::from_secs(1)
}

/// Polls `check` until it holds or `within` passes (waiting for an asynchronous sync).
fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("ip"), port)
}

#[test]
#[ignore = "needs root (network namespaces); as root: cargo test -- --include-ignored"]
fn pods_reach_services_by_cluster_ip_node_port_and_hairpin() {
    let t = start();
    let a = t.node.add_pod(UID_A).unwrap();
    let b = t.node.add_pod(UID_B).unwrap();
    assert_eq!(t.node.add_pod(UID_A).unwrap(), a, "add_pod is idempotent");
    assert_ne!(a.ip, b.ip);
    echo_tcp(&b.netns, SocketAddr::new(b.ip.into(), 8080), false);
    echo_tcp(&a.netns, SocketAddr::new(a.ip.into(), 9090), true);
    echo_tcp(&b.netns, SocketAddr::new(b.ip.into(), 9090), true);

    // Pod to pod, straight over the bridge.
    let direct = ask_tcp(&a.netns, SocketAddr::new(b.ip.into(), 8080)).unwrap();
    assert_eq!(direct, format!("hello {}", a.ip));

    let store = Store::new(0);
    let mut web = service("web", "10.96.0.50", 80, 30080, "TCP");
    web["spec"]["externalIPs"] = json!(["192.0.2.7"]);
    put(&store, Shape::Service, web);
    put(
        &store,
        Shape::EndpointSlice,
        slice("web", b.ip, 8080, "TCP", true),
    );
    put(
        &store,
        Shape::Service,
        service("down", "10.96.0.51", 81, 30081, "TCP"),
    );
    put(
        &store,
        Shape::EndpointSlice,
        slice("down", b.ip, 8080, "TCP", false),
    );
    put(
        &store,
        Shape::Service,
        service("dns", "10.96.0.52", 53, 30053, "UDP"),
    );
    put(
        &store,
        Shape::EndpointSlice,
        slice("dns", b.ip, 5353, "UDP", true),
    );
    proxy::sync(&store, t.node.netns()).unwrap();

    // Masqueraded: the endpoint sees the node address, and the reply goes back through the
    // node's conntrack.
    let node_ip = NODE_IP.to_string();
    let expected = format!("hello {node_ip}");
    assert_eq!(ask_tcp(&a.netns, addr("10.96.0.50", 80)).unwrap(), expected);
    assert_eq!(ask_tcp(&a.netns, addr(&node_ip, 30080)).unwrap(), expected);
    assert_eq!(ask_tcp(&a.netns, addr("192.0.2.7", 80)).unwrap(), expected);
    assert_eq!(
        ask_tcp(&a.netns, addr("10.96.0.50", 80)).unwrap(),
        expected,
        "a second connection takes the same path"
    );
    assert_eq!(
        ask_tcp(&b.netns, addr("10.96.0.50", 80)).unwrap(),
        expected,
        "hairpin: a pod reaches itself through its Service"
    );
    assert_eq!(
        ask_tcp(t.node.netns(), addr("10.96.0.50", 80)).unwrap(),
        expected,
        "node-local traffic gets the same DNAT"
    );

    // Two endpoints: new connections land on both.
    put(
        &store,
        Shape::Service,
        service("both", "10.96.0.53", 90, 30091, "TCP"),
    );
    let mut two = slice("both", a.ip, 9090, "TCP", true);
    two["endpoints"] =
        json!([{"addresses": [a.ip.to_string()]}, {"addresses": [b.ip.to_string()]}]);
    put(&store, Shape::EndpointSlice, two);
    proxy::sync(&store, t.node.netns()).unwrap();
    let answers: std::collections::BTreeSet<String> = (0..30)
        .map(|_| ask_tcp(t.node.netns(), addr("10.96.0.53", 90)).unwrap())
        .collect();
    assert_eq!(
        answers,
        [a.ip, b.ip]
            .map(|ip| format!("hello {node_ip} from {ip}"))
            .into(),
    );

    assert!(refused(&a.netns, addr("10.96.0.51", 81)));
    assert!(refused(&a.netns, addr(&node_ip, 30081)));
    assert!(refused(t.node.netns(), addr("10.96.0.51", 81)));

    let server = b
        .netns
        .bind_udp(SocketAddr::new(b.ip.into(), 5353))
        .unwrap();
    let client = a.netns.bind_udp(SocketAddr::new(a.ip.into(), 0)).unwrap();
    for s in [&server, &client] {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    }
    client.send_to(b"ping", addr("10.96.0.52", 53)).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    server.send_to(b"pong", from).unwrap();
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"pong"[..], addr("10.96.0.52", 53)));

    t.node.remove_pod(UID_B);
    assert!(!b.netns.exists());
    let prefix = format!("{}-", t.layout.names.prefix());
    t.node.shutdown();
    assert!(netns::list_with_prefix(&prefix).is_empty());
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&prefix));
}

#[test]
#[ignore = "needs root (network namespaces); as root: cargo test -- --include-ignored"]
fn the_proxy_follows_the_store() {
    let t = start();
    let a = t.node.add_pod(UID_A).unwrap();
    echo_tcp(&a.netns, SocketAddr::new(a.ip.into(), 8080), false);
    let store = Arc::new(Store::new(0));
    // The proxy runs on the runtime's worker while this thread checks, blocking.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.spawn(proxy::run(store.clone(), t.node.netns().clone()));

    put(
        &store,
        Shape::Service,
        service("web", "10.96.0.60", 80, 30090, "TCP"),
    );
    eventually(Duration::from_secs(5), "no endpoints: refused", || {
        refused(&a.netns, addr("10.96.0.60", 80))
    });
    put(
        &store,
        Shape::EndpointSlice,
        slice("web", a.ip, 8080, "TCP", true),
    );
    eventually(Duration::from_secs(5), "the endpoint to answer", || {
        ask_tcp(&a.netns, addr("10.96.0.60", 80)).is_ok()
    });
    put(
        &store,
        Shape::EndpointSlice,
        slice("web", a.ip, 8080, "TCP", false),
    );
    eventually(
        Duration::from_secs(5),
        "a not-ready endpoint to be dropped",
        || refused(&a.netns, addr("10.96.0.60", 80)),
    );
    runtime.shutdown_background();
}

#[test]
#[ignore = "needs root (network namespaces); as root: cargo test -- --include-ignored"]
fn start_removes_what_a_crashed_sandbox_left() {
    let t = start();
    let stale = Netns::create(format!("{}-pstale", t.layout.names.prefix())).unwrap();
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", stale.name(), "sleep", "60"])
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(5), "the sleeper to enter", || {
        !stale.members().is_empty()
    });
    let again = Node::start(&t.layout).unwrap();
    assert!(!stale.exists());
    let status = sleeper.wait().unwrap();
    assert!(!status.success(), "the leftover process was killed");
    assert!(again.netns().exists() && again.workstation().exists());
    assert_eq!(super::cleanup(&t.layout), 2, "node and workstation");
}
