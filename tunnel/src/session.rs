//! One tunnel connection carrying many flows: a yamux session over any byte stream.
//!
//! yamux gives each flow its own stream with its own flow-control window, so a slow
//! consumer on one flow stalls only that flow. A single driver task owns the yamux
//! connection. Either end can open streams and accept the peer's:
//! - [`Session`] handles (cheap to clone) ask the driver for new outbound streams over a
//!   channel;
//! - the driver hands every stream the peer opens to the end's one [`Incoming`].
//!
//! The two ends differ only in yamux's mode (which stream ids each end picks): the laptop
//! runs [`Session::client`], the manager [`Session::server`]. Whether a peer accepts streams
//! at all is agreed in the handshake (the `two-way` capability), not discovered here.
//!
//! Lifetime: the driver closes the connection once every [`Session`] handle is dropped, and
//! ends when the peer goes away; [`Incoming::next`] then returns `None`. An [`Incoming`]
//! alone does not keep a session open; dropping it refuses the peer's streams from then on.

use std::future::Future;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
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

/// Streams open at once on one session, both directions together (yamux's default, set
/// here because the incoming backlog below depends on it).
const MAX_STREAMS: usize = 512;
/// Streams the peer opened that [`Incoming`] has not taken yet. Every one of them is an open
/// stream, so yamux refuses new ones long before this fills: the driver never has to wait
/// for [`Incoming`], which would stall every flow of the session.
const INCOMING_BACKLOG: usize = MAX_STREAMS;
/// Outbound open requests queued for the driver; more wait in `open`.
const OPEN_QUEUE: usize = 64;

/// Tuned for bulk flows on fast local links: larger frames mean fewer wakeups per byte.
fn config() -> yamux::Config {
    let mut cfg = yamux::Config::default();
    cfg.set_split_send_size(256 * 1024);
    cfg.set_max_num_streams(MAX_STREAMS);
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

/// The streams the peer opens, in the order they arrived; one per session.
pub struct Incoming {
    // Driver -> this end: streams the peer opened.
    streams_rx: mpsc::Receiver<FlowStream>,
    // Driver -> this end, once: how the connection ended.
    ended_rx: oneshot::Receiver<Result<(), yamux::ConnectionError>>,
}

impl Session {
    /// Starts the laptop's side of a session over `io` (after the handshake). The driver runs
    /// on its own task until the connection ends or every handle is dropped.
    pub fn client<T>(io: T) -> (Session, Incoming)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        Session::start(io, yamux::Mode::Client)
    }

    /// Starts the manager's side of a session over `io` (after the handshake), like
    /// [`Session::client`].
    pub fn server<T>(io: T) -> (Session, Incoming)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        Session::start(io, yamux::Mode::Server)
    }

    fn start<T>(io: T, mode: yamux::Mode) -> (Session, Incoming)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let conn = yamux::Connection::new(io.compat(), config(), mode);
        let (open_tx, open_rx) = mpsc::channel(OPEN_QUEUE);
        let (streams_tx, streams_rx) = mpsc::channel(INCOMING_BACKLOG);
        let (ended_tx, ended_rx) = oneshot::channel();
        let closed = CancellationToken::new();
        let guard = closed.clone().drop_guard();
        let driver = Driver {
            conn,
            open_rx,
            streams_tx,
            waiting: None,
            handles_gone: false,
        };
        tokio::spawn(async move {
            let _guard = guard;
            let result = driver.run().await;
            if let Err(e) = &result {
                tracing::debug!("tunnel session ended: {e}");
            }
            // Nobody may be waiting for the outcome; that is fine.
            let _ = ended_tx.send(result);
        });
        let incoming = Incoming {
            streams_rx,
            ended_rx,
        };
        (Session { open_tx, closed }, incoming)
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

    /// Opens a TCP or UDP flow and waits for the peer's dial result.
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

impl Incoming {
    /// The next stream the peer opened (its flow request not read yet), or `None` once the
    /// session has ended.
    pub async fn next(&mut self) -> Option<FlowStream> {
        self.streams_rx.recv().await
    }

    /// Waits until the session has ended and says how: `Ok` when the connection closed
    /// cleanly. Streams the peer opens meanwhile are refused.
    pub async fn finish(self) -> Result<(), SessionError> {
        drop(self.streams_rx);
        match self.ended_rx.await {
            Ok(result) => result.map_err(SessionError::Yamux),
            // The driver task is gone without a word: it was cancelled with its runtime.
            Err(_) => Err(SessionError::Closed),
        }
    }
}

/// Owns the connection: serves open requests and hands over inbound streams.
struct Driver<T> {
    conn: yamux::Connection<T>,
    // Handles -> driver: requests for a new outbound stream.
    open_rx: mpsc::Receiver<OpenReply>,
    // Driver -> Incoming: streams the peer opened.
    streams_tx: mpsc::Sender<FlowStream>,
    /// An open request waiting for yamux to allow another outbound stream.
    waiting: Option<OpenReply>,
    handles_gone: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Driver<T> {
    /// Returns when the connection ends, or closes it once every handle is gone.
    async fn run(mut self) -> Result<(), yamux::ConnectionError> {
        let result = std::future::poll_fn(|cx| self.poll(cx)).await;
        if self.handles_gone {
            let _ = std::future::poll_fn(|cx| self.conn.poll_close(cx)).await;
        }
        result
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), yamux::ConnectionError>> {
        loop {
            let mut progressed = self.poll_outbound(cx)?;
            // This also drives the connection's I/O for every stream, so it runs on every
            // turn, whatever Incoming is doing.
            match self.conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    self.hand_over(stream);
                    progressed = true;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => {}
            }
            if self.handles_gone && self.waiting.is_none() {
                return Poll::Ready(Ok(()));
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }

    /// Takes the next open request and asks yamux for its stream; true if anything moved.
    fn poll_outbound(&mut self, cx: &mut Context<'_>) -> Result<bool, yamux::ConnectionError> {
        if self.waiting.is_none() && !self.handles_gone {
            match self.open_rx.poll_recv(cx) {
                Poll::Ready(Some(reply)) => self.waiting = Some(reply),
                Poll::Ready(None) => self.handles_gone = true,
                Poll::Pending => {}
            }
        }
        let Some(reply) = self.waiting.take() else {
            return Ok(false);
        };
        match self.conn.poll_new_outbound(cx) {
            Poll::Ready(result) => {
                let failed = result.is_err();
                // The requester may have given up waiting; the stream then just closes.
                let _ = reply.send(result);
                if failed {
                    return Err(yamux::ConnectionError::Closed);
                }
                Ok(true)
            }
            Poll::Pending => {
                self.waiting = Some(reply);
                Ok(false)
            }
        }
    }

    /// Gives a stream the peer opened to Incoming; without one, dropping it refuses it.
    fn hand_over(&mut self, stream: yamux::Stream) {
        match self.streams_tx.try_send(stream.compat()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("refusing a stream from the peer: this end takes none");
            }
            // Cannot happen while INCOMING_BACKLOG >= MAX_STREAMS; refusing is the safe
            // answer if it ever does.
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("refusing a stream from the peer: {INCOMING_BACKLOG} are waiting");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const WAIT: Duration = Duration::from_secs(5);

    /// Answers a stream like a toy manager: reads the request, says Ready, echoes.
    async fn echo(mut stream: FlowStream) {
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
    }

    /// Echoes every stream the peer opens, until the session ends.
    fn echo_incoming(mut incoming: Incoming) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(stream) = incoming.next().await {
                tokio::spawn(echo(stream));
            }
        })
    }

    /// A toy manager: echoes every stream. Its handle is kept by the task, as the manager
    /// does, so the session lives until the laptop goes away.
    fn echo_server(io: tokio::io::DuplexStream) {
        let (session, incoming) = Session::server(io);
        let echoes = echo_incoming(incoming);
        tokio::spawn(async move {
            let _ = echoes.await;
            drop(session);
        });
    }

    async fn round_trip(session: &Session, payload: Vec<u8>) {
        let target = "10.0.0.1:80".parse().unwrap();
        let mut s = session.dial(&FlowRequest::Tcp { target }).await.unwrap();
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
    }

    #[tokio::test]
    async fn many_flows_with_half_close() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        echo_server(b);
        let (session, _incoming) = Session::client(a);
        let mut tasks = Vec::new();
        for i in 0..20u8 {
            let session = session.clone();
            tasks.push(tokio::spawn(async move {
                round_trip(&session, vec![i; 100_000]).await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test]
    async fn both_ends_open_streams() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (laptop, laptop_incoming) = Session::client(a);
        let (manager, manager_incoming) = Session::server(b);
        echo_incoming(laptop_incoming);
        echo_incoming(manager_incoming);
        let mut tasks = Vec::new();
        for i in 0..10u8 {
            for session in [laptop.clone(), manager.clone()] {
                tasks.push(tokio::spawn(async move {
                    round_trip(&session, vec![i; 50_000]).await;
                }));
            }
        }
        for t in tasks {
            tokio::time::timeout(WAIT, t)
                .await
                .expect("flows both ways complete")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn streams_are_refused_without_incoming() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (laptop, laptop_incoming) = Session::client(a);
        drop(laptop_incoming);
        let (manager, manager_incoming) = Session::server(b);
        echo_incoming(manager_incoming);
        let target = "127.0.0.1:8080".parse().unwrap();
        let refused = tokio::time::timeout(WAIT, manager.dial(&FlowRequest::Tcp { target }))
            .await
            .expect("a refused stream ends, it does not hang");
        assert!(refused.is_err());
        // The session itself is unharmed: the laptop's own flows still work.
        round_trip(&laptop, b"still fine".to_vec()).await;
    }

    #[tokio::test]
    async fn incoming_ends_with_the_session() {
        let (a, b) = tokio::io::duplex(1024);
        let (laptop, laptop_incoming) = Session::client(a);
        let (_manager, mut manager_incoming) = Session::server(b);
        drop(laptop_incoming);
        // The last laptop handle closes the connection; the manager's side sees the end.
        drop(laptop);
        let next = tokio::time::timeout(WAIT, manager_incoming.next())
            .await
            .expect("Incoming ends when the peer closes");
        assert!(next.is_none());
        // Ok, or the broken pipe of a peer that closed right after its goodbye.
        let _ = tokio::time::timeout(WAIT, manager_incoming.finish())
            .await
            .expect("the outcome is known once the session ended");
    }

    #[tokio::test]
    async fn a_stalled_flow_does_not_block_others() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        echo_server(b);
        let (session, _incoming) = Session::client(a);
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
        tokio::time::timeout(WAIT, other.read_exact(&mut buf))
            .await
            .expect("the second flow must not wait for the stalled one")
            .unwrap();
        assert_eq!(&buf, b"ping");
        writer.abort();
    }

    #[tokio::test]
    async fn closed_fires_when_the_peer_goes_away() {
        let (a, b) = tokio::io::duplex(1024);
        let (session, incoming) = Session::client(a);
        drop(b);
        tokio::time::timeout(WAIT, session.closed())
            .await
            .expect("session must notice the closed transport");
        assert!(matches!(
            session.open(&FlowRequest::Dns).await,
            Err(SessionError::Closed | SessionError::Yamux(_))
        ));
        let _ = tokio::time::timeout(WAIT, incoming.finish())
            .await
            .expect("the outcome is known once the session ended");
    }
}
