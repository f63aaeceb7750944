//! The server on loopback sockets: dig, several queries on one TCP connection, truncation,
//! forwarding and FORMERR.

use std::net::SocketAddr;
use std::process::Command;

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;

use super::*;
use crate::bootstrap;
use crate::resources::{self, Shape};

/// A store with the bootstrap Services and a headless Service with 60 ready endpoints.
fn store() -> Arc<Store> {
    let store = Arc::new(Store::new(0));
    bootstrap::run(&store).unwrap();
    let addresses: Vec<_> = (2..62)
        .map(|i| json!({"addresses": [format!("10.244.0.{i}")]}))
        .collect();
    store
        .write(|s| {
            s.put(
                resources::by_shape(Shape::Service),
                json!({"metadata": {"namespace": "default", "name": "many"},
                    "spec": {"clusterIP": "None"}}),
            );
            s.put(
                resources::by_shape(Shape::EndpointSlice),
                json!({"metadata": {"namespace": "default", "name": "many-1",
                        "labels": {"kubernetes.io/service-name": "many"}},
                    "addressType": "IPv4", "endpoints": addresses}),
            );
            Ok::<_, ()>(())
        })
        .unwrap();
    store
}

/// Starts the server on 127.0.0.1 (UDP and TCP on the same port) and returns its address.
fn start(store: Arc<Store>, upstream: Option<SocketAddr>) -> SocketAddr {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = std::net::TcpListener::bind(addr).unwrap();
    udp.set_nonblocking(true).unwrap();
    tcp.set_nonblocking(true).unwrap();
    tokio::spawn(serve_with(store, udp, tcp, upstream));
    addr
}

fn query(name: &str, qtype: RecordType) -> Message {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    q
}

async fn udp_exchange(addr: SocketAddr, packet: &[u8]) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(packet, addr).await.unwrap();
    let mut buf = vec![0; 65535];
    let n = timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

async fn dig(args: Vec<String>) -> String {
    let out = tokio::task::spawn_blocking(move || Command::new("dig").args(&args).output())
        .await
        .unwrap()
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_resolves_services_srv_and_pods() {
    let addr = start(store(), None);
    let at = |rest: &[&str]| {
        let mut args = vec![
            format!("@{}", addr.ip()),
            "-p".to_string(),
            addr.port().to_string(),
            "+short".to_string(),
            "+time=3".to_string(),
            "+tries=1".to_string(),
        ];
        args.extend(rest.iter().map(|s| s.to_string()));
        args
    };
    let out = dig(at(&["kubernetes.default.svc.cluster.local", "A"])).await;
    assert_eq!(out.trim(), "10.96.0.1");
    let out = dig(at(&[
        "+tcp",
        "_dns._udp.kube-dns.kube-system.svc.cluster.local",
        "SRV",
    ]))
    .await;
    assert_eq!(
        out.trim(),
        "0 100 53 kube-dns.kube-system.svc.cluster.local."
    );
    let out = dig(at(&["10-244-0-7.default.pod.cluster.local"])).await;
    assert_eq!(out.trim(), "10.244.0.7");
    let out = dig(at(&["-x", "10.96.0.10"])).await;
    assert_eq!(out.trim(), "kube-dns.kube-system.svc.cluster.local.");
    // Without +short, dig shows the status and the SOA of an NXDOMAIN.
    let full = dig(at(&["nope.default.svc.cluster.local"])[..]
        .iter()
        .filter(|a| *a != "+short")
        .cloned()
        .collect())
    .await;
    assert!(full.contains("status: NXDOMAIN"), "{full}");
    assert!(
        full.contains("SOA\tns.dns.cluster.local. hostmaster.cluster.local."),
        "{full}"
    );
    // 60 addresses do not fit 512 bytes: dig retries over TCP after the TC bit.
    let out = dig(at(&["+noedns", "many.default.svc.cluster.local"])).await;
    assert_eq!(out.lines().count(), 60, "{out}");
}

#[tokio::test]
async fn udp_truncates_and_tcp_carries_several_queries_per_connection() {
    let addr = start(store(), None);
    let q = query("many.default.svc.cluster.local.", RecordType::A);
    let r = udp_exchange(addr, &q.to_vec().unwrap()).await;
    assert!(r.metadata.truncation);
    assert!(r.answers.is_empty());

    let mut stream = TcpStream::connect(addr).await.unwrap();
    for name in [
        "many.default.svc.cluster.local.",
        "kubernetes.default.svc.cluster.local.",
    ] {
        let q = query(name, RecordType::A).to_vec().unwrap();
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        stream.write_all(&framed).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        let r = Message::from_vec(&buf).unwrap();
        assert!(!r.metadata.truncation);
        assert!(!r.answers.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn the_server_sees_store_changes() {
    let store = store();
    let addr = start(store.clone(), None);
    let q = query("late.default.svc.cluster.local.", RecordType::A);
    let r = udp_exchange(addr, &q.to_vec().unwrap()).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    store
        .write(|s| {
            s.put(
                resources::by_shape(Shape::Service),
                json!({"metadata": {"namespace": "default", "name": "late"},
                    "spec": {"clusterIP": "10.96.0.77"}}),
            );
            Ok::<_, ()>(())
        })
        .unwrap();
    let r = udp_exchange(addr, &q.to_vec().unwrap()).await;
    assert_eq!(r.answers[0].data.to_string(), "10.96.0.77");
}

#[tokio::test]
async fn other_names_are_forwarded_and_fail_with_servfail() {
    // A fake upstream that answers every query with one A record.
    let fake = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0; 4096];
        while let Ok((n, from)) = fake.recv_from(&mut buf).await {
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut r = answer::response_to(&q, ResponseCode::NoError);
            r.answers.push(hickory_proto::rr::Record::from_rdata(
                q.queries[0].name.clone(),
                60,
                hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A([192, 0, 2, 1].into())),
            ));
            fake.send_to(&r.to_vec().unwrap(), from).await.unwrap();
        }
    });
    let addr = start(store(), Some(fake_addr));
    let q = query("example.com.", RecordType::A);
    let r = udp_exchange(addr, &q.to_vec().unwrap()).await;
    assert_eq!(r.metadata.id, q.metadata.id);
    assert_eq!(r.answers[0].data.to_string(), "192.0.2.1");

    // Nothing listens on this upstream port: SERVFAIL (ICMP refusal, or the 2 s timeout).
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let addr = start(store(), Some(dead_addr));
    let r = udp_exchange(addr, &q.to_vec().unwrap()).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn garbage_gets_formerr_and_the_server_keeps_going() {
    let addr = start(store(), None);
    let r = udp_exchange(
        addr,
        &[0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'x'],
    )
    .await;
    assert_eq!(r.metadata.id, 0xabcd);
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    let q = query("kubernetes.default.svc.cluster.local.", RecordType::A);
    let r = udp_exchange(addr, &q.to_vec().unwrap()).await;
    assert_eq!(r.answers.len(), 1);
}

/// A namespace made for one test, deleted on drop.
struct TestNetns(crate::node::netns::Netns);

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = self.0.delete();
    }
}

/// The server listening inside a network namespace (as the node namespace holds it) still
/// forwards through the host's namespace: the fake upstream on the host's loopback is out of
/// reach from inside the namespace, so an answer proves where the upstream socket lives.
#[tokio::test]
#[ignore = "needs root (network namespaces); as root: cargo test -- --include-ignored"]
async fn listening_in_a_namespace_forwards_from_the_host() {
    let name = format!("tsbdnstest-{}", std::process::id());
    let ns =
        TestNetns(crate::node::netns::Netns::create(name).expect("create a network namespace"));
    let fake = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0; 4096];
        while let Ok((n, from)) = fake.recv_from(&mut buf).await {
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut r = answer::response_to(&q, ResponseCode::NoError);
            r.answers.push(hickory_proto::rr::Record::from_rdata(
                q.queries[0].name().clone(),
                60,
                hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A([192, 0, 2, 9].into())),
            ));
            fake.send_to(&r.to_vec().unwrap(), from).await.unwrap();
        }
    });
    let listen: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let udp = ns.0.bind_udp(listen).unwrap();
    let tcp = ns.0.bind_tcp(listen).unwrap();
    tokio::spawn(serve_with(store(), udp, tcp, Some(fake_addr)));
    let ns_name = ns.0.name().to_string();
    let dig_in_ns = |name: &str, tcp: bool| {
        let mut args: Vec<String> = ["netns", "exec", &ns_name, "dig", "@127.0.0.1", "+short"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["+time=3".into(), "+tries=1".into(), name.to_string()]);
        if tcp {
            args.push("+tcp".into());
        }
        async move {
            let out = tokio::task::spawn_blocking(move || Command::new("ip").args(&args).output())
                .await
                .unwrap()
                .expect("ip netns exec dig runs");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    };
    assert_eq!(
        dig_in_ns("kubernetes.default.svc.cluster.local", false).await,
        "10.96.0.1"
    );
    assert_eq!(
        dig_in_ns("kube-dns.kube-system.svc.cluster.local", true).await,
        "10.96.0.10"
    );
    assert_eq!(dig_in_ns("example.com", false).await, "192.0.2.9");
}
