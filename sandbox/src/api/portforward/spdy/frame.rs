//! SPDY/3.1 frames, as far as a port-forward or exec server needs them: parsing what a client
//! sends (SYN_STREAM, DATA, RST_STREAM, PING, GOAWAY and the frames it may ignore) and writing
//! SYN_REPLY, DATA, PING, RST_STREAM and WINDOW_UPDATE. Header blocks are zlib streams that
//! run across a whole session in each direction, with the dictionary the SPDY/3 draft
//! defines (section 2.6.10.1).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The version this server speaks.
const VERSION: u16 = 3;
/// Frame flag: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// The largest frame accepted (the 24-bit length allows 16 MiB; no client sends that much).
pub const MAX_FRAME: usize = 1 << 20;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const WINDOW_UPDATE: u16 = 9;

/// The largest header block accepted once inflated: a port-forward's headers are a few
/// dozen bytes, and a small compressed block could otherwise inflate to gigabytes.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// RST_STREAM status codes used here.
pub const PROTOCOL_ERROR: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("SPDY version {0} is not supported (3 is)")]
    Version(u16),
    #[error("a {kind} frame of {len} bytes is malformed")]
    Malformed { kind: &'static str, len: usize },
    #[error("a frame of {0} bytes is larger than this server accepts")]
    TooLarge(usize),
    #[error("header block: {0}")]
    Headers(String),
}

/// A frame from the client.
#[derive(Debug, PartialEq)]
pub enum Frame {
    SynStream {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    Data {
        stream: u32,
        fin: bool,
        payload: Bytes,
    },
    RstStream {
        stream: u32,
    },
    Ping(u32),
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, HEADERS, NOOP...: nothing this server acts on.
    Ignored,
}

/// The SPDY/3 header dictionary: length-prefixed header names and values, then a run of
/// status codes, dates and media types.
pub fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505",
        "203 Non-Authoritative Information",
        "204 No Content",
        "301 Moved Permanently",
        "400 Bad Request",
        "401 Unauthorized",
        "403 Forbidden",
        "404 Not Found",
        "500 Internal Server Error",
        "501 Not Implemented",
        "503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
        "application/xhtml+xml,text/plain,text/javascript,",
        "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut dict = Vec::with_capacity(1424);
    for w in WORDS {
        dict.extend_from_slice(&(w.len() as u32).to_be_bytes());
        dict.extend_from_slice(w.as_bytes());
    }
    dict.extend_from_slice(TAIL.as_bytes());
    dict
}

/// Reads the client's header blocks: one zlib stream for the whole session.
pub struct HeaderReader {
    inflate: Decompress,
    dictionary: Vec<u8>,
}

impl Default for HeaderReader {
    fn default() -> Self {
        HeaderReader {
            inflate: Decompress::new(true),
            dictionary: dictionary(),
        }
    }
}

impl HeaderReader {
    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            if out.len() > MAX_HEADER_BLOCK {
                return Err(FrameError::Headers(format!(
                    "the block inflates to more than {MAX_HEADER_BLOCK} bytes"
                )));
            }
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().min(MAX_HEADER_BLOCK));
            }
            let before = self.inflate.total_in();
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.inflate.total_in() - before) as usize..];
            match result {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) if input.is_empty() && out.len() < out.capacity() => return Ok(out),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    let wanted = e.needs_dictionary();
                    let have = self
                        .inflate
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| FrameError::Headers(e.to_string()))?;
                    if wanted != Some(have) {
                        return Err(FrameError::Headers(format!(
                            "the client compressed with dictionary {wanted:08x?}, not SPDY/3's {have:08x}"
                        )));
                    }
                }
                Err(e) => return Err(FrameError::Headers(e.to_string())),
            }
        }
    }

    /// Decodes one SYN_STREAM's header block into (name, value) pairs.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, FrameError> {
        let plain = self.inflate(block)?;
        let bad = || FrameError::Headers("truncated name/value block".into());
        let mut b = &plain[..];
        let take = |b: &mut &[u8]| -> Result<String, FrameError> {
            if b.remaining() < 4 {
                return Err(bad());
            }
            let len = b.get_u32() as usize;
            if b.remaining() < len {
                return Err(bad());
            }
            let s = String::from_utf8_lossy(&b[..len]).into_owned();
            b.advance(len);
            Ok(s)
        };
        if b.remaining() < 4 {
            return Err(bad());
        }
        let count = b.get_u32() as usize;
        let mut headers = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let name = take(&mut b)?;
            let value = take(&mut b)?;
            headers.push((name.to_ascii_lowercase(), value));
        }
        Ok(headers)
    }
}

/// Writes this server's header blocks: one zlib stream for the session. No dictionary is
/// needed to compress what a reader with the dictionary can read.
pub struct HeaderWriter {
    deflate: Compress,
}

impl Default for HeaderWriter {
    fn default() -> Self {
        HeaderWriter {
            deflate: Compress::new(Compression::default(), true),
        }
    }
}

impl HeaderWriter {
    fn encode(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.put_u32(headers.len() as u32);
        for (name, value) in headers {
            plain.put_u32(name.len() as u32);
            plain.put_slice(name.as_bytes());
            plain.put_u32(value.len() as u32);
            plain.put_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            // Compressing into memory only fails on misuse of the stream, which this is not.
            let _ = self
                .deflate
                .compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(self.deflate.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

fn control(buf: &mut BytesMut, kind: u16, flags: u8, body: &[u8]) {
    buf.put_u16(0x8000 | VERSION);
    buf.put_u16(kind);
    buf.put_u32((u32::from(flags) << 24) | body.len() as u32);
    buf.put_slice(body);
}

/// SYN_REPLY for `stream` with `headers`.
pub fn syn_reply(headers: &mut HeaderWriter, stream: u32, pairs: &[(&str, &str)]) -> Bytes {
    let mut body = Vec::new();
    body.put_u32(stream & 0x7fff_ffff);
    body.extend(headers.encode(pairs));
    let mut buf = BytesMut::new();
    control(&mut buf, SYN_REPLY, 0, &body);
    buf.freeze()
}

pub fn data(stream: u32, fin: bool, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + payload.len());
    buf.put_u32(stream & 0x7fff_ffff);
    let flags = if fin { FLAG_FIN } else { 0 };
    buf.put_u32((u32::from(flags) << 24) | payload.len() as u32);
    buf.put_slice(payload);
    buf.freeze()
}

pub fn rst_stream(stream: u32, status: u32) -> Bytes {
    let mut body = Vec::new();
    body.put_u32(stream & 0x7fff_ffff);
    body.put_u32(status);
    let mut buf = BytesMut::new();
    control(&mut buf, RST_STREAM, 0, &body);
    buf.freeze()
}

pub fn ping(id: u32) -> Bytes {
    let mut buf = BytesMut::new();
    control(&mut buf, PING, 0, &id.to_be_bytes());
    buf.freeze()
}

/// WINDOW_UPDATE (stream 0: the session's window).
pub fn window_update(stream: u32, delta: u32) -> Bytes {
    let mut body = Vec::new();
    body.put_u32(stream & 0x7fff_ffff);
    body.put_u32(delta & 0x7fff_ffff);
    let mut buf = BytesMut::new();
    control(&mut buf, WINDOW_UPDATE, 0, &body);
    buf.freeze()
}

/// Takes one whole frame off the front of `buf`, if it holds one.
pub fn parse(buf: &mut BytesMut, headers: &mut HeaderReader) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = (u32::from_be_bytes([0, buf[5], buf[6], buf[7]])) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let mut frame = buf.split_to(8 + len).freeze();
    let first = frame.get_u32();
    let flags = frame.get_u8();
    frame.advance(3);
    let fin = flags & FLAG_FIN != 0;
    if first & 0x8000_0000 == 0 {
        return Ok(Some(Frame::Data {
            stream: first & 0x7fff_ffff,
            fin,
            payload: frame,
        }));
    }
    let version = ((first >> 16) & 0x7fff) as u16;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let malformed = |kind| FrameError::Malformed { kind, len };
    Ok(Some(match (first & 0xffff) as u16 {
        SYN_STREAM => {
            if frame.len() < 10 {
                return Err(malformed("SYN_STREAM"));
            }
            let stream = frame.get_u32() & 0x7fff_ffff;
            frame.advance(6);
            Frame::SynStream {
                stream,
                fin,
                headers: headers.decode(&frame)?,
            }
        }
        RST_STREAM => {
            if frame.len() < 8 {
                return Err(malformed("RST_STREAM"));
            }
            Frame::RstStream {
                stream: frame.get_u32() & 0x7fff_ffff,
            }
        }
        PING => {
            if frame.len() < 4 {
                return Err(malformed("PING"));
            }
            Frame::Ping(frame.get_u32())
        }
        GOAWAY => Frame::GoAway,
        _ => Frame::Ignored,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's SYN_STREAM, compressed the way Go's zlib writer does it: with the
    /// dictionary.
    fn syn_stream(deflate: &mut Compress, stream: u32, pairs: &[(&str, &str)]) -> BytesMut {
        let mut plain = Vec::new();
        plain.put_u32(pairs.len() as u32);
        for (n, v) in pairs {
            plain.put_u32(n.len() as u32);
            plain.put_slice(n.as_bytes());
            plain.put_u32(v.len() as u32);
            plain.put_slice(v.as_bytes());
        }
        let mut block = Vec::with_capacity(64 * 1024);
        deflate
            .compress_vec(&plain, &mut block, FlushCompress::Sync)
            .unwrap();
        let mut body = Vec::new();
        body.put_u32(stream);
        body.put_u32(0);
        body.put_u16(0);
        body.extend(block);
        let mut buf = BytesMut::new();
        control(&mut buf, SYN_STREAM, 0, &body);
        buf
    }

    #[test]
    fn the_dictionary_has_the_drafts_length_and_checksum() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        let mut d = Compress::new(Compression::default(), true);
        // Adler-32 of the SPDY/3 dictionary, which clients announce in their first block.
        assert_eq!(d.set_dictionary(&dict).unwrap(), 0xe3c6_a7c2);
    }

    #[test]
    fn header_blocks_compressed_with_the_dictionary_decode_across_frames() {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate.set_dictionary(&dictionary()).unwrap();
        let mut reader = HeaderReader::default();
        let mut buf = syn_stream(
            &mut deflate,
            1,
            &[
                ("streamType", "error"),
                ("port", "8080"),
                ("requestID", "0"),
            ],
        );
        buf.extend(syn_stream(
            &mut deflate,
            3,
            &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
        ));
        buf.extend_from_slice(&data(3, true, b"hello"));
        let first = parse(&mut buf, &mut reader).unwrap().unwrap();
        assert_eq!(
            first,
            Frame::SynStream {
                stream: 1,
                fin: false,
                headers: vec![
                    ("streamtype".into(), "error".into()),
                    ("port".into(), "8080".into()),
                    ("requestid".into(), "0".into()),
                ],
            }
        );
        assert!(matches!(
            parse(&mut buf, &mut reader).unwrap(),
            Some(Frame::SynStream { stream: 3, .. })
        ));
        assert_eq!(
            parse(&mut buf, &mut reader).unwrap(),
            Some(Frame::Data {
                stream: 3,
                fin: true,
                payload: Bytes::from_static(b"hello")
            })
        );
        assert_eq!(parse(&mut buf, &mut reader).unwrap(), None);
    }

    #[test]
    fn replies_decode_with_a_dictionary_reader() {
        let mut writer = HeaderWriter::default();
        let mut reader = HeaderReader::default();
        for stream in [1, 3] {
            let mut frame = BytesMut::from(&syn_reply(&mut writer, stream, &[("a", "b")])[..]);
            // Read it back as if it were a SYN_STREAM body: same header block layout after
            // the stream id, so patch the type and pad the extra fields.
            let block = frame.split_off(12);
            let pairs = reader.decode(&block).unwrap();
            assert_eq!(pairs, vec![("a".to_string(), "b".to_string())]);
        }
    }

    #[test]
    fn a_header_block_that_inflates_too_far_is_refused() {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate.set_dictionary(&dictionary()).unwrap();
        let huge = "a".repeat(4 * MAX_HEADER_BLOCK);
        let mut buf = syn_stream(&mut deflate, 1, &[("streamtype", &huge)]);
        // It compresses to a few KiB: small enough for a frame, too much once inflated.
        assert!(buf.len() < MAX_FRAME / 64, "{}", buf.len());
        let err = parse(&mut buf, &mut HeaderReader::default()).unwrap_err();
        assert!(err.to_string().contains("inflates to more than"), "{err}");
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut reader = HeaderReader::default();
        let whole = data(5, false, b"abcdef");
        let mut buf = BytesMut::from(&whole[..7]);
        assert_eq!(parse(&mut buf, &mut reader).unwrap(), None);
        buf.extend_from_slice(&whole[7..]);
        assert!(matches!(
            parse(&mut buf, &mut reader).unwrap(),
            Some(Frame::Data { stream: 5, .. })
        ));
    }
}
