//! Response body framing (RFC 9112 section 6): a known length, chunked, or
//! until the server closes the connection.
//!
//! The decoder works on the connection's read buffer and hands out data as
//! `Bytes` split off that buffer (no copy). It never reads by itself: when it
//! needs more it says so, and the caller reads and calls again, or calls
//! [`Decoder::eof`] when the server closed the connection. Chunk-size lines
//! and trailer sections are handled whole, once their end is in the buffer,
//! so a body split at any byte boundary decodes the same as one read.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The longest chunk-size line accepted (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// The largest trailer section accepted.
const MAX_TRAILERS: usize = 16 << 10;
const MAX_TRAILER_FIELDS: usize = 64;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    Empty,
    Length(u64),
    Chunked,
    /// Until the server closes the connection (no length, not chunked).
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("invalid chunk size line {0:?}")]
    ChunkSize(String),
    #[error("chunk size line longer than {MAX_CHUNK_LINE} bytes")]
    ChunkLineTooLong,
    #[error("chunk data not followed by CRLF")]
    ChunkEnd,
    #[error("trailer section larger than {MAX_TRAILERS} bytes")]
    TrailersTooLarge,
    #[error("invalid trailer section: {0}")]
    Trailers(String),
    #[error("the connection closed after {got} of {expected} body bytes")]
    ShortLength { got: u64, expected: u64 },
    #[error("the connection closed in the middle of a chunked body")]
    ShortChunked,
}

/// Where a body is read from: a buffer, and a way to read more into it.
pub trait Source {
    fn buf(&mut self) -> &mut BytesMut;
    /// Reads more into the buffer; `Ok(0)` is end of stream.
    fn poll_fill(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<usize>>;
}

/// What [`poll_body`] found.
pub enum BodyStep {
    Frame(http_body::Frame<Bytes>),
    /// The body is complete (nothing more to hand out).
    End,
    Read(std::io::Error),
    Framing(FramingError),
}

/// The next piece of a body read from `source`, for an `http_body::Body`
/// (the upstream's response body and the client's request body share this).
/// After a `Frame`, `decoder.is_done()` says whether that was the last one.
pub fn poll_body(
    decoder: &mut Decoder,
    source: &mut impl Source,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<BodyStep> {
    use std::task::Poll;
    loop {
        let step = match decoder.decode(source.buf()) {
            Ok(Decoded::NeedMore) => match source.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => decoder.eof(),
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(BodyStep::Read(e)),
            },
            other => other,
        };
        return Poll::Ready(match step {
            Ok(Decoded::Data(data)) => BodyStep::Frame(http_body::Frame::data(data)),
            Ok(Decoded::Trailers(t)) => BodyStep::Frame(http_body::Frame::trailers(t)),
            Ok(Decoded::End) => BodyStep::End,
            Ok(Decoded::NeedMore) => continue,
            Err(e) => BodyStep::Framing(e),
        });
    }
}

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body is complete.
    End,
    /// The buffer holds no more of the body: read, then call again.
    NeedMore,
}

#[derive(Debug)]
pub struct Decoder {
    state: State,
}

#[derive(Debug)]
enum State {
    Length {
        left: u64,
        total: u64,
    },
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data.
    Data(u64),
    /// After a chunk's data, expecting CRLF.
    DataEnd,
    /// After the last chunk, expecting trailer fields or the final CRLF.
    Trailers,
    UntilClose,
    Done,
}

impl Decoder {
    pub fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length { left: n, total: n },
            Framing::Chunked => State::Size,
            Framing::UntilClose => State::UntilClose,
        };
        Decoder { state }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Body bytes still expected, when that is known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length { left, .. } => Some(left),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of the body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, FramingError> {
        loop {
            match &mut self.state {
                State::Done => return Ok(Decoded::End),
                State::Length { left, .. } => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (buf.len() as u64).min(*left);
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Done;
                    }
                    return Ok(Decoded::Data(buf.split_to(n as usize).freeze()));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                State::Size => {
                    let Some(end) = find_crlf(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&buf[..end])?;
                    let _ = buf.split_to(end + 2);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (buf.len() as u64).min(*left);
                    *left -= n;
                    if *left == 0 {
                        self.state = State::DataEnd;
                    }
                    return Ok(Decoded::Data(buf.split_to(n as usize).freeze()));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|b| *b != b'\r') {
                            return Err(FramingError::ChunkEnd);
                        }
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(FramingError::ChunkEnd);
                    }
                    let _ = buf.split_to(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] == b"\r\n" {
                        let _ = buf.split_to(2);
                        self.state = State::Done;
                        return Ok(Decoded::End);
                    }
                    let Some(end) = find(buf, b"\r\n\r\n") else {
                        if buf.len() > MAX_TRAILERS {
                            return Err(FramingError::TrailersTooLarge);
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    if end + 4 > MAX_TRAILERS {
                        return Err(FramingError::TrailersTooLarge);
                    }
                    let section = buf.split_to(end + 4);
                    self.state = State::Done;
                    return Ok(Decoded::Trailers(trailers(&section)?));
                }
            }
        }
    }

    /// The server closed the connection: the end of an until-close body, an error otherwise.
    pub fn eof(&mut self) -> Result<Decoded, FramingError> {
        match self.state {
            State::Done => Ok(Decoded::End),
            State::UntilClose => {
                self.state = State::Done;
                Ok(Decoded::End)
            }
            State::Length { left, total } => Err(FramingError::ShortLength {
                got: total - left,
                expected: total,
            }),
            _ => Err(FramingError::ShortChunked),
        }
    }
}

/// The position of the first CRLF, refusing lines longer than `max`.
fn find_crlf(buf: &[u8], max: usize) -> Result<Option<usize>, FramingError> {
    match find(buf, b"\r\n") {
        Some(i) if i <= max => Ok(Some(i)),
        Some(_) => Err(FramingError::ChunkLineTooLong),
        None if buf.len() > max + 1 => Err(FramingError::ChunkLineTooLong),
        None => Ok(None),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `1*HEXDIG [ BWS ";" extensions ]`: the size, extensions ignored.
fn chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let bad = || FramingError::ChunkSize(String::from_utf8_lossy(line).into_owned());
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(bad());
    }
    let rest = &line[digits..];
    let rest = rest.trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(bad());
    }
    if rest.iter().any(|b| *b == b'\r' || *b == b'\n' || *b == 0) {
        return Err(bad());
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| bad())?;
    u64::from_str_radix(hex, 16).map_err(|_| bad())
}

fn trailers(section: &[u8]) -> Result<HeaderMap, FramingError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    let parsed = match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, parsed))) => parsed,
        Ok(httparse::Status::Partial) => {
            return Err(FramingError::Trailers("incomplete".into()));
        }
        Err(e) => return Err(FramingError::Trailers(e.to_string())),
    };
    let mut map = HeaderMap::with_capacity(parsed.len());
    for f in parsed.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| FramingError::Trailers(format!("bad field name {:?}", f.name)))?;
        let value = HeaderValue::from_bytes(f.value)
            .map_err(|_| FramingError::Trailers(format!("bad value for {}", f.name)))?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything the decoder yields for `wire` fed in pieces of the given sizes,
    /// then EOF: (body bytes, trailers, the end: bytes left past the body, or the error).
    fn run(
        framing: Framing,
        wire: &[u8],
        pieces: &mut dyn Iterator<Item = usize>,
    ) -> (Vec<u8>, Option<HeaderMap>, Result<usize, FramingError>) {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut body = Vec::new();
        let mut trailers = None;
        loop {
            match d.decode(&mut buf) {
                Ok(Decoded::Data(b)) => {
                    assert!(!b.is_empty(), "empty data frame");
                    body.extend_from_slice(&b);
                }
                Ok(Decoded::Trailers(t)) => trailers = Some(t),
                Ok(Decoded::End) => return (body, trailers, Ok(buf.len() + wire.len() - fed)),
                Ok(Decoded::NeedMore) => {
                    if fed == wire.len() {
                        return match d.eof() {
                            Ok(Decoded::End) => (body, trailers, Ok(buf.len())),
                            Ok(other) => panic!("eof gave {other:?}"),
                            Err(e) => (body, trailers, Err(e)),
                        };
                    }
                    let n = pieces.next().unwrap_or(1).clamp(1, wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
                Err(e) => return (body, trailers, Err(e)),
            }
        }
    }

    /// The same result whether `wire` arrives whole, a byte at a time, or split
    /// in two at every possible position.
    fn at_every_split(
        framing: Framing,
        wire: &[u8],
    ) -> (Vec<u8>, Option<HeaderMap>, Result<usize, FramingError>) {
        let whole = run(framing, wire, &mut std::iter::once(wire.len()));
        let bytewise = run(framing, wire, &mut std::iter::repeat(1));
        assert_eq!(whole, bytewise, "byte by byte differs");
        for cut in 1..wire.len() {
            let split = run(framing, wire, &mut [cut, wire.len() - cut].into_iter());
            assert_eq!(whole, split, "split at {cut} differs");
        }
        whole
    }

    #[test]
    fn content_length_bodies_stop_at_the_length() {
        let (body, _, end) = at_every_split(Framing::Length(5), b"hello");
        assert_eq!(body, b"hello");
        assert_eq!(end, Ok(0));
        // Bytes past the length stay in the buffer (the caller will not reuse the connection).
        let (body, _, end) = at_every_split(Framing::Length(2), b"okEXTRA");
        assert_eq!(body, b"ok");
        assert!(matches!(end, Ok(n) if n > 0));
    }

    #[test]
    fn a_short_content_length_body_is_an_error_not_a_hang() {
        let (body, _, end) = at_every_split(Framing::Length(10), b"hello");
        assert_eq!(body, b"hello");
        assert_eq!(
            end,
            Err(FramingError::ShortLength {
                got: 5,
                expected: 10
            })
        );
        let e = end.expect_err("short");
        assert_eq!(
            e.to_string(),
            "the connection closed after 5 of 10 body bytes"
        );
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let wire = b"5;name=value\r\nhello\r\n1 ; x\r\n \r\nA\r\n0123456789\r\n0;last\r\nX-Sum: 42\r\nX-Other: a b\r\n\r\n";
        let (body, trailers, end) = at_every_split(Framing::Chunked, wire);
        assert_eq!(body, b"hello 0123456789");
        let t = trailers.expect("trailers");
        assert_eq!(t["x-sum"], "42");
        assert_eq!(t["x-other"], "a b");
        assert_eq!(end, Ok(0));

        let (body, trailers, end) = at_every_split(Framing::Chunked, b"2\r\nok\r\n0\r\n\r\n");
        assert_eq!(body, b"ok");
        assert!(trailers.is_none());
        assert_eq!(end, Ok(0));
        // Upper-case hex and leading zeros.
        let (body, _, _) = at_every_split(Framing::Chunked, b"00B\r\nhello world\r\n0\r\n\r\n");
        assert_eq!(body, b"hello world");
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        for (wire, want) in [
            (&b"zz\r\nok\r\n0\r\n\r\n"[..], "invalid chunk size"),
            (b"\r\nok\r\n0\r\n\r\n", "invalid chunk size"),
            (b"2 x\r\nok\r\n0\r\n\r\n", "invalid chunk size"),
            (b"11111111111111111\r\n", "invalid chunk size"),
            (b"2\r\nokX\r\n0\r\n\r\n", "not followed by CRLF"),
            (b"2\r\nok\r\n0\r\nbad trailer\r\n\r\n", "invalid trailer"),
            (b"5\r\nhel", "in the middle of a chunked body"),
            (b"2\r\nok\r\n", "in the middle of a chunked body"),
            (b"2\r\nok\r\n0\r\n", "in the middle of a chunked body"),
        ] {
            let (_, _, end) = at_every_split(Framing::Chunked, wire);
            let e = end.expect_err(&String::from_utf8_lossy(wire));
            assert!(
                e.to_string().contains(want),
                "{:?}: {e}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn endless_chunk_lines_and_trailers_are_refused() {
        let mut wire = b"2;".to_vec();
        wire.extend(std::iter::repeat_n(b'x', MAX_CHUNK_LINE + 10));
        let (_, _, end) = run(Framing::Chunked, &wire, &mut std::iter::repeat(512));
        assert_eq!(end, Err(FramingError::ChunkLineTooLong));
        let mut wire = b"0\r\n".to_vec();
        for i in 0..2000 {
            wire.extend_from_slice(format!("x-t{i}: 1\r\n").as_bytes());
        }
        let (_, _, end) = run(Framing::Chunked, &wire, &mut std::iter::repeat(512));
        assert_eq!(end, Err(FramingError::TrailersTooLarge));
    }

    #[test]
    fn until_close_bodies_end_at_eof() {
        let (body, _, end) = at_every_split(Framing::UntilClose, b"all of it");
        assert_eq!(body, b"all of it");
        assert_eq!(end, Ok(0));
        let (body, _, end) = at_every_split(Framing::Empty, b"");
        assert!(body.is_empty());
        assert_eq!(end, Ok(0));
    }

    #[test]
    fn chunk_sizes_parse_with_their_limits() {
        assert_eq!(chunk_size(b"ffffffffffffffff"), Ok(u64::MAX));
        assert_eq!(chunk_size(b"1a;ext=\"q\""), Ok(26));
        assert_eq!(chunk_size(b"1a\t;ext"), Ok(26));
        assert!(chunk_size(b"-1").is_err());
        assert!(chunk_size(b"").is_err());
        assert!(chunk_size(b"+5").is_err());
    }
}
