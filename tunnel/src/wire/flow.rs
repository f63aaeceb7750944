//! The first frames of every yamux stream: what the flow is, and whether the side that
//! accepted the stream could set it up.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{WireError, decode, encode};

/// Sent by the side that opened a stream (today always the laptop) as its first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlowRequest {
    /// The session's control channel (one per session).
    Control,
    /// A TCP connection to `target`; bytes follow in both directions, with half-close.
    Tcp { target: SocketAddr },
    /// A UDP association with `target`; [`super::datagram`] frames follow.
    Udp { target: SocketAddr },
    /// One DNS exchange: a frame with the raw query, answered by a frame with the raw response.
    Dns,
}

/// The manager's answer to a TCP or UDP [`FlowRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlowReply {
    /// The target is connected; payload follows.
    Ready,
    /// The target actively refused (TCP RST).
    Refused,
    /// No route to the target, or it is down.
    Unreachable,
    /// The dial did not complete in time.
    TimedOut,
    /// Anything else, with the manager's description.
    Failed { reason: String },
}

impl FlowRequest {
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode("flow request", bytes)
    }
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

impl FlowReply {
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode("flow reply", bytes)
    }
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Classifies a failed dial the way the laptop should report it.
    pub fn from_io_error(err: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match err.kind() {
            ConnectionRefused => FlowReply::Refused,
            TimedOut => FlowReply::TimedOut,
            HostUnreachable | NetworkUnreachable | AddrNotAvailable => FlowReply::Unreachable,
            _ => FlowReply::Failed {
                reason: err.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Scope ids and flow labels are not part of the wire format, so targets are (IP, port).
    fn any_target() -> impl Strategy<Value = SocketAddr> {
        any::<(std::net::IpAddr, u16)>().prop_map(SocketAddr::from)
    }

    fn any_request() -> impl Strategy<Value = FlowRequest> {
        prop_oneof![
            Just(FlowRequest::Control),
            Just(FlowRequest::Dns),
            any_target().prop_map(|target| FlowRequest::Tcp { target }),
            any_target().prop_map(|target| FlowRequest::Udp { target }),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(req in any_request()) {
            prop_assert_eq!(FlowRequest::decode(&req.encode()).unwrap(), req);
        }

        #[test]
        fn replies_round_trip(reason in ".{0,32}") {
            for reply in [FlowReply::Ready, FlowReply::Refused, FlowReply::Unreachable,
                          FlowReply::TimedOut, FlowReply::Failed { reason: reason.clone() }] {
                prop_assert_eq!(FlowReply::decode(&reply.encode()).unwrap(), reply);
            }
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = FlowRequest::decode(&bytes);
            let _ = FlowReply::decode(&bytes);
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = FlowRequest::Dns.encode();
        bytes.push(0);
        assert!(FlowRequest::decode(&bytes).is_err());
    }
}
