//! Finding private values in free text: the built-in detectors, user patterns and
//! credential assignments (`password=…`).
//!
//! One pass per haystack, in two halves that never look at the same bytes twice:
//!
//! - an *anchored* scan for the detectors whose values hold a rare byte or start
//!   a digit run (e-mail at `@`/`%40`, card, IBAN, SSN, phone, IPv4, IPv6 at digit
//!   runs, `+`, `(` and `:`): a 256-entry table skips every other byte (letters,
//!   the bulk of text, cost one lookup each), and each anchor goes to the
//!   validators in `check.rs`;
//! - a regex for the detectors that start with a literal (`eyJ`, `Bearer`,
//!   `AKIA`…), which the regex engine finds with a SIMD prefilter.
//!
//! A combined lazy DFA over all triggers was the first design; it ran at 100 to
//! 140 MB/s on JSON, because digits and hex-like text keep it in slow states. The
//! validators decide with checksums and context (Luhn, mod-97, country lengths,
//! what may stand before and after a value), and each looks at a bounded window,
//! so a scan stays linear whatever the input holds.

pub(crate) mod check;

use std::ops::Range;

use regex_automata::Input;
use regex_automata::meta::{self, Regex};
use regex_automata::util::syntax;

use crate::rules::Action;

/// A built-in detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// E-mail addresses (`local@domain.tld`, also `%40`-encoded).
    Email,
    /// Payment card numbers: 13–19 digits starting 2–6, Luhn-valid.
    Card,
    /// IBANs: known country, its length, mod-97 check.
    Iban,
    /// US social security numbers written `AAA-GG-SSSS` (or with spaces).
    Ssn,
    /// Phone numbers: E.164/international, North American and trunk-0 national forms.
    Phone,
    /// IPv4 addresses.
    Ipv4,
    /// IPv6 addresses.
    Ipv6,
    /// JSON web tokens (JWS and JWE compact forms).
    Jwt,
    /// The token after `Bearer `.
    Bearer,
    /// AWS access key ids (`AKIA…`, `ASIA…`, …).
    AwsKey,
}

pub(crate) use Detector as Kind;

impl Detector {
    /// Every built-in detector, in trigger priority order.
    pub const ALL: [Detector; 10] = [
        Detector::Email,
        Detector::Jwt,
        Detector::Bearer,
        Detector::AwsKey,
        Detector::Iban,
        Detector::Card,
        Detector::Ssn,
        Detector::Phone,
        Detector::Ipv6,
        Detector::Ipv4,
    ];

    /// The detector's name in the config and in reports (`email`, `aws_key`, …).
    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::Card => "card",
            Detector::Iban => "iban",
            Detector::Ssn => "ssn",
            Detector::Phone => "phone",
            Detector::Ipv4 => "ipv4",
            Detector::Ipv6 => "ipv6",
            Detector::Jwt => "jwt",
            Detector::Bearer => "bearer",
            Detector::AwsKey => "aws_key",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The regex trigger of the detectors that start with a literal; the others
    /// are found by the anchored scan.
    fn literal_trigger(self) -> Option<&'static str> {
        match self {
            Detector::Jwt => Some(r"\beyJ[A-Za-z0-9_\-]{2}"),
            Detector::Bearer => Some(r"\b(?i:bearer) +[A-Za-z0-9\-._~+/]"),
            Detector::AwsKey => Some(
                r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}",
            ),
            _ => None,
        }
    }

    pub(crate) fn from_index(i: usize) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.index() == i)
    }
}

/// What found a value: decides its counter and how it is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum What {
    Kind(Kind),
    /// A user pattern, by index.
    User(usize),
    /// A credential assignment in free text (`password=…`, `"token": "…"`).
    Credential,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub range: Range<usize>,
    pub what: What,
}

/// Field names whose values the default `secret_field` rule redacts (query, form
/// and JSON, at any depth). Compared after lowercasing and removing `_` and `-`,
/// so `client_secret`, `Client-Secret` and `clientSecret` are one name.
pub const SECRET_NAMES: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "clientsecret",
    "privatekey",
    "secretkey",
    "awssecretaccesskey",
    "cvv",
    "cvc",
    "pin",
    "otp",
];

/// Field names whose values the default `token_field` rule hashes (compared like
/// [`SECRET_NAMES`]).
pub const TOKEN_NAMES: &[&str] = &[
    "token",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "authtoken",
    "sessiontoken",
    "apikey",
    "authorization",
    "credential",
    "credentials",
];

/// Lowercased with `_` and `-` removed: the form [`SECRET_NAMES`] and [`TOKEN_NAMES`] use.
pub(crate) fn normalise_name(name: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend(
        name.iter()
            .filter(|&&c| c != b'_' && c != b'-')
            .map(u8::to_ascii_lowercase),
    );
}

/// The credential-assignment trigger: a credential name, an optional closing
/// quote, `:` or `=`, and an optional opening quote; the value starts at the end.
const CREDENTIAL_TRIGGER: &str = r#"(?i)\b(?:pass(?:word|wd|phrase)?|pwd|(?:client[_\-]?)?secret|(?:private|secret)[_\-]?key|aws[_\-]?secret[_\-]?access[_\-]?key|cvv|cvc|pin|otp|(?:access|refresh|id|auth|session)?[_\-]?token|api[_\-]?key|authorization|credentials?)["']?[ \t]*[:=][ \t]*["']?"#;

pub(crate) struct Detectors {
    /// Triggers of the enabled literal-led detectors.
    literal: Option<Regex>,
    literal_kinds: Vec<Kind>,
    actions: [Option<Action>; 10],
    user: Option<Regex>,
    user_actions: Vec<Action>,
    credential: Option<(Regex, Action)>,
}

fn bytes_syntax() -> syntax::Config {
    syntax::Config::new().unicode(false).utf8(false)
}

const C_DIGIT: u8 = 1;
const C_AT: u8 = 2;
const C_PERCENT: u8 = 3;
const C_PLUS: u8 = 4;
const C_PAREN: u8 = 5;
const C_COLON: u8 = 6;

/// Bytes where an anchored value can start or be recognised; 0 for the rest.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut d = b'0';
    while d <= b'9' {
        t[d as usize] = C_DIGIT;
        d += 1;
    }
    t[b'@' as usize] = C_AT;
    t[b'%' as usize] = C_PERCENT;
    t[b'+' as usize] = C_PLUS;
    t[b'(' as usize] = C_PAREN;
    t[b':' as usize] = C_COLON;
    t
};

impl Detectors {
    pub(crate) fn new(
        builtin: [Option<Action>; 10],
        user: Option<(Regex, Vec<Action>)>,
        credential: Option<Action>,
    ) -> Detectors {
        let literal_kinds: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| builtin[k.index()].is_some() && k.literal_trigger().is_some())
            .collect();
        let pats: Vec<&str> = literal_kinds
            .iter()
            .filter_map(|k| k.literal_trigger())
            .collect();
        let literal = (!pats.is_empty()).then(|| {
            Regex::builder()
                .syntax(bytes_syntax())
                .build_many(&pats)
                .expect("built-in triggers compile")
        });
        let credential = credential.map(|a| {
            let re = Regex::builder()
                .syntax(bytes_syntax())
                .configure(meta::Config::new())
                .build(CREDENTIAL_TRIGGER)
                .expect("built-in credential trigger compiles");
            (re, a)
        });
        let (user, user_actions) = match user {
            Some((re, a)) => (Some(re), a),
            None => (None, Vec::new()),
        };
        Detectors {
            literal,
            literal_kinds,
            actions: builtin,
            user,
            user_actions,
            credential,
        }
    }

    pub(crate) fn action(&self, what: What) -> Action {
        match what {
            What::Kind(k) => self.actions[k.index()].unwrap_or(Action::NONE),
            What::User(i) => self.user_actions.get(i).copied().unwrap_or(Action::NONE),
            What::Credential => self.credential.as_ref().map_or(Action::NONE, |c| c.1),
        }
    }

    pub(crate) fn has_user(&self) -> bool {
        self.user.is_some()
    }

    fn on(&self, k: Kind) -> bool {
        self.actions[k.index()].is_some()
    }

    /// Built-in detectors over `h`, appended to `out` in order, without overlaps.
    pub(crate) fn scan_builtin(&self, h: &[u8], out: &mut Vec<Found>) {
        let start = out.len();
        self.scan_anchored(h, out);
        let Some(re) = &self.literal else { return };
        let anchored = out.len();
        let mut pos = 0;
        while pos < h.len() {
            let Some(m) = re.search(&Input::new(h).range(pos..)) else {
                break;
            };
            let s = m.start();
            let k = self.literal_kinds[m.pattern().as_usize()];
            match check::at(k, h, s) {
                Some(r) if !r.is_empty() => {
                    pos = r.end.max(s + 1);
                    out.push(Found {
                        range: r,
                        what: What::Kind(k),
                    });
                }
                _ => pos = s + 1,
            }
        }
        if out.len() > anchored && anchored > start {
            // Both halves found something: merge them in order, earlier finds first.
            let mut tail = out.split_off(start);
            resolve_overlaps(&mut tail);
            out.append(&mut tail);
        }
    }

    /// The anchored half of [`Detectors::scan_builtin`].
    fn scan_anchored(&self, h: &[u8], out: &mut Vec<Found>) {
        let email = self.on(Kind::Email);
        let phone = self.on(Kind::Phone);
        let ipv6 = self.on(Kind::Ipv6);
        let digits = [
            Kind::Card,
            Kind::Iban,
            Kind::Ssn,
            Kind::Phone,
            Kind::Ipv4,
            Kind::Ipv6,
        ]
        .into_iter()
        .any(|k| self.on(k));
        if !(email || digits) {
            return;
        }
        let n = h.len();
        let mut last_end = 0;
        // The start of the last IPv6 candidate tried, so a run of colons is tried once.
        let mut v6_tried = usize::MAX;
        let mut i = 0;
        while i < n {
            i = skip_plain(h, i);
            if i >= n {
                break;
            }
            let hit = match CLASS[usize::from(h[i])] {
                C_DIGIT if digits => {
                    if i > 0 && h[i - 1].is_ascii_digit() {
                        None
                    } else {
                        let hit = self.at_digits(h, i, &mut v6_tried);
                        if hit.is_none() {
                            // Nothing starts inside a digit run: skip it.
                            while i + 1 < n && h[i + 1].is_ascii_digit() {
                                i += 1;
                            }
                        }
                        hit
                    }
                }
                C_AT if email => email_at(h, i, last_end),
                C_PERCENT if email && h[i..].starts_with(b"%40") => email_at(h, i, last_end),
                C_PLUS | C_PAREN if phone => check::phone(h, i).map(|r| (Kind::Phone, r)),
                // Only a colon inside hex or starting `::` can belong to an address
                // (not the one after every JSON member name).
                C_COLON
                    if ipv6
                        && (h.get(i + 1) == Some(&b':')
                            || (i > 0 && check::is_v6_char(h[i - 1]) && h[i - 1] != b'.')) =>
                {
                    // `fe80::1`, `::1`: the address started before the colon.
                    let mut j = i;
                    while j > last_end && i - j < 40 && check::is_v6_char(h[j - 1]) {
                        j -= 1;
                    }
                    if j == v6_tried {
                        None
                    } else {
                        v6_tried = j;
                        check::ipv6(h, j).map(|r| (Kind::Ipv6, r))
                    }
                }
                _ => None,
            };
            match hit {
                Some((k, r)) if r.start >= last_end && r.end > i => {
                    i = r.end;
                    last_end = r.end;
                    out.push(Found {
                        range: r,
                        what: What::Kind(k),
                    });
                }
                _ => i += 1,
            }
        }
    }

    /// Values that start a digit run at `i` (or two letters before it: an IBAN).
    /// The run's length and the byte after it rule most validators out before
    /// they run: JSON is full of ids, amounts and timestamps.
    fn at_digits(&self, h: &[u8], i: usize, v6_tried: &mut usize) -> Option<(Kind, Range<usize>)> {
        let run = h[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        let next = h.get(i + run).copied();
        if self.on(Kind::Iban)
            && run >= 2
            && i >= 2
            && h[i - 2].is_ascii_alphabetic()
            && h[i - 1].is_ascii_alphabetic()
            && let Some(r) = check::iban(h, i - 2)
        {
            return Some((Kind::Iban, r));
        }
        let grouped = matches!(next, Some(b' ' | b'-'));
        if self.on(Kind::Card)
            && matches!(h[i], b'2'..=b'6')
            && (run >= 13 || (run == 4 && grouped))
            && let Some(r) = check::card(h, i)
        {
            return Some((Kind::Card, r));
        }
        if self.on(Kind::Ssn)
            && run == 3
            && grouped
            && let Some(r) = check::ssn(h, i)
        {
            return Some((Kind::Ssn, r));
        }
        if self.on(Kind::Phone)
            && ((run == 3 && matches!(next, Some(b' ' | b'.' | b'-')))
                || (h[i] == b'0'
                    && (2..=5).contains(&run)
                    && matches!(next, Some(b' ' | b'.' | b'-' | b'/'))))
            && let Some(r) = check::phone(h, i)
        {
            return Some((Kind::Phone, r));
        }
        if self.on(Kind::Ipv4)
            && run <= 3
            && next == Some(b'.')
            && let Some(r) = check::ipv4(h, i)
        {
            return Some((Kind::Ipv4, r));
        }
        if self.on(Kind::Ipv6) && run <= 4 && next == Some(b':') {
            *v6_tried = i;
            return check::ipv6(h, i).map(|r| (Kind::Ipv6, r));
        }
        None
    }

    /// User patterns over `h` (each non-empty match masked whole).
    pub(crate) fn scan_user(&self, h: &[u8], out: &mut Vec<Found>) {
        let Some(re) = &self.user else { return };
        for m in re.find_iter(h) {
            if !m.is_empty() {
                out.push(Found {
                    range: m.range(),
                    what: What::User(m.pattern().as_usize()),
                });
            }
        }
    }

    /// Credential assignments: the value after `password=`, `"token": "`, ….
    pub(crate) fn scan_credentials(&self, h: &[u8], out: &mut Vec<Found>) {
        let Some((re, _)) = &self.credential else {
            return;
        };
        // An assignment needs `=` or `:`; most header values have neither.
        if memchr::memchr2(b'=', b':', h).is_none() {
            return;
        }
        for m in re.find_iter(h) {
            let v = m.end();
            let quote = v
                .checked_sub(1)
                .map(|i| h[i])
                .filter(|&c| c == b'"' || c == b'\'');
            let end = match quote {
                // A quoted value ends at its closing quote (escaped quotes included).
                Some(q) => {
                    let mut i = v;
                    while i < h.len() && h[i] != q && i - v < 4096 {
                        i += if h[i] == b'\\' { 2 } else { 1 };
                    }
                    i.min(h.len())
                }
                None => {
                    v + h[v..]
                        .iter()
                        .position(|&c| {
                            c.is_ascii_whitespace()
                                || matches!(
                                    c,
                                    b'"' | b'\''
                                        | b'&'
                                        | b','
                                        | b';'
                                        | b'}'
                                        | b']'
                                        | b')'
                                        | b'<'
                                        | b'>'
                                )
                        })
                        .unwrap_or(h.len() - v)
                }
            };
            if end > v {
                out.push(Found {
                    range: v..end,
                    what: What::Credential,
                });
            }
        }
    }

    /// Built-in detectors and user patterns: what runs over a single value
    /// (a JSON string, a query or form value, a path segment).
    pub(crate) fn scan_value(&self, h: &[u8], out: &mut Vec<Found>) {
        out.clear();
        self.scan_user(h, out);
        if out.is_empty() {
            self.scan_builtin(h, out);
            return;
        }
        self.scan_builtin(h, out);
        resolve_overlaps(out);
    }

    /// Everything, credential assignments included: what runs over free text
    /// (text bodies, header values, bodies that are not what they claim).
    pub(crate) fn scan_text(&self, h: &[u8], out: &mut Vec<Found>) {
        out.clear();
        self.scan_user(h, out);
        self.scan_credentials(h, out);
        let structured = !out.is_empty();
        self.scan_builtin(h, out);
        if structured {
            resolve_overlaps(out);
        }
    }

    /// The detector whose value is exactly `v`, if any: `preserve` on a field uses
    /// that detector's format (an e-mail field stays an e-mail).
    pub(crate) fn classify(&self, v: &[u8]) -> Option<Kind> {
        // Every kind is tried, enabled or not: the format of a field does not
        // depend on which detectors run over free text.
        Kind::ALL
            .into_iter()
            .find(|&k| check::at(k, v, 0).is_some_and(|r| r == (0..v.len())))
    }
}

/// The next position from `i` holding a byte of [`CLASS`]. All those bytes lie in
/// `%`..=`@` (0x25–0x40), a range test the compiler vectorises, so runs of
/// letters and spaces are skipped 16 bytes at a time.
fn skip_plain(h: &[u8], mut i: usize) -> usize {
    const W: usize = 16;
    while i + W <= h.len() {
        let chunk = &h[i..i + W];
        if chunk
            .iter()
            .fold(false, |a, &c| a | (c.wrapping_sub(b'%') <= b'@' - b'%'))
        {
            break;
        }
        i += W;
    }
    match h[i..].iter().position(|&c| CLASS[usize::from(c)] != 0) {
        Some(off) => i + off,
        None => h.len(),
    }
}

/// An e-mail whose `@` (or `%40`) is at `at`: the local part is the run of local
/// characters before it, not reaching into an earlier find.
fn email_at(h: &[u8], at: usize, last_end: usize) -> Option<(Kind, Range<usize>)> {
    let mut s = at;
    while s > last_end && at - s <= 64 && check::is_local_char(h[s - 1]) {
        s -= 1;
    }
    if s == at || (s > 0 && check::is_local_char(h[s - 1])) {
        return None;
    }
    check::email(h, s)
        .filter(|r| r.end > at)
        .map(|r| (Kind::Email, r))
}

/// Sorts by start and drops any find that overlaps an earlier one. User patterns
/// were pushed first, so at the same start a user pattern wins.
fn resolve_overlaps(out: &mut Vec<Found>) {
    out.sort_by_key(|f| f.range.start);
    let mut end = 0;
    out.retain(|f| {
        if f.range.start < end {
            return false;
        }
        end = f.range.end;
        true
    });
}

/// Compiles user patterns into one multi-pattern regex. Errors name the pattern by index.
pub(crate) fn compile_user(pats: &[&str]) -> Result<Regex, (usize, String)> {
    // Each alone first, so the error names the pattern that is wrong.
    for (i, p) in pats.iter().enumerate() {
        if let Err(e) = Regex::new(p) {
            return Err((i, e.to_string()));
        }
    }
    Regex::new_many(pats).map_err(|e| (0, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Detectors {
        let mut a = [None; 10];
        for k in Kind::ALL {
            a[k.index()] = Some(Action::test(k.index() as u16));
        }
        Detectors::new(a, None, Some(Action::test(10)))
    }

    fn scan(text: &str) -> Vec<(Kind, &str)> {
        let d = all();
        let mut out = Vec::new();
        d.scan_value(text.as_bytes(), &mut out);
        out.iter()
            .map(|f| match f.what {
                What::Kind(k) => (k, &text[f.range.clone()]),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn one_pass_finds_every_kind() {
        let text = "mail bob@example.com, card 4111 1111 1111 1111, iban DE89370400440532013000, \
                    ssn 123-45-6789, phone +1 415 555 0123, ip 10.1.2.3 and 2001:db8::1, \
                    jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln, Bearer abcdefgh12345678, \
                    key AKIAIOSFODNN7EXAMPLE.";
        let found = scan(text);
        let kinds: Vec<Kind> = found.iter().map(|f| f.0).collect();
        assert_eq!(
            kinds,
            vec![
                Kind::Email,
                Kind::Card,
                Kind::Iban,
                Kind::Ssn,
                Kind::Phone,
                Kind::Ipv4,
                Kind::Ipv6,
                Kind::Jwt,
                Kind::Bearer,
                Kind::AwsKey
            ],
            "{found:?}"
        );
    }

    #[test]
    fn a_failed_candidate_does_not_hide_another() {
        // `4111…@x` is no e-mail (no TLD), and the card in it is still found.
        let found = scan("4111111111111111@x");
        assert_eq!(found, vec![(Kind::Card, "4111111111111111")]);
    }

    #[test]
    fn pathological_inputs_stay_linear() {
        let long = "a".repeat(200_000) + "@x";
        assert!(scan(&long).is_empty());
        let digits = "4".repeat(200_000);
        assert!(scan(&digits).is_empty());
        let colons = ":".repeat(200_000);
        assert!(scan(&colons).is_empty());
        let dots = "1.".repeat(100_000);
        assert!(scan(&dots).is_empty());
        let hex = "ab12".repeat(50_000);
        assert!(scan(&hex).is_empty());
    }

    #[test]
    fn credentials_in_text() {
        let d = all();
        let text = br#"password=hunter2&x=1 {"api_key": "k 1"} Token: abc"#;
        let mut out = Vec::new();
        d.scan_credentials(text, &mut out);
        let vals: Vec<&[u8]> = out.iter().map(|f| &text[f.range.clone()]).collect();
        assert_eq!(vals, vec![&b"hunter2"[..], b"k 1", b"abc"]);
    }

    #[test]
    fn user_patterns_win_overlaps() {
        let mut a = [None; 10];
        a[Kind::Email.index()] = Some(Action::test(0));
        let re = compile_user(&["cust-[0-9]+@example\\.com"]).unwrap();
        let d = Detectors::new(a, Some((re, vec![Action::test(1)])), None);
        let mut out = Vec::new();
        d.scan_value(b"x cust-12@example.com y bob@example.org", &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].what, What::User(0));
        assert_eq!(out[1].what, What::Kind(Kind::Email));
    }

    #[test]
    fn user_pattern_errors_name_the_pattern() {
        let e = compile_user(&["ok", "(unclosed"]).unwrap_err();
        assert_eq!(e.0, 1);
    }

    #[test]
    fn classify_whole_values() {
        let d = all();
        assert_eq!(d.classify(b"bob@example.com"), Some(Kind::Email));
        assert_eq!(d.classify(b"4111111111111111"), Some(Kind::Card));
        assert_eq!(d.classify(b"bob@example.com x"), None);
        assert_eq!(d.classify(b"Alice"), None);
    }
}
