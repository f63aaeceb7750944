//! One DNS exchange over UDP with a given server: what the laptop's DNS server does with
//! non-cluster names and what the manager does with every name it is asked.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

/// The wildcard address of `addr`'s family, port 0: where to bind a socket that talks to it.
pub fn any_addr_for(addr: SocketAddr) -> SocketAddr {
    if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    }
}

/// Sends `query` to `server` and returns the first reply carrying the query's id.
pub async fn exchange(
    server: SocketAddr,
    query: &[u8],
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let socket = UdpSocket::bind(any_addr_for(server)).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    let answer = async {
        loop {
            let n = socket.recv(&mut buf).await?;
            // Only a reply with the query's id answers it; stray datagrams are ignored.
            if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
                return Ok(buf[..n].to_vec());
            }
        }
    };
    tokio::time::timeout(timeout, answer).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no DNS answer from {server}"),
        )
    })?
}
