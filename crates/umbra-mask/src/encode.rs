//! Percent-encoding and JSON string escapes: values are decoded before detectors
//! see them (`bob%40example.com` is an e-mail) and re-encoded after masking, so the
//! copy stays a valid URL, form or JSON document.

use std::borrow::Cow;

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `%XX` to bytes (and `+` to space in forms); a `%` not followed by two hex
/// digits stays as it is, as browsers do.
pub(crate) fn percent_decode(s: &[u8], plus_is_space: bool) -> Cow<'_, [u8]> {
    if !(s.contains(&b'%') || plus_is_space && s.contains(&b'+')) {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' if i + 2 < s.len() => match (hex_val(s[i + 1]), hex_val(s[i + 2])) {
                (Some(a), Some(b)) => {
                    out.push(a << 4 | b);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// Where an encoded value goes; each keeps the characters that are safe there
/// unencoded, so masked values stay readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Set {
    /// A query parameter name or value: `&`, `=`, `+`, `#` and `%` are encoded.
    Query,
    /// An `application/x-www-form-urlencoded` name or value: space becomes `+`.
    Form,
    /// A path segment: `/`, `?`, `#` and `%` are encoded.
    Path,
}

fn keep(set: Set, c: u8) -> bool {
    if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
        return true;
    }
    match set {
        Set::Query => matches!(
            c,
            b'@' | b':' | b'/' | b'!' | b'$' | b'\'' | b'(' | b')' | b'*' | b',' | b';'
        ),
        Set::Form => c == b'*',
        Set::Path => matches!(
            c,
            b'@' | b':'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        ),
    }
}

pub(crate) fn percent_encode(s: &[u8], set: Set, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in s {
        if keep(set, c) {
            out.push(c);
        } else if c == b' ' && set == Set::Form {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
        }
    }
}

/// Writes `s` as the inside of a JSON string (quotes not included).
pub(crate) fn json_escape(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f | 0x7f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 15)]);
            }
            _ => out.push(c),
        }
    }
}

/// The value of a JSON string's inside (escapes resolved). `None` when an escape
/// is malformed. Lone surrogates, which JSON allows, become U+FFFD.
pub(crate) fn json_unescape(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    let hex4 = |i: usize| -> Option<u32> {
        let w = s.get(i..i + 4)?;
        w.iter()
            .try_fold(0u32, |a, &c| hex_val(c).map(|v| a << 4 | u32::from(v)))
    };
    while i < s.len() {
        let c = s[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *s.get(i + 1)?;
        i += 2;
        let simple = match e {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'u' => None,
            _ => return None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        let hi = hex4(i)?;
        i += 4;
        let code = if (0xD800..0xDC00).contains(&hi) {
            match (s.get(i..i + 2), hex4(i + 2)) {
                (Some(b"\\u"), Some(lo)) if (0xDC00..0xE000).contains(&lo) => {
                    i += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                }
                _ => 0xFFFD,
            }
        } else if (0xDC00..0xE000).contains(&hi) {
            0xFFFD
        } else {
            hi
        };
        let ch = char::from_u32(code).unwrap_or('\u{FFFD}');
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode() {
        assert_eq!(&*percent_decode(b"a%40b.com", false), b"a@b.com");
        assert_eq!(&*percent_decode(b"a+b%2", true), b"a b%2");
        assert_eq!(&*percent_decode(b"%zz%4", false), b"%zz%4");
        assert_eq!(&*percent_decode(b"%41", false), b"A");
        assert_eq!(&*percent_decode(b"x%", false), b"x%");
        assert!(matches!(percent_decode(b"plain", true), Cow::Borrowed(_)));
    }

    #[test]
    fn encode_round_trips() {
        for set in [Set::Query, Set::Form, Set::Path] {
            let v: Vec<u8> = (0..=255).collect();
            let mut out = Vec::new();
            percent_encode(&v, set, &mut out);
            let bad: &[u8] = match set {
                Set::Query => b"&#= +",
                Set::Form => b"&#= ",
                Set::Path => b"/?# ",
            };
            assert!(!out.iter().any(|c| bad.contains(c)), "{set:?}");
            assert_eq!(&*percent_decode(&out, set == Set::Form), v.as_slice());
        }
        let mut out = Vec::new();
        percent_encode(b"a b&c=d+e@f", Set::Query, &mut out);
        assert_eq!(out, b"a%20b%26c%3Dd%2Be@f");
    }

    #[test]
    fn json_strings() {
        let mut out = Vec::new();
        json_escape(b"a\"b\\c\nd\x01", &mut out);
        assert_eq!(out, br#"a\"b\\c\nd\u0001"#);
        assert_eq!(json_unescape(&out).unwrap(), b"a\"b\\c\nd\x01");
        assert_eq!(
            json_unescape(br"\u00e9\ud83d\ude00\/").unwrap(),
            "é😀/".as_bytes()
        );
        assert_eq!(
            json_unescape(br"\ud83d x").unwrap(),
            "\u{FFFD} x".as_bytes()
        );
        assert_eq!(json_unescape(br"\x"), None);
        assert_eq!(json_unescape(br"\u12"), None);
    }
}
