//! Mirrors: a copy of each matching request (or, for a connection that is not HTTP, of the
//! bytes the client sends) goes to the laptop, whose answers are read and dropped.
//!
//! The app's path never waits for a copy. A copy's body is fed from the request as the app
//! reads it, through a bounded channel; when the channel is full (the laptop is slow) or
//! the laptop is gone, that copy is abandoned and counted as dropped, and the app's request
//! goes on untouched. Each mirror has at most a fixed number of copies in flight; beyond
//! that, copies are dropped too, and so are they for a second after the laptop refused one
//! (its server is not running), so that an absent server costs the pod nothing.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body as _, Frame, SizeHint};
use tether_tunnel::wire::flow::FlowRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::LAPTOP_DIAL_TIMEOUT;
use super::claims::Claim;
use super::http::{Body, BoxError, SenderHandle, handshake};
use super::sniff::Protocol;

/// Body frames (or byte chunks) buffered per copy before it is abandoned.
const COPY_FRAMES: usize = 64;
/// A copy the laptop has not finished answering by then is abandoned.
const COPY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read per chunk on a mirrored connection that is not HTTP.
const CHUNK: usize = 64 * 1024;

/// The request, with its body also feeding a copy for each mirror that has room.
pub fn tee(
    request: Request<Body>,
    mirrors: &[Claim],
    protocol: Protocol,
    target: std::net::SocketAddr,
) -> Request<Body> {
    let (parts, body) = request.into_parts();
    let empty = body.is_end_stream();
    let mut outs = Vec::new();
    for claim in mirrors {
        let Some(permit) = slot(claim) else {
            continue;
        };
        let mut head = Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.clone())
            .version(parts.version);
        if let Some(h) = head.headers_mut() {
            *h = parts.headers.clone();
        }
        let copy_body = if empty {
            Empty::new().map_err(|never| match never {}).boxed()
        } else {
            let (tx, rx) = mpsc::channel(COPY_FRAMES);
            let aborted = Arc::new(AtomicBool::new(false));
            outs.push(Out {
                tx,
                aborted: aborted.clone(),
            });
            CopyBody {
                rx,
                aborted,
                hint: body.size_hint(),
            }
            .boxed()
        };
        let Ok(copy) = head.body(copy_body) else {
            claim.drop_copy();
            continue;
        };
        tokio::spawn(send_copy(claim.clone(), copy, protocol, target, permit));
    }
    Request::from_parts(parts, Tee { inner: body, outs }.boxed())
}

/// A mirror's idle connections to its laptop, so that a copy costs a request and not a new
/// stream, connection and handshake.
#[derive(Default)]
pub struct CopyPool {
    idle: std::sync::Mutex<Vec<(Protocol, SenderHandle)>>,
}

impl CopyPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Protocol, SenderHandle)>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection of `protocol` that can still take a request.
    async fn take(&self, protocol: Protocol) -> Option<SenderHandle> {
        loop {
            let mut sender = {
                let mut idle = self.lock();
                let at = idle.iter().position(|(p, _)| *p == protocol)?;
                idle.swap_remove(at).1
            };
            if sender.ready().await {
                return Some(sender);
            }
        }
    }

    fn put(&self, protocol: Protocol, sender: SenderHandle) {
        self.lock().push((protocol, sender));
    }
}

/// Room for one more copy of `claim`'s, or `None` (the copy counted as dropped) while it
/// has too many in flight or rests after a refusal.
fn slot(claim: &Claim) -> Option<OwnedSemaphorePermit> {
    let permit = if claim.resting() {
        None
    } else {
        claim.slots.clone().try_acquire_owned().ok()
    };
    if permit.is_none() {
        claim.drop_copy();
    }
    permit
}

/// Dials the mirror's laptop for one copy; a refusal makes the mirror rest.
async fn dial(
    claim: &Claim,
    target: std::net::SocketAddr,
) -> Result<tether_tunnel::FlowStream, BoxError> {
    match tokio::time::timeout(
        LAPTOP_DIAL_TIMEOUT,
        claim.session.dial(&FlowRequest::Tcp { target }),
    )
    .await
    {
        Ok(Ok(flow)) => Ok(flow),
        Ok(Err(e)) => {
            claim.rest();
            Err(e.into())
        }
        Err(_) => {
            claim.rest();
            Err("the laptop did not answer".into())
        }
    }
}

async fn send_copy(
    claim: Claim,
    copy: Request<Body>,
    protocol: Protocol,
    target: std::net::SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let sent = tokio::time::timeout(COPY_TIMEOUT, async {
        let mut sender = match claim.copies.take(protocol).await {
            Some(sender) => sender,
            None => handshake(dial(&claim, target).await?, protocol).await?,
        };
        let response = sender.send(copy).await?;
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame?;
        }
        claim.copies.put(protocol, sender);
        Ok::<(), BoxError>(())
    })
    .await;
    match sent {
        Ok(Ok(())) => claim.count(),
        Ok(Err(e)) => {
            tracing::debug!(mirror = %claim.holder, "copy dropped: {e}");
            claim.drop_copy();
        }
        Err(_) => claim.drop_copy(),
    }
}

/// One copy's end of the tee.
struct Out<T> {
    tx: mpsc::Sender<T>,
    aborted: Arc<AtomicBool>,
}

impl<T> Out<T> {
    /// Passes `item` on; `false` once this copy is abandoned or done.
    fn offer_item(&self, item: T) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.abort();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn abort(&self) {
        self.aborted.store(true, Ordering::Relaxed);
    }
}

impl Out<Bytes> {
    fn offer_bytes(&self, chunk: &Bytes) -> bool {
        self.offer_item(chunk.clone())
    }
}

impl Out<Frame<Bytes>> {
    /// Passes a copy of `frame` on; `false` once this copy is abandoned or done.
    fn offer(&self, frame: &Frame<Bytes>) -> bool {
        let copy = if let Some(data) = frame.data_ref() {
            Frame::data(data.clone())
        } else if let Some(trailers) = frame.trailers_ref() {
            Frame::trailers(trailers.clone())
        } else {
            return true;
        };
        self.offer_item(copy)
    }
}

/// The request body on its way to the app, copying each frame to the mirrors.
struct Tee {
    inner: Body,
    outs: Vec<Out<Frame<Bytes>>>,
}

impl hyper::body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => this.outs.retain(|out| out.offer(frame)),
            Poll::Ready(Some(Err(_))) => this.outs.drain(..).for_each(|out| out.abort()),
            // Dropping the senders ends the copies' bodies.
            Poll::Ready(None) => this.outs.clear(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // Dropped before its end: the copies would be cut short, so they are abandoned.
        for out in &self.outs {
            out.abort();
        }
    }
}

/// A copy's body, fed by its [`Tee`].
struct CopyBody {
    rx: mpsc::Receiver<Frame<Bytes>>,
    aborted: Arc<AtomicBool>,
    hint: SizeHint,
}

impl hyper::body::Body for CopyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) if self.aborted.load(Ordering::Relaxed) => {
                Poll::Ready(Some(Err("the copy fell behind and was abandoned".into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// Carries a connection that is not HTTP to the app, copying what the client sends to each
/// mirror (`head`: the bytes already read from the client).
pub async fn plain(client: TcpStream, head: Bytes, app: TcpStream, mirrors: &[Claim]) {
    let mut copies: Vec<Out<Bytes>> = Vec::new();
    if let Ok(target) = app.peer_addr() {
        for claim in mirrors {
            let Some(permit) = slot(claim) else {
                continue;
            };
            let (tx, rx) = mpsc::channel(COPY_FRAMES);
            let aborted = Arc::new(AtomicBool::new(false));
            copies.push(Out {
                tx,
                aborted: aborted.clone(),
            });
            tokio::spawn(copy_bytes(claim.clone(), rx, aborted, target, permit));
        }
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut app_read, mut app_write) = app.into_split();
    let up = async {
        if !head.is_empty() {
            app_write.write_all(&head).await?;
            copies.retain(|out| out.offer_bytes(&head));
        }
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.reserve(CHUNK);
            if client_read.read_buf(&mut buf).await? == 0 {
                break;
            }
            let chunk = buf.split().freeze();
            app_write.write_all(&chunk).await?;
            copies.retain(|out| out.offer_bytes(&chunk));
        }
        copies.clear();
        app_write.shutdown().await
    };
    let down = async {
        tokio::io::copy(&mut app_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    let _ = tokio::join!(up, down);
}

/// How long a copy's laptop may go on answering after the client's side ended.
const LINGER: Duration = Duration::from_secs(5);

async fn copy_bytes(
    claim: Claim,
    mut rx: mpsc::Receiver<Bytes>,
    aborted: Arc<AtomicBool>,
    target: std::net::SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let copied = async {
        let flow = dial(&claim, target).await?;
        let (mut read, mut write) = tokio::io::split(flow);
        // The laptop's answers are read so that it never blocks on writing them.
        let drain = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut read, &mut tokio::io::sink()).await;
        });
        let fed = async {
            while let Some(chunk) = rx.recv().await {
                write.write_all(&chunk).await?;
            }
            write.shutdown().await?;
            Ok::<(), BoxError>(())
        }
        .await;
        let abort = drain.abort_handle();
        if tokio::time::timeout(LINGER, drain).await.is_err() {
            abort.abort();
        }
        fed
    };
    let result = copied.await;
    match result {
        Ok(()) if !aborted.load(Ordering::Relaxed) => claim.count(),
        Ok(()) => claim.drop_copy(),
        Err(e) => {
            tracing::debug!(mirror = %claim.holder, "copy dropped: {e}");
            claim.drop_copy();
        }
    }
}
