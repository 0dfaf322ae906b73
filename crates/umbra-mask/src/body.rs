//! Bodies: decode, mask by content type, encode again; fail closed when that
//! cannot be done safely.
//!
//! A body that is not what its `Content-Type` says (JSON that does not parse, a
//! multipart body without its boundary) is masked as free text, unless the user
//! wrote field rules for that type: free text cannot honour `$.user.name`, so that
//! copy fails (dropped or sent without a body, per `on_failure`). The default
//! credential-name rules are covered in free text by the `credential` detector
//! (`"password": "…"`, `token=…`), so they do not block the fallback.
//!
//! Content detectors cannot see into is refused rather than passed: compressed
//! or packed files (gzip, zip, zstd, bzip2, xz, 7z, rar, PDF) and base64 parts.

mod codec;
mod form;
pub(crate) mod json;
mod multipart;

use std::borrow::Cow;

use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_TYPE;

pub(crate) use form::mask as mask_pairs;

use crate::Dropped;
use crate::ctx::Ctx;
use crate::encode::Set;

/// Multipart bodies nest (`multipart/mixed` inside a form part); deeper than this
/// the inner parts are masked as free text.
const MAX_NESTING: usize = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Json,
    Form,
    Multipart(Vec<u8>),
    MultipartWithoutBoundary,
    Text,
    /// No `Content-Type`: JSON if it looks and parses like JSON, else text.
    Unknown,
}

impl BodyKind {
    pub(crate) fn of(content_type: &[u8]) -> BodyKind {
        let mut params = content_type.split(|&c| c == b';');
        let essence = params
            .next()
            .unwrap_or_default()
            .trim_ascii()
            .to_ascii_lowercase();
        match essence.as_slice() {
            b"application/json"
            | b"text/json"
            | b"application/x-ndjson"
            | b"application/ndjson"
            | b"application/jsonl"
            | b"application/x-jsonlines" => BodyKind::Json,
            e if e.ends_with(b"+json") => BodyKind::Json,
            b"application/x-www-form-urlencoded" => BodyKind::Form,
            e if e.starts_with(b"multipart/") => {
                for p in params {
                    let p = p.trim_ascii();
                    let Some(eq) = p.iter().position(|&c| c == b'=') else {
                        continue;
                    };
                    if p[..eq].trim_ascii().eq_ignore_ascii_case(b"boundary") {
                        let v = p[eq + 1..].trim_ascii();
                        let v = v
                            .strip_prefix(b"\"")
                            .and_then(|v| v.strip_suffix(b"\""))
                            .unwrap_or(v);
                        return BodyKind::Multipart(v.to_vec());
                    }
                }
                BodyKind::MultipartWithoutBoundary
            }
            _ => BodyKind::Text,
        }
    }
}

/// Magic numbers of formats whose content detectors cannot read.
pub(crate) fn opaque(data: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"\x1f\x8b", "gzip"),
        (b"PK\x03\x04", "zip"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"7z\xbc\xaf\x27\x1c", "7z"),
        (b"Rar!\x1a\x07", "rar"),
        (b"%PDF-", "PDF"),
    ];
    if let Some((_, what)) = MAGIC.iter().find(|(m, _)| data.starts_with(m)) {
        return Some(what);
    }
    // bzip2: `BZh` and the block size digit.
    if data.len() >= 4 && data.starts_with(b"BZh") && (b'1'..=b'9').contains(&data[3]) {
        return Some("bzip2");
    }
    None
}

/// Masks a request body as its headers describe it. `None`: unchanged.
pub(crate) fn mask(
    cx: &mut Ctx<'_>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Option<Bytes>, Dropped> {
    let m = cx.m;
    let detect = m.scan.body;
    if body.is_empty() || (!detect && m.json.is_empty() && m.form.is_empty()) {
        return Ok(None);
    }
    if body.len() as u64 > m.max_body {
        return Err(Dropped::BodyTooLarge { limit: m.max_body });
    }
    let mut codings = codec::codings(headers)?;
    let decoded: Cow<'_, [u8]> = if codings.is_empty() {
        Cow::Borrowed(&body[..])
    } else {
        Cow::Owned(codec::decode(&mut codings, body, m.max_body)?)
    };
    let kind = headers
        .get(CONTENT_TYPE)
        .map_or(BodyKind::Unknown, |v| BodyKind::of(v.as_bytes()));
    match mask_decoded(cx, &kind, &decoded, detect, 0)? {
        None => Ok(None),
        Some(v) => Ok(Some(Bytes::from(codec::encode(&codings, v)?))),
    }
}

/// Masks decoded content of `kind` (a whole body or a multipart part).
pub(crate) fn mask_decoded(
    cx: &mut Ctx<'_>,
    kind: &BodyKind,
    data: &[u8],
    detect: bool,
    depth: usize,
) -> Result<Option<Vec<u8>>, Dropped> {
    let m = cx.m;
    match kind {
        BodyKind::Json => {
            let before = cx.snapshot();
            match json::mask(cx, data, detect) {
                Ok(r) => Ok(r),
                Err(e) => {
                    cx.restore(before);
                    let user_rules = m.json.has_user_rules(m.first_default);
                    fallback(cx, "JSON", user_rules, e.to_string(), data, detect)
                }
            }
        }
        BodyKind::Form => Ok(mask_pairs(cx, data, &m.form, detect, Set::Form)),
        BodyKind::Multipart(b) if depth < MAX_NESTING => {
            let before = cx.snapshot();
            match multipart::mask(cx, data, b, detect, depth) {
                Ok(r) => Ok(r),
                Err(multipart::MpError::Part(d)) => Err(d),
                Err(multipart::MpError::Malformed(e)) => {
                    cx.restore(before);
                    let user_rules = m.form.has_user_rules(m.first_default);
                    fallback(cx, "multipart", user_rules, e, data, detect)
                }
            }
        }
        BodyKind::MultipartWithoutBoundary => {
            let user_rules = m.form.has_user_rules(m.first_default);
            let detail = "no boundary parameter in Content-Type".to_string();
            fallback(cx, "multipart", user_rules, detail, data, detect)
        }
        BodyKind::Unknown => {
            let first = data.iter().find(|c| !c.is_ascii_whitespace());
            if matches!(first, Some(b'{' | b'[')) {
                let before = cx.snapshot();
                match json::mask(cx, data, detect) {
                    Ok(r) => return Ok(r),
                    Err(_) => cx.restore(before),
                }
            }
            text(cx, data, detect)
        }
        BodyKind::Multipart(_) | BodyKind::Text => text(cx, data, detect),
    }
}

fn fallback(
    cx: &mut Ctx<'_>,
    content_type: &str,
    user_rules: bool,
    detail: String,
    data: &[u8],
    detect: bool,
) -> Result<Option<Vec<u8>>, Dropped> {
    if user_rules {
        return Err(Dropped::UnparseableBody {
            content_type: content_type.to_string(),
            detail,
        });
    }
    text(cx, data, detect)
}

fn text(cx: &mut Ctx<'_>, data: &[u8], detect: bool) -> Result<Option<Vec<u8>>, Dropped> {
    if !detect {
        return Ok(None);
    }
    if let Some(what) = opaque(data) {
        return Err(Dropped::OpaqueBody { what });
    }
    let mut out = Vec::new();
    Ok(cx.detect(data, true, &mut out).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            BodyKind::of(b"application/json; charset=utf-8"),
            BodyKind::Json
        );
        assert_eq!(BodyKind::of(b"Application/Problem+JSON"), BodyKind::Json);
        assert_eq!(
            BodyKind::of(b"application/x-www-form-urlencoded"),
            BodyKind::Form
        );
        assert_eq!(
            BodyKind::of(b"multipart/form-data; boundary=\"a b\""),
            BodyKind::Multipart(b"a b".to_vec())
        );
        assert_eq!(
            BodyKind::of(b"multipart/form-data;charset=x; Boundary=xyz"),
            BodyKind::Multipart(b"xyz".to_vec())
        );
        assert_eq!(
            BodyKind::of(b"multipart/form-data"),
            BodyKind::MultipartWithoutBoundary
        );
        assert_eq!(BodyKind::of(b"text/plain"), BodyKind::Text);
        assert_eq!(BodyKind::of(b""), BodyKind::Text);
    }

    #[test]
    fn opaque_formats() {
        assert_eq!(opaque(b"\x1f\x8b\x08\x00"), Some("gzip"));
        assert_eq!(opaque(b"PK\x03\x04rest"), Some("zip"));
        assert_eq!(opaque(b"%PDF-1.7"), Some("PDF"));
        assert_eq!(opaque(b"BZh9"), Some("bzip2"));
        assert_eq!(opaque(b"BZhx"), None);
        assert_eq!(opaque(b"{\"a\":1}"), None);
    }
}
