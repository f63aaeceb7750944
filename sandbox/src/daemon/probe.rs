//! `up`'s readiness check: GET /readyz over HTTPS, trusting only the sandbox CA.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::pki::Pki;

/// Whether the server on `port` answers /readyz with 200 (within a second).
pub fn ready(pki: &Pki, port: u16) -> bool {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(1), check(pki, port))
            .await
            .unwrap_or(false)
    })
}

async fn check(pki: &Pki, port: u16) -> bool {
    let Ok(config) = pki.client_config() else {
        return false;
    };
    let Ok(tcp) = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await else {
        return false;
    };
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let Ok(tls) = TlsConnector::from(config).connect(name, tcp).await else {
        return false;
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await
    else {
        return false;
    };
    tokio::spawn(conn);
    let request = http::Request::get("/readyz")
        .header(http::header::HOST, format!("127.0.0.1:{port}"))
        .body(Empty::<bytes::Bytes>::new());
    let Ok(request) = request else { return false };
    sender
        .send_request(request)
        .await
        .is_ok_and(|r| r.status() == http::StatusCode::OK)
}
