//! tether-tunnel: what both ends of a tether tunnel share.
//!
//! - [`wire`]: the versioned wire protocol (handshake, flow requests, control messages,
//!   datagram framing). Pure encoding and decoding; every decoder rejects bad input with an
//!   error.
//! - [`session`]: many flows multiplexed over one byte stream with yamux, each with its own
//!   flow control. The byte stream may be a TCP connection (direct mode) or a Kubernetes
//!   port-forward; the session does not care.
//! - [`stack`]: the laptop's userspace network stack. Packets from a TUN device are
//!   terminated by smoltcp (TCP) or relayed directly (UDP, DNS) and become flows on a
//!   session.
//!
//! - [`dns_client`]: one DNS exchange over UDP or TCP, shared by both ends.
//! - [`heap`]: allocator settings for the processes that carry bulk traffic.
//!
//! Nothing here knows about Kubernetes or the command line.

pub mod dns_client;
pub mod heap;
pub mod session;
#[cfg(feature = "stack")]
pub mod stack;
pub mod wire;

pub use session::{FlowStream, Session, SessionError};
