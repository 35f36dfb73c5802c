//! SPDY/3.1 frames, as much of the protocol as Kubernetes' port-forward uses: kubectl opens
//! streams (SYN_STREAM) carrying `port`/`streamType`/`requestID` headers, the server answers each
//! (SYN_REPLY), data flows in DATA frames, FIN flags half-close, RST_STREAM aborts, PING is echoed
//! and GOAWAY ends the session.
//!
//! Header blocks are compressed with one zlib stream per direction for the whole connection,
//! primed with SPDY/3's fixed dictionary and sync-flushed after each block — so every frame that
//! carries a block (SYN_STREAM, SYN_REPLY, HEADERS) must pass through the same inflater in order,
//! even one whose headers are then ignored. Flow control (SETTINGS, WINDOW_UPDATE) is read and
//! ignored: kubectl's SPDY library (moby/spdystream) neither sends window updates nor honours them.
//!
//! No maintained Rust crate speaks SPDY any more (it was superseded by HTTP/2), so the framing is
//! written here; it is small and fully covered by the tests below and by kubectl itself in
//! `tests/kubectl.rs`.

use std::io;
use std::sync::LazyLock;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
/// RST_STREAM status: the stream was refused before any processing.
pub const REFUSED_STREAM: u32 = 3;
/// The largest control frame accepted (kubectl's are a few hundred bytes); DATA frames may be as
/// large as the format allows (16 MiB), as moby/spdystream's are.
const MAX_CONTROL: usize = 1 << 20;
/// The largest header block accepted once inflated.
const MAX_HEADERS: usize = 256 * 1024;

/// SPDY/3's header-compression dictionary (draft 3, section 2.6.10.1): length-prefixed header
/// names and common values, then a run of common status lines, dates and media types.
static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
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
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut dictionary = Vec::new();
    for word in WORDS {
        dictionary.extend_from_slice(&(word.len() as u32).to_be_bytes());
        dictionary.extend_from_slice(word.as_bytes());
    }
    dictionary.extend_from_slice(TAIL.as_bytes());
    dictionary
});

/// A stream's headers, names lowercased as SPDY requires.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of a header (SPDY joins several values with NUL).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.split('\0').next().unwrap_or(v))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    SynStream {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last_good: u32,
        status: u32,
    },
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    /// SETTINGS, HEADERS, WINDOW_UPDATE and unknown control frames: nothing port-forward acts on.
    Ignored,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn u32_at(bytes: &[u8], at: usize) -> io::Result<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| invalid("SPDY frame shorter than its fields"))
}

/// Reads frames from one direction of a connection.
pub struct FrameReader<R> {
    io: R,
    inflate: Decompress,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R) -> Self {
        Self { io, inflate: Decompress::new(true) }
    }

    /// The next frame; `None` once the peer closed the connection.
    pub async fn next(&mut self) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match self.io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let flags = head[4];
        let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if first & 0x8000_0000 != 0 && length > MAX_CONTROL {
            return Err(invalid(format!("SPDY control frame of {length} bytes is larger than {MAX_CONTROL}")));
        }
        let mut payload = vec![0u8; length];
        self.io.read_exact(&mut payload).await?;
        let fin = flags & FLAG_FIN != 0;
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data { stream: first, fin, data: payload.into() }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(invalid(format!("SPDY version {version} is not supported (only 3)")));
        }
        let stream = || u32_at(&payload, 0).map(|id| id & 0x7fff_ffff);
        Ok(Some(match (first & 0xffff) as u16 {
            SYN_STREAM => {
                // Stream id, associated stream id, priority and slot precede the header block.
                let headers = self.headers(payload.get(10..).ok_or_else(|| invalid("short SYN_STREAM"))?)?;
                Frame::SynStream { stream: stream()?, fin, headers }
            }
            SYN_REPLY => {
                let headers = self.headers(payload.get(4..).ok_or_else(|| invalid("short SYN_REPLY"))?)?;
                Frame::SynReply { stream: stream()?, fin, headers }
            }
            RST_STREAM => Frame::RstStream { stream: stream()?, status: u32_at(&payload, 4)? },
            PING => Frame::Ping(u32_at(&payload, 0)?),
            GOAWAY => Frame::GoAway { last_good: stream()?, status: u32_at(&payload, 4).unwrap_or(0) },
            HEADERS => {
                // Ignored, but its block still advances the shared zlib stream.
                self.headers(payload.get(4..).ok_or_else(|| invalid("short HEADERS"))?)?;
                Frame::Ignored
            }
            _ => Frame::Ignored,
        }))
    }

    fn headers(&mut self, compressed: &[u8]) -> io::Result<Headers> {
        let block = self.inflate_block(compressed)?;
        parse_block(&block)
    }

    /// Inflates one sync-flushed block of the connection's zlib stream.
    fn inflate_block(&mut self, compressed: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(compressed.len() * 4 + 256);
        let mut input = compressed;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity());
            }
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let result = self.inflate.decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.inflate.total_in() - before_in) as usize..];
            let progressed = self.inflate.total_in() != before_in || self.inflate.total_out() != before_out;
            match result {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(&DICTIONARY).map_err(|e| invalid(format!("SPDY dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return Err(invalid(format!("SPDY header block: {e}"))),
            }
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            if !progressed {
                return Err(invalid("SPDY header block does not inflate"));
            }
            if out.len() > MAX_HEADERS {
                return Err(invalid(format!("SPDY header block inflates past {MAX_HEADERS} bytes")));
            }
        }
    }
}

/// Parses an uncompressed header block: a count, then length-prefixed names and values.
fn parse_block(block: &[u8]) -> io::Result<Headers> {
    let count = u32_at(block, 0)? as usize;
    let mut at = 4;
    let mut take = || -> io::Result<String> {
        let len = u32_at(block, at)? as usize;
        let bytes = block.get(at + 4..at + 4 + len).ok_or_else(|| invalid("SPDY header longer than its block"))?;
        at += 4 + len;
        String::from_utf8(bytes.to_vec()).map_err(|_| invalid("SPDY header is not UTF-8"))
    };
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name = take()?.to_ascii_lowercase();
        headers.push((name, take()?));
    }
    Ok(Headers(headers))
}

/// Writes frames into one direction of a connection.
pub struct FrameWriter<W> {
    io: W,
    deflate: Compress,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(io: W) -> Self {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate.set_dictionary(&DICTIONARY).expect("a fresh deflate stream takes a dictionary");
        Self { io, deflate }
    }

    pub async fn write(&mut self, frame: &Frame) -> io::Result<()> {
        let bytes = self.encode(frame)?;
        self.io.write_all(&bytes).await?;
        self.io.flush().await
    }

    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.io.shutdown().await
    }

    fn encode(&mut self, frame: &Frame) -> io::Result<Vec<u8>> {
        let fin = |fin: bool| if fin { FLAG_FIN } else { 0 };
        let (kind, flags, payload) = match frame {
            Frame::Data { stream, fin: f, data } => {
                let mut bytes = Vec::with_capacity(8 + data.len());
                bytes.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                bytes.extend_from_slice(&length_word(fin(*f), data.len())?);
                bytes.extend_from_slice(data);
                return Ok(bytes);
            }
            Frame::SynStream { stream, fin: f, headers } => {
                let mut payload = stream.to_be_bytes().to_vec();
                payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // no associated stream, priority 0, slot 0
                payload.extend(self.deflate_block(&encode_block(headers))?);
                (SYN_STREAM, fin(*f), payload)
            }
            Frame::SynReply { stream, fin: f, headers } => {
                let mut payload = stream.to_be_bytes().to_vec();
                payload.extend(self.deflate_block(&encode_block(headers))?);
                (SYN_REPLY, fin(*f), payload)
            }
            Frame::RstStream { stream, status } => {
                (RST_STREAM, 0, [stream.to_be_bytes(), status.to_be_bytes()].concat())
            }
            Frame::Ping(id) => (PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway { last_good, status } => {
                (GOAWAY, 0, [last_good.to_be_bytes(), status.to_be_bytes()].concat())
            }
            Frame::Ignored => return Ok(Vec::new()),
        };
        let mut bytes = Vec::with_capacity(8 + payload.len());
        bytes.extend_from_slice(&(0x8000_0000 | u32::from(VERSION) << 16 | u32::from(kind)).to_be_bytes());
        bytes.extend_from_slice(&length_word(flags, payload.len())?);
        bytes.extend(payload);
        Ok(bytes)
    }

    /// Deflates one header block and sync-flushes, so the peer can inflate it on its own.
    fn deflate_block(&mut self, block: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut input = block;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity());
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| invalid(format!("SPDY header compression: {e}")))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn length_word(flags: u8, length: usize) -> io::Result<[u8; 4]> {
    if length > 0x00ff_ffff {
        return Err(invalid(format!("SPDY frame payload of {length} bytes is too large")));
    }
    Ok((u32::from(flags) << 24 | length as u32).to_be_bytes())
}

fn encode_block(headers: &Headers) -> Vec<u8> {
    let mut block = (headers.0.len() as u32).to_be_bytes().to_vec();
    for (name, value) in &headers.0 {
        for text in [name.to_ascii_lowercase().as_str(), value.as_str()] {
            block.extend_from_slice(&(text.len() as u32).to_be_bytes());
            block.extend_from_slice(text.as_bytes());
        }
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        // The length and digest of the dictionary every SPDY/3 implementation primes zlib with; a
        // single wrong byte makes kubectl's header blocks fail to inflate.
        assert_eq!(DICTIONARY.len(), 1423);
        let digest = sha2::Sha256::digest(DICTIONARY.as_slice());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02");
    }

    #[tokio::test]
    async fn frames_round_trip_through_one_zlib_stream_per_direction() {
        let frames = vec![
            Frame::SynStream {
                stream: 1,
                fin: true,
                headers: headers(&[("streamType", "error"), ("port", "8080"), ("requestID", "0")]),
            },
            Frame::SynStream {
                stream: 3,
                fin: false,
                headers: headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::Data { stream: 3, fin: false, data: Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n") },
            Frame::SynReply { stream: 3, fin: false, headers: Headers::default() },
            Frame::Data { stream: 3, fin: true, data: Bytes::new() },
            Frame::RstStream { stream: 1, status: REFUSED_STREAM },
            Frame::Ping(7),
            Frame::GoAway { last_good: 3, status: 0 },
        ];
        let mut wire = Vec::new();
        let mut writer = FrameWriter::new(&mut wire);
        for frame in &frames {
            writer.write(frame).await.expect("encode");
        }
        let mut reader = FrameReader::new(wire.as_slice());
        let mut read = Vec::new();
        while let Some(frame) = reader.next().await.expect("decode") {
            read.push(frame);
        }
        // Names come back lowercased, as they travel.
        let mut expected = frames.clone();
        if let Frame::SynStream { headers, .. } = &mut expected[0] {
            *headers = self::headers(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]);
        }
        assert_eq!(read, expected);
        let Frame::SynStream { headers, .. } = &read[1] else { unreachable!() };
        assert_eq!(headers.get("streamType"), Some("data"));
    }

    #[tokio::test]
    async fn a_block_compressed_without_the_dictionary_is_an_error_not_a_hang() {
        let mut plain = Compress::new(Compression::best(), true);
        let mut block = Vec::with_capacity(256);
        plain.compress_vec(&encode_block(&headers(&[("port", "80")])), &mut block, FlushCompress::Sync).unwrap();
        let mut frame = vec![0x80, 0x03, 0x00, 0x01, 0x00];
        frame.extend_from_slice(&((10 + block.len()) as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        frame.extend(block);
        // A zlib stream without a preset dictionary inflates fine; its block then parses.
        let mut reader = FrameReader::new(frame.as_slice());
        let parsed = reader.next().await.expect("a plain zlib block inflates");
        assert!(matches!(parsed, Some(Frame::SynStream { stream: 1, .. })));
        // A truncated frame is an error.
        let mut reader = FrameReader::new(&frame[..frame.len() - 3]);
        assert!(reader.next().await.is_err());
    }
}
