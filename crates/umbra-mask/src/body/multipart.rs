//! `multipart/*` bodies (RFC 2046, form-data per RFC 7578), parsed by hand: the
//! crates that do it are async streams, and here the whole body is in memory.
//!
//! Each part is masked by its field name (form rules), else by its own content
//! type (a JSON part goes through the JSON walker); part headers are scanned too
//! (file names carry names and e-mails). The framing is kept byte for byte, and a
//! masked part is checked not to contain the boundary, which would cut the body.

use memchr::memmem;

use super::{BodyKind, mask_decoded, opaque};
use crate::Dropped;
use crate::ctx::Ctx;
use crate::rules::How;

pub(crate) enum MpError {
    /// Not a well-formed multipart body.
    Malformed(String),
    /// A part failed in a way no fallback fixes (opaque content, a JSON part with
    /// rules that does not parse, …).
    Part(Dropped),
}

/// At most this many parts; more is an attack or a bug, not a form.
const MAX_PARTS: usize = 10_000;

fn malformed<T>(s: impl Into<String>) -> Result<T, MpError> {
    Err(MpError::Malformed(s.into()))
}

pub(crate) fn mask(
    cx: &mut Ctx<'_>,
    data: &[u8],
    boundary: &[u8],
    detect: bool,
    depth: usize,
) -> Result<Option<Vec<u8>>, MpError> {
    if boundary.is_empty() || boundary.len() > 200 {
        return malformed("boundary must be 1 to 200 characters");
    }
    let delim = [b"--", boundary].concat();
    let next_delim = [b"\r\n--", boundary].concat();
    let finder = memmem::Finder::new(&next_delim);
    let first = if data.starts_with(&delim) {
        0
    } else {
        match finder.find(data) {
            Some(i) => i + 2,
            None => return malformed("no boundary delimiter"),
        }
    };
    let mut w = Writer {
        data,
        out: Vec::new(),
        copied: 0,
    };
    // The preamble is ignored by servers, but it is bytes we would send.
    if detect && first > 0 {
        text(cx, &mut w, 0, first.saturating_sub(2))?;
    }
    let mut pos = first;
    let mut parts = 0;
    loop {
        let after = pos + delim.len();
        if data[after..].starts_with(b"--") {
            // Close delimiter; the epilogue is scanned like the preamble.
            if detect && after + 2 < data.len() {
                text(cx, &mut w, after + 2, data.len())?;
            }
            break;
        }
        parts += 1;
        if parts > MAX_PARTS {
            return malformed(format!("more than {MAX_PARTS} parts"));
        }
        let mut i = after;
        while i < data.len() && (data[i] == b' ' || data[i] == b'\t') {
            i += 1;
        }
        if !data[i..].starts_with(b"\r\n") {
            return malformed(format!("part {parts}: no line break after the boundary"));
        }
        let hstart = i + 2;
        let mut hbuf = [httparse::EMPTY_HEADER; 32];
        let (hlen, name, ctype, cte) = match httparse::parse_headers(&data[hstart..], &mut hbuf) {
            Ok(httparse::Status::Complete((n, hs))) => {
                let mut name = None;
                let mut ctype = None;
                let mut cte = None;
                for h in hs.iter() {
                    if h.name.eq_ignore_ascii_case("content-disposition") {
                        name = disposition_name(h.value);
                    } else if h.name.eq_ignore_ascii_case("content-type") {
                        ctype = Some(h.value.to_vec());
                    } else if h.name.eq_ignore_ascii_case("content-transfer-encoding") {
                        cte = Some(h.value.to_ascii_lowercase());
                    }
                }
                (n, name, ctype, cte)
            }
            Ok(httparse::Status::Partial) => {
                return malformed(format!("part {parts}: headers never end"));
            }
            Err(e) => return malformed(format!("part {parts} headers: {e}")),
        };
        let cstart = hstart + hlen;
        // The content ends where `CRLF--boundary` starts (that CRLF is the delimiter's).
        let Some(off) = finder.find(&data[cstart..]) else {
            return malformed(format!("part {parts} is not closed by a boundary"));
        };
        let cend = cstart + off;
        let next = cend + 2;
        if let Some(c) = cte.as_deref().map(|c| c.trim_ascii())
            && !matches!(c, b"7bit" | b"8bit" | b"binary")
        {
            return Err(MpError::Part(Dropped::OpaqueBody {
                what: "a transfer-encoded (base64 or quoted-printable) part",
            }));
        }
        let mut scratch = std::mem::take(&mut cx.scratch);
        let rule = name
            .as_deref()
            .and_then(|n| cx.m.form.find(n, &mut scratch));
        cx.scratch = scratch;
        match rule {
            Some(a) if a.how == How::Drop => {
                cx.count(a.id);
                w.replace(pos, next, b"");
            }
            Some(a) if a.how != How::Detect => {
                if detect {
                    text(cx, &mut w, hstart, cstart)?;
                }
                let mut v = Vec::new();
                cx.field(a, &data[cstart..cend], true, &mut v);
                check_boundary(&v, &delim)?;
                w.replace(cstart, cend, &v);
            }
            _ => {
                if detect || rule.is_some() {
                    text(cx, &mut w, hstart, cstart)?;
                }
                let content = &data[cstart..cend];
                let kind = BodyKind::of(ctype.as_deref().unwrap_or(b"text/plain"));
                let masked = mask_decoded(cx, &kind, content, detect || rule.is_some(), depth + 1)
                    .map_err(MpError::Part)?;
                if let Some(v) = masked {
                    check_boundary(&v, &delim)?;
                    w.replace(cstart, cend, &v);
                }
            }
        }
        pos = next;
    }
    Ok(w.finish())
}

/// Masks `data[a..b]` as free text in place.
fn text(cx: &mut Ctx<'_>, w: &mut Writer<'_>, a: usize, b: usize) -> Result<(), MpError> {
    if a >= b {
        return Ok(());
    }
    let span = &w.data[a..b];
    if let Some(what) = opaque(span) {
        return Err(MpError::Part(Dropped::OpaqueBody { what }));
    }
    let mut v = Vec::new();
    if cx.detect(span, true, &mut v) {
        w.replace(a, b, &v);
    }
    Ok(())
}

/// A masked part must not contain the delimiter: it would end the part there.
fn check_boundary(v: &[u8], delim: &[u8]) -> Result<(), MpError> {
    if memmem::find(v, delim).is_some() {
        return Err(MpError::Part(Dropped::EncodeFailed {
            coding: "multipart",
            detail: "a masked part would contain the boundary".into(),
        }));
    }
    Ok(())
}

/// `name` from `form-data; name="field"; filename="a.txt"`.
fn disposition_name(v: &[u8]) -> Option<Vec<u8>> {
    let mut rest = v;
    while let Some(i) = rest.iter().position(|&c| c == b';') {
        rest = rest[i + 1..].trim_ascii_start();
        let eq = rest.iter().position(|&c| c == b'=')?;
        let key = rest[..eq].trim_ascii();
        let val = rest[eq + 1..].trim_ascii_start();
        let (value, len) = if val.first() == Some(&b'"') {
            let mut out = Vec::new();
            let mut j = 1;
            while j < val.len() && val[j] != b'"' {
                if val[j] == b'\\' && j + 1 < val.len() {
                    j += 1;
                }
                out.push(val[j]);
                j += 1;
            }
            (out, j + 1)
        } else {
            let end = val.iter().position(|&c| c == b';').unwrap_or(val.len());
            (val[..end].trim_ascii().to_vec(), end)
        };
        if key.eq_ignore_ascii_case(b"name") {
            return Some(value);
        }
        rest = &val[len.min(val.len())..];
    }
    None
}

struct Writer<'a> {
    data: &'a [u8],
    out: Vec<u8>,
    copied: usize,
}

impl Writer<'_> {
    fn replace(&mut self, a: usize, b: usize, with: &[u8]) {
        if self.out.capacity() == 0 {
            self.out.reserve(self.data.len() + 64);
        }
        self.out.extend_from_slice(&self.data[self.copied..a]);
        self.out.extend_from_slice(with);
        self.copied = b;
    }

    fn finish(mut self) -> Option<Vec<u8>> {
        if self.out.capacity() == 0 {
            return None;
        }
        self.out.extend_from_slice(&self.data[self.copied..]);
        Some(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            disposition_name(b"form-data; name=\"email\""),
            Some(b"email".to_vec())
        );
        assert_eq!(
            disposition_name(b"form-data; filename=\"a;b.txt\"; name=\"f\""),
            Some(b"f".to_vec())
        );
        assert_eq!(
            disposition_name(b"form-data; name=plain"),
            Some(b"plain".to_vec())
        );
        assert_eq!(
            disposition_name(b"form-data; name=\"q\\\"x\""),
            Some(b"q\"x".to_vec())
        );
        assert_eq!(disposition_name(b"form-data"), None);
    }
}
