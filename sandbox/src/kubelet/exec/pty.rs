//! A pseudo-terminal for `kubectl exec -t`: the slave side becomes the command's stdin,
//! stdout and stderr (and its controlling terminal); the master side, non-blocking and driven
//! by Tokio, carries the client's keystrokes in and the terminal's output out.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::TerminalSize;

/// The master side of a terminal; clones share it (one reads, another writes).
#[derive(Clone)]
pub struct Master(Arc<AsyncFd<OwnedFd>>);

/// Opens a terminal: its master side, and the slave side for the command. Needs a Tokio
/// runtime.
pub fn open() -> io::Result<(Master, OwnedFd)> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)?;
    rustix::io::ioctl_fionbio(&master, true)?;
    // SAFETY: an OwnedFd is an open descriptor that stays the same until the AsyncFd, which
    // owns it from here on, drops it.
    let master = unsafe { AsyncFd::register(master) }?;
    Ok((Master(Arc::new(master)), slave))
}

impl Master {
    pub fn resize(&self, size: TerminalSize) -> io::Result<()> {
        let winsize = Winsize {
            ws_row: size.height,
            ws_col: size.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        Ok(rustix::termios::tcsetwinsize(self.0.get_ref(), winsize)?)
    }
}

impl AsyncRead for Master {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let read = guard.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut *unfilled)?));
            match read {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Linux answers EIO once every slave descriptor is closed: the terminal's
                // output has ended.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Master {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| Ok(rustix::io::write(fd.get_ref(), buf)?)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// A terminal cannot be half-closed: the end of the client's input is the end-of-file
    /// character, as a user would type it (the command sees end of input at a line start).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        const EOT: &[u8] = &[0x04];
        self.poll_write(cx, EOT).map_ok(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn the_master_carries_what_the_slave_side_writes_and_reads() {
        let (mut master, slave) = open().unwrap();
        master
            .resize(TerminalSize {
                width: 100,
                height: 30,
            })
            .unwrap();
        let size = rustix::termios::tcgetwinsize(&slave).unwrap();
        assert_eq!((size.ws_col, size.ws_row), (100, 30));
        rustix::io::write(&slave, b"out").unwrap();
        let mut buf = [0u8; 16];
        let n = master.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"out");
        master.write_all(b"in\n").await.unwrap();
        let mut got = [0u8; 16];
        let n = rustix::io::read(&slave, &mut got).unwrap();
        assert_eq!(&got[..n], b"in\n");
        drop(slave);
        // Echoed input may still be queued; then the end.
        while master.read(&mut buf).await.unwrap() > 0 {}
    }
}
