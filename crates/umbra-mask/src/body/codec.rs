//! Content codings: a compressed body is decoded, masked, and encoded again the
//! same way, so the shadow sees what production would have seen, masked.
//!
//! Decoding is bounded (`max_body_bytes`): a small gzip bomb must not turn into
//! gigabytes on the proxy. Re-encoding uses fast settings (gzip level 1, brotli
//! quality 1): the shadow does not care about the ratio, the proxy cares about CPU.

use std::io::{Read, Write};

use flate2::Compression;
use http::HeaderMap;
use http::header::CONTENT_ENCODING;

use crate::Dropped;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coding {
    Gzip,
    /// HTTP `deflate` is zlib-wrapped; some clients send raw deflate, and the copy
    /// is re-encoded the way it came.
    Deflate {
        zlib: bool,
    },
    Br,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate { .. } => "deflate",
            Coding::Br => "br",
        }
    }
}

/// The codings applied to the body, in the order they were applied.
pub(crate) fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, Dropped> {
    let mut out = Vec::new();
    for v in headers.get_all(CONTENT_ENCODING) {
        let Ok(s) = v.to_str() else {
            return Err(Dropped::UnsupportedEncoding {
                coding: String::from_utf8_lossy(v.as_bytes()).into_owned(),
            });
        };
        for c in s.split(',') {
            let c = c.trim();
            let coding = match c.to_ascii_lowercase().as_str() {
                "" | "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate { zlib: true },
                "br" => Coding::Br,
                _ => {
                    return Err(Dropped::UnsupportedEncoding {
                        coding: c.to_string(),
                    });
                }
            };
            out.push(coding);
        }
    }
    Ok(out)
}

fn read_bounded(r: impl Read, limit: u64, coding: Coding) -> Result<Vec<u8>, Dropped> {
    let mut out = Vec::new();
    r.take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| Dropped::UndecodableEncoding {
            coding: coding.name(),
            detail: e.to_string(),
        })?;
    if out.len() as u64 > limit {
        return Err(Dropped::BodyTooLarge { limit });
    }
    Ok(out)
}

/// Undoes `codings` (last applied first). Deflate's flavour (zlib or raw) is
/// recorded in place for [`encode`].
pub(crate) fn decode(codings: &mut [Coding], body: &[u8], limit: u64) -> Result<Vec<u8>, Dropped> {
    let mut data = body.to_vec();
    for c in codings.iter_mut().rev() {
        data = match *c {
            Coding::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(&data[..]), limit, *c)?,
            Coding::Deflate { .. } => {
                match read_bounded(flate2::read::ZlibDecoder::new(&data[..]), limit, *c) {
                    Ok(d) => d,
                    Err(Dropped::UndecodableEncoding { .. }) => {
                        *c = Coding::Deflate { zlib: false };
                        read_bounded(flate2::read::DeflateDecoder::new(&data[..]), limit, *c)?
                    }
                    Err(e) => return Err(e),
                }
            }
            Coding::Br => read_bounded(brotli::Decompressor::new(&data[..], 4096), limit, *c)?,
        };
    }
    Ok(data)
}

fn encode_one(c: Coding, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let cap = data.len() / 2 + 64;
    match c {
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(cap), Compression::fast());
            e.write_all(data)?;
            e.finish()
        }
        Coding::Deflate { zlib: true } => {
            let mut e =
                flate2::write::ZlibEncoder::new(Vec::with_capacity(cap), Compression::fast());
            e.write_all(data)?;
            e.finish()
        }
        Coding::Deflate { zlib: false } => {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::with_capacity(cap), Compression::fast());
            e.write_all(data)?;
            e.finish()
        }
        Coding::Br => {
            let mut w = brotli::CompressorWriter::new(Vec::with_capacity(cap), 4096, 1, 22);
            w.write_all(data)?;
            w.flush()?;
            Ok(w.into_inner())
        }
    }
}

/// Applies `codings` again, in order.
pub(crate) fn encode(codings: &[Coding], data: Vec<u8>) -> Result<Vec<u8>, Dropped> {
    let mut data = data;
    for &c in codings {
        data = encode_one(c, &data).map_err(|e| Dropped::EncodeFailed {
            coding: c.name(),
            detail: e.to_string(),
        })?;
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn every_coding_round_trips() {
        let data = b"{\"email\":\"bob@example.com\"}".repeat(50);
        for name in ["gzip", "deflate", "br", "gzip, br", "identity"] {
            let mut cs = codings(&headers(name)).unwrap();
            let enc = encode(&cs, data.clone()).unwrap();
            assert_eq!(decode(&mut cs, &enc, 1 << 20).unwrap(), data, "{name}");
        }
    }

    #[test]
    fn raw_deflate_is_accepted_and_kept_raw() {
        let data = b"hello hello hello".to_vec();
        let raw = encode_one(Coding::Deflate { zlib: false }, &data).unwrap();
        let mut cs = codings(&headers("deflate")).unwrap();
        assert_eq!(decode(&mut cs, &raw, 1 << 20).unwrap(), data);
        assert_eq!(cs, vec![Coding::Deflate { zlib: false }]);
        let again = encode(&cs, data.clone()).unwrap();
        assert_eq!(again, raw);
    }

    #[test]
    fn failures() {
        assert!(matches!(
            codings(&headers("zstd")),
            Err(Dropped::UnsupportedEncoding { coding }) if coding == "zstd"
        ));
        for name in ["gzip", "br"] {
            let mut cs = codings(&headers(name)).unwrap();
            assert!(
                matches!(
                    decode(&mut cs, b"definitely not compressed", 1 << 20),
                    Err(Dropped::UndecodableEncoding { .. })
                ),
                "{name}"
            );
        }
        // A bomb: 10 MB of zeros in a few KB, against a 1 MB limit.
        let mut cs = vec![Coding::Gzip];
        let bomb = encode(&cs, vec![0; 10 << 20]).unwrap();
        assert!(bomb.len() < 100_000);
        assert_eq!(
            decode(&mut cs, &bomb, 1 << 20),
            Err(Dropped::BodyTooLarge { limit: 1 << 20 })
        );
    }
}
