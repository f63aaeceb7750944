//! Reaching servers inside a rootless run's namespace from the daemon, which lives outside
//! it: the helper connects there and passes the connected socket back. A socket keeps the
//! network namespace it was made in, so the daemon then carries bytes on it as on any other.
//!
//! The daemon of a rootless run installs its end once ([`install`]); every local connection
//! the daemon makes for an intercept goes through [`connect`], which dials directly when
//! there is no namespace.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use super::channel::Channel;

/// How long the helper may take to connect inside the namespace.
const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    to: SocketAddr,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
enum Reply {
    /// The message carries the connected socket.
    Connected,
    Failed {
        errno: i32,
    },
}

/// The daemon's end; requests are answered in order, one at a time.
static DIALER: OnceLock<tokio::sync::Mutex<Channel>> = OnceLock::new();

/// Makes [`connect`] dial inside the namespace whose helper holds the other end of `fd`.
pub fn install(fd: OwnedFd) -> std::io::Result<()> {
    let channel = Channel::new(fd)?;
    let _ = DIALER.set(tokio::sync::Mutex::new(channel));
    Ok(())
}

/// A TCP connection to `to` where the user's servers run: inside the rootless run's
/// namespace when there is one, else on this machine.
pub async fn connect(to: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(dialer) = DIALER.get() else {
        return TcpStream::connect(to).await;
    };
    let channel = dialer.lock().await;
    channel.send(&Request { to }, None).await?;
    match channel.recv::<Reply>().await? {
        Some((Reply::Connected, Some(fd))) => {
            let stream = std::net::TcpStream::from(fd);
            stream.set_nonblocking(true)?;
            TcpStream::from_std(stream)
        }
        Some((Reply::Failed { errno }, _)) => Err(std::io::Error::from_raw_os_error(errno)),
        Some((Reply::Connected, None)) | None => Err(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "the rootless run's namespace is gone",
        )),
    }
}

/// The helper's side: answers the daemon's requests until it closes its end.
pub async fn serve(channel: Channel) {
    loop {
        let request = match channel.recv::<Request>().await {
            Ok(Some((request, _))) => request,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("dial request: {e}");
                return;
            }
        };
        let dialed = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(request.to)).await;
        let sent = match dialed {
            Ok(Ok(stream)) => {
                let fd: Option<OwnedFd> = stream.into_std().ok().map(OwnedFd::from);
                channel.send(&Reply::Connected, fd.as_ref()).await
            }
            Ok(Err(e)) => {
                let errno = e.raw_os_error().unwrap_or(libc::ECONNREFUSED);
                channel.send(&Reply::Failed { errno }, None).await
            }
            Err(_) => {
                let errno = libc::ETIMEDOUT;
                channel.send(&Reply::Failed { errno }, None).await
            }
        };
        if sent.is_err() {
            return;
        }
    }
}
