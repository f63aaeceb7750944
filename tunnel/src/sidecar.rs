//! The laptop's end of a link to one intercept sidecar, over any byte stream (in practice a
//! port-forward to the pod's loopback): the handshake, the control stream with its
//! request/reply pairs, and the streams the sidecar opens for intercepted connections.
//!
//! The link is only the transport; what to claim and where to send connections is the
//! daemon's business.

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::session::{FlowStream, Incoming, Session, SessionError};
use crate::wire::WireError;
use crate::wire::flow::FlowRequest;
use crate::wire::frame::{MAX_FRAME, expect_frame, write_frame};
use crate::wire::handshake::{Accepted, HandshakeError, Terms, client_handshake_with};
use crate::wire::intercept::{SidecarReply, SidecarRequest};

#[derive(Debug, Error)]
pub enum LinkError {
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Wire(#[from] WireError),
}

pub struct Link {
    pub accepted: Accepted,
    // Kept so the session stays open as long as the link.
    _session: Session,
    incoming: Option<Incoming>,
    control: FlowStream,
}

impl Link {
    /// Handshakes with the sidecar at the other end of `io` and opens the control stream.
    pub async fn open<T>(mut io: T) -> Result<Link, LinkError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let accepted = client_handshake_with(&mut io, "", Terms::LAPTOP_TO_SIDECAR).await?;
        let (session, incoming) = Session::client(io);
        let control = session.open(&FlowRequest::Control).await?;
        Ok(Link {
            accepted,
            _session: session,
            incoming: Some(incoming),
            control,
        })
    }

    /// Sends one request and reads its reply.
    pub async fn request(&mut self, request: &SidecarRequest) -> Result<SidecarReply, LinkError> {
        write_frame(&mut self.control, &request.encode()).await?;
        let frame = expect_frame(&mut self.control, MAX_FRAME, "sidecar reply").await?;
        Ok(SidecarReply::decode(&frame)?)
    }

    /// The streams the sidecar opens, one per intercepted connection; `None` after the
    /// first call.
    pub fn take_incoming(&mut self) -> Option<Incoming> {
        self.incoming.take()
    }
}
