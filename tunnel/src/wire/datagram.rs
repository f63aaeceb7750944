//! UDP datagrams over a stream: a big-endian `u16` length, then the payload. Boundaries
//! survive the byte stream, and a datagram can never exceed what UDP itself allows.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::WireError;

/// Splits the first datagram off a buffer: `None` when more bytes are needed. Any length
/// is valid, so a buffer is either complete or short, never malformed.
pub fn split_datagram(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let head = buf.get(..2)?;
    let len = u16::from_be_bytes([head[0], head[1]]) as usize;
    buf[2..].split_at_checked(len)
}

/// Reads one datagram into `buf` (which must hold 65535 bytes); `Ok(None)` on a clean end.
pub async fn read_datagram<'b, R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &'b mut [u8],
) -> Result<Option<&'b [u8]>, WireError> {
    let mut head = [0u8; 2];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u16::from_be_bytes(head) as usize;
    let body = buf
        .get_mut(..len)
        .ok_or(WireError::FrameTooLarge { len, max: 0 })?;
    reader.read_exact(body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::UnexpectedEof("datagram"),
        _ => WireError::Io(e),
    })?;
    Ok(Some(body))
}

/// Writes one datagram; payloads longer than 65535 bytes cannot be UDP and are refused.
pub async fn write_datagram<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
) -> Result<(), WireError> {
    let len = u16::try_from(payload.len()).map_err(|_| WireError::FrameTooLarge {
        len: payload.len(),
        max: u16::MAX as usize,
    })?;
    let mut frame = Vec::with_capacity(2 + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn boundaries_survive(datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut stream = Vec::new();
                for d in &datagrams {
                    write_datagram(&mut stream, d).await.unwrap();
                }
                let mut rest = &stream[..];
                for d in &datagrams {
                    let (got, tail) = split_datagram(rest).unwrap();
                    assert_eq!(got, &d[..]);
                    rest = tail;
                }
                assert!(rest.is_empty());
                let mut reader = &stream[..];
                let mut buf = vec![0u8; 65535];
                for d in &datagrams {
                    assert_eq!(read_datagram(&mut reader, &mut buf).await.unwrap().unwrap(), &d[..]);
                }
                assert!(read_datagram(&mut reader, &mut buf).await.unwrap().is_none());
            });
        }

        #[test]
        fn split_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = split_datagram(&bytes);
        }
    }
}
