//! Validators: given a position where a detector's trigger matched, decide whether a
//! real value of that kind starts there and where it ends.
//!
//! Triggers (in `detect.rs`) are short regular expressions that only say "look here".
//! The rules that regular expressions express badly live here: checksums (Luhn,
//! mod-97), country lengths, the longest valid prefix of a digit run, and what may
//! stand before and after a value. Every validator looks at a bounded window after
//! `s`, so a scan stays linear in the input whatever it holds.

use std::net::Ipv6Addr;
use std::ops::Range;

use super::Kind;

pub(crate) fn at(kind: Kind, h: &[u8], s: usize) -> Option<Range<usize>> {
    match kind {
        Kind::Email => email(h, s),
        Kind::Card => card(h, s),
        Kind::Iban => iban(h, s),
        Kind::Ssn => ssn(h, s),
        Kind::Phone => phone(h, s),
        Kind::Ipv4 => ipv4(h, s),
        Kind::Ipv6 => ipv6(h, s),
        Kind::Jwt => jwt(h, s),
        Kind::Bearer => bearer(h, s),
        Kind::AwsKey => aws_key(h, s),
    }
}

fn byte(h: &[u8], i: usize) -> Option<u8> {
    h.get(i).copied()
}

fn prev(h: &[u8], s: usize) -> Option<u8> {
    s.checked_sub(1).and_then(|i| byte(h, i))
}

fn is_digit(b: Option<u8>) -> bool {
    b.is_some_and(|c| c.is_ascii_digit())
}

fn is_alnum(b: Option<u8>) -> bool {
    b.is_some_and(|c| c.is_ascii_alphanumeric())
}

/// A number that starts right after `digit.` is the fraction of a decimal
/// (`0.4111111111111111`), not a value of its own.
fn after_decimal_point(h: &[u8], s: usize) -> bool {
    s >= 2 && h[s - 1] == b'.' && h[s - 2].is_ascii_digit()
}

// ---------------------------------------------------------------- e-mail

pub(crate) fn is_local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 253;

/// `local@domain.tld`, also with the `@` percent-encoded (`%40`) as in URLs. The
/// local part must be a whole run of local characters (nothing starts inside one),
/// and the domain ends at the last label that is a plausible top-level domain.
pub(crate) fn email(h: &[u8], s: usize) -> Option<Range<usize>> {
    if prev(h, s).is_some_and(is_local_char) {
        return None;
    }
    let mut i = s;
    let at = loop {
        match byte(h, i) {
            Some(b'@') => break i,
            Some(b'%') if h[i..].starts_with(b"%40") => break i,
            Some(c) if is_local_char(c) && i - s < MAX_LOCAL => i += 1,
            _ => return None,
        }
    };
    // Leading dots are punctuation around the address, not part of it.
    let start = s + h[s..at].iter().take_while(|&&c| c == b'.').count();
    if start == at {
        return None;
    }
    let domain = at + if h[at] == b'@' { 1 } else { 3 };
    let mut i = domain;
    let mut best = None;
    let mut labels = 0;
    loop {
        let label = i;
        while i < h.len() && (h[i].is_ascii_alphanumeric() || h[i] == b'-') && i - label < 63 {
            i += 1;
        }
        if i == label || h[label] == b'-' || h[i - 1] == b'-' {
            break;
        }
        labels += 1;
        let alpha = h[label..i].iter().all(u8::is_ascii_alphabetic);
        if labels >= 2 && alpha && i - label >= 2 {
            best = Some(i);
        }
        if i - domain > MAX_DOMAIN {
            break;
        }
        if byte(h, i) == Some(b'.') && is_alnum(byte(h, i + 1)) {
            i += 1;
        } else {
            break;
        }
    }
    // The chosen end must not cut a label: what follows is a dot or not part of a domain.
    let end = best?;
    if byte(h, end).is_some_and(|c| c.is_ascii_alphanumeric() || c == b'-') {
        return None;
    }
    Some(start..end)
}

// ---------------------------------------------------------------- cards

pub(crate) fn luhn_ok(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.rev().enumerate() {
        let mut v = u32::from(d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// 13 to 19 digits starting with 2–6 (Mastercard, Amex, Diners, JCB, Visa,
/// Discover, UnionPay, Maestro), written whole or in groups of 3–6 split by one
/// kind of separator (space or dash), passing Luhn. The longest valid prefix wins,
/// so a card followed by more digits in another group (`4111 … 1111 2025`) is
/// still found.
pub(crate) fn card(h: &[u8], s: usize) -> Option<Range<usize>> {
    if is_digit(prev(h, s)) || after_decimal_point(h, s) {
        return None;
    }
    if !matches!(byte(h, s), Some(b'2'..=b'6')) {
        return None;
    }
    let mut digits = [0u8; 19];
    let mut n = 0;
    let mut sep = None;
    let mut group = 0;
    let mut groups = 0;
    let mut i = s;
    let mut best = None;
    while i < h.len() {
        let c = h[i];
        if c.is_ascii_digit() {
            if n == 19 {
                break;
            }
            digits[n] = c - b'0';
            n += 1;
            group += 1;
            i += 1;
            let at_end = !is_digit(byte(h, i));
            // With separators, every group is 3–6 digits and the first is 4.
            let group_ok = sep.is_none() || (3..=6).contains(&group);
            if at_end && (13..=19).contains(&n) && group_ok && luhn_ok(digits[..n].iter().copied())
            {
                best = Some(i);
            }
        } else if (c == b' ' || c == b'-') && is_digit(byte(h, i + 1)) {
            if sep.is_some_and(|x| x != c) || !(3..=6).contains(&group) {
                break;
            }
            if groups == 0 && group != 4 {
                break;
            }
            sep = Some(c);
            groups += 1;
            group = 0;
            i += 1;
        } else {
            break;
        }
    }
    best.map(|e| s..e)
}

// ---------------------------------------------------------------- IBAN

/// IBAN lengths by country (ISO 13616 registry). Only listed countries are
/// detected: the length is what tells an IBAN from any other checksum-lucky string.
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

pub(crate) fn iban_length(country: [u8; 2]) -> Option<usize> {
    let c = country.map(|b| b.to_ascii_uppercase());
    IBAN_LENGTHS.iter().find(|(k, _)| **k == c).map(|&(_, n)| n)
}

/// The IBAN check: move the first four characters to the end, read letters as
/// 10–35, and the number must be 1 modulo 97.
pub(crate) fn iban_mod97(chars: &[u8]) -> u32 {
    let mut r = 0u32;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        let c = c.to_ascii_uppercase();
        r = if c.is_ascii_digit() {
            (r * 10 + u32::from(c - b'0')) % 97
        } else {
            (r * 100 + u32::from(c - b'A') + 10) % 97
        };
    }
    r
}

/// Country code, two check digits, then the country's length of letters and
/// digits, printed whole or in groups of four split by single spaces.
pub(crate) fn iban(h: &[u8], s: usize) -> Option<Range<usize>> {
    if is_alnum(prev(h, s)) {
        return None;
    }
    let cc = [byte(h, s)?, byte(h, s + 1)?];
    if !cc.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    let len = iban_length(cc)?;
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut i = s;
    while n < len {
        match byte(h, i) {
            Some(c) if c.is_ascii_alphanumeric() => {
                chars[n] = c;
                n += 1;
                i += 1;
            }
            Some(b' ') if n % 4 == 0 && n > 0 && is_alnum(byte(h, i + 1)) => i += 1,
            _ => return None,
        }
    }
    if is_alnum(byte(h, i)) {
        return None;
    }
    if !chars[2..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    (iban_mod97(&chars[..n]) == 1).then_some(s..i)
}

// ---------------------------------------------------------------- SSN

/// `AAA-GG-SSSS` (or with spaces), with the Social Security Administration's
/// never-issued numbers excluded: area 000, 666 and 900–999, group 00, serial 0000.
/// Nine bare digits are not taken: too many order numbers look the same.
pub(crate) fn ssn(h: &[u8], s: usize) -> Option<Range<usize>> {
    if is_digit(prev(h, s)) || after_decimal_point(h, s) {
        return None;
    }
    let w = h.get(s..s + 11)?;
    let sep = w[3];
    if !(sep == b'-' || sep == b' ') || w[6] != sep {
        return None;
    }
    let digits = |r: Range<usize>| w[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..3) && digits(4..6) && digits(7..11)) {
        return None;
    }
    if is_digit(byte(h, s + 11)) || (byte(h, s + 11) == Some(sep) && is_digit(byte(h, s + 12))) {
        return None;
    }
    let num = |r: Range<usize>| w[r].iter().fold(0u32, |a, c| a * 10 + u32::from(c - b'0'));
    let (area, group, serial) = (num(0..3), num(4..6), num(7..11));
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return None;
    }
    Some(s..s + 11)
}

// ---------------------------------------------------------------- phone

/// Phone numbers, in the forms people and forms write them:
/// - E.164 and international: `+` then 8–15 digits, optionally grouped by single
///   spaces, dots or dashes, with at most one parenthesised group (`+44 (0)20 …`,
///   `+1 (415) 555-0123`);
/// - North American: `(415) 555-0123`, `415-555-0123`, `415.555.0123`, `415 555 0123`;
/// - national with a trunk 0: `020 7946 0958`, `07700 900123`, `01 23 45 67 89`,
///   `030/12345678`: 9–12 digits in at least two groups.
///
/// Ten bare digits are not taken (timestamps and ids look the same).
pub(crate) fn phone(h: &[u8], s: usize) -> Option<Range<usize>> {
    if is_digit(prev(h, s)) || after_decimal_point(h, s) {
        return None;
    }
    match byte(h, s)? {
        b'+' => {
            if is_alnum(prev(h, s)) || prev(h, s) == Some(b'+') {
                return None;
            }
            grouped(h, s + 1, 8..=15, true).map(|e| s..e)
        }
        b'(' => nanp_paren(h, s),
        b'0'..=b'9' => nanp_plain(h, s).or_else(|| {
            if h[s] == b'0' {
                grouped(h, s, 9..=12, false).map(|e| s..e)
            } else {
                None
            }
        }),
        _ => None,
    }
}

/// Digits in groups split by single separators; returns the end of the longest
/// prefix whose digit count is in `count` and that ends a group.
///
/// International numbers (after `+`) start with 1–9 and may hold one `(…)` group.
/// National numbers need at least two groups, the first of 2–5 digits (trunk 0 and
/// area code) and the others of 2–8, which keeps decimals (`0.123456789`) out.
fn grouped(
    h: &[u8],
    s: usize,
    count: std::ops::RangeInclusive<usize>,
    international: bool,
) -> Option<usize> {
    if international && !matches!(byte(h, s), Some(b'1'..=b'9')) {
        return None;
    }
    let group_ok = |index: usize, len: usize| {
        international
            || if index == 0 {
                (2..=5).contains(&len)
            } else {
                (2..=8).contains(&len)
            }
    };
    let max_end = s + 40;
    let mut i = s;
    let mut n = 0;
    let mut group = 0;
    let mut groups = 0;
    let mut parens = 0;
    let mut best = None;
    while i < h.len() && i < max_end {
        let c = h[i];
        if c.is_ascii_digit() {
            n += 1;
            group += 1;
            i += 1;
            if n > *count.end() {
                break;
            }
            if !is_digit(byte(h, i))
                && count.contains(&n)
                && (international || groups > 0)
                && group_ok(groups, group)
            {
                best = Some(i);
            }
        } else if matches!(c, b' ' | b'.' | b'-') || (!international && c == b'/') {
            let next = byte(h, i + 1);
            let opens = international && next == Some(b'(') && parens == 0;
            if group == 0 || !group_ok(groups, group) || !(is_digit(next) || opens) {
                break;
            }
            groups += 1;
            group = 0;
            i += 1;
        } else if international && c == b'(' && parens == 0 {
            // One group like `(0)` or `(415)`: 1–4 digits, then `)`, then a digit or a space and a digit.
            let Some(close) = h[i + 1..].iter().take(5).position(|&c| c == b')') else {
                break;
            };
            let inner = &h[i + 1..i + 1 + close];
            if inner.is_empty() || !inner.iter().all(u8::is_ascii_digit) {
                break;
            }
            let mut j = i + close + 2;
            if byte(h, j) == Some(b' ') {
                j += 1;
            }
            if !is_digit(byte(h, j)) {
                break;
            }
            n += inner.len();
            parens += 1;
            groups += 1;
            group = 0;
            i = j;
        } else {
            break;
        }
    }
    best
}

fn all_digits(h: &[u8], r: Range<usize>) -> bool {
    h.get(r).is_some_and(|w| w.iter().all(u8::is_ascii_digit))
}

/// A North American number ends where the digits do (not inside a longer number).
fn nanp_end(h: &[u8], s: usize, e: usize) -> Option<Range<usize>> {
    (!is_digit(byte(h, e))).then_some(s..e)
}

/// `(415) 555-0123`, `(415)555-0123`, `(415) 555 0123`.
fn nanp_paren(h: &[u8], s: usize) -> Option<Range<usize>> {
    if !(all_digits(h, s + 1..s + 4) && byte(h, s + 4) == Some(b')')) {
        return None;
    }
    let mut i = s + 5;
    if byte(h, i) == Some(b' ') {
        i += 1;
    }
    if !(all_digits(h, i..i + 3)
        && matches!(byte(h, i + 3), Some(b' ' | b'.' | b'-'))
        && all_digits(h, i + 4..i + 8))
    {
        return None;
    }
    nanp_end(h, s, i + 8)
}

/// `415-555-0123`, `415.555.0123`, `415 555 0123`.
fn nanp_plain(h: &[u8], s: usize) -> Option<Range<usize>> {
    let sep = |i: usize| matches!(byte(h, i), Some(b' ' | b'.' | b'-'));
    if !(all_digits(h, s..s + 3) && sep(s + 3) && all_digits(h, s + 4..s + 7) && sep(s + 7)) {
        return None;
    }
    if !all_digits(h, s + 8..s + 12) {
        return None;
    }
    nanp_end(h, s, s + 12)
}

// ---------------------------------------------------------------- IP addresses

/// Dotted quad with every octet 0–255, not inside a longer dotted or digit run
/// (`1.2.3.4.5`, version strings with five parts).
pub(crate) fn ipv4(h: &[u8], s: usize) -> Option<Range<usize>> {
    if is_alnum(prev(h, s)) || after_decimal_point(h, s) {
        return None;
    }
    let mut i = s;
    for part in 0..4 {
        if part > 0 {
            if byte(h, i) != Some(b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut v = 0u32;
        while i - start < 3 && is_digit(byte(h, i)) {
            v = v * 10 + u32::from(h[i] - b'0');
            i += 1;
        }
        if i == start || v > 255 {
            return None;
        }
    }
    if is_digit(byte(h, i)) || (byte(h, i) == Some(b'.') && is_digit(byte(h, i + 1))) {
        return None;
    }
    Some(s..i)
}

pub(crate) fn is_v6_char(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':' || c == b'.'
}

/// Whatever the standard library parses as an IPv6 address (all the `::` forms,
/// embedded IPv4), with at least two colons and one hex digit. The longest parse
/// wins, so trailing punctuation (`fe80::1:` at the end of a sentence) is left out.
pub(crate) fn ipv6(h: &[u8], s: usize) -> Option<Range<usize>> {
    if prev(h, s).is_some_and(|c| c.is_ascii_alphanumeric() || c == b':' || c == b'.') {
        return None;
    }
    let mut j = s;
    let mut colons = 0;
    while j < h.len() && j - s < 45 && is_v6_char(h[j]) {
        colons += usize::from(h[j] == b':');
        j += 1;
    }
    if colons < 2 {
        return None;
    }
    let mut e = j;
    while e >= s + 2 {
        let next = byte(h, e);
        let cand = &h[s..e];
        let cut_ok = !is_alnum(next);
        if cut_ok
            && cand.iter().filter(|&&c| c == b':').count() >= 2
            && cand.iter().any(u8::is_ascii_hexdigit)
            && cand
                .last()
                .is_some_and(|&c| c.is_ascii_hexdigit() || c == b':')
            && std::str::from_utf8(cand)
                .ok()
                .and_then(|t| t.parse::<Ipv6Addr>().ok())
                .is_some()
        {
            return Some(s..e);
        }
        e -= 1;
    }
    None
}

// ---------------------------------------------------------------- tokens

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// JWS (`header.payload.signature`, the signature may be empty) or JWE (five
/// parts); the header is base64url JSON, so it starts with `eyJ` (`{"`).
pub(crate) fn jwt(h: &[u8], s: usize) -> Option<Range<usize>> {
    if prev(h, s).is_some_and(|c| is_b64url(c) || c == b'.') || !h[s..].starts_with(b"eyJ") {
        return None;
    }
    let mut ends = Vec::with_capacity(5);
    let mut i = s;
    let mut lens = Vec::with_capacity(5);
    loop {
        let start = i;
        while i < h.len() && is_b64url(h[i]) {
            i += 1;
        }
        lens.push(i - start);
        ends.push(i);
        if ends.len() == 5 || byte(h, i) != Some(b'.') {
            break;
        }
        i += 1;
    }
    let end = if ends.len() == 5 && lens[0] >= 4 && lens[2] > 0 && lens[3] > 0 {
        ends[4]
    } else if ends.len() >= 3 && lens[0] >= 4 && lens[1] > 0 {
        ends[2]
    } else {
        return None;
    };
    (!byte(h, end).is_some_and(|c| is_b64url(c) || c == b'=')).then_some(s..end)
}

/// token68 characters, and `=` anywhere: padding belongs at the end, but a
/// token that breaks the rule must not leak its tail.
fn is_token68(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// `Bearer <token>` (any case): the token is the value, the word stays. Tokens
/// shorter than 8 characters are prose ("bearer of"), not credentials.
pub(crate) fn bearer(h: &[u8], s: usize) -> Option<Range<usize>> {
    if is_alnum(prev(h, s)) || !h.get(s..s + 6)?.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let mut t = s + 6;
    while byte(h, t) == Some(b' ') {
        t += 1;
    }
    if t == s + 6 {
        return None;
    }
    let mut e = t;
    while e < h.len() && is_token68(h[e]) {
        e += 1;
    }
    (e - t >= 8).then_some(t..e)
}

const AWS_PREFIXES: &[&[u8; 4]] = &[
    b"AKIA", b"ASIA", b"ABIA", b"ACCA", b"AGPA", b"AIDA", b"AIPA", b"ANPA", b"ANVA", b"APKA",
    b"AROA", b"ASCA",
];

/// AWS access key ids: a four-letter type prefix and 16 more uppercase letters or digits.
pub(crate) fn aws_key(h: &[u8], s: usize) -> Option<Range<usize>> {
    if is_alnum(prev(h, s)) {
        return None;
    }
    let w = h.get(s..s + 20)?;
    if !AWS_PREFIXES.iter().any(|p| w.starts_with(&p[..])) {
        return None;
    }
    if !w[4..]
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return None;
    }
    (!is_alnum(byte(h, s + 20))).then_some(s..s + 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(kind: Kind, text: &str) -> Option<&str> {
        let h = text.as_bytes();
        (0..h.len()).find_map(|s| at(kind, h, s)).map(|r| &text[r])
    }

    #[test]
    fn emails() {
        assert_eq!(
            found(Kind::Email, "mail alice.b+x@example.co.uk now"),
            Some("alice.b+x@example.co.uk")
        );
        assert_eq!(
            found(Kind::Email, "a=bob%40mail.example.org&x"),
            Some("bob%40mail.example.org")
        );
        assert_eq!(
            found(Kind::Email, "end bob@example.com."),
            Some("bob@example.com")
        );
        assert_eq!(found(Kind::Email, "...x@y.io"), Some("x@y.io"));
        // near misses: no top-level domain, numeric TLD, label with trailing dash
        assert_eq!(found(Kind::Email, "root@localhost"), None);
        assert_eq!(found(Kind::Email, "a@10.0.0.1"), None);
        assert_eq!(found(Kind::Email, "a@b-.com"), None);
        assert_eq!(found(Kind::Email, "@example.com"), None);
    }

    #[test]
    fn cards() {
        assert_eq!(
            found(Kind::Card, "card 4111111111111111."),
            Some("4111111111111111")
        );
        assert_eq!(
            found(Kind::Card, "4111 1111 1111 1111 exp"),
            Some("4111 1111 1111 1111")
        );
        assert_eq!(
            found(Kind::Card, "4111-1111-1111-1111"),
            Some("4111-1111-1111-1111")
        );
        assert_eq!(
            found(Kind::Card, "amex 3782 822463 10005"),
            Some("3782 822463 10005")
        );
        assert_eq!(
            found(Kind::Card, "card4111111111111111"),
            Some("4111111111111111")
        );
        // followed by more digits in another group: the card is still found
        assert_eq!(
            found(Kind::Card, "4111 1111 1111 1111 2025"),
            Some("4111 1111 1111 1111")
        );
        // near misses: Luhn fails, too long a run, a decimal fraction, mixed separators, 1-prefix
        assert_eq!(found(Kind::Card, "4111111111111112"), None);
        assert_eq!(found(Kind::Card, "41111111111111110000"), None);
        assert_eq!(found(Kind::Card, "0.4111111111111111"), None);
        assert_eq!(found(Kind::Card, "4111 1111-1111 1111"), None);
        assert_eq!(found(Kind::Card, "1700000000005"), None);
    }

    #[test]
    fn luhn() {
        assert!(luhn_ok([7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3].into_iter()));
        assert!(!luhn_ok([7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 4].into_iter()));
    }

    #[test]
    fn ibans() {
        assert_eq!(
            found(Kind::Iban, "iban DE89370400440532013000 ok"),
            Some("DE89370400440532013000")
        );
        assert_eq!(
            found(Kind::Iban, "GB82 WEST 1234 5698 7654 32 paid"),
            Some("GB82 WEST 1234 5698 7654 32")
        );
        assert_eq!(
            found(Kind::Iban, "nl91abna0417164300"),
            Some("nl91abna0417164300")
        );
        // near misses: bad check digits, wrong length for the country, unknown country
        assert_eq!(found(Kind::Iban, "DE88370400440532013000"), None);
        assert_eq!(found(Kind::Iban, "DE8937040044053201300"), None);
        assert_eq!(found(Kind::Iban, "ZZ89370400440532013000"), None);
        assert_eq!(found(Kind::Iban, "xDE89370400440532013000"), None);
    }

    #[test]
    fn ssns() {
        assert_eq!(found(Kind::Ssn, "ssn 123-45-6789,"), Some("123-45-6789"));
        assert_eq!(found(Kind::Ssn, "ssn 123 45 6789"), Some("123 45 6789"));
        assert_eq!(found(Kind::Ssn, "666-45-6789"), None);
        assert_eq!(found(Kind::Ssn, "923-45-6789"), None);
        assert_eq!(found(Kind::Ssn, "123-00-6789"), None);
        assert_eq!(found(Kind::Ssn, "123-45-0000"), None);
        assert_eq!(found(Kind::Ssn, "123-45 6789"), None);
        assert_eq!(found(Kind::Ssn, "123456789"), None);
        assert_eq!(found(Kind::Ssn, "1123-45-6789"), None);
    }

    #[test]
    fn phones() {
        assert_eq!(
            found(Kind::Phone, "call +14155550123 now"),
            Some("+14155550123")
        );
        assert_eq!(
            found(Kind::Phone, "call +1 415 555 0123."),
            Some("+1 415 555 0123")
        );
        assert_eq!(
            found(Kind::Phone, "+44 (0)20 7946 0958"),
            Some("+44 (0)20 7946 0958")
        );
        assert_eq!(
            found(Kind::Phone, "+1 (415) 555-0123"),
            Some("+1 (415) 555-0123")
        );
        assert_eq!(found(Kind::Phone, "(415) 555-0123"), Some("(415) 555-0123"));
        assert_eq!(found(Kind::Phone, "tel:415.555.0123"), Some("415.555.0123"));
        assert_eq!(found(Kind::Phone, "1-415-555-0123"), Some("415-555-0123"));
        assert_eq!(found(Kind::Phone, "020 7946 0958"), Some("020 7946 0958"));
        assert_eq!(found(Kind::Phone, "07700 900123"), Some("07700 900123"));
        assert_eq!(found(Kind::Phone, "01 23 45 67 89"), Some("01 23 45 67 89"));
        assert_eq!(found(Kind::Phone, "030/12345678"), Some("030/12345678"));
        // near misses: bare digits, exponent, short, dates, a longer run
        assert_eq!(found(Kind::Phone, "4155550123"), None);
        assert_eq!(found(Kind::Phone, "1e+10"), None);
        assert_eq!(found(Kind::Phone, "+12345"), None);
        assert_eq!(found(Kind::Phone, "01-02-2023"), None);
        assert_eq!(found(Kind::Phone, "415-555-01234"), None);
        assert_eq!(found(Kind::Phone, "0.123456789"), None);
        assert_eq!(
            found(Kind::Phone, "+14155550123 (mobile)"),
            Some("+14155550123")
        );
    }

    #[test]
    fn ipv4s() {
        assert_eq!(
            found(Kind::Ipv4, "from 192.168.1.20, via"),
            Some("192.168.1.20")
        );
        assert_eq!(found(Kind::Ipv4, "10.0.0.1:8080"), Some("10.0.0.1"));
        assert_eq!(found(Kind::Ipv4, "256.1.1.1"), None);
        assert_eq!(found(Kind::Ipv4, "1.2.3.4.5"), None);
        assert_eq!(found(Kind::Ipv4, "v1.2.3.4"), None);
        assert_eq!(found(Kind::Ipv4, "1.2.3"), None);
    }

    #[test]
    fn ipv6s() {
        assert_eq!(
            found(Kind::Ipv6, "addr 2001:db8::8a2e:370:7334 up"),
            Some("2001:db8::8a2e:370:7334")
        );
        assert_eq!(found(Kind::Ipv6, "[::1]:80"), Some("::1"));
        assert_eq!(found(Kind::Ipv6, "fe80::1:"), Some("fe80::1"));
        assert_eq!(
            found(Kind::Ipv6, "::ffff:192.0.2.128 x"),
            Some("::ffff:192.0.2.128")
        );
        assert_eq!(found(Kind::Ipv6, "12:30:45"), None);
        assert_eq!(found(Kind::Ipv6, "00:1a:2b:3c:4d:5e"), None);
        assert_eq!(found(Kind::Ipv6, "std::vec"), None);
        assert_eq!(found(Kind::Ipv6, "2001:db8::1zz"), None);
    }

    #[test]
    fn jwts() {
        let t =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(found(Kind::Jwt, &format!("t={t}&x")), Some(t));
        let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.";
        assert_eq!(found(Kind::Jwt, unsigned), Some(unsigned));
        assert_eq!(found(Kind::Jwt, "eyJhbGciOiJIUzI1NiJ9"), None);
        assert_eq!(found(Kind::Jwt, "xeyJhbGci.eyJzdWIi.abc"), None);
    }

    #[test]
    fn bearers() {
        assert_eq!(
            found(Kind::Bearer, "Bearer abcdef0123456789"),
            Some("abcdef0123456789")
        );
        assert_eq!(
            found(Kind::Bearer, "auth: bearer  tok_ABC/+=x=="),
            Some("tok_ABC/+=x==")
        );
        assert_eq!(found(Kind::Bearer, "bearer of bad news"), None);
        assert_eq!(found(Kind::Bearer, "cupbearer abcdefghijkl"), None);
    }

    #[test]
    fn aws_keys() {
        assert_eq!(
            found(Kind::AwsKey, "key=AKIAIOSFODNN7EXAMPLE;"),
            Some("AKIAIOSFODNN7EXAMPLE")
        );
        assert_eq!(found(Kind::AwsKey, "AKIAIOSFODNN7EXAMPLEX"), None);
        assert_eq!(found(Kind::AwsKey, "AKIAiosfodnn7example"), None);
        assert_eq!(found(Kind::AwsKey, "ZZIAIOSFODNN7EXAMPLE"), None);
    }
}
