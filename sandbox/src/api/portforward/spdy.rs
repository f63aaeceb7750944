//! Port-forward over SPDY/3.1 (`portforward.k8s.io`), what kubectl speaks: for every local
//! connection the client opens an error stream and a data stream that share a `requestID` and
//! name the pod's `port`. The data stream carries the bytes both ways; the error stream gets
//! the reason a connection to the pod failed, and ends when the connection is over (the
//! client waits for that before it forgets the pair).
//!
//! A pair is forgotten once its connection is over, and a client's RST_STREAM on either
//! stream ends the pod connection at once, so a long `kubectl port-forward` keeps no state
//! for connections that are gone.
//!
//! Flow control: the client's windows are not enforced on what is sent to it (Go's
//! spdystream does not enforce them either); what the client sends is acknowledged with
//! WINDOW_UPDATEs as it is written to the pod, so a client that does enforce windows keeps
//! going.

pub mod frame;

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::{Dialer, PodConnection};
use frame::{Frame, HeaderReader, HeaderWriter};

/// What a session's writer sends: a SYN_REPLY for a stream, or a ready frame. Shared with
/// exec's SPDY sessions.
pub(crate) enum Out {
    Reply(u32),
    Frame(Bytes),
}

/// Writes what a session sends, in order, then ends the connection's write side.
pub(crate) async fn write_frames(mut wr: impl AsyncWrite + Unpin, mut out_rx: mpsc::Receiver<Out>) {
    let mut headers = HeaderWriter::default();
    while let Some(out) = out_rx.recv().await {
        let bytes = match out {
            Out::Reply(stream) => frame::syn_reply(&mut headers, stream, &[]),
            Out::Frame(b) => b,
        };
        if wr.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: u16,
    /// Bytes for the pod, while the connection runs.
    to_pod: Option<mpsc::Sender<Bytes>>,
    /// The task that runs the connection.
    task: Option<AbortHandle>,
}

impl Pair {
    fn streams(&self) -> impl Iterator<Item = u32> {
        self.error.into_iter().chain(self.data)
    }
}

/// Tells the session, when dropped, that a pair's connection is over.
struct Done {
    request: String,
    done: mpsc::UnboundedSender<String>,
}

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.done.send(std::mem::take(&mut self.request));
    }
}

/// Serves one SPDY session until the client goes away or sends GOAWAY.
pub async fn serve<S>(io: S, dialer: Dialer)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel::<Out>(64);
    let writer = tokio::spawn(write_frames(wr, out_rx));

    let mut headers = HeaderReader::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // requestID → its streams; stream id → requestID.
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut streams: HashMap<u32, String> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let forget =
        |pairs: &mut HashMap<String, Pair>, streams: &mut HashMap<u32, String>, request: &str| {
            if let Some(pair) = pairs.remove(request) {
                for id in pair.streams() {
                    streams.remove(&id);
                }
                if let Some(task) = pair.task {
                    task.abort();
                }
            }
        };
    'session: loop {
        loop {
            let parsed = match frame::parse(&mut buf, &mut headers) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("port-forward (SPDY): {e}");
                    break 'session;
                }
            };
            match parsed {
                Frame::SynStream {
                    stream, headers, ..
                } => {
                    let get = |k: &str| {
                        headers
                            .iter()
                            .find(|(n, _)| n == k)
                            .map(|(_, v)| v.as_str())
                    };
                    let (kind, port, request) = (get("streamtype"), get("port"), get("requestid"));
                    let port = port.and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
                    let (Some(kind), Some(port)) = (kind, port) else {
                        let _ = out_tx
                            .send(Out::Frame(frame::rst_stream(stream, frame::PROTOCOL_ERROR)))
                            .await;
                        continue;
                    };
                    if out_tx.send(Out::Reply(stream)).await.is_err() {
                        break 'session;
                    }
                    // Clients before requestID paired streams by order; the stream id of
                    // the error stream stands in for it then.
                    let request = request.map(str::to_string).unwrap_or_else(|| {
                        let error_id = if kind == "data" { stream - 2 } else { stream };
                        format!("stream-{error_id}")
                    });
                    streams.insert(stream, request.clone());
                    let pair = pairs.entry(request.clone()).or_default();
                    pair.port = port;
                    match kind {
                        "error" => pair.error = Some(stream),
                        "data" => pair.data = Some(stream),
                        _ => {}
                    }
                    if let (Some(error), Some(data), None) = (pair.error, pair.data, &pair.to_pod) {
                        let (tx, rx) = mpsc::channel(16);
                        pair.to_pod = Some(tx);
                        let conn = PodConnection {
                            port: pair.port,
                            dialer: dialer.clone(),
                        };
                        let done = Done {
                            request,
                            done: done_tx.clone(),
                        };
                        let task =
                            tokio::spawn(forward(conn, error, data, rx, out_tx.clone(), done));
                        pair.task = Some(task.abort_handle());
                    }
                }
                Frame::Data {
                    stream,
                    fin,
                    payload,
                } => {
                    let Some(pair) = streams.get(&stream).and_then(|r| pairs.get_mut(r)) else {
                        continue;
                    };
                    if pair.data != Some(stream) {
                        // The error stream carries nothing from the client.
                        continue;
                    }
                    if !payload.is_empty() {
                        let len = payload.len() as u32;
                        let delivered = match &pair.to_pod {
                            Some(tx) => tx.send(payload).await.is_ok(),
                            None => false,
                        };
                        if delivered {
                            let _ = out_tx
                                .send(Out::Frame(frame::window_update(stream, len)))
                                .await;
                            let _ = out_tx.send(Out::Frame(frame::window_update(0, len))).await;
                        }
                    }
                    if fin {
                        // Dropping the sender half-closes the pod connection.
                        pair.to_pod = None;
                    }
                }
                Frame::RstStream { stream } => {
                    // The client gave up on the connection: end it, both ways.
                    if let Some(request) = streams.get(&stream).cloned() {
                        forget(&mut pairs, &mut streams, &request);
                    }
                }
                Frame::Ping(id) => {
                    let _ = out_tx.send(Out::Frame(frame::ping(id))).await;
                }
                Frame::GoAway => break 'session,
                Frame::Ignored => {}
            }
        }
        tokio::select! {
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            Some(request) = done_rx.recv() => forget(&mut pairs, &mut streams, &request),
        }
    }
    drop(out_tx);
    drop(pairs);
    let _ = writer.await;
}

/// One forwarded connection: dials the pod, then copies both ways; reports a failure on the
/// error stream and ends both streams when the connection is over.
async fn forward(
    conn: PodConnection,
    error: u32,
    data: u32,
    mut to_pod: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Out>,
    _done: Done,
) {
    let send = |b: Bytes| {
        let out = out.clone();
        async move { out.send(Out::Frame(b)).await.is_ok() }
    };
    let stream = match conn.dial().await {
        Ok(s) => s,
        Err(message) => {
            send(frame::data(error, true, message.as_bytes())).await;
            send(frame::data(data, true, &[])).await;
            return;
        }
    };
    let (mut pod_rd, mut pod_wr) = stream.into_split();
    // Uploads run until the client ends its side; the pair is over once the pod's side has
    // ended (kubectl waits for the error stream to end before it closes its connection).
    tokio::spawn(async move {
        while let Some(chunk) = to_pod.recv().await {
            if pod_wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = pod_wr.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pod_rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !send(frame::data(data, false, &buf[..n])).await {
                    return;
                }
            }
        }
    }
    send(frame::data(data, true, &[])).await;
    send(frame::data(error, true, &[])).await;
}
