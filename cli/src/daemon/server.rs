//! The daemon's socket server: `status`, `quit` and `watch` requests ([`crate::ipc`]), and
//! the history of start-up events that `tether connect` follows.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::DaemonError;
use super::intercepts::Intercepts;
use crate::ipc::{Mode, Reply, Request, Status, encode};
use crate::system::flows;
use crate::system::state::StateDir;

/// Everything the daemon reported since it started; a watcher gets all of it, then what
/// follows, until `connected` or `failed`.
#[derive(Clone)]
pub struct Events {
    tx: Arc<watch::Sender<Vec<Reply>>>,
}

impl Events {
    pub fn new() -> Self {
        Events {
            tx: Arc::new(watch::Sender::new(Vec::new())),
        }
    }

    pub fn push(&self, reply: Reply) {
        if let Reply::Progress { message } = &reply {
            tracing::info!("{message}");
        }
        self.tx.send_modify(|all| all.push(reply));
    }

    pub fn progress(&self, message: String) {
        self.push(Reply::Progress { message });
    }

    pub fn connected(&self) -> bool {
        self.tx
            .borrow()
            .iter()
            .any(|r| matches!(r, Reply::Connected { .. }))
    }
}

pub struct Server {
    accept: JoinHandle<()>,
    // finish -> accept loop: stop accepting.
    closing: CancellationToken,
    socket: std::path::PathBuf,
    // Handlers -> finish: each handler holds a sender; all dropped means all answered.
    handlers_rx: mpsc::Receiver<()>,
}

/// A `quit` request: the client's end, answered once everything is undone.
pub type QuitRequest = OwnedWriteHalf;

impl Server {
    /// Binds the socket (mode 0600, owned by the user who ran connect) and serves it.
    pub fn start(
        state: &StateDir,
        events: Events,
        status: Arc<Mutex<Status>>,
        intercepts: Arc<Intercepts>,
        stop: CancellationToken,
    ) -> Result<(Server, mpsc::UnboundedReceiver<QuitRequest>), DaemonError> {
        let socket = state.socket_path();
        let bind_error = |source| DaemonError::Socket {
            path: socket.clone(),
            source,
        };
        // A socket file left by a crashed daemon; no daemon runs (checked by the caller).
        let _ = std::fs::remove_file(&socket);
        // Created with no access for others from the start, then narrowed to 0600.
        // SAFETY: umask has no memory-safety preconditions.
        let old_umask = unsafe { libc::umask(0o077) };
        let listener = UnixListener::bind(&socket);
        // SAFETY: as above.
        unsafe { libc::umask(old_umask) };
        let listener = listener.map_err(bind_error)?;
        std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(bind_error)?;
        super::chown_to_invoker(&socket);

        // Handler -> daemon: quit requests.
        let (quits_tx, quits_rx) = mpsc::unbounded_channel();
        let (handlers_tx, handlers_rx) = mpsc::channel(1);
        let closing = CancellationToken::new();
        let spawn_handler = move |conn| {
            let handler = Handler {
                events: events.clone(),
                status: status.clone(),
                intercepts: intercepts.clone(),
                stop: stop.clone(),
                quits_tx: quits_tx.clone(),
                _alive: handlers_tx.clone(),
            };
            tokio::spawn(handler.serve(conn));
        };
        let accept = tokio::spawn(accept(listener, closing.clone(), spawn_handler));
        Ok((
            Server {
                accept,
                closing,
                socket,
                handlers_rx,
            },
            quits_rx,
        ))
    }

    /// Stops accepting (still serving every client that connected before), gives watchers
    /// a moment to read the last event, and answers the quit requests.
    pub async fn finish(mut self, quits: &mut mpsc::UnboundedReceiver<QuitRequest>, manager: &str) {
        // No new client can connect once the path is gone.
        let _ = std::fs::remove_file(&self.socket);
        self.closing.cancel();
        let _ = self.accept.await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.handlers_rx.recv()).await;
        let bye = encode(&Reply::Disconnected {
            manager: manager.to_owned(),
            pid: std::process::id(),
        });
        while let Ok(mut client) = quits.try_recv() {
            let _ = client.write_all(bye.as_bytes()).await;
        }
    }
}

/// Accepts clients until `closing`, then the ones already waiting: a daemon that fails
/// at once must still tell the `tether connect` that is about to watch it why.
async fn accept(
    listener: UnixListener,
    closing: CancellationToken,
    mut spawn_handler: impl FnMut(UnixStream),
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => spawn_handler(conn),
                Err(e) => {
                    tracing::warn!("socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = closing.cancelled() => break,
        }
    }
    while let Some(Ok((conn, _))) = listener.accept().now_or_never() {
        spawn_handler(conn);
    }
}

struct Handler {
    events: Events,
    status: Arc<Mutex<Status>>,
    intercepts: Arc<Intercepts>,
    stop: CancellationToken,
    quits_tx: mpsc::UnboundedSender<QuitRequest>,
    _alive: mpsc::Sender<()>,
}

impl Handler {
    async fn serve(self, conn: UnixStream) {
        let (read, mut write) = conn.into_split();
        let mut lines = BufReader::new(read).lines();
        let request = match lines.next_line().await {
            Ok(Some(line)) => serde_json::from_str::<Request>(&line),
            _ => return,
        };
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                tracing::debug!("bad request on the socket: {e}");
                return;
            }
        };
        match request {
            Request::Status => {
                let mut status = match self.status.lock() {
                    Ok(status) => status.clone(),
                    Err(_) => return,
                };
                // Reading the kernel's socket table blocks; the stack shares this thread.
                status.intercepts = self.intercepts.list();
                let routed = status.routes.clone();
                status.open_flows = tokio::task::spawn_blocking(move || flows::count(&routed))
                    .await
                    .unwrap_or(0);
                let reply = Reply::Status {
                    status: Box::new(status),
                };
                let _ = write.write_all(encode(&reply).as_bytes()).await;
            }
            Request::Intercept(spec) => {
                let owner = spec.owner;
                let mode = match self.status.lock().map(|s| s.mode) {
                    Ok(Mode::Direct) => "direct mode",
                    _ => "kubernetes",
                };
                // Progress lines go out as they happen; the client closing its end (Ctrl-C)
                // cancels the intercept, which then undoes what it changed.
                let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<String>();
                let cancel = CancellationToken::new();
                let on_gone = cancel.clone();
                tokio::spawn(async move {
                    // Nothing more is read from the client; its end closing is the signal.
                    while let Ok(Some(_)) = lines.next_line().await {}
                    on_gone.cancel();
                });
                let progress = move |message: String| {
                    tracing::info!("{message}");
                    let _ = progress_tx.send(message);
                };
                let started = self
                    .intercepts
                    .start(*spec, mode, &progress, cancel.clone());
                tokio::pin!(started);
                let result = loop {
                    tokio::select! {
                        result = &mut started => break result,
                        Some(message) = progress_rx.recv() => {
                            let line = encode(&Reply::Progress { message });
                            if write.write_all(line.as_bytes()).await.is_err() {
                                cancel.cancel();
                            }
                        }
                    }
                };
                while let Ok(message) = progress_rx.try_recv() {
                    let _ = write
                        .write_all(encode(&Reply::Progress { message }).as_bytes())
                        .await;
                }
                let reply = match result {
                    Ok(started) => {
                        tracing::info!(intercept = %started.info.name, "intercept active");
                        if let Some(owner) = owner {
                            let (intercepts, name) =
                                (self.intercepts.clone(), started.info.name.clone());
                            tokio::spawn(async move {
                                crate::system::process::wait_until_gone(owner).await;
                                tracing::info!(intercept = %name, "its owner ({owner}) is gone; leaving");
                                let _ = intercepts.leave(&name).await;
                            });
                        }
                        Reply::Intercepted {
                            intercept: Box::new(started.info),
                            env: started.env,
                            warnings: started.warnings,
                        }
                    }
                    Err(e) => {
                        tracing::warn!("intercept failed: {e}");
                        Reply::Failed {
                            error: e.to_string(),
                            exit_code: crate::error::intercept_exit_code(&e),
                        }
                    }
                };
                let _ = write.write_all(encode(&reply).as_bytes()).await;
            }
            Request::Leave { name } => {
                let reply = match self.intercepts.leave(&name).await {
                    Ok(info) => Reply::Left {
                        intercept: Box::new(info),
                    },
                    Err(e) => Reply::Failed {
                        error: e.to_string(),
                        exit_code: crate::error::intercept_exit_code(&e),
                    },
                };
                let _ = write.write_all(encode(&reply).as_bytes()).await;
            }
            Request::Quit => {
                tracing::info!("quit requested");
                self.stop.cancel();
                let _ = self.quits_tx.send(write);
            }
            Request::Watch => {
                let mut rx = self.events.tx.subscribe();
                let mut sent = 0;
                loop {
                    let new: Vec<Reply> = rx.borrow_and_update()[sent..].to_vec();
                    for reply in &new {
                        if write.write_all(encode(reply).as_bytes()).await.is_err() {
                            return;
                        }
                        if matches!(reply, Reply::Connected { .. } | Reply::Failed { .. }) {
                            return;
                        }
                    }
                    sent += new.len();
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
