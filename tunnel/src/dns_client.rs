//! One DNS exchange with a given server, over UDP or TCP: what the laptop's DNS server does
//! with non-cluster names and what the manager does with every name it is asked.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The wildcard address of `addr`'s family, port 0: where to bind a socket that talks to it.
pub fn any_addr_for(addr: SocketAddr) -> SocketAddr {
    if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    }
}

/// Whether a DNS message has the TC (truncated) flag: the full answer needs TCP.
pub fn is_truncated(message: &[u8]) -> bool {
    message.get(2).is_some_and(|flags| flags & 0x02 != 0)
}

fn timed_out(server: SocketAddr) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no DNS answer from {server}"),
    )
}

/// Sends `query` to `server` over UDP and returns the first reply carrying the query's id.
pub async fn udp(server: SocketAddr, query: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
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
    tokio::time::timeout(timeout, answer)
        .await
        .map_err(|_| timed_out(server))?
}

/// Sends `query` to `server` over TCP (RFC 1035 4.2.2 framing) and returns the answer.
pub async fn tcp(server: SocketAddr, query: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await?;
        write_tcp_message(&mut stream, query).await?;
        read_tcp_message(&mut stream)
            .await?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no answer"))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| timed_out(server))?
}

/// UDP first, then TCP when the answer was truncated: the complete answer either way.
pub async fn complete(
    server: SocketAddr,
    query: &[u8],
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let answer = udp(server, query, timeout).await?;
    if is_truncated(&answer) {
        return tcp(server, query, timeout).await;
    }
    Ok(answer)
}

/// Reads one length-prefixed DNS message; `Ok(None)` at a clean end of stream.
pub async fn read_tcp_message<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    reader.read_exact(&mut message).await?;
    Ok(Some(message))
}

/// Writes one length-prefixed DNS message.
pub async fn write_tcp_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &[u8],
) -> std::io::Result<()> {
    let len = u16::try_from(message.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "DNS message over 65535 bytes",
        )
    })?;
    let mut framed = Vec::with_capacity(2 + message.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    writer.write_all(&framed).await?;
    writer.flush().await
}
