//! The versioned handshake that opens every tunnel connection.
//!
//! Each side first sends a fixed preamble, `TTHR`, the protocol version (`u16`, big endian)
//! and its software version (a `u8` length and UTF-8 bytes). The preamble's layout never
//! changes, so two peers of different protocol versions can still tell each other which
//! versions they run. When the protocol versions match, the laptop sends a [`Hello`] frame
//! with its token and capabilities, and the manager answers with a [`HelloReply`].
//!
//! Capabilities ([`super::capability`]) say what each end can do. Each end has [`Terms`]:
//! what it offers and what it requires of its peer. The manager refuses a laptop that lacks
//! one of its requirements (with a [`HelloReply::Rejected`] naming both versions) and the
//! laptop refuses a manager the same way, so a missing feature is a clear error at connect
//! time, not a stream that goes nowhere later.
//!
//! Compatibility: the preamble, [`Hello`] and [`HelloReply`] keep protocol v1's layout
//! (capabilities were a list of names from the start, then unread), so the protocol version
//! stays 1. What is new is the `two-way` capability, which both ends require: a peer built
//! before it offers only `tcp`, `udp`, `dns` and `control`, and is refused by capability
//! (naming both versions), not by protocol version.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::capability::{Capabilities, Capability};
use super::frame::{expect_frame, write_frame};
use super::{WireError, decode, encode};

/// The protocol this build speaks. Bump it on any incompatible change of the wire format.
pub const PROTOCOL_VERSION: u16 = 1;
/// The software version reported to the peer.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

const MAGIC: &[u8; 4] = b"TTHR";
/// A hello frame holds a token and a few short strings; anything bigger is hostile.
const MAX_HELLO: usize = 4096;

/// What a peer says about itself before any frame: readable across protocol versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preamble {
    pub protocol: u16,
    pub software: String,
}

impl Preamble {
    pub fn ours() -> Self {
        Preamble {
            protocol: PROTOCOL_VERSION,
            software: SOFTWARE_VERSION.to_owned(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let software = &self.software.as_bytes()[..self.software.len().min(u8::MAX as usize)];
        let mut out = Vec::with_capacity(7 + software.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.protocol.to_be_bytes());
        out.push(software.len() as u8);
        out.extend_from_slice(software);
        out
    }

    /// Decodes a complete preamble from a buffer (used by tests and fuzzing).
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() < 7 {
            return Err(WireError::UnexpectedEof("handshake preamble"));
        }
        if &bytes[..4] != MAGIC {
            return Err(WireError::BadMagic);
        }
        let protocol = u16::from_be_bytes([bytes[4], bytes[5]]);
        let len = bytes[6] as usize;
        let software = bytes
            .get(7..7 + len)
            .ok_or(WireError::UnexpectedEof("handshake preamble"))?;
        Ok(Preamble {
            protocol,
            software: String::from_utf8_lossy(software).into_owned(),
        })
    }

    async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Self, WireError> {
        let mut head = [0u8; 7];
        reader
            .read_exact(&mut head)
            .await
            .map_err(eof_as("handshake preamble"))?;
        if &head[..4] != MAGIC {
            return Err(WireError::BadMagic);
        }
        let mut software = vec![0u8; head[6] as usize];
        reader
            .read_exact(&mut software)
            .await
            .map_err(eof_as("handshake preamble"))?;
        Ok(Preamble {
            protocol: u16::from_be_bytes([head[4], head[5]]),
            software: String::from_utf8_lossy(&software).into_owned(),
        })
    }
}

fn eof_as(what: &'static str) -> impl Fn(std::io::Error) -> WireError {
    move |e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::UnexpectedEof(what),
        _ => WireError::Io(e),
    }
}

/// What one end offers its peer and what it needs the peer to offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub offers: Capabilities,
    pub requires: Capabilities,
    /// Who the peer is, for messages: "the manager", "the laptop", "the sidecar".
    pub peer: &'static str,
    /// Who this end is, for the refusal it sends.
    pub role: &'static str,
}

impl Terms {
    /// The laptop uses every kind of flow and counts on streams both ways (intercepts are
    /// streams the cluster opens towards it).
    pub const LAPTOP: Terms = Terms {
        offers: Capabilities::TUNNEL,
        requires: Capabilities::TUNNEL,
        peer: "the manager",
        role: "the laptop",
    };
    /// The manager serves every kind of flow. Of the laptop it needs only streams both ways:
    /// the flows are the laptop's to choose, but streams the cluster opens must be taken.
    pub const MANAGER: Terms = Terms {
        offers: Capabilities::TUNNEL,
        requires: Capabilities::empty().with(Capability::TwoWay),
        peer: "the laptop",
        role: "the manager",
    };
    /// The laptop dialing an intercept sidecar: it needs the sidecar's claims, and the
    /// sidecar's streams towards it.
    pub const LAPTOP_TO_SIDECAR: Terms = Terms {
        // The sidecar answers with what both offer, so the laptop names it too.
        offers: Capabilities::TUNNEL
            .with(Capability::Intercept)
            .with(Capability::HttpRoutes),
        requires: Capabilities::empty()
            .with(Capability::Control)
            .with(Capability::TwoWay)
            .with(Capability::Intercept),
        peer: "the sidecar",
        role: "the laptop",
    };
    /// The sidecar takes claims on its control stream and opens a stream per intercepted
    /// connection, which the laptop must accept.
    pub const SIDECAR: Terms = Terms {
        offers: Capabilities::empty()
            .with(Capability::Control)
            .with(Capability::Tcp)
            .with(Capability::TwoWay)
            .with(Capability::Intercept)
            .with(Capability::HttpRoutes),
        requires: Capabilities::empty().with(Capability::TwoWay),
        peer: "the laptop",
        role: "the sidecar",
    };
}

/// The laptop's introduction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub token: String,
    /// What the laptop offers.
    pub capabilities: Capabilities,
}

/// The manager's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// `capabilities`: what both ends offer.
    Accepted {
        capabilities: Capabilities,
    },
    Rejected {
        reason: String,
    },
}

impl Hello {
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode("hello", bytes)
    }
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

impl HelloReply {
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode("hello reply", bytes)
    }
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

/// Why a handshake failed.
#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error(
        "incompatible protocol: this side runs tether {ours_software} (protocol v{ours}), \
         the peer runs tether {theirs_software} (protocol v{theirs})"
    )]
    IncompatibleVersion {
        ours: u16,
        ours_software: String,
        theirs: u16,
        theirs_software: String,
    },
    #[error(
        "{peer_role} lacks {missing}, which this side requires: this side runs tether {} \
         (protocol v{}), {peer_role} runs tether {} (protocol v{})",
        .ours.software, .ours.protocol, .theirs.software, .theirs.protocol
    )]
    MissingCapabilities {
        /// Who the peer is: "the laptop" or "the manager".
        peer_role: &'static str,
        missing: Capabilities,
        ours: Preamble,
        theirs: Preamble,
    },
    #[error("the manager rejected the session: {0}")]
    Rejected(String),
    #[error("the client presented an invalid token")]
    BadToken,
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl HandshakeError {
    fn incompatible(theirs: Preamble) -> Self {
        let ours = Preamble::ours();
        HandshakeError::IncompatibleVersion {
            ours: ours.protocol,
            ours_software: ours.software,
            theirs: theirs.protocol,
            theirs_software: theirs.software,
        }
    }

    fn missing(peer_role: &'static str, missing: Capabilities, theirs: Preamble) -> Self {
        HandshakeError::MissingCapabilities {
            peer_role,
            missing,
            ours: Preamble::ours(),
            theirs,
        }
    }
}

/// What the laptop learns from a successful handshake.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub peer: Preamble,
    /// Capabilities both sides offer.
    pub capabilities: Capabilities,
}

/// Runs the laptop's side of the handshake on [`Terms::LAPTOP`].
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    token: &str,
) -> Result<Accepted, HandshakeError> {
    client_handshake_with(io, token, Terms::LAPTOP).await
}

/// Runs the connecting side of the handshake on the given terms.
pub async fn client_handshake_with<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    token: &str,
    terms: Terms,
) -> Result<Accepted, HandshakeError> {
    io.write_all(&Preamble::ours().encode())
        .await
        .map_err(WireError::Io)?;
    let hello = Hello {
        token: token.to_owned(),
        capabilities: terms.offers,
    };
    write_frame(io, &hello.encode()).await?;
    let peer = Preamble::read(io).await?;
    if peer.protocol != PROTOCOL_VERSION {
        return Err(HandshakeError::incompatible(peer));
    }
    let reply = HelloReply::decode(&expect_frame(io, MAX_HELLO, "hello reply").await?)?;
    let offered = match reply {
        HelloReply::Accepted { capabilities } => capabilities,
        HelloReply::Rejected { reason } => return Err(HandshakeError::Rejected(reason)),
    };
    let missing = terms.requires.missing_from(offered);
    if !missing.is_empty() {
        return Err(HandshakeError::missing(terms.peer, missing, peer));
    }
    Ok(Accepted {
        peer,
        capabilities: terms.offers.common(offered),
    })
}

/// What the manager learns from a successful handshake.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub peer: Preamble,
    /// Capabilities both sides offer.
    pub capabilities: Capabilities,
}

/// Runs the manager's side of the handshake on [`Terms::MANAGER`].
pub async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    expected_token: &str,
) -> Result<Admitted, HandshakeError> {
    server_handshake_with(io, expected_token, Terms::MANAGER).await
}

/// Runs the accepting side of the handshake on the given terms, checking the token in
/// constant time before anything else.
pub async fn server_handshake_with<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    expected_token: &str,
    terms: Terms,
) -> Result<Admitted, HandshakeError> {
    let peer = Preamble::read(io).await?;
    io.write_all(&Preamble::ours().encode())
        .await
        .map_err(WireError::Io)?;
    if peer.protocol != PROTOCOL_VERSION {
        // The peer reads our preamble and reports both versions on its side too.
        return Err(HandshakeError::incompatible(peer));
    }
    let hello = Hello::decode(&expect_frame(io, MAX_HELLO, "hello").await?)?;
    let token_ok: bool = hello
        .token
        .as_bytes()
        .ct_eq(expected_token.as_bytes())
        .into();
    if !token_ok {
        let reply = HelloReply::Rejected {
            reason: "invalid token".to_owned(),
        };
        write_frame(io, &reply.encode()).await?;
        return Err(HandshakeError::BadToken);
    }
    let missing = terms.requires.missing_from(hello.capabilities);
    if !missing.is_empty() {
        // The laptop shows this after "the manager rejected the session: ".
        let ours = Preamble::ours();
        let reason = format!(
            "{} runs tether {} (protocol v{}) without {missing}, which {} \
             (tether {}, protocol v{}) requires",
            terms.peer, peer.software, peer.protocol, terms.role, ours.software, ours.protocol
        );
        write_frame(io, &HelloReply::Rejected { reason }.encode()).await?;
        return Err(HandshakeError::missing(terms.peer, missing, peer));
    }
    let capabilities = terms.offers.common(hello.capabilities);
    write_frame(io, &HelloReply::Accepted { capabilities }.encode()).await?;
    Ok(Admitted { peer, capabilities })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test]
    async fn accepts_the_right_token() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move { server_handshake(&mut b, "s3cret").await });
        let accepted = client_handshake(&mut a, "s3cret").await.unwrap();
        assert_eq!(accepted.peer, Preamble::ours());
        assert_eq!(accepted.capabilities, Capabilities::TUNNEL);
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn rejects_a_wrong_token_on_both_sides() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move { server_handshake(&mut b, "s3cret").await });
        let err = client_handshake(&mut a, "guess").await.unwrap_err();
        assert!(matches!(err, HandshakeError::Rejected(ref r) if r == "invalid token"));
        assert!(matches!(
            server.await.unwrap(),
            Err(HandshakeError::BadToken)
        ));
    }

    #[tokio::test]
    async fn incompatible_versions_are_named_on_both_sides() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move { server_handshake(&mut b, "t").await });
        let future = Preamble {
            protocol: PROTOCOL_VERSION + 1,
            software: "9.9.9".to_owned(),
        };
        a.write_all(&future.encode()).await.unwrap();
        let server_err = server.await.unwrap().unwrap_err().to_string();
        assert!(server_err.contains("9.9.9"), "{server_err}");
        assert!(server_err.contains(SOFTWARE_VERSION), "{server_err}");
        assert!(server_err.contains(&format!("v{}", PROTOCOL_VERSION + 1)));
        // The client side sees the manager's preamble and names both versions as well.
        let theirs = Preamble::read(&mut a).await.unwrap();
        let client_err = HandshakeError::incompatible(Preamble {
            protocol: theirs.protocol + 1,
            ..theirs
        })
        .to_string();
        assert!(client_err.contains(SOFTWARE_VERSION), "{client_err}");
    }

    #[tokio::test]
    async fn not_a_tether_peer() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(matches!(
            server_handshake(&mut b, "t").await,
            Err(HandshakeError::Wire(WireError::BadMagic))
        ));
    }

    /// A peer built before `two-way`: protocol v1, the four flow capabilities.
    fn old_peer() -> (Preamble, Capabilities) {
        let preamble = Preamble {
            protocol: PROTOCOL_VERSION,
            software: "0.0.9-old".to_owned(),
        };
        (preamble, Capabilities::TUNNEL.without(Capability::TwoWay))
    }

    fn assert_names_both_versions(message: &str) {
        assert!(message.contains("0.0.9-old"), "{message}");
        assert!(message.contains(SOFTWARE_VERSION), "{message}");
        assert!(
            message.contains(&format!("protocol v{PROTOCOL_VERSION}")),
            "{message}"
        );
        assert!(message.contains("two-way"), "{message}");
    }

    #[tokio::test]
    async fn the_manager_refuses_a_laptop_without_two_way_streams() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move { server_handshake(&mut b, "t").await });
        let (preamble, offers) = old_peer();
        a.write_all(&preamble.encode()).await.unwrap();
        let hello = Hello {
            token: "t".to_owned(),
            capabilities: offers,
        };
        write_frame(&mut a, &hello.encode()).await.unwrap();
        let server_err = server.await.unwrap().unwrap_err();
        assert!(matches!(
            server_err,
            HandshakeError::MissingCapabilities { missing, .. }
                if missing == Capabilities::empty().with(Capability::TwoWay)
        ));
        assert_names_both_versions(&server_err.to_string());
        // What the old laptop shows: the manager's reason, after its own preamble.
        assert_eq!(Preamble::read(&mut a).await.unwrap(), Preamble::ours());
        let reply = HelloReply::decode(&expect_frame(&mut a, MAX_HELLO, "reply").await.unwrap());
        match reply.unwrap() {
            HelloReply::Rejected { reason } => assert_names_both_versions(&reason),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_laptop_refuses_a_manager_without_two_way_streams() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let manager = tokio::spawn(async move {
            let (preamble, offers) = old_peer();
            let laptop = Preamble::read(&mut b).await.unwrap();
            let hello = Hello::decode(&expect_frame(&mut b, MAX_HELLO, "hello").await.unwrap());
            b.write_all(&preamble.encode()).await.unwrap();
            // A manager from before `two-way` answered with what both lists held.
            let capabilities = offers.common(hello.unwrap().capabilities);
            let reply = HelloReply::Accepted { capabilities };
            write_frame(&mut b, &reply.encode()).await.unwrap();
            laptop
        });
        let err = client_handshake(&mut a, "t").await.unwrap_err();
        assert!(matches!(err, HandshakeError::MissingCapabilities { .. }));
        assert_names_both_versions(&err.to_string());
        assert_eq!(manager.await.unwrap(), Preamble::ours());
    }

    #[tokio::test]
    async fn terms_decide_what_is_required() {
        // A manager that offers only DNS and requires nothing suits a client that needs only
        // DNS; both learn what both offer.
        let minimal = Terms {
            offers: Capabilities::empty().with(Capability::Dns),
            requires: Capabilities::empty(),
            ..Terms::MANAGER
        };
        let dns_client = Terms {
            offers: Capabilities::all(),
            requires: minimal.offers,
            ..Terms::LAPTOP
        };
        let (mut a, mut b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move { server_handshake_with(&mut b, "t", minimal).await });
        let accepted = client_handshake_with(&mut a, "t", dns_client)
            .await
            .unwrap();
        assert_eq!(accepted.capabilities, minimal.offers);
        assert_eq!(server.await.unwrap().unwrap().capabilities, minimal.offers);
    }

    /// Hello and HelloReply as protocol v1 declared them: the layout this build must keep.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V1Hello {
        token: String,
        capabilities: Vec<String>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum V1HelloReply {
        Accepted { capabilities: Vec<String> },
        Rejected { reason: String },
    }

    #[test]
    fn the_layout_is_protocol_v1s() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let v1 = V1Hello {
            token: "t".to_owned(),
            capabilities: names(&["tcp", "udp", "dns", "control"]),
        };
        let hello = Hello::decode(&encode(&v1)).unwrap();
        assert_eq!(hello.capabilities, old_peer().1);
        let back: V1Hello = decode("v1 hello", &hello.encode()).unwrap();
        assert_eq!(back.token, "t");
        assert_eq!(back.capabilities, names(&["control", "tcp", "udp", "dns"]));

        let reply = HelloReply::Accepted {
            capabilities: Capabilities::TUNNEL,
        };
        let v1: V1HelloReply = decode("v1 hello reply", &reply.encode()).unwrap();
        assert_eq!(
            v1,
            V1HelloReply::Accepted {
                capabilities: names(&["control", "tcp", "udp", "dns", "two-way"])
            }
        );
        let rejected = V1HelloReply::Rejected {
            reason: "no".to_owned(),
        };
        assert_eq!(
            HelloReply::decode(&encode(&rejected)).unwrap(),
            HelloReply::Rejected {
                reason: "no".to_owned()
            }
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = Hello {
            token: "t".to_owned(),
            capabilities: Capabilities::all(),
        }
        .encode();
        bytes.push(0);
        assert!(Hello::decode(&bytes).is_err());
    }

    fn any_capabilities() -> impl Strategy<Value = Capabilities> {
        proptest::collection::vec(proptest::sample::select(Capability::ALL.to_vec()), 0..6)
            .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn preamble_round_trips(protocol: u16, software in "[ -~]{0,40}") {
            let p = Preamble { protocol, software };
            prop_assert_eq!(Preamble::decode(&p.encode()).unwrap(), p);
        }

        #[test]
        fn hello_round_trips(token in ".{0,64}", capabilities in any_capabilities()) {
            let h = Hello { token, capabilities };
            prop_assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        }

        #[test]
        fn hello_reply_round_trips(capabilities in any_capabilities(), reason in ".{0,64}") {
            for reply in [HelloReply::Accepted { capabilities }, HelloReply::Rejected { reason }] {
                prop_assert_eq!(HelloReply::decode(&reply.encode()).unwrap(), reply);
            }
        }

        #[test]
        fn unknown_capability_names_are_ignored(names in proptest::collection::vec("[a-z-]{0,12}", 0..8)) {
            let v1 = V1Hello { token: String::new(), capabilities: names.clone() };
            let hello = Hello::decode(&encode(&v1)).unwrap();
            let known: Capabilities = names.iter().filter_map(|n| Capability::from_name(n)).collect();
            prop_assert_eq!(hello.capabilities, known);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Preamble::decode(&bytes);
            let _ = Hello::decode(&bytes);
            let _ = HelloReply::decode(&bytes);
        }
    }
}
