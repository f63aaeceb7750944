//! Port-forward over WebSocket.
//!
//! `v4.channel.k8s.io`: every binary message starts with a channel byte; port `i` of the
//! query has data channel `2i` and error channel `2i+1`. The server opens each channel with
//! the port number (two bytes, little-endian), then sends the pod's bytes on the data channel
//! or a failure as text on the error channel. The protocol cannot close one direction of one
//! port, so the WebSocket is closed once every port's connection has ended on the pod's side.
//!
//! [`byte_stream`] turns a WebSocket whose binary messages carry a byte stream (SPDY
//! tunnelled by kubectl) into an ordinary duplex stream.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::{Dialer, PodConnection};

/// How much is read from a pod per message.
const CHUNK: usize = 32 * 1024;

fn framed(channel: u8, payload: &[u8]) -> Message {
    let mut v = Vec::with_capacity(payload.len() + 1);
    v.push(channel);
    v.extend_from_slice(payload);
    Message::binary(v)
}

/// Serves `v4.channel.k8s.io` for `ports` until every connection has ended or the client
/// closes.
pub async fn serve_channels<S>(ws: WebSocketStream<S>, ports: Vec<u16>, dialer: Dialer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    for (i, port) in ports.iter().enumerate() {
        let channel = (2 * i) as u8;
        for ch in [channel, channel + 1] {
            let _ = out.send(framed(ch, &port.to_le_bytes())).await;
        }
    }
    let mut to_pod: Vec<Option<mpsc::Sender<Bytes>>> = Vec::with_capacity(ports.len());
    let mut connections = JoinSet::new();
    for (i, port) in ports.iter().enumerate() {
        let (tx, rx) = mpsc::channel(16);
        to_pod.push(Some(tx));
        let conn = PodConnection {
            port: *port,
            dialer: dialer.clone(),
        };
        connections.spawn(connection(conn, (2 * i) as u8, rx, out.clone()));
    }
    drop(out);
    loop {
        tokio::select! {
            msg = incoming.next() => match msg {
                Some(Ok(Message::Binary(b))) if b.len() > 1 && b[0] % 2 == 0 => {
                    let index = usize::from(b[0] / 2);
                    if let Some(Some(tx)) = to_pod.get(index)
                        && tx.send(b.slice(1..)).await.is_err()
                    {
                        to_pod[index] = None;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    // The client is gone: nothing more will be read by anyone.
                    connections.abort_all();
                    break;
                }
                Some(Ok(_)) => {}
            },
            done = connections.join_next() => {
                if done.is_none() {
                    break;
                }
            }
        }
    }
    drop(to_pod);
    while connections.join_next().await.is_some() {}
    let _ = writer.await;
}

/// One port's connection: the pod's bytes go out on `channel`, a dial failure on the error
/// channel after it.
async fn connection(
    conn: PodConnection,
    channel: u8,
    mut to_pod: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Message>,
) {
    let stream = match conn.dial().await {
        Ok(s) => s,
        Err(message) => {
            let _ = out.send(framed(channel + 1, message.as_bytes())).await;
            return;
        }
    };
    let (mut rd, mut wr) = stream.into_split();
    let upload = tokio::spawn(async move {
        while let Some(chunk) = to_pod.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = vec![0u8; CHUNK];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.send(framed(channel, &buf[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
    upload.abort();
}

/// A byte stream carried in the binary messages of `ws`, as a local duplex stream.
pub fn byte_stream<S>(ws: WebSocketStream<S>) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut sink, mut incoming) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(ours);
    tokio::spawn(async move {
        while let Some(Ok(msg)) = incoming.next().await {
            match msg {
                Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.close().await;
    });
    theirs
}
