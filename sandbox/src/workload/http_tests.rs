//! http-echo on loopback, spoken to with hyper's client.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;

use super::*;

async fn start(unready: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let identity = Arc::new(Identity {
        hostname: "echo-7d9f".into(),
        pod_ip: Some("10.244.0.9".into()),
    });
    tokio::spawn(serve(listener, identity, unready));
    addr
}

/// One request on a new connection: status, headers and the whole body.
async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "echo")
            .body(Full::new(body))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    };
    timeout(Duration::from_secs(10), exchange)
        .await
        .expect("an answer within 10 s")
}

#[tokio::test]
async fn any_path_names_the_pod_the_request_and_the_client() {
    let addr = start(false).await;
    let (status, _, body) = call(addr, Method::GET, "/some/where?x=1", Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
    let body = String::from_utf8(body.to_vec()).unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "hostname: echo-7d9f",
            "pod-ip: 10.244.0.9",
            "method: GET",
            "path: /some/where?x=1"
        ]
    );
    assert!(lines[4].starts_with("client: 127.0.0.1:"), "{body}");
}

#[tokio::test]
async fn healthz_follows_readiness() {
    let ready = start(false).await;
    let unready = start(true).await;
    let (status, _, _) = call(ready, Method::GET, "/healthz", Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(unready, Method::GET, "/healthz", Bytes::new()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // An unready pod still answers other paths (only its probe fails).
    let (status, _, _) = call(unready, Method::GET, "/", Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bytes_streams_exactly_n_bytes() {
    let addr = start(false).await;
    let (status, headers, body) = call(addr, Method::GET, "/bytes?n=1000003", Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_LENGTH], "1000003");
    assert_eq!(body.len(), 1_000_003);
    assert!(body.iter().all(|b| *b == b'x'));
    let (status, _, body) = call(addr, Method::GET, "/bytes?n=0", Bytes::new()).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    let (status, _, _) = call(addr, Method::GET, "/bytes?n=lots", Bytes::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn echo_returns_the_body() {
    let addr = start(false).await;
    let sent: Bytes = (0..300_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let (status, _, body) = call(addr, Method::POST, "/echo", sent.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, sent);
}
