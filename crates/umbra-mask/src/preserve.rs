//! The `preserve` strategy: keyed replacements that keep a value's format, so the
//! shadow service still accepts it.
//!
//! Common rule: same length, digits stay digits, letters stay letters of the same
//! case, punctuation stays where it was. Per kind:
//!
//! - e-mail: local part and domain labels replaced, the top-level domain kept, so
//!   the result is still an address (`alice@corp.example.com` → `wqpzx@hfmn.twqbnwc.com`);
//! - card: the first six digits (the issuer's BIN, which says "Visa" or "Amex",
//!   not who) are kept, the rest drawn, and the last digit recomputed so the
//!   number passes Luhn;
//! - IBAN: country kept, account part drawn, check digits recomputed (mod-97);
//! - SSN: drawn inside the ranges the SSA issues (area 001–899 but 666, group
//!   01–99, serial 0001–9999);
//! - phone: `+` and the first two digits (country code) or, in national forms,
//!   the first digit are kept; every group starts with 2–9 so exchange codes stay
//!   plausible;
//! - IPv4: first octet kept (10.x stays private, 127.x loopback), each other
//!   octet drawn with the same number of digits; IPv6: first group kept, other
//!   hex digits drawn;
//! - JWT: the header (algorithm, key id) kept, payload and signature drawn as
//!   base64url of the same length;
//! - AWS key: the type prefix (`AKIA`) kept.
//!
//! The replacement is a keyed function of the value, not an encryption: nothing
//! can turn it back, and two values may (very rarely) map to the same fake.

use crate::detect::Kind;
use crate::detect::check::{iban_mod97, luhn_ok};
use crate::key::{Key, Stream};

/// Stream tag for values with no detector format.
const GENERIC: u8 = 0xff;
/// Stream tag for JSON numbers.
const NUMBER: u8 = 0xfe;

/// How many times a replacement is drawn again when it came out equal to the
/// value (short values: `1.2.3.4` keeps `1.` and draws three digits). The stream
/// goes on, so the result is still a function of the key and the value.
const REDRAWS: usize = 16;

pub(crate) fn preserve(key: &Key, kind: Option<Kind>, v: &[u8], out: &mut Vec<u8>) {
    let tag = kind.map_or(GENERIC, |k| k.index() as u8);
    let mut st = key.stream(tag, v);
    let start = out.len();
    for _ in 0..REDRAWS {
        one(&mut st, kind, v, out);
        if out[start..] != *v {
            return;
        }
        out.truncate(start);
    }
    // Nothing in it can change (only punctuation): it is what it is.
    one(&mut st, kind, v, out);
}

fn one(st: &mut Stream, kind: Option<Kind>, v: &[u8], out: &mut Vec<u8>) {
    let Some(kind) = kind else {
        return generic(st, v, out);
    };
    match kind {
        Kind::Email => email(st, v, out),
        Kind::Card => card(st, v, out),
        Kind::Iban => iban(st, v, out),
        Kind::Ssn => ssn(st, v, out),
        Kind::Phone => phone(st, v, out),
        Kind::Ipv4 => ipv4(st, v, 1, out),
        Kind::Ipv6 => ipv6(st, v, out),
        Kind::Jwt => jwt(st, v, out),
        Kind::AwsKey => keep_prefix(st, v, 4, out),
        Kind::Bearer => generic(st, v, out),
    }
}

/// Same class per character; non-ASCII letters and digits become ASCII ones of the
/// same case (a name in any script is replaced), bytes that are not UTF-8 become
/// lowercase letters.
pub(crate) fn generic(st: &mut Stream, v: &[u8], out: &mut Vec<u8>) {
    for chunk in v.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if ch.is_ascii() {
                out.push(st.same_class(ch as u8));
            } else if ch.is_alphabetic() {
                out.push(if ch.is_uppercase() {
                    st.upper()
                } else {
                    st.lower()
                });
            } else if ch.is_numeric() {
                out.push(st.digit());
            } else {
                let mut b = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
            }
        }
        for _ in chunk.invalid() {
            out.push(st.lower());
        }
    }
}

fn keep_prefix(st: &mut Stream, v: &[u8], n: usize, out: &mut Vec<u8>) {
    let n = n.min(v.len());
    out.extend_from_slice(&v[..n]);
    generic(st, &v[n..], out);
}

fn email(st: &mut Stream, v: &[u8], out: &mut Vec<u8>) {
    let (at, sep) = match v.iter().position(|&c| c == b'@') {
        Some(i) => (i, 1),
        None => match v.windows(3).position(|w| w == b"%40") {
            Some(i) => (i, 3),
            None => return generic(st, v, out),
        },
    };
    generic(st, &v[..at], out);
    out.extend_from_slice(&v[at..at + sep]);
    let domain = &v[at + sep..];
    let tld = domain.iter().rposition(|&c| c == b'.').map_or(0, |i| i + 1);
    generic(st, &domain[..tld], out);
    out.extend_from_slice(&domain[tld..]);
}

fn digits_of(v: &[u8]) -> Vec<usize> {
    v.iter()
        .enumerate()
        .filter(|(_, c)| c.is_ascii_digit())
        .map(|(i, _)| i)
        .collect()
}

fn card(st: &mut Stream, v: &[u8], out: &mut Vec<u8>) {
    let pos = digits_of(v);
    let start = out.len();
    out.extend_from_slice(v);
    let o = &mut out[start..];
    let n = pos.len();
    if n < 8 {
        // Not card-shaped after all (a field rule on a short value): digits drawn.
        for &p in &pos {
            o[p] = st.digit();
        }
        return;
    }
    for &p in &pos[6..n - 1] {
        o[p] = st.digit();
    }
    // The check digit that makes the whole number pass Luhn.
    let payload = pos[..n - 1].iter().map(|&p| o[p] - b'0');
    let mut check = 0;
    let digits: Vec<u8> = payload.collect();
    for d in 0..10u8 {
        if luhn_ok(digits.iter().copied().chain(std::iter::once(d))) {
            check = d;
            break;
        }
    }
    o[pos[n - 1]] = b'0' + check;
}

fn iban(st: &mut Stream, v: &[u8], out: &mut Vec<u8>) {
    let pos: Vec<usize> = v
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_ascii_alphanumeric())
        .map(|(i, _)| i)
        .collect();
    let start = out.len();
    out.extend_from_slice(v);
    if pos.len() < 5 {
        let o = &mut out[start..];
        for &p in &pos {
            o[p] = st.same_class(o[p]);
        }
        return;
    }
    let o = &mut out[start..];
    for &p in &pos[4..] {
        o[p] = st.same_class(o[p]);
    }
    o[pos[2]] = b'0';
    o[pos[3]] = b'0';
    let chars: Vec<u8> = pos.iter().map(|&p| o[p]).collect();
    let check = 98 - iban_mod97(&chars);
    o[pos[2]] = b'0' + (check / 10) as u8;
    o[pos[3]] = b'0' + (check % 10) as u8;
}

fn ssn(st: &mut Stream, v: &[u8], out: &mut Vec<u8>) {
    let pos = digits_of(v);
    if pos.len() != 9 {
        return generic(st, v, out);
    }
    // 1..=899 without 666.
    let mut area = 1 + u32::from(st.below(898));
    if area >= 666 {
        area += 1;
    }
    let group = 1 + u32::from(st.below(99));
    let serial = 1 + u32::from(st.below(9999));
    let digits = format!("{area:03}{group:02}{serial:04}");
    let start = out.len();
    out.extend_from_slice(v);
    for (&p, d) in pos.iter().zip(digits.bytes()) {
        out[start + p] = d;
    }
}

fn phone(st: &mut Stream, v: &[u8], out: &mut Vec<u8>) {
    let keep = if v.first() == Some(&b'+') { 2 } else { 1 };
    let mut seen = 0;
    for (i, &c) in v.iter().enumerate() {
        if !c.is_ascii_digit() {
            out.push(c);
            continue;
        }
        seen += 1;
        let group_start = i == 0 || !v[i - 1].is_ascii_digit();
        out.push(if seen <= keep {
            c
        } else if group_start {
            st.digit_from(2)
        } else {
            st.digit()
        });
    }
}

/// An octet with the same number of digits: 1 → 0–9, 2 → 10–99, 3 → 100–255.
fn octet(st: &mut Stream, len: usize, out: &mut Vec<u8>) {
    let v = match len {
        1 => st.below(10),
        2 => 10 + st.below(90),
        _ => 100 + st.below(156),
    };
    out.extend_from_slice(v.to_string().as_bytes());
}

fn ipv4(st: &mut Stream, v: &[u8], keep: usize, out: &mut Vec<u8>) {
    for (i, part) in v.split(|&c| c == b'.').enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if i < keep || part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            out.extend_from_slice(part);
        } else {
            octet(st, part.len(), out);
        }
    }
}

fn ipv6(st: &mut Stream, v: &[u8], out: &mut Vec<u8>) {
    let first = v.iter().position(|&c| c == b':').unwrap_or(v.len());
    // An embedded IPv4 tail (`::ffff:192.0.2.1`) is everything after the last colon.
    let tail = if v.contains(&b'.') {
        v.iter()
            .rposition(|&c| c == b':')
            .map_or(v.len(), |i| i + 1)
    } else {
        v.len()
    };
    // The first group stays only when something after it changes (`1::` has nothing).
    let rest_changes =
        tail < v.len() || v[first..tail.max(first)].iter().any(u8::is_ascii_hexdigit);
    let first = if rest_changes { first } else { 0 };
    out.extend_from_slice(&v[..first]);
    for &c in &v[first..tail.max(first)] {
        out.push(if c.is_ascii_hexdigit() {
            st.hex_like(c)
        } else {
            c
        });
    }
    if tail < v.len() {
        ipv4(st, &v[tail..], 0, out);
    }
}

fn jwt(st: &mut Stream, v: &[u8], out: &mut Vec<u8>) {
    let dot = v.iter().position(|&c| c == b'.').unwrap_or(v.len());
    out.extend_from_slice(&v[..dot]);
    for &c in &v[dot..] {
        out.push(st.same_class(c));
    }
}

/// A JSON number with keyed digits: sign, decimal point and exponent kept, the
/// leading digit non-zero unless it was zero (`0.5` must not become `05`).
pub(crate) fn number(key: &Key, v: &[u8], out: &mut Vec<u8>) {
    let mut st = key.stream(NUMBER, v);
    let start = out.len();
    for _ in 0..REDRAWS {
        number_once(&mut st, v, out);
        if out[start..] != *v {
            return;
        }
        out.truncate(start);
    }
    number_once(&mut st, v, out);
}

fn number_once(st: &mut Stream, v: &[u8], out: &mut Vec<u8>) {
    let exp = v
        .iter()
        .position(|&c| c == b'e' || c == b'E')
        .unwrap_or(v.len());
    let mut first = true;
    for &c in &v[..exp] {
        if c.is_ascii_digit() {
            out.push(if first && c != b'0' {
                st.digit_from(1)
            } else if first {
                b'0'
            } else {
                st.digit()
            });
            first = false;
        } else {
            out.push(c);
        }
    }
    out.extend_from_slice(&v[exp..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::check;

    fn p(kind: Option<Kind>, v: &str) -> String {
        let key = Key::new(b"test secret");
        let mut out = Vec::new();
        preserve(&key, kind, v.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    fn classes(s: &str) -> Vec<u8> {
        s.bytes()
            .map(|c| match c {
                b'0'..=b'9' => b'9',
                b'a'..=b'z' => b'a',
                b'A'..=b'Z' => b'A',
                c => c,
            })
            .collect()
    }

    #[test]
    fn generic_keeps_classes_and_replaces_any_script() {
        let v = "Alice Smith-2024 (x)";
        let m = p(None, v);
        assert_ne!(m, v);
        assert_eq!(classes(&m), classes(v));
        assert_eq!(p(None, v), m, "keyed, so stable");
        let w = p(None, "Жанна 東京");
        assert_eq!(w.chars().count(), "Жанна 東京".chars().count());
        assert!(w.chars().all(|c| c.is_ascii_alphabetic() || c == ' '));
    }

    #[test]
    fn emails_stay_emails() {
        let v = "alice.b+x@corp.example.com";
        let m = p(Some(Kind::Email), v);
        assert_ne!(m, v);
        assert_eq!(m.len(), v.len());
        assert!(m.ends_with(".com"));
        assert_eq!(
            check::at(Kind::Email, m.as_bytes(), 0),
            Some(0..m.len()),
            "{m}"
        );
        let enc = p(Some(Kind::Email), "bob%40example.org");
        assert!(enc.contains("%40") && enc.ends_with(".org"));
    }

    #[test]
    fn cards_stay_luhn_valid_with_their_bin() {
        for v in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "3782 822463 10005",
            "5500-0000-0000-0004",
        ] {
            let m = p(Some(Kind::Card), v);
            assert_ne!(m, v);
            assert_eq!(classes(&m), classes(v));
            assert_eq!(&m[..4], &v[..4]);
            assert_eq!(
                check::at(Kind::Card, m.as_bytes(), 0),
                Some(0..m.len()),
                "{m}"
            );
        }
    }

    #[test]
    fn ibans_stay_valid() {
        for v in ["DE89370400440532013000", "GB82 WEST 1234 5698 7654 32"] {
            let m = p(Some(Kind::Iban), v);
            assert_ne!(m, v);
            assert_eq!(classes(&m[4..]), classes(&v[4..]));
            assert_eq!(&m[..2], &v[..2]);
            assert_eq!(
                check::at(Kind::Iban, m.as_bytes(), 0),
                Some(0..m.len()),
                "{m}"
            );
        }
    }

    #[test]
    fn ssns_stay_issuable() {
        for i in 0..200 {
            let v = format!("{:03}-45-{:04}", 100 + i, 1000 + i);
            let m = p(Some(Kind::Ssn), &v);
            assert_eq!(check::at(Kind::Ssn, m.as_bytes(), 0), Some(0..11), "{m}");
        }
    }

    #[test]
    fn phones_keep_their_prefix() {
        let m = p(Some(Kind::Phone), "+1 (415) 555-0123");
        assert!(m.starts_with("+1 (4"), "{m}");
        assert_eq!(classes(&m), classes("+1 (415) 555-0123"));
        assert_eq!(
            check::at(Kind::Phone, m.as_bytes(), 0),
            Some(0..m.len()),
            "{m}"
        );
        let m = p(Some(Kind::Phone), "020 7946 0958");
        assert!(m.starts_with('0'));
        assert_eq!(
            check::at(Kind::Phone, m.as_bytes(), 0),
            Some(0..m.len()),
            "{m}"
        );
    }

    #[test]
    fn ips_stay_ips() {
        for v in ["10.1.2.3", "192.168.100.200", "8.8.8.8"] {
            let m = p(Some(Kind::Ipv4), v);
            assert_eq!(m.len(), v.len());
            assert_eq!(m.split('.').next(), v.split('.').next());
            assert!(m.parse::<std::net::Ipv4Addr>().is_ok(), "{m}");
        }
        for v in [
            "2001:db8::8a2e:370:7334",
            "::1",
            "::ffff:192.0.2.128",
            "FE80::AB",
            "1::",
        ] {
            let m = p(Some(Kind::Ipv6), v);
            assert_eq!(m.len(), v.len());
            assert!(m.parse::<std::net::Ipv6Addr>().is_ok(), "{v} -> {m}");
        }
    }

    #[test]
    fn tokens() {
        let t =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let m = p(Some(Kind::Jwt), t);
        assert!(m.starts_with("eyJhbGciOiJIUzI1NiJ9."));
        assert_ne!(m, t);
        assert_eq!(check::at(Kind::Jwt, m.as_bytes(), 0), Some(0..m.len()));
        let m = p(Some(Kind::AwsKey), "AKIAIOSFODNN7EXAMPLE");
        assert!(m.starts_with("AKIA") && m != "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(check::at(Kind::AwsKey, m.as_bytes(), 0), Some(0..20));
    }

    #[test]
    fn never_the_original() {
        for i in 0..300u32 {
            let key = Key::new(&i.to_le_bytes());
            for (k, v) in [
                (Some(Kind::Ipv4), "1.2.3.4"),
                (Some(Kind::Email), "a@b.io"),
                (None, "x"),
                (None, "7"),
            ] {
                let mut out = Vec::new();
                preserve(&key, k, v.as_bytes(), &mut out);
                assert_ne!(out, v.as_bytes(), "{v} with key {i}");
            }
        }
        let mut out = Vec::new();
        preserve(&Key::new(b"k"), None, b"-- ..", &mut out);
        assert_eq!(out, b"-- ..");
    }

    #[test]
    fn numbers_stay_numbers() {
        let key = Key::new(b"k");
        for v in ["4111111111111111", "-12.5e+3", "0.123", "7"] {
            let mut out = Vec::new();
            number(&key, v.as_bytes(), &mut out);
            let s = String::from_utf8(out).unwrap();
            assert!(
                serde_json::from_str::<serde_json::Number>(&s).is_ok(),
                "{v} -> {s}"
            );
            assert_eq!(s.len(), v.len());
        }
    }
}
