//! The wire protocol: everything one side writes and the other decodes.
//!
//! A connection starts with the [`handshake`] on the raw byte stream, in which both sides
//! agree on [`capability`] sets. After it both sides run a yamux session over the same
//! stream; either side may open yamux streams, and every stream starts with its opener's
//! [`flow::FlowRequest`] and carries one flow: a TCP connection, a UDP association
//! ([`datagram`] frames), one DNS exchange, or the [`control`] channel.
//!
//! Messages are postcard-encoded serde values inside length-prefixed [`frame`]s whose size is
//! bounded, so a decoder never allocates more than the frame limit and never panics.

pub mod capability;
pub mod control;
pub mod datagram;
pub mod flow;
pub mod frame;
pub mod handshake;
pub mod intercept;
pub mod route;

use thiserror::Error;

/// Why bytes from the peer could not be turned into a message.
#[derive(Debug, Error)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("malformed {what}: {source}")]
    Malformed {
        what: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error("the peer is not a tether endpoint (bad magic bytes)")]
    BadMagic,
    #[error("the peer closed the connection during the {0}")]
    UnexpectedEof(&'static str),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Decodes one postcard value that must span the whole buffer.
pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, WireError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|source| WireError::Malformed { what, source })?;
    if !rest.is_empty() {
        return Err(WireError::Malformed {
            what,
            source: postcard::Error::DeserializeBadEncoding,
        });
    }
    Ok(value)
}

/// Encodes a value; serializing our own types into a Vec cannot fail.
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // postcard only fails to serialize for unsupported serde features (e.g. unknown-length
    // sequences), which none of the wire types use.
    postcard::to_stdvec(value).expect("wire types are postcard-serializable")
}
