//! The sidecar's control stream: claims on the ports it took over, and keepalives.
//!
//! A laptop dials a sidecar (through the API server's port-forward to the pod's loopback),
//! runs the handshake on [`super::handshake::Terms::LAPTOP_TO_SIDECAR`], opens one
//! [`super::flow::FlowRequest::Control`] stream and sends [`SidecarRequest`] frames on it;
//! each gets exactly one [`SidecarReply`]. While a claim holds, the sidecar opens a stream
//! towards the laptop for every connection to that port, starting with
//! `FlowRequest::Tcp { target }` where `target` is the app's address in the pod, and the laptop
//! answers with a [`super::flow::FlowReply`].
//!
//! A claim lasts as long as the control stream: the sidecar drops every claim of a session
//! whose control stream ends or stays silent for [`LIVENESS`], so a laptop that is killed,
//! suspended or cut off stops receiving traffic within seconds, without any command.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::route::Route;
use super::{WireError, decode, encode};

/// How often the laptop pings each sidecar.
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// Silence after which the sidecar gives a session's ports back to the app.
pub const LIVENESS: Duration = Duration::from_secs(3);

/// Who holds a claim, as other laptops and `tether list` are told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The intercept's name.
    pub intercept: String,
    pub user: String,
    pub host: String,
    /// Where the laptop sends the traffic, e.g. `127.0.0.1:8080`.
    pub local: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "intercept {} of {}@{}",
            self.intercept, self.user, self.host
        )
    }
}

/// One request on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SidecarRequest {
    /// Send new connections to the app's `port` (the container port the Service targeted)
    /// to this laptop.
    Claim {
        port: u16,
        holder: Holder,
    },
    /// Give `port` back to the app.
    Release {
        port: u16,
    },
    Status,
    Ping {
        nonce: u64,
    },
    // Appended after the first release, so that older sidecars still decode the variants
    // above; a laptop sends these only to a sidecar that offers
    // [`super::capability::Capability::HttpRoutes`].
    /// A claim on part of `port`'s traffic, or a mirror of it.
    ClaimRoute {
        port: u16,
        holder: Holder,
        route: Route,
    },
    /// Like [`SidecarRequest::Status`], with every claim of every port.
    Routes,
}

/// The sidecar's answer to one [`SidecarRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SidecarReply {
    Claimed {
        port: u16,
    },
    /// Another session holds the port.
    Held {
        port: u16,
        by: Holder,
    },
    /// The sidecar does not forward `port`; `ports` are the app ports it does forward.
    NoSuchPort {
        port: u16,
        ports: Vec<u16>,
    },
    Released {
        port: u16,
    },
    Status(SidecarStatus),
    Pong {
        nonce: u64,
    },
    /// Another session's claim may take the same requests.
    Overlaps {
        port: u16,
        by: Holder,
        route: Route,
    },
    Routes(SidecarRoutes),
    /// The claim cannot be served, e.g. a regex that does not parse.
    Refused {
        port: u16,
        reason: String,
    },
}

/// Every claim on every port of a sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SidecarRoutes {
    pub ports: Vec<PortRoutes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRoutes {
    pub listen: u16,
    pub app: u16,
    pub claims: Vec<ClaimStatus>,
    /// Connections and requests the app answered since the sidecar started.
    pub forwarded: u64,
    /// Connections that did not speak HTTP while a filter was on the port (they went to the
    /// app, or to a global claim).
    pub not_http: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimStatus {
    pub holder: Holder,
    pub route: Route,
    /// Connections or requests this claim took (or copied, for a mirror).
    pub matched: u64,
    /// Copies a mirror dropped because the laptop was slow or gone.
    pub dropped: u64,
}

/// What a sidecar forwards, and to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SidecarStatus {
    pub ports: Vec<PortStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    /// The port the sidecar listens on (the Service's target now).
    pub listen: u16,
    /// The app's port on the pod's loopback.
    pub app: u16,
    pub holder: Option<Holder>,
    /// Connections sent to a laptop since the sidecar started.
    pub intercepted: u64,
    /// Connections sent to the app since the sidecar started.
    pub forwarded: u64,
}

impl SidecarRequest {
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode("sidecar request", bytes)
    }
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

impl SidecarReply {
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode("sidecar reply", bytes)
    }
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn holder() -> Holder {
        Holder {
            intercept: "web".into(),
            user: "dev".into(),
            host: "laptop".into(),
            local: "127.0.0.1:8080".into(),
        }
    }

    #[test]
    fn messages_round_trip() {
        let requests = [
            SidecarRequest::Claim {
                port: 8080,
                holder: holder(),
            },
            SidecarRequest::Release { port: 8080 },
            SidecarRequest::Status,
            SidecarRequest::Ping { nonce: 7 },
        ];
        for r in requests {
            assert_eq!(SidecarRequest::decode(&r.encode()).unwrap(), r);
        }
        let replies = [
            SidecarReply::Held {
                port: 8080,
                by: holder(),
            },
            SidecarReply::NoSuchPort {
                port: 1,
                ports: vec![8080, 9090],
            },
            SidecarReply::Status(SidecarStatus {
                ports: vec![PortStatus {
                    listen: 47100,
                    app: 8080,
                    holder: Some(holder()),
                    intercepted: 3,
                    forwarded: 4,
                }],
            }),
        ];
        for r in replies {
            assert_eq!(SidecarReply::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn a_holder_reads_as_who_holds_it() {
        assert_eq!(holder().to_string(), "intercept web of dev@laptop");
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = SidecarRequest::decode(&bytes);
            let _ = SidecarReply::decode(&bytes);
        }
    }
}
