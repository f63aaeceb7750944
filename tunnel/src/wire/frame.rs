//! Length-prefixed frames: a big-endian `u32` length, then that many bytes.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::WireError;

/// The largest control or request frame either side accepts.
pub const MAX_FRAME: usize = 64 * 1024;

/// Reads one frame of at most `max` bytes. `Ok(None)` means the stream ended cleanly
/// before a new frame began.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, WireError> {
    let mut len = [0u8; 4];
    let mut filled = 0;
    while filled < len.len() {
        let n = reader.read(&mut len[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(WireError::UnexpectedEof("frame header"))
            };
        }
        filled += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(WireError::FrameTooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => WireError::UnexpectedEof("frame body"),
            _ => WireError::Io(e),
        })?;
    Ok(Some(body))
}

/// Writes one frame (header and body in a single write).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    body: &[u8],
) -> Result<(), WireError> {
    let len = u32::try_from(body.len()).map_err(|_| WireError::FrameTooLarge {
        len: body.len(),
        max: u32::MAX as usize,
    })?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(body);
    writer.write_all(&buf).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads a frame that must be present, naming what was expected when the stream ended.
pub async fn expect_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
    what: &'static str,
) -> Result<Vec<u8>, WireError> {
    read_frame(reader, max)
        .await?
        .ok_or(WireError::UnexpectedEof(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").await.unwrap();
        write_frame(&mut buf, b"").await.unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r, 16).await.unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 16).await.unwrap().unwrap(), b"");
        assert!(read_frame(&mut r, 16).await.unwrap().is_none());

        let mut r = &buf[..];
        assert!(matches!(
            read_frame(&mut r, 4).await,
            Err(WireError::FrameTooLarge { len: 5, max: 4 })
        ));
        let mut r = &buf[..6];
        assert!(matches!(
            read_frame(&mut r, 16).await,
            Err(WireError::UnexpectedEof(_))
        ));
        let mut r = &buf[..2];
        assert!(matches!(
            read_frame(&mut r, 16).await,
            Err(WireError::UnexpectedEof(_))
        ));
    }
}
