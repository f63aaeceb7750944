//! Exec over SPDY/3.1, what kubectl falls back to (and what it spoke before 1.30): the client
//! opens one stream per channel, named by its `streamType` header (`error`, `stdin`,
//! `stdout`, `stderr`, `resize`). The command starts once every stream the request asked for
//! is open, as the kubelet waits for them; it ends with FIN on the output streams, the ending
//! on the error stream, and the end of the connection.
//!
//! Framing is port-forward's ([`crate::api::portforward::spdy::frame`]). What the client
//! sends on stdin is acknowledged with WINDOW_UPDATEs as the command takes it; stdin waits
//! while the command is not reading, without holding up its output.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Resizes, Starter, StatusFormat, push_stdin, status_bytes};
use crate::api::portforward::spdy::frame::{self, Frame, HeaderReader};
use crate::api::portforward::spdy::{Out, write_frames};
use crate::kubelet::exec::{ClientGuard, Ending, Output, Streams, TerminalSize};

/// How long a client may take to open its streams (the kubelet's stream creation timeout).
const STREAM_CREATION: Duration = Duration::from_secs(30);
/// How long the client may take to close the connection once the command has ended.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The stream protocol's generation: how the ending is written, whether sizes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    status: StatusFormat,
    resize: bool,
}

impl Version {
    /// The version of a negotiated protocol name.
    pub fn of(protocol: &str) -> Version {
        match protocol {
            "v4.channel.k8s.io" => Version {
                status: StatusFormat::Json,
                resize: true,
            },
            "v3.channel.k8s.io" => Version {
                status: StatusFormat::Text,
                resize: true,
            },
            _ => Version {
                status: StatusFormat::Text,
                resize: false,
            },
        }
    }
}

/// The client's streams, by kind.
#[derive(Debug, Default)]
struct Ids {
    error: Option<u32>,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

impl Ids {
    fn open(&self) -> usize {
        [
            self.error,
            self.stdin,
            self.stdout,
            self.stderr,
            self.resize,
        ]
        .iter()
        .flatten()
        .count()
    }
}

/// One exec session's state while it runs.
struct Exec {
    ids: Ids,
    /// Streams the request asked for, the error stream included.
    expected: usize,
    /// Starts the command; taken when every stream is open.
    start: Option<Starter>,
    /// The command's stdin, terminal sizes, output and guard, once it has started.
    stdin: Option<mpsc::Sender<Bytes>>,
    resize: Option<mpsc::Sender<TerminalSize>>,
    output: Option<mpsc::Receiver<Output>>,
    client: Option<ClientGuard>,
    /// A stdin chunk waiting for the command to read, and whether stdin ends after it.
    pending: Option<Bytes>,
    stdin_fin: bool,
    resizes: Resizes,
    out: mpsc::Sender<Out>,
}

impl Exec {
    async fn send(&self, b: Bytes) {
        let _ = self.out.send(Out::Frame(b)).await;
    }

    /// Records a new stream and starts the command once all are there.
    async fn on_syn(&mut self, stream: u32, headers: &[(String, String)]) {
        let kind = headers
            .iter()
            .find(|(n, _)| n == "streamtype")
            .map(|(_, v)| v.as_str());
        let slot = match kind {
            Some("error") => &mut self.ids.error,
            Some("stdin") => &mut self.ids.stdin,
            Some("stdout") => &mut self.ids.stdout,
            Some("stderr") => &mut self.ids.stderr,
            Some("resize") => &mut self.ids.resize,
            _ => {
                self.send(frame::rst_stream(stream, frame::PROTOCOL_ERROR))
                    .await;
                return;
            }
        };
        *slot = Some(stream);
        let _ = self.out.send(Out::Reply(stream)).await;
        if self.ids.open() >= self.expected
            && let Some(start) = self.start.take()
        {
            let session = start();
            self.stdin = session.stdin;
            // Without a resize stream no size comes: dropping the sender tells the command
            // not to wait for one.
            self.resize = session.resize.filter(|_| self.ids.resize.is_some());
            self.output = Some(session.output);
            self.client = Some(session.client);
            if self.stdin.is_none() {
                // A stdin stream the request did not ask for: nothing takes what came on it.
                self.pending = None;
            }
            self.close_stdin_if_done();
        }
    }

    /// Handles one frame from the client; false when the session is over.
    async fn on_frame(&mut self, parsed: Frame) -> bool {
        match parsed {
            Frame::SynStream {
                stream, headers, ..
            } => self.on_syn(stream, &headers).await,
            Frame::Data {
                stream,
                fin,
                payload,
            } => {
                // Before the start, stdin waits for the command; after stdin's end, it is
                // dropped.
                let takes_stdin = self.start.is_some() || self.stdin.is_some();
                if Some(stream) == self.ids.stdin {
                    if !payload.is_empty() && takes_stdin {
                        self.pending = Some(payload);
                    }
                    self.stdin_fin |= fin;
                    self.close_stdin_if_done();
                } else if Some(stream) == self.ids.resize {
                    for size in self.resizes.push(&payload) {
                        if let Some(tx) = &self.resize {
                            // A full queue already has a newer size coming.
                            let _ = tx.try_send(size);
                        }
                    }
                }
            }
            Frame::RstStream { stream } => {
                if Some(stream) == self.ids.stdin {
                    self.pending = None;
                    self.stdin_fin = true;
                    self.close_stdin_if_done();
                }
            }
            Frame::Ping(id) => self.send(frame::ping(id)).await,
            Frame::GoAway => return false,
            Frame::Ignored => {}
        }
        true
    }

    fn close_stdin_if_done(&mut self) {
        if self.stdin_fin && self.pending.is_none() {
            self.stdin = None;
        }
    }

    /// After a stdin chunk of `len` bytes went to the command (None: the command closed its
    /// stdin, and the chunk was dropped).
    async fn delivered(&mut self, len: Option<usize>) {
        match (len, self.ids.stdin) {
            (Some(len), Some(stream)) => {
                let len = len as u32;
                self.send(frame::window_update(stream, len)).await;
                self.send(frame::window_update(0, len)).await;
            }
            (Some(_), None) => {}
            (None, _) => self.stdin = None,
        }
        self.close_stdin_if_done();
    }

    /// Sends one piece of output; true once the command has ended.
    async fn on_output(&mut self, out: Option<Output>, version: Version) -> bool {
        let on = |id: Option<u32>, b: &[u8]| id.map(|id| frame::data(id, false, b));
        let data = match out {
            Some(Output::Stdout(b)) => on(self.ids.stdout, &b),
            Some(Output::Stderr(b)) => on(self.ids.stderr, &b),
            Some(Output::Ended(ending)) => {
                self.finish(&ending, version).await;
                return true;
            }
            None => {
                let gone = Ending::Failed("the command's output ended without an exit".into());
                self.finish(&gone, version).await;
                return true;
            }
        };
        if let Some(b) = data {
            self.send(b).await;
        }
        false
    }

    async fn finish(&mut self, ending: &Ending, version: Version) {
        for id in [self.ids.stdout, self.ids.stderr].into_iter().flatten() {
            self.send(frame::data(id, true, &[])).await;
        }
        if let Some(error) = self.ids.error {
            if let Some(status) = status_bytes(ending, version.status) {
                self.send(frame::data(error, false, &status)).await;
            }
            self.send(frame::data(error, true, &[])).await;
        }
    }
}

async fn next_output(output: &mut Option<mpsc::Receiver<Output>>) -> Option<Output> {
    match output {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Serves one exec session until the command ends or the client goes (which kills the
/// command).
pub async fn serve<S>(io: S, version: Version, streams: Streams, start: Starter)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel::<Out>(64);
    let writer = tokio::spawn(write_frames(wr, out_rx));
    let wanted = [streams.stdin, streams.stdout, streams.stderr];
    let expected =
        1 + wanted.iter().filter(|w| **w).count() + usize::from(streams.tty && version.resize);
    let mut exec = Exec {
        ids: Ids::default(),
        expected,
        start: Some(start),
        stdin: None,
        resize: None,
        output: None,
        client: None,
        pending: None,
        stdin_fin: false,
        resizes: Resizes::default(),
        out: out_tx,
    };
    let mut headers = HeaderReader::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let deadline = Instant::now() + STREAM_CREATION;
    'session: loop {
        while exec.pending.is_none() {
            match frame::parse(&mut buf, &mut headers) {
                Ok(Some(f)) => {
                    if !exec.on_frame(f).await {
                        break 'session;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("exec (SPDY): {e}");
                    break 'session;
                }
            }
        }
        tokio::select! {
            sent = push_stdin(&exec.stdin, &mut exec.pending), if exec.pending.is_some() => {
                exec.delivered(sent).await;
            }
            read = rd.read_buf(&mut buf), if exec.pending.is_none() => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            out = next_output(&mut exec.output) => {
                if exec.on_output(out, version).await {
                    drop(exec);
                    let _ = writer.await;
                    // Read on until the client closes, so nothing it still sends resets
                    // the connection before it has read the ending.
                    let _ = tokio::time::timeout(CLOSE_WAIT, async {
                        let mut sink = [0u8; 4096];
                        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
                    })
                    .await;
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline), if exec.output.is_none() => {
                tracing::debug!("exec (SPDY): the client did not open its streams in time");
                break;
            }
        }
    }
    // The client went away (or never got going): dropping the session kills the command.
    drop(exec);
    writer.abort();
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use flate2::{Compress, Compression, FlushCompress};
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::kubelet::exec;

    /// A client's SYN_STREAM for one exec stream (its header block compressed without the
    /// dictionary, which a reader with it still reads).
    fn syn_stream(deflate: &mut Compress, stream: u32, kind: &str) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.put_u32(1);
        for word in ["streamtype", kind] {
            plain.put_u32(word.len() as u32);
            plain.put_slice(word.as_bytes());
        }
        let mut block = Vec::with_capacity(1024);
        deflate
            .compress_vec(&plain, &mut block, FlushCompress::Sync)
            .unwrap();
        let mut frame = Vec::new();
        frame.put_u16(0x8003);
        frame.put_u16(1);
        frame.put_u32(10 + block.len() as u32);
        frame.put_u32(stream);
        frame.put_u32(0);
        frame.put_u16(0);
        frame.extend(block);
        frame
    }

    /// A fake command: stdin to stdout until stdin ends, then exit 7.
    fn echo(streams: Streams) -> Starter {
        Box::new(move || {
            let (session, mut end) = exec::session(streams);
            tokio::spawn(async move {
                let mut stdin = end.stdin.take().unwrap();
                while let Some(b) = stdin.recv().await {
                    let _ = end.output.send(Output::Stdout(b)).await;
                }
                let _ = end.output.send(Output::Ended(Ending::Exited(7))).await;
            });
            session
        })
    }

    #[tokio::test]
    async fn the_command_starts_with_its_streams_and_its_ending_closes_them() {
        let streams = Streams {
            stdin: true,
            stdout: true,
            ..Streams::default()
        };
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let version = Version::of("v4.channel.k8s.io");
        tokio::spawn(serve(server, version, streams, echo(streams)));
        let mut deflate = Compress::new(Compression::default(), true);
        for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout")] {
            let frame = syn_stream(&mut deflate, id, kind);
            client.write_all(&frame).await.unwrap();
        }
        client
            .write_all(&frame::data(3, true, b"typed"))
            .await
            .unwrap();
        let mut buf = BytesMut::new();
        let mut headers = HeaderReader::default();
        let mut got: Vec<(u32, bool, Bytes)> = Vec::new();
        while client.read_buf(&mut buf).await.unwrap() > 0 {
            while let Some(f) = frame::parse(&mut buf, &mut headers).unwrap() {
                if let Frame::Data {
                    stream,
                    fin,
                    payload,
                } = f
                {
                    got.push((stream, fin, payload));
                }
            }
        }
        assert_eq!(got[0], (5, false, Bytes::from_static(b"typed")));
        assert_eq!(got[1], (5, true, Bytes::new()));
        let status: serde_json::Value = serde_json::from_slice(&got[2].2).unwrap();
        assert_eq!(
            (got[2].0, status["details"]["causes"][0]["message"].as_str()),
            (1, Some("7"))
        );
        assert_eq!(got[3], (1, true, Bytes::new()));
    }
}
