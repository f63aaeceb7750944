//! One tunnel connection carrying many flows: a yamux session over any byte stream.
//!
//! yamux gives each flow its own stream with its own flow-control window, so a slow
//! consumer on one flow stalls only that flow. A single driver task owns the yamux
//! connection; [`Session`] handles ask it for new outbound streams over a channel.

use std::future::Future;
use std::task::Poll;

use futures::{AsyncRead, AsyncWrite};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;

use crate::wire::WireError;
use crate::wire::flow::{FlowReply, FlowRequest};
use crate::wire::frame::{MAX_FRAME, expect_frame, write_frame};

/// A flow's byte stream, with tokio's I/O traits.
pub type FlowStream = Compat<yamux::Stream>;

/// Why a flow could not be opened or used.
#[derive(Debug, Error)]
pub enum SessionError {
    #[error("the tunnel session is closed")]
    Closed,
    #[error("tunnel session error: {0}")]
    Yamux(#[from] yamux::ConnectionError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the manager could not reach {target}: {reply:?}")]
    Dial {
        target: std::net::SocketAddr,
        reply: FlowReply,
    },
}

/// Tuned for bulk flows on fast local links: larger frames mean fewer wakeups per byte.
fn config() -> yamux::Config {
    let mut cfg = yamux::Config::default();
    cfg.set_split_send_size(256 * 1024);
    cfg
}

type OpenReply = oneshot::Sender<Result<yamux::Stream, yamux::ConnectionError>>;

/// A handle to a running session; cheap to clone.
#[derive(Clone)]
pub struct Session {
    // Handles -> driver: requests for a new outbound stream.
    open_tx: mpsc::Sender<OpenReply>,
    closed: CancellationToken,
}

impl Session {
    /// Starts the laptop side of a session over `io` (after the handshake). The driver runs
    /// on its own task until the connection ends or every handle is dropped.
    pub fn client<T>(io: T) -> Session
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let conn = yamux::Connection::new(
            tokio_util::compat::TokioAsyncReadCompatExt::compat(io),
            config(),
            yamux::Mode::Client,
        );
        let (open_tx, open_rx) = mpsc::channel(64);
        let closed = CancellationToken::new();
        let guard = closed.clone().drop_guard();
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(e) = drive(conn, open_rx, drop).await {
                tracing::debug!("tunnel session ended: {e}");
            }
        });
        Session { open_tx, closed }
    }

    /// Completes when the session's connection has ended.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let token = self.closed.clone();
        async move { token.cancelled().await }
    }

    /// Opens a stream and sends the flow request on it.
    pub async fn open(&self, request: &FlowRequest) -> Result<FlowStream, SessionError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.open_tx
            .send(reply_tx)
            .await
            .map_err(|_| SessionError::Closed)?;
        let stream = reply_rx.await.map_err(|_| SessionError::Closed)??;
        let mut stream = stream.compat();
        write_frame(&mut stream, &request.encode()).await?;
        Ok(stream)
    }

    /// Opens a TCP or UDP flow and waits for the manager's dial result.
    pub async fn dial(&self, request: &FlowRequest) -> Result<FlowStream, SessionError> {
        let target = match request {
            FlowRequest::Tcp { target } | FlowRequest::Udp { target } => *target,
            FlowRequest::Control | FlowRequest::Dns => {
                return Err(SessionError::Wire(WireError::Io(std::io::Error::other(
                    "dial is for TCP and UDP flows",
                ))));
            }
        };
        let mut stream = self.open(request).await?;
        let reply = FlowReply::decode(&expect_frame(&mut stream, MAX_FRAME, "flow reply").await?)?;
        match reply {
            FlowReply::Ready => Ok(stream),
            reply => Err(SessionError::Dial { target, reply }),
        }
    }
}

/// Runs the manager side of a session over `io`, handing every inbound stream to
/// `on_inbound`, until the connection ends.
pub async fn serve<T, F>(io: T, on_inbound: F) -> Result<(), yamux::ConnectionError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: FnMut(FlowStream) + Send,
{
    let conn = yamux::Connection::new(
        tokio_util::compat::TokioAsyncReadCompatExt::compat(io),
        config(),
        yamux::Mode::Server,
    );
    // The manager never opens streams; keep the sender alive so the driver does not close.
    let (_open_tx, open_rx) = mpsc::channel(1);
    let mut on_inbound = on_inbound;
    drive(conn, open_rx, |s| on_inbound(s.compat())).await
}

/// Polls the connection: serves open requests and hands over inbound streams. Returns when
/// the connection ends, or closes it once every handle is gone.
async fn drive<T, F>(
    mut conn: yamux::Connection<T>,
    mut open_rx: mpsc::Receiver<OpenReply>,
    mut on_inbound: F,
) -> Result<(), yamux::ConnectionError>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(yamux::Stream),
{
    let mut waiting: Option<OpenReply> = None;
    let mut handles_gone = false;
    let result = std::future::poll_fn(|cx| {
        loop {
            if waiting.is_none() && !handles_gone {
                match open_rx.poll_recv(cx) {
                    Poll::Ready(Some(reply)) => waiting = Some(reply),
                    Poll::Ready(None) => handles_gone = true,
                    Poll::Pending => {}
                }
            }
            let mut progressed = false;
            if let Some(reply) = waiting.take() {
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(result) => {
                        let failed = result.is_err();
                        let _ = reply.send(result);
                        progressed = true;
                        if failed {
                            return Poll::Ready(Err(yamux::ConnectionError::Closed));
                        }
                    }
                    Poll::Pending => waiting = Some(reply),
                }
            }
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    on_inbound(stream);
                    progressed = true;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => {}
            }
            if handles_gone && waiting.is_none() {
                return Poll::Ready(Ok(()));
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    })
    .await;
    if handles_gone {
        let _ = std::future::poll_fn(|cx| conn.poll_close(cx)).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A toy manager: echoes every stream after reading its request frame.
    fn echo_server(io: tokio::io::DuplexStream) {
        tokio::spawn(serve(io, |mut stream| {
            tokio::spawn(async move {
                let _req = expect_frame(&mut stream, MAX_FRAME, "req").await.unwrap();
                write_frame(&mut stream, &FlowReply::Ready.encode())
                    .await
                    .unwrap();
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = stream.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    stream.write_all(&buf[..n]).await.unwrap();
                }
                stream.shutdown().await.unwrap();
            });
        }));
    }

    #[tokio::test]
    async fn many_flows_with_half_close() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        echo_server(b);
        let session = Session::client(a);
        let mut tasks = Vec::new();
        for i in 0..20u8 {
            let session = session.clone();
            tasks.push(tokio::spawn(async move {
                let target = "10.0.0.1:80".parse().unwrap();
                let mut s = session.dial(&FlowRequest::Tcp { target }).await.unwrap();
                let payload = vec![i; 100_000];
                let (mut r, mut w) = tokio::io::split(&mut s);
                let writer = async {
                    w.write_all(&payload).await.unwrap();
                    w.shutdown().await.unwrap();
                };
                let mut got = Vec::new();
                let reader = r.read_to_end(&mut got);
                let (_, n) = tokio::join!(writer, reader);
                n.unwrap();
                assert_eq!(got, payload);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_stalled_flow_does_not_block_others() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        echo_server(b);
        let session = Session::client(a);
        let target: std::net::SocketAddr = "10.0.0.1:80".parse().unwrap();
        // This flow's echoes are never read: its window fills and it stalls.
        let mut stalled = session.dial(&FlowRequest::Tcp { target }).await.unwrap();
        let stuff = vec![0u8; 64 * 1024];
        let writer = tokio::spawn(async move {
            loop {
                if stalled.write_all(&stuff).await.is_err() {
                    break;
                }
            }
        });
        let mut other = session.dial(&FlowRequest::Tcp { target }).await.unwrap();
        other.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            other.read_exact(&mut buf),
        )
        .await
        .expect("the second flow must not wait for the stalled one")
        .unwrap();
        assert_eq!(&buf, b"ping");
        writer.abort();
    }

    #[tokio::test]
    async fn closed_fires_when_the_peer_goes_away() {
        let (a, b) = tokio::io::duplex(1024);
        let session = Session::client(a);
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(5), session.closed())
            .await
            .expect("session must notice the closed transport");
        assert!(matches!(
            session.open(&FlowRequest::Dns).await,
            Err(SessionError::Closed | SessionError::Yamux(_))
        ));
    }
}
