//! Exec over WebSocket, `v4.channel.k8s.io` and `v5.channel.k8s.io`: binary messages whose
//! first byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize). As the
//! kubelet does, the server first sends an empty message on the lowest output channel, so the
//! client knows the streams are up; it ends with the `Status` on the error channel and a
//! normal close. v5 clients end stdin with `[255, 0]`; v4 has no way to (the WebSocket closes
//! when the command ends).
//!
//! Stdin waits while the command is not reading it, without holding up its output: a command
//! blocked on writing output it never gets to send would never read stdin again.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Resizes, Starter, StatusFormat, push_stdin, status_bytes};
use crate::kubelet::exec::{Output, Session, Streams};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` closes a channel.
const CLOSE: u8 = 255;
/// How long the client may take to answer the final close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

fn framed(channel: u8, payload: &[u8]) -> Message {
    let mut v = Vec::with_capacity(payload.len() + 1);
    v.push(channel);
    v.extend_from_slice(payload);
    Message::binary(v)
}

/// What one message from the client means for the session.
fn on_message(
    session: &mut Session,
    resizes: &mut Resizes,
    close_signal: bool,
    msg: &[u8],
) -> Option<Bytes> {
    let (&channel, data) = msg.split_first()?;
    match channel {
        STDIN if !data.is_empty() && session.stdin.is_some() => {
            return Some(Bytes::copy_from_slice(data));
        }
        RESIZE => {
            for size in resizes.push(data) {
                if let Some(tx) = &session.resize {
                    // A full queue already has a newer size coming.
                    let _ = tx.try_send(size);
                }
            }
        }
        CLOSE if close_signal && data.first() == Some(&STDIN) => session.stdin = None,
        _ => {}
    }
    None
}

/// Serves one exec session on `ws` until the command ends or the client goes (which kills
/// the command). `close_signal`: the client speaks v5.
pub async fn serve<S>(ws: WebSocketStream<S>, close_signal: bool, streams: Streams, start: Starter)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = ws.split();
    let mut session = start();
    let first = if streams.stdout {
        STDOUT
    } else if streams.stderr {
        STDERR
    } else {
        ERROR
    };
    if sink.send(framed(first, &[])).await.is_err() {
        return;
    }
    let mut resizes = Resizes::default();
    // A stdin chunk waiting for the command to read.
    let mut pending: Option<Bytes> = None;
    loop {
        tokio::select! {
            sent = push_stdin(&session.stdin, &mut pending), if pending.is_some() => {
                if sent.is_none() {
                    // The command closed its stdin: what it did not read is dropped.
                    session.stdin = None;
                }
            }
            msg = incoming.next(), if pending.is_none() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    pending = on_message(&mut session, &mut resizes, close_signal, &b);
                }
                // The client is gone: dropping the session kills the command.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            out = session.output.recv() => {
                let msg = match out {
                    Some(Output::Stdout(b)) => framed(STDOUT, &b),
                    Some(Output::Stderr(b)) => framed(STDERR, &b),
                    Some(Output::Ended(ending)) => {
                        let status = status_bytes(&ending, StatusFormat::Json).unwrap_or_default();
                        let _ = sink.send(framed(ERROR, &status)).await;
                        break;
                    }
                    None => break,
                };
                if sink.send(msg).await.is_err() {
                    return;
                }
            }
        }
    }
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if sink.send(Message::Close(Some(close))).await.is_ok() {
        // Read on until the client's close, so nothing it still sends resets the
        // connection before it has read the status.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(_)) = incoming.next().await {}
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::exec::{self, Ending, TerminalSize};
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A fake command that echoes stdin to stdout until stdin ends, reports terminal sizes
    /// on stderr, then exits 7.
    fn echo(streams: Streams) -> Starter {
        Box::new(move || {
            let (session, mut end) = exec::session(streams);
            tokio::spawn(async move {
                let mut stdin = end.stdin.take().unwrap();
                let mut resize = end.resize.take();
                loop {
                    tokio::select! {
                        chunk = stdin.recv() => match chunk {
                            Some(b) => { let _ = end.output.send(Output::Stdout(b)).await; }
                            None => break,
                        },
                        Some(TerminalSize { width, height }) = async { match &mut resize { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                            let text = format!("{width}x{height}");
                            let _ = end.output.send(Output::Stderr(text.into())).await;
                        }
                    }
                }
                let _ = end.output.send(Output::Ended(Ending::Exited(7))).await;
            });
            session
        })
    }

    async fn pair(v5: bool, streams: Streams) -> WebSocketStream<tokio::io::DuplexStream> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        tokio::spawn(serve(server, v5, streams, echo(streams)));
        WebSocketStream::from_raw_socket(client, Role::Client, None).await
    }

    async fn next_data(ws: &mut WebSocketStream<tokio::io::DuplexStream>) -> Vec<u8> {
        loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Binary(b) => return b.to_vec(),
                Message::Close(_) => return Vec::new(),
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn v5_stdin_close_ends_the_command_and_the_status_follows() {
        let streams = Streams {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        };
        let mut ws = pair(true, streams).await;
        assert_eq!(next_data(&mut ws).await, vec![STDOUT]);
        ws.send(framed(STDIN, b"hello")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, b"\x01hello");
        ws.send(framed(RESIZE, br#"{"Width":90,"Height":33}"#))
            .await
            .unwrap();
        assert_eq!(next_data(&mut ws).await, b"\x0290x33");
        ws.send(Message::binary(vec![CLOSE, STDIN])).await.unwrap();
        let status = next_data(&mut ws).await;
        assert_eq!(status[0], ERROR);
        let status: serde_json::Value = serde_json::from_slice(&status[1..]).unwrap();
        assert_eq!(status["details"]["causes"][0]["message"], "7");
        assert!(
            next_data(&mut ws).await.is_empty(),
            "a close follows the status"
        );
    }

    #[tokio::test]
    async fn v4_ignores_the_close_signal_and_a_client_close_ends_the_session() {
        let streams = Streams {
            stdin: true,
            stdout: true,
            ..Streams::default()
        };
        let mut ws = pair(false, streams).await;
        assert_eq!(next_data(&mut ws).await, vec![STDOUT]);
        ws.send(Message::binary(vec![CLOSE, STDIN])).await.unwrap();
        ws.send(framed(STDIN, b"still open")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, b"\x01still open");
        ws.close(None).await.unwrap();
    }
}
