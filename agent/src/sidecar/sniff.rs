//! What a connection speaks, from its first bytes: HTTP/1, HTTP/2 with prior knowledge (h2c,
//! gRPC), or something else (TLS, a database protocol, a server-speaks-first protocol).
//!
//! The bytes read to decide are handed back in front of the stream ([`Rewound`]), so whoever
//! serves the connection sees it from its first byte.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The client must start talking within this, or the connection counts as not HTTP (a
/// protocol whose server speaks first would wait forever otherwise).
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(1);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longer than any method a client sends; a longer first token is not HTTP.
const MAX_METHOD: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Other,
}

/// Classifies the bytes seen so far; `None` while more are needed.
pub fn classify(head: &[u8]) -> Option<Protocol> {
    if head.is_empty() {
        return None;
    }
    // A TLS record (a ClientHello) starts with the handshake content type.
    if head[0] == 0x16 {
        return Some(Protocol::Other);
    }
    let n = head.len().min(H2_PREFACE.len());
    if head[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Protocol::Http2);
    }
    let token = head.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if token == head.len() {
        return (token > MAX_METHOD).then_some(Protocol::Other);
    }
    if token == 0 || token > MAX_METHOD || head[token] != b' ' {
        return Some(Protocol::Other);
    }
    // The request target: origin form, `*`, or absolute form.
    match head.get(token + 1) {
        None => None,
        Some(b'/' | b'*' | b'h' | b'H') => Some(Protocol::Http1),
        // CONNECT's authority form.
        Some(_) if &head[..token] == b"CONNECT" => Some(Protocol::Http1),
        Some(_) => Some(Protocol::Other),
    }
}

/// Reads until the protocol is known, within [`SNIFF_TIMEOUT`]; returns it with the bytes
/// read. A client that closes or stays silent is `Other`.
pub async fn sniff<S: AsyncRead + Unpin>(stream: &mut S) -> (Protocol, Bytes) {
    let mut head = BytesMut::with_capacity(64);
    let decided = tokio::time::timeout(SNIFF_TIMEOUT, async {
        loop {
            if let Some(p) = classify(&head) {
                return p;
            }
            match stream.read_buf(&mut head).await {
                Ok(0) | Err(_) => return Protocol::Other,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(Protocol::Other);
    (decided, head.freeze())
}

/// A stream with bytes already read from it put back in front.
pub struct Rewound<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewound<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Rewound { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_other_protocols_are_told_apart() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"POST /v2/items"), Some(Protocol::Http1));
        assert_eq!(classify(b"OPTIONS * HTTP/1.1"), Some(Protocol::Http1));
        assert_eq!(
            classify(b"CONNECT example:443 HTTP/1.1"),
            Some(Protocol::Http1)
        );
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Protocol::Other));
        assert_eq!(classify(b"\x00\x00\x00\x08"), Some(Protocol::Other));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Protocol::Other));
        assert_eq!(classify(b"HELLO world"), Some(Protocol::Other));
        // Not enough yet.
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET "), None);
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(classify(b"PRIZE / HTTP/1.1"), Some(Protocol::Http1));
    }

    #[tokio::test]
    async fn the_bytes_read_to_decide_are_put_back() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        use tokio::io::AsyncWriteExt;
        client.write_all(b"GET /x HTTP/1.1\r\n\r\n").await.unwrap();
        let (protocol, head) = sniff(&mut server).await;
        assert_eq!(protocol, Protocol::Http1);
        let mut all = Vec::new();
        drop(client);
        Rewound::new(head, server)
            .read_to_end(&mut all)
            .await
            .unwrap();
        assert_eq!(all, b"GET /x HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_silent_client_is_not_http() {
        let (_client, mut server) = tokio::io::duplex(1024);
        assert_eq!(sniff(&mut server).await.0, Protocol::Other);
    }
}
