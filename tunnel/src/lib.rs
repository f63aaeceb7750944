//! tether-tunnel: what both ends of a tether tunnel share.
//!
//! - [`wire`]: the versioned wire protocol (handshake with its capability sets, flow
//!   requests, control messages, datagram framing). Pure encoding and decoding; every
//!   decoder rejects bad input with an error.
//! - [`session`]: many flows multiplexed over one byte stream with yamux, each with its own
//!   flow control. Either end opens streams and accepts the other's; the handshake's
//!   `two-way` capability says the peer can. The byte stream may be a TCP connection
//!   (direct mode) or a Kubernetes port-forward; the session does not care.
//! - [`stack`] (feature `stack`, enabled by the CLI only): the laptop's userspace network
//!   stack. Packets from a TUN device are terminated by smoltcp (TCP) or relayed directly
//!   (UDP, DNS) and become flows on a session. The agent builds without it, so it links
//!   neither `tun` nor `smoltcp`.
//!
//! - [`sidecar`]: the laptop's link to an intercept sidecar (handshake, claims on the
//!   control stream, the streams the sidecar opens for intercepted connections).
//! - [`dns_client`]: one DNS exchange over UDP or TCP, shared by both ends.
//! - [`resolv`]: the one resolv.conf parser (manager, laptop and test kit).
//! - [`heap`]: allocator settings for the processes that carry bulk traffic.
//!
//! The order of a connection: the handshake runs on the raw byte stream, then
//! [`Session::client`] (laptop) or [`Session::server`] (manager) takes the stream over, and
//! every flow is a session stream that starts with a [`wire::flow::FlowRequest`].
//!
//! Nothing here knows about Kubernetes or the command line.

pub mod dns_client;
pub mod heap;
pub mod resolv;
pub mod session;
pub mod sidecar;
#[cfg(feature = "stack")]
pub mod stack;
pub mod wire;

pub use session::{FlowStream, Incoming, Session, SessionError};
