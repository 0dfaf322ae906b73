//! One copy, start to end: body, headers, URI.

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use crate::body;
use crate::ctx::Ctx;
use crate::encode::{Set, percent_decode, percent_encode};
use crate::rules::{Action, How};
use crate::{Dropped, MaskReport, MaskRequest, Masker, OnFailure};

pub(crate) fn mask(m: &Masker, req: &mut MaskRequest) -> Result<MaskReport, Dropped> {
    let mut cx = Ctx::new(m);
    // The body first: it is read with the headers as they came.
    let had_length = req.headers.contains_key(CONTENT_LENGTH);
    let mut stripped = None;
    match body::mask(&mut cx, &req.headers, &req.body) {
        Ok(Some(b)) => req.body = b,
        Ok(None) => {}
        Err(reason) => match m.on_failure {
            OnFailure::Drop => return Err(reason),
            OnFailure::StripBody => {
                req.body = Bytes::new();
                req.headers.remove(CONTENT_ENCODING);
                stripped = Some(reason);
            }
        },
    }
    mask_headers(&mut cx, &mut req.headers)?;
    if had_length {
        req.headers
            .insert(CONTENT_LENGTH, HeaderValue::from(req.body.len() as u64));
    }
    mask_uri(&mut cx, &mut req.uri)?;
    Ok(cx.report(stripped))
}

/// Headers that frame or describe the body: never masked (the masked body must
/// still match them) and never scanned.
fn framing(name: &str) -> bool {
    matches!(
        name,
        "content-length" | "transfer-encoding" | "content-encoding"
    )
}

/// Headers that hold protocol values, not data: not scanned by detectors (rules
/// still apply to them).
fn structural(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "content-type"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "upgrade"
            | "expect"
            | "accept"
            | "accept-encoding"
            | "accept-charset"
            | "accept-language"
            | "cache-control"
            | "pragma"
            | "if-none-match"
            | "if-match"
            | "if-modified-since"
            | "if-unmodified-since"
            | "if-range"
            | "range"
            | "date"
            | "traceparent"
            | "tracestate"
            | "x-umbra-shadow"
    )
}

enum Outcome {
    Keep,
    Set(Vec<u8>),
    Remove,
}

fn mask_headers(cx: &mut Ctx<'_>, headers: &mut HeaderMap) -> Result<(), Dropped> {
    let m = cx.m;
    if m.headers.is_empty() && m.cookies.is_empty() && !m.scan.headers {
        return Ok(());
    }
    let mut outcomes = Vec::with_capacity(headers.len());
    let mut any = false;
    for (name, value) in headers.iter() {
        let o = header(cx, name.as_str(), value.as_bytes());
        any |= !matches!(o, Outcome::Keep);
        outcomes.push(o);
    }
    if !any {
        return Ok(());
    }
    let mut out = HeaderMap::with_capacity(headers.len());
    for ((name, value), o) in headers.iter().zip(outcomes) {
        match o {
            Outcome::Keep => {
                out.append(name.clone(), value.clone());
            }
            Outcome::Remove => {}
            Outcome::Set(v) => {
                let hv = HeaderValue::from_bytes(&v).map_err(|_| Dropped::InvalidHeader {
                    name: name.as_str().to_string(),
                })?;
                out.append(HeaderName::clone(name), hv);
            }
        }
    }
    *headers = out;
    Ok(())
}

fn header(cx: &mut Ctx<'_>, name: &str, v: &[u8]) -> Outcome {
    if framing(name) {
        return Outcome::Keep;
    }
    let m = cx.m;
    let mut scratch = std::mem::take(&mut cx.scratch);
    let rule = m.headers.find(name.as_bytes(), &mut scratch);
    cx.scratch = scratch;
    match name {
        "cookie" => return cookies(cx, v, rule, false),
        "set-cookie" => return cookies(cx, v, rule, true),
        _ => {}
    }
    match rule {
        Some(a) if a.how == How::Drop => {
            cx.count(a.id);
            Outcome::Remove
        }
        Some(a) if a.how != How::Detect => {
            let mut out = Vec::with_capacity(v.len());
            // `Authorization: Bearer x` keeps its scheme: the shadow still sees
            // which kind of credential was sent.
            let creds = if matches!(name, "authorization" | "proxy-authorization") {
                scheme_len(v)
            } else {
                0
            };
            out.extend_from_slice(&v[..creds]);
            cx.field(a, &v[creds..], true, &mut out);
            Outcome::Set(out)
        }
        Some(_) => detect(cx, v),
        None if m.scan.headers && !structural(name) => detect(cx, v),
        None => Outcome::Keep,
    }
}

/// `Bearer abc` → 7 (the scheme and the spaces after it); 0 without a scheme.
fn scheme_len(v: &[u8]) -> usize {
    match v.iter().position(|&c| c == b' ') {
        Some(i) => i + v[i..].iter().take_while(|&&c| c == b' ').count(),
        None => 0,
    }
}

fn detect(cx: &mut Ctx<'_>, v: &[u8]) -> Outcome {
    let mut out = Vec::new();
    if cx.detect(v, true, &mut out) {
        Outcome::Set(out)
    } else {
        Outcome::Keep
    }
}

/// `Cookie: a=1; b=2` (every pair) or `Set-Cookie: a=1; Path=/` (the first pair;
/// attributes stay). Names stay, values are masked by cookie rules, else by the
/// header's rule, else scanned.
fn cookies(cx: &mut Ctx<'_>, v: &[u8], header_rule: Option<Action>, set: bool) -> Outcome {
    let m = cx.m;
    if header_rule.is_some_and(|a| a.how == How::Drop) {
        cx.count(header_rule.map_or(0, |a| a.id));
        return Outcome::Remove;
    }
    let mut changed = false;
    // (leading whitespace, content) of each pair or attribute kept.
    let mut kept: Vec<(&[u8], Vec<u8>)> = Vec::new();
    for (i, seg) in v.split(|&c| c == b';').enumerate() {
        let is_pair = !set || i == 0;
        let s = seg.trim_ascii_start();
        let lead = &seg[..seg.len() - s.len()];
        let eq = s.iter().position(|&c| c == b'=');
        let new = match (is_pair, eq) {
            (true, Some(eq)) => {
                let (cname, cval) = (s[..eq].trim_ascii_end(), &s[eq + 1..]);
                let mut scratch = std::mem::take(&mut cx.scratch);
                let rule = m.cookies.find(cname, &mut scratch).or(header_rule);
                cx.scratch = scratch;
                let mut nv = s[..=eq].to_vec();
                match rule {
                    Some(a) if a.how == How::Drop => {
                        cx.count(a.id);
                        changed = true;
                        if set {
                            return Outcome::Remove;
                        }
                        continue;
                    }
                    Some(a) => cx.field(a, cval, true, &mut nv).then_some(nv),
                    None if m.scan.headers => {
                        let mut d = Vec::new();
                        cx.detect(cval, true, &mut d).then(|| {
                            nv.extend_from_slice(&d);
                            nv
                        })
                    }
                    None => None,
                }
            }
            (true, None) if !s.is_empty() && header_rule.is_some_and(|a| a.how != How::Detect) => {
                let mut nv = Vec::new();
                header_rule.and_then(|a| cx.field(a, s, true, &mut nv).then_some(nv))
            }
            // Attributes and nameless values: scanned (a Domain can be an
            // address), never rule-masked.
            _ if m.scan.headers || header_rule.is_some() => {
                let mut d = Vec::new();
                cx.detect(s, true, &mut d).then_some(d)
            }
            _ => None,
        };
        changed |= new.is_some();
        kept.push((lead, new.unwrap_or_else(|| s.to_vec())));
    }
    if !changed {
        return Outcome::Keep;
    }
    if kept.is_empty() {
        return Outcome::Remove;
    }
    let mut out = Vec::with_capacity(v.len() + 32);
    for (k, (lead, content)) in kept.iter().enumerate() {
        if k > 0 {
            out.push(b';');
            out.extend_from_slice(lead);
        }
        out.extend_from_slice(content);
    }
    Outcome::Set(out)
}

fn mask_uri(cx: &mut Ctx<'_>, uri: &mut Uri) -> Result<(), Dropped> {
    let m = cx.m;
    let Some(pq) = uri.path_and_query() else {
        return Ok(());
    };
    let path = pq.path().as_bytes();
    let query = pq.query().map(str::as_bytes);
    let new_path = mask_path(cx, path);
    let new_query = match query {
        Some(q) if m.scan.query || !m.query.is_empty() => {
            body::mask_pairs(cx, q, &m.query, m.scan.query, Set::Query)
        }
        _ => None,
    };
    // `user:pass@host` in an absolute-form target: credentials, removed.
    let new_authority = uri.authority().and_then(|a| {
        let s = a.as_str();
        s.rfind('@').map(|i| s[i + 1..].to_string())
    });
    if new_path.is_none() && new_query.is_none() && new_authority.is_none() {
        return Ok(());
    }
    let mut s = new_path.unwrap_or_else(|| path.to_vec());
    match (new_query, query) {
        (Some(q), _) => {
            s.push(b'?');
            s.extend_from_slice(&q);
        }
        (None, Some(q)) => {
            s.push(b'?');
            s.extend_from_slice(q);
        }
        (None, None) => {}
    }
    let invalid = |e: &dyn std::fmt::Display| Dropped::InvalidUri {
        detail: e.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(PathAndQuery::from_maybe_shared(Bytes::from(s)).map_err(|e| invalid(&e))?);
    if let Some(a) = new_authority {
        cx.count(m.userinfo);
        parts.authority = Some(Authority::try_from(a.as_str()).map_err(|e| invalid(&e))?);
    }
    *uri = Uri::from_parts(parts).map_err(|e| invalid(&e))?;
    Ok(())
}

fn mask_path(cx: &mut Ctx<'_>, path: &[u8]) -> Option<Vec<u8>> {
    let m = cx.m;
    if (!m.scan.path && m.paths.is_empty()) || path.first() != Some(&b'/') {
        return None;
    }
    let raw: Vec<&[u8]> = path[1..].split(|&c| c == b'/').collect();
    let decoded: Vec<_> = raw.iter().map(|s| percent_decode(s, false)).collect();
    let by_template = m
        .paths
        .iter()
        .filter_map(|(t, a)| t.matches(&decoded).map(|mask| (mask, *a)))
        .min_by_key(|(_, a)| a.order);
    let mut out = Vec::with_capacity(path.len() + 16);
    let mut changed = false;
    let mut buf = Vec::new();
    for (i, (r, d)) in raw.iter().zip(&decoded).enumerate() {
        out.push(b'/');
        buf.clear();
        let masked = match &by_template {
            Some((mask, a)) if mask[i] => cx.field(*a, d, false, &mut buf),
            _ if m.scan.path && !d.is_empty() => cx.detect(d, false, &mut buf),
            _ => false,
        };
        if masked {
            percent_encode(&buf, Set::Path, &mut out);
            changed = true;
        } else {
            out.extend_from_slice(r);
        }
    }
    changed.then_some(out)
}
