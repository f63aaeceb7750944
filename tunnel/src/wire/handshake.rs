//! The versioned handshake that opens every tunnel connection.
//!
//! Each side first sends a fixed preamble, `TTHR`, the protocol version (`u16`, big endian)
//! and its software version (a `u8` length and UTF-8 bytes). The preamble's layout never
//! changes, so two peers of different protocol versions can still tell each other which
//! versions they run. When the protocol versions match, the laptop sends a [`Hello`] frame
//! with its token and capabilities, and the manager answers with a [`HelloReply`].

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame::{expect_frame, write_frame};
use super::{WireError, decode, encode};

/// The protocol this build speaks. Bump it on any incompatible change of the wire format.
pub const PROTOCOL_VERSION: u16 = 1;
/// The software version reported to the peer.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

const MAGIC: &[u8; 4] = b"TTHR";
/// A hello frame holds a token and a few short strings; anything bigger is hostile.
const MAX_HELLO: usize = 4096;

/// Capabilities this build offers; the session uses what both sides list.
pub const CAPABILITIES: &[&str] = &["tcp", "udp", "dns", "control"];

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

/// The laptop's introduction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub token: String,
    pub capabilities: Vec<String>,
}

/// The manager's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    Accepted { capabilities: Vec<String> },
    Rejected { reason: String },
}

impl Hello {
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode("hello", bytes)
    }
}

impl HelloReply {
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode("hello reply", bytes)
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
}

/// What the laptop learns from a successful handshake.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub peer: Preamble,
    /// Capabilities both sides support.
    pub capabilities: Vec<String>,
}

/// Runs the laptop's side of the handshake.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    token: &str,
) -> Result<Accepted, HandshakeError> {
    io.write_all(&Preamble::ours().encode())
        .await
        .map_err(WireError::Io)?;
    let hello = Hello {
        token: token.to_owned(),
        capabilities: CAPABILITIES.iter().map(|c| (*c).to_owned()).collect(),
    };
    write_frame(io, &encode(&hello)).await?;
    let peer = Preamble::read(io).await?;
    if peer.protocol != PROTOCOL_VERSION {
        return Err(HandshakeError::incompatible(peer));
    }
    let reply = HelloReply::decode(&expect_frame(io, MAX_HELLO, "hello reply").await?)?;
    match reply {
        HelloReply::Accepted { capabilities } => Ok(Accepted {
            peer,
            capabilities: common(&capabilities),
        }),
        HelloReply::Rejected { reason } => Err(HandshakeError::Rejected(reason)),
    }
}

/// What the manager learns from a successful handshake.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub peer: Preamble,
    pub capabilities: Vec<String>,
}

/// Runs the manager's side of the handshake, checking the token in constant time.
pub async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    expected_token: &str,
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
        write_frame(io, &encode(&reply)).await?;
        return Err(HandshakeError::BadToken);
    }
    let capabilities = common(&hello.capabilities);
    write_frame(
        io,
        &encode(&HelloReply::Accepted {
            capabilities: capabilities.clone(),
        }),
    )
    .await?;
    Ok(Admitted { peer, capabilities })
}

fn common(theirs: &[String]) -> Vec<String> {
    CAPABILITIES
        .iter()
        .filter(|c| theirs.iter().any(|t| t == *c))
        .map(|c| (*c).to_owned())
        .collect()
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
        assert_eq!(accepted.capabilities, CAPABILITIES);
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

    proptest! {
        #[test]
        fn preamble_round_trips(protocol: u16, software in "[ -~]{0,40}") {
            let p = Preamble { protocol, software };
            prop_assert_eq!(Preamble::decode(&p.encode()).unwrap(), p);
        }

        #[test]
        fn hello_round_trips(token in ".{0,64}", caps in proptest::collection::vec("[a-z]{1,8}", 0..6)) {
            let h = Hello { token, capabilities: caps };
            prop_assert_eq!(Hello::decode(&encode(&h)).unwrap(), h);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Preamble::decode(&bytes);
            let _ = Hello::decode(&bytes);
            let _ = HelloReply::decode(&bytes);
        }
    }
}
