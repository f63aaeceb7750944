//! Messages between the processes of a rootless run, over a Unix `SOCK_SEQPACKET` socket
//! pair: each message is one JSON value, and may carry one file descriptor (the namespace's
//! TUN device, or a socket connected inside the namespace).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The largest message: a container's whole environment fits with room to spare.
const MAX_MESSAGE: usize = 256 * 1024;

/// One end of a pair.
pub struct Channel {
    fd: AsyncFd<OwnedFd>,
}

/// Two connected sockets; both close on exec until a child is told to keep one.
pub fn pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

/// Lets a child keep `fd` across exec: called between fork and exec, it changes only the
/// child's descriptor table.
pub fn keep_on_exec(fd: i32) -> std::io::Result<()> {
    // SAFETY: the caller owns `fd` for the duration of the call (it is one of its sockets).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
    Ok(())
}

impl Channel {
    /// Takes over one end of a pair (made non-blocking here, since a child receives its end
    /// as it was inherited).
    pub fn new(fd: OwnedFd) -> std::io::Result<Channel> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        // SAFETY: the channel owns `fd` and neither replaces nor closes it while registered.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)?;
        Ok(Channel { fd })
    }

    pub async fn send<T: Serialize>(
        &self,
        message: &T,
        fd: Option<&OwnedFd>,
    ) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
        if bytes.len() > MAX_MESSAGE {
            return Err(std::io::Error::other(format!(
                "a message of {} bytes is larger than {MAX_MESSAGE}",
                bytes.len()
            )));
        }
        let borrowed = fd.map(|fd| [fd.as_fd()]);
        self.fd
            .async_io(Interest::WRITABLE, |socket| {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                if let Some(fds) = &borrowed {
                    control.push(SendAncillaryMessage::ScmRights(fds));
                }
                rustix::net::sendmsg(
                    socket,
                    &[IoSlice::new(&bytes)],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )
                .map_err(std::io::Error::from)
            })
            .await?;
        Ok(())
    }

    /// The next message and the descriptor it carried; `None` when the other end closed.
    pub async fn recv<T: DeserializeOwned>(&self) -> std::io::Result<Option<(T, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (len, fd) = self
            .fd
            .async_io(Interest::READABLE, |socket| {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let received = rustix::net::recvmsg(
                    socket,
                    &mut [IoSliceMut::new(&mut buf)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )?;
                let fd = control.drain().find_map(|message| match message {
                    RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
                    _ => None,
                });
                Ok((received.bytes, fd))
            })
            .await?;
        if len == 0 {
            return Ok(None);
        }
        let message = serde_json::from_slice(&buf[..len]).map_err(std::io::Error::other)?;
        Ok(Some((message, fd)))
    }
}
