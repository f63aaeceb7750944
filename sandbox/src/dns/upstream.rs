//! Forwarding names outside the cluster to the host's resolver. The sandbox process lives in
//! the host's network namespace, so its sockets reach the host's resolver (even a loopback
//! one such as systemd-resolved's 127.0.0.53) the way any host program would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// How long one forwarded query may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream resolver (no nameserver line in /etc/resolv.conf)")]
    None,
    #[error("upstream resolver {0} did not answer within {TIMEOUT:?}")]
    Timeout(SocketAddr),
    #[error("upstream resolver {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The first `nameserver` of a resolv.conf text, at port 53.
pub fn parse_resolv_conf(text: &str) -> Option<SocketAddr> {
    text.lines()
        .map(|l| l.split(['#', ';']).next().unwrap_or_default())
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next())?
        })
        // A scoped IPv6 address (`fe80::1%eth0`) is left out: its scope means nothing here.
        .find_map(|addr| addr.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
}

/// The host's resolver, from `path` (normally /etc/resolv.conf).
pub fn from_resolv_conf(path: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_resolv_conf(&text)
}

/// Where forwarded queries go.
#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    pub addr: Option<SocketAddr>,
}

impl Upstream {
    /// Sends a query as it came (same transport, same bytes, so the client's EDNS size and
    /// id carry through) and returns the resolver's answer.
    pub async fn forward(&self, query: &[u8], tcp: bool) -> Result<Vec<u8>, UpstreamError> {
        let addr = self.addr.ok_or(UpstreamError::None)?;
        let io = |source| UpstreamError::Io { addr, source };
        let exchange = async {
            if tcp {
                let mut stream = TcpStream::connect(addr).await.map_err(io)?;
                let len = u16::try_from(query.len())
                    .map_err(|_| io(std::io::ErrorKind::InvalidInput.into()))?;
                let mut framed = len.to_be_bytes().to_vec();
                framed.extend_from_slice(query);
                stream.write_all(&framed).await.map_err(io)?;
                let len = stream.read_u16().await.map_err(io)?;
                let mut buf = vec![0; usize::from(len)];
                stream.read_exact(&mut buf).await.map_err(io)?;
                Ok(buf)
            } else {
                let local: SocketAddr = match addr {
                    SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                    SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let socket = UdpSocket::bind(local).await.map_err(io)?;
                socket.connect(addr).await.map_err(io)?;
                socket.send(query).await.map_err(io)?;
                let mut buf = vec![0; 65535];
                loop {
                    let n = socket.recv(&mut buf).await.map_err(io)?;
                    // Only the answer to this query counts (same id); a connected socket
                    // already drops datagrams from other addresses.
                    if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
                        buf.truncate(n);
                        return Ok(buf);
                    }
                }
            }
        };
        timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout(addr))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_usable_nameserver_wins() {
        let text = "# generated\nsearch example.com\n;nameserver 1.1.1.1\nnameserver fe80::1%eth0\n\
                    nameserver   127.0.0.53 # resolved\nnameserver 8.8.8.8\n";
        assert_eq!(
            parse_resolv_conf(text),
            Some("127.0.0.53:53".parse().unwrap())
        );
        assert_eq!(parse_resolv_conf("search x\n"), None);
    }

    #[tokio::test]
    async fn a_silent_upstream_times_out_and_none_fails_at_once() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let up = Upstream {
            addr: Some(silent.local_addr().unwrap()),
        };
        let started = std::time::Instant::now();
        let err = up.forward(&[1, 2, 3], false).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Timeout(_)), "{err}");
        assert!(started.elapsed() < TIMEOUT * 2);
        let err = Upstream { addr: None }.forward(&[1, 2], false).await;
        assert!(matches!(err, Err(UpstreamError::None)));
    }
}
