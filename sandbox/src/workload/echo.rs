//! `tcp-echo` and `udp-echo`: every byte comes back as it was sent, nothing added.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Echoes each TCP connection until its client closes (then closes the write side too).
pub async fn serve_tcp(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(echo_connection(stream, peer));
            }
            Err(e) => {
                println!("accept: {e}");
                // Out of descriptors and the like: back off rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn echo_connection(mut stream: TcpStream, peer: SocketAddr) {
    println!("connection from {peer}");
    let (mut rd, mut wr) = stream.split();
    match tokio::io::copy(&mut rd, &mut wr).await {
        Ok(n) => println!("connection from {peer} closed after {n} bytes"),
        Err(e) => println!("connection from {peer}: {e}"),
    }
}

/// Sends each datagram back to its sender.
pub async fn serve_udp(socket: UdpSocket) {
    let mut buf = vec![0u8; 65535];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                println!("datagram of {n} bytes from {from}");
                if let Err(e) = socket.send_to(&buf[..n], from).await {
                    println!("reply to {from}: {e}");
                }
            }
            // ICMP errors for earlier replies surface here; the socket stays usable.
            Err(e) => println!("receive: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::timeout;

    #[tokio::test]
    async fn tcp_echo_returns_the_bytes_and_closes_after_the_client() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_tcp(listener));
        let mut s = TcpStream::connect(addr).await.unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let (mut rd, mut wr) = s.split();
        let send = async {
            wr.write_all(&data).await.unwrap();
            wr.shutdown().await.unwrap();
        };
        let mut back = Vec::new();
        let recv = rd.read_to_end(&mut back);
        let (_, got) = timeout(Duration::from_secs(10), async { tokio::join!(send, recv) })
            .await
            .unwrap();
        got.unwrap();
        assert_eq!(back, data);
    }

    #[tokio::test]
    async fn udp_echo_answers_each_sender() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(serve_udp(server));
        for msg in [&b"one"[..], b"", &[7u8; 1400]] {
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            client.send_to(msg, addr).await.unwrap();
            let mut buf = [0u8; 2048];
            let (n, from) = timeout(Duration::from_secs(5), client.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(from, addr);
            assert_eq!(&buf[..n], msg);
        }
    }
}
