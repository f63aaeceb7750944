//! `kubectl exec` on the node: a command run in a running container, as the container runtime
//! runs it for the kubelet. It joins the container's network, UTS and mount namespaces (so it
//! sees the pod's address, hostname, `/etc/resolv.conf` and token), gets exactly the
//! environment the kubelet gave the container process, starts in the container's working
//! directory, and runs as the same user with the same (absent) limits. It starts its own
//! session, so killing its process group when the client goes away ends whatever it started.
//!
//! The kubelet records every running container in [`ExecTargets`]; the API server's
//! `pods/exec` ([`crate::api::exec`]) looks the container up there and talks to the command
//! through a [`Session`]: channels for stdin and terminal sizes in, output and the ending out.
//! With a TTY ([`pty`]) the command's stdin, stdout and stderr are one terminal, whose output
//! comes back as stdout.

mod pty;

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rustix::process::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::{images, process};

/// After the command has exited, how long its output may stand still before the rest is given
/// up on: what it wrote is in the pipes already, but a process it left in the background may
/// hold them open for ever.
const DRAIN: Duration = Duration::from_secs(2);
/// The `PATH` a container without one gets (as the kubelet sets for container processes).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How much output is read at a time.
const CHUNK: usize = 32 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("exec: {0:?}: executable file not found in $PATH")]
    NotFound(String),
    #[error("no command given")]
    NoCommand,
    #[error("{0} contains a NUL byte")]
    Nul(String),
    #[error("cannot open a terminal: {0}")]
    Terminal(#[source] std::io::Error),
    #[error("exec: {exe:?}: {source}")]
    Spawn { exe: String, source: std::io::Error },
    #[error(transparent)]
    Process(#[from] process::ProcessError),
}

/// What a command run in a container needs from the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The container's main process, whose namespaces the command joins.
    pub pid: i32,
    /// The environment the container process was started with.
    pub env: Vec<(String, String)>,
    /// The directory the container process was started in.
    pub working_dir: PathBuf,
}

/// The directory a container starts in: its `workingDir`, else the sandbox's own (which the
/// container process inherits: the sandbox has no images, hence no image working directory).
pub fn working_dir(spec: Option<&str>) -> PathBuf {
    match spec.filter(|w| !w.is_empty()) {
        Some(w) => PathBuf::from(w),
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
    }
}

/// The running containers on the node, by pod UID and container name: the kubelet adds a
/// container when its process has started and removes it when the process is gone.
#[derive(Debug, Default)]
pub struct ExecTargets {
    running: Mutex<HashMap<(String, String), Target>>,
}

impl ExecTargets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Target>> {
        // A panic while holding the lock leaves a map that is still whole: keep using it.
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn started(&self, uid: &str, container: &str, target: Target) {
        self.lock()
            .insert((uid.to_string(), container.to_string()), target);
    }

    pub fn stopped(&self, uid: &str, container: &str) {
        self.lock()
            .remove(&(uid.to_string(), container.to_string()));
    }

    pub fn pod_gone(&self, uid: &str) {
        self.lock().retain(|(u, _), _| u != uid);
    }

    pub fn get(&self, uid: &str, container: &str) -> Option<Target> {
        self.lock()
            .get(&(uid.to_string(), container.to_string()))
            .cloned()
    }
}

/// Which of the command's streams the client attaches to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A terminal size, as clients send it on the resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It ran and exited with this code (128 + the signal when a signal ended it, as the
    /// container runtime reports it).
    Exited(i32),
    /// It could not be run; the reason.
    Failed(String),
}

/// From the command to the client, in order; `Ended` is the last message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
    Ended(Ending),
}

/// The client's end of a running command.
pub struct Session {
    /// Bytes for the command's stdin (or terminal); dropping it closes stdin. None when
    /// stdin was not asked for.
    pub stdin: Option<mpsc::Sender<Bytes>>,
    /// Terminal sizes; None without a TTY.
    pub resize: Option<mpsc::Sender<TerminalSize>>,
    /// The command's output, then how it ended.
    pub output: mpsc::Receiver<Output>,
    /// Keep it while the client is there: dropping it kills the command if it still runs.
    pub client: ClientGuard,
}

/// Tells the command, when dropped, that its client has gone.
pub struct ClientGuard {
    _tx: oneshot::Sender<()>,
}

/// The command's end of a session.
pub struct CommandEnd {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    pub output: mpsc::Sender<Output>,
    /// Resolves when the client has gone.
    pub client_gone: oneshot::Receiver<()>,
}

/// A session and its command end, connected; the streams not asked for have no channel.
pub fn session(streams: Streams) -> (Session, CommandEnd) {
    let (stdin_tx, stdin_rx) = mpsc::channel(16);
    let (resize_tx, resize_rx) = mpsc::channel(4);
    let (output_tx, output_rx) = mpsc::channel(16);
    let (client_tx, client_rx) = oneshot::channel();
    let (stdin_tx, stdin_rx) = if streams.stdin {
        (Some(stdin_tx), Some(stdin_rx))
    } else {
        (None, None)
    };
    let (resize_tx, resize_rx) = if streams.tty {
        (Some(resize_tx), Some(resize_rx))
    } else {
        (None, None)
    };
    let session = Session {
        stdin: stdin_tx,
        resize: resize_tx,
        output: output_rx,
        client: ClientGuard { _tx: client_tx },
    };
    let command = CommandEnd {
        stdin: stdin_rx,
        resize: resize_rx,
        output: output_tx,
        client_gone: client_rx,
    };
    (session, command)
}

/// How long a terminal command waits for the client's first size before it starts.
/// kubectl sends one as soon as the streams are up; a client that sends none only delays
/// the start by this much.
const FIRST_SIZE: Duration = Duration::from_secs(2);

/// Runs `command` in the container. A command that cannot be started ends with
/// [`Ending::Failed`]. Needs a Tokio runtime.
///
/// With a terminal, the command starts once the client's first size has arrived, so its
/// first `stty size` already reads it: without that wait a shell's prompt, or a program
/// that reads the size once, would see 0×0 until the resize landed.
pub fn start(target: &Target, command: &[String], streams: Streams) -> Session {
    let (session, mut end) = session(streams);
    let (target, command) = (target.clone(), command.to_vec());
    tokio::spawn(async move {
        let size = match end.resize.as_mut() {
            Some(rx) => tokio::time::timeout(FIRST_SIZE, rx.recv())
                .await
                .ok()
                .flatten(),
            None => None,
        };
        match spawn(&target, &command, streams, size) {
            Ok((child, pid, io)) => supervise(child, pid, io, end).await,
            Err(e) => {
                let _ = end
                    .output
                    .send(Output::Ended(Ending::Failed(e.to_string())))
                    .await;
            }
        }
    });
    session
}

/// The command's side of its streams.
enum Io {
    Pipes {
        stdin: Option<tokio::process::ChildStdin>,
        stdout: Option<tokio::process::ChildStdout>,
        stderr: Option<tokio::process::ChildStderr>,
    },
    Terminal(pty::Master),
}

fn piped(wanted: bool) -> Stdio {
    if wanted {
        Stdio::piped()
    } else {
        Stdio::null()
    }
}

fn spawn(
    target: &Target,
    command: &[String],
    streams: Streams,
    size: Option<TerminalSize>,
) -> Result<(Child, i32, Io), ExecError> {
    let (program, args) = command.split_first().ok_or(ExecError::NoCommand)?;
    let path = target
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let exe = images::lookup_in(program, OsStr::new(path))
        .ok_or_else(|| ExecError::NotFound(program.clone()))?;
    let namespaces = process::Namespaces::of(target.pid)?;
    let dir = CString::new(target.working_dir.as_os_str().as_bytes())
        .map_err(|_| ExecError::Nul(target.working_dir.display().to_string()))?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg0(program)
        .args(args)
        .env_clear()
        .envs(target.env.iter().map(|(k, v)| (k, v)));
    // Container runtimes give a terminal session a TERM when the container has none.
    if streams.tty && !target.env.iter().any(|(k, _)| k == "TERM") {
        cmd.env("TERM", "xterm");
    }
    let master = if streams.tty {
        let (master, slave) = pty::open().map_err(ExecError::Terminal)?;
        if let Some(size) = size {
            master.resize(size).map_err(ExecError::Terminal)?;
        }
        let copy = || slave.try_clone().map_err(ExecError::Terminal);
        cmd.stdin(copy()?).stdout(copy()?).stderr(slave);
        Some(master)
    } else {
        cmd.stdin(piped(streams.stdin))
            .stdout(piped(streams.stdout))
            .stderr(piped(streams.stderr));
        None
    };
    let tty = streams.tty;
    // SAFETY: the closure runs between fork and exec in the single-threaded child and only
    // makes system calls on descriptors and memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            process::check(libc::setsid())?;
            if tty {
                // The terminal (already on fd 0) becomes the new session's controlling one.
                process::check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
            }
            namespaces.enter()?;
            process::check(libc::chdir(dir.as_ptr()))
        });
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        exe: program.clone(),
        source,
    })?;
    // Dropping the command closes the parent's copies of the terminal's slave side, so the
    // terminal reports its end once the command's processes have closed theirs.
    drop(cmd);
    // A child that has just been spawned and never waited for has an id.
    let pid = child.id().map_or(-1, |id| id as i32);
    let io = match master {
        Some(master) => Io::Terminal(master),
        None => Io::Pipes {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        },
    };
    Ok((child, pid, io))
}

/// The exit code a container runtime reports: the code, or 128 + the signal.
fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 255,
    }
}

/// Waits for the command, copying its streams, and reports how it ended; kills it when the
/// client goes away first.
async fn supervise(mut child: Child, pid: i32, io: Io, end: CommandEnd) {
    let CommandEnd {
        stdin,
        resize,
        output,
        mut client_gone,
    } = end;
    // Output pumps are waited for after the exit, while their output moves; input feeders
    // are not.
    let mut pumps = JoinSet::new();
    let moved = Arc::new(AtomicU64::new(0));
    let mut feeders = JoinSet::new();
    match io {
        Io::Pipes {
            stdin: pipe_in,
            stdout,
            stderr,
        } => {
            if let (Some(w), Some(rx)) = (pipe_in, stdin) {
                feeders.spawn(feed(rx, w));
            }
            if let Some(r) = stdout {
                pumps.spawn(pump(r, Output::Stdout, output.clone(), moved.clone()));
            }
            if let Some(r) = stderr {
                pumps.spawn(pump(r, Output::Stderr, output.clone(), moved.clone()));
            }
        }
        Io::Terminal(master) => {
            if let Some(rx) = stdin {
                feeders.spawn(feed(rx, master.clone()));
            }
            if let Some(rx) = resize {
                feeders.spawn(resizes(rx, master.clone()));
            }
            pumps.spawn(pump(master, Output::Stdout, output.clone(), moved.clone()));
        }
    }
    let status = tokio::select! {
        status = child.wait() => status,
        _ = &mut client_gone => {
            // Nobody reads the output any more: end the command and what it started. The
            // child is not reaped yet, so its process group cannot be someone else's.
            process::signal_group(pid, Signal::KILL);
            let _ = child.wait().await;
            return;
        }
    };
    let (mut seen, mut still) = (moved.load(Ordering::Relaxed), Duration::ZERO);
    while still < DRAIN {
        match tokio::time::timeout(DRAIN / 4, pumps.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                let now = moved.load(Ordering::Relaxed);
                still = if now == seen {
                    still + DRAIN / 4
                } else {
                    Duration::ZERO
                };
                seen = now;
            }
        }
    }
    drop(pumps);
    drop(feeders);
    let ending = match status {
        Ok(status) => Ending::Exited(exit_code(status)),
        Err(e) => Ending::Failed(format!("waiting for the command: {e}")),
    };
    let _ = output.send(Output::Ended(ending)).await;
}

/// Copies the client's stdin to the command until the client closes it.
async fn feed(mut rx: mpsc::Receiver<Bytes>, mut w: impl AsyncWrite + Unpin) {
    while let Some(chunk) = rx.recv().await {
        if w.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// Applies the client's terminal sizes.
async fn resizes(mut rx: mpsc::Receiver<TerminalSize>, master: pty::Master) {
    while let Some(size) = rx.recv().await {
        if let Err(e) = master.resize(size) {
            tracing::debug!("exec: resizing the terminal: {e}");
        }
    }
}

/// Copies one of the command's output streams to the client until it ends, counting the
/// pieces in `moved`.
async fn pump(
    mut r: impl AsyncRead + Unpin,
    wrap: fn(Bytes) -> Output,
    tx: mpsc::Sender<Output>,
    moved: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let piece = wrap(Bytes::copy_from_slice(&buf[..n]));
                if tx.send(piece).await.is_err() {
                    return;
                }
                moved.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_containers_and_pods() {
        let targets = ExecTargets::default();
        let t = Target {
            pid: 1,
            env: vec![("A".into(), "1".into())],
            working_dir: "/".into(),
        };
        targets.started("u1", "a", t.clone());
        targets.started("u1", "b", t.clone());
        targets.started("u2", "a", t.clone());
        assert_eq!(targets.get("u1", "a"), Some(t.clone()));
        targets.stopped("u1", "a");
        assert_eq!(targets.get("u1", "a"), None);
        targets.pod_gone("u1");
        assert_eq!(targets.get("u1", "b"), None);
        assert_eq!(targets.get("u2", "a"), Some(t));
    }

    #[test]
    fn exit_codes_are_the_runtimes() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        // Killed by SIGKILL.
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }

    #[test]
    fn terminal_sizes_decode_as_clients_send_them() {
        let size: TerminalSize = serde_json::from_str(r#"{"Width":120,"Height":40}"#).unwrap();
        assert_eq!(
            size,
            TerminalSize {
                width: 120,
                height: 40
            }
        );
    }
}
