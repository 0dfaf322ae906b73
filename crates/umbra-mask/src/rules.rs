//! Compiled rules: what a configured rule turned into (actions, name matchers, path
//! templates), ready to be asked "does this header / parameter / segment match?".

use crate::detect::normalise_name;
#[cfg(test)]
use crate::detect::{SECRET_NAMES, TOKEN_NAMES};

/// How a matched value is masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum How {
    Redact,
    Hash,
    Preserve,
    Drop,
    /// Run the detectors over the value (whatever `scan` says).
    Detect,
}

/// A rule's decision for one value: how to mask it and which counter to bump.
/// `order` is the rule's position: when several rules match, the lowest wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Action {
    pub id: u16,
    pub order: u32,
    pub how: How,
}

impl Action {
    /// Placeholder for lookups that cannot miss; masks (redacts) if one ever does.
    pub(crate) const NONE: Action = Action {
        id: 0,
        order: u32::MAX,
        how: How::Redact,
    };

    #[cfg(test)]
    pub(crate) fn test(id: u16) -> Action {
        Action {
            id,
            order: u32::from(id),
            how: How::Preserve,
        }
    }
}

/// A header, cookie, parameter or field name matcher.
#[derive(Clone, Debug)]
pub(crate) enum NameMatch {
    /// Exact name or `*` glob, ASCII case-insensitive.
    Glob(Glob),
    /// One of a built-in list, compared normalised (`api_key` = `API-Key` = `apiKey`).
    Listed(Listed),
}

/// The built-in credential name lists (see `detect::SECRET_NAMES`, `TOKEN_NAMES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listed {
    Secrets,
    Tokens,
}

impl Listed {
    /// `norm` is the name normalised by [`normalise_name`]. A `match` on byte
    /// strings compiles to a switch on length and a few compares: this runs for
    /// every member name of every JSON body.
    pub(crate) fn contains(self, norm: &[u8]) -> bool {
        match self {
            Listed::Secrets => matches!(
                norm,
                b"password"
                    | b"passwd"
                    | b"pwd"
                    | b"passphrase"
                    | b"secret"
                    | b"clientsecret"
                    | b"privatekey"
                    | b"secretkey"
                    | b"awssecretaccesskey"
                    | b"cvv"
                    | b"cvc"
                    | b"pin"
                    | b"otp"
            ),
            Listed::Tokens => matches!(
                norm,
                b"token"
                    | b"accesstoken"
                    | b"refreshtoken"
                    | b"idtoken"
                    | b"authtoken"
                    | b"sessiontoken"
                    | b"apikey"
                    | b"authorization"
                    | b"credential"
                    | b"credentials"
            ),
        }
    }

    #[cfg(test)]
    fn names(self) -> &'static [&'static str] {
        match self {
            Listed::Secrets => SECRET_NAMES,
            Listed::Tokens => TOKEN_NAMES,
        }
    }
}

/// A name normalised at most once however many listed rules look at it.
pub(crate) struct Normalised<'a> {
    name: &'a [u8],
    buf: &'a mut Vec<u8>,
    done: bool,
}

impl<'a> Normalised<'a> {
    pub(crate) fn new(name: &'a [u8], buf: &'a mut Vec<u8>) -> Normalised<'a> {
        Normalised {
            name,
            buf,
            done: false,
        }
    }

    pub(crate) fn raw(&self) -> &[u8] {
        self.name
    }

    pub(crate) fn get(&mut self) -> &[u8] {
        if !self.done {
            // No listed name is shorter than 3 or longer than 18 (plus separators).
            if !(3..=40).contains(&self.name.len()) {
                self.buf.clear();
            } else {
                normalise_name(self.name, self.buf);
            }
            self.done = true;
        }
        self.buf
    }
}

impl NameMatch {
    pub(crate) fn secrets() -> NameMatch {
        NameMatch::Listed(Listed::Secrets)
    }

    pub(crate) fn tokens() -> NameMatch {
        NameMatch::Listed(Listed::Tokens)
    }

    #[cfg(test)]
    pub(crate) fn matches(&self, name: &[u8], scratch: &mut Vec<u8>) -> bool {
        self.matches_normalised(&mut Normalised::new(name, scratch))
    }

    pub(crate) fn matches_normalised(&self, name: &mut Normalised<'_>) -> bool {
        match self {
            NameMatch::Glob(g) => g.matches(name.raw()),
            NameMatch::Listed(l) => l.contains(name.get()),
        }
    }
}

/// `*` matches any run of characters; everything else matches itself, ignoring
/// ASCII case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Glob {
    parts: Vec<Vec<u8>>,
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Glob {
        Glob {
            parts: pattern
                .split('*')
                .map(|p| p.bytes().map(|c| c.to_ascii_lowercase()).collect())
                .collect(),
        }
    }

    pub(crate) fn matches(&self, name: &[u8]) -> bool {
        let eq = |a: &[u8], b: &[u8]| a.eq_ignore_ascii_case(b);
        let n = self.parts.len();
        if n == 1 {
            return eq(name, &self.parts[0]);
        }
        let (first, last) = (&self.parts[0], &self.parts[n - 1]);
        if name.len() < first.len() + last.len()
            || !eq(&name[..first.len()], first)
            || !eq(&name[name.len() - last.len()..], last)
        {
            return false;
        }
        // Middle parts in order, leftmost first, between the fixed ends.
        let mut rest = &name[first.len()..name.len() - last.len()];
        for part in self.parts[1..n - 1].iter().filter(|p| !p.is_empty()) {
            match rest.windows(part.len()).position(|w| eq(w, part)) {
                Some(i) => rest = &rest[i + part.len()..],
                None => return false,
            }
        }
        true
    }
}

/// A path template: `/users/{id}/cards/{card}`. `{…}` segments are masked, `*`
/// matches any one segment, a final `**` any number of remaining segments, and
/// other segments must be equal (after percent-decoding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PathTemplate {
    segs: Vec<Seg>,
    rest: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Lit(Vec<u8>),
    Any,
    Mask,
}

impl PathTemplate {
    pub(crate) fn parse(t: &str) -> Result<PathTemplate, String> {
        let Some(body) = t.strip_prefix('/') else {
            return Err(format!("path template {t:?} must start with '/'"));
        };
        let raw: Vec<&str> = body.split('/').collect();
        let mut segs = Vec::with_capacity(raw.len());
        let mut rest = false;
        for (i, s) in raw.iter().enumerate() {
            let n = i + 1;
            if *s == "**" {
                if i + 1 != raw.len() {
                    return Err(format!(
                        "path template {t:?}: '**' must be the last segment (segment {n})"
                    ));
                }
                rest = true;
            } else if *s == "*" {
                segs.push(Seg::Any);
            } else if s.starts_with('{') && s.ends_with('}') && s.len() >= 2 {
                let name = &s[1..s.len() - 1];
                if name.contains(['{', '}']) {
                    return Err(format!(
                        "path template {t:?}: segment {n} {s:?} has nested braces"
                    ));
                }
                segs.push(Seg::Mask);
            } else if s.contains(['{', '}']) {
                return Err(format!(
                    "path template {t:?}: segment {n} {s:?}: a placeholder must be a whole segment, like {{id}}"
                ));
            } else {
                segs.push(Seg::Lit(
                    crate::encode::percent_decode(s.as_bytes(), false).into_owned(),
                ));
            }
        }
        if !segs.contains(&Seg::Mask) {
            return Err(format!(
                "path template {t:?} has no {{placeholder}}, so nothing would be masked"
            ));
        }
        Ok(PathTemplate { segs, rest })
    }

    /// Which of `segments` (decoded, without the leading empty one) to mask, as a
    /// bit per segment; `None` when the path does not match.
    pub(crate) fn matches<S: AsRef<[u8]>>(&self, segments: &[S]) -> Option<Vec<bool>> {
        let mut segs = segments;
        // `/users/1/` matches `/users/{id}`: a trailing slash is not a segment.
        if segs.len() > 1 && segs.last().is_some_and(|s| s.as_ref().is_empty()) {
            segs = &segs[..segs.len() - 1];
        }
        let fits = if self.rest {
            segs.len() >= self.segs.len()
        } else {
            segs.len() == self.segs.len()
        };
        if !fits {
            return None;
        }
        let mut mask = vec![false; segments.len()];
        for (i, (t, s)) in self.segs.iter().zip(segs).enumerate() {
            match t {
                Seg::Lit(l) if l.as_slice() != s.as_ref() => return None,
                Seg::Lit(_) | Seg::Any => {}
                Seg::Mask => mask[i] = true,
            }
        }
        Some(mask)
    }
}

/// Compiled rules for one place (headers, cookies, query, form fields): the first
/// match in `order` wins.
#[derive(Clone, Debug, Default)]
pub(crate) struct NameRules {
    rules: Vec<(NameMatch, Action)>,
}

impl NameRules {
    pub(crate) fn push(&mut self, m: NameMatch, a: Action) {
        self.rules.push((m, a));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a rule written by the user (not a default) is here.
    pub(crate) fn has_user_rules(&self, first_default: u32) -> bool {
        self.rules.iter().any(|(_, a)| a.order < first_default)
    }

    pub(crate) fn find(&self, name: &[u8], scratch: &mut Vec<u8>) -> Option<Action> {
        let mut norm = Normalised::new(name, scratch);
        self.rules
            .iter()
            .filter(|(m, _)| m.matches_normalised(&mut norm))
            .map(|(_, a)| *a)
            .min_by_key(|a| a.order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let g = Glob::new("X-*-Token");
        assert!(g.matches(b"x-session-token"));
        assert!(g.matches(b"X--TOKEN"));
        assert!(!g.matches(b"x-token"));
        assert!(Glob::new("*").matches(b"anything"));
        assert!(Glob::new("a*b*c").matches(b"aXbYc"));
        assert!(!Glob::new("a*b*c").matches(b"aXcYb"));
        assert!(Glob::new("authorization").matches(b"Authorization"));
        assert!(!Glob::new("authorization").matches(b"authorizations"));
        assert!(Glob::new("**x").matches(b"yx"));
    }

    #[test]
    fn listed_names_are_normalised() {
        let m = NameMatch::tokens();
        let mut s = Vec::new();
        assert!(m.matches(b"api_key", &mut s));
        assert!(m.matches(b"API-Key", &mut s));
        assert!(m.matches(b"accessToken", &mut s));
        assert!(!m.matches(b"tokens_left", &mut s));
        assert!(NameMatch::secrets().matches(b"Password", &mut s));
    }

    #[test]
    fn listed_match_agrees_with_the_lists() {
        for l in [Listed::Secrets, Listed::Tokens] {
            for n in l.names() {
                assert!(l.contains(n.as_bytes()), "{n}");
            }
        }
        let total: usize = [Listed::Secrets, Listed::Tokens]
            .iter()
            .map(|l| l.names().len())
            .sum();
        assert_eq!(total, SECRET_NAMES.len() + TOKEN_NAMES.len());
        assert!(!Listed::Tokens.contains(b"password"));
    }

    #[test]
    fn templates() {
        let t = PathTemplate::parse("/users/{id}/cards/*").unwrap();
        assert_eq!(
            t.matches(&["users", "42", "cards", "9"]),
            Some(vec![false, true, false, false])
        );
        assert_eq!(t.matches(&["users", "42", "cards"]), None);
        assert_eq!(t.matches(&["people", "42", "cards", "9"]), None);
        assert_eq!(
            t.matches(&["users", "42", "cards", "9", ""]),
            Some(vec![false, true, false, false, false])
        );
        let r = PathTemplate::parse("/u/{id}/**").unwrap();
        assert!(r.matches(&["u", "1", "a", "b"]).is_some());
        assert!(r.matches(&["u", "1"]).is_some());
        let enc = PathTemplate::parse("/a%20b/{x}").unwrap();
        assert!(enc.matches(&["a b", "1"]).is_some());
    }

    #[test]
    fn template_errors() {
        assert!(
            PathTemplate::parse("users/{id}")
                .unwrap_err()
                .contains("start with '/'")
        );
        assert!(
            PathTemplate::parse("/a/**/b/{x}")
                .unwrap_err()
                .contains("last segment")
        );
        assert!(
            PathTemplate::parse("/a/x{id}")
                .unwrap_err()
                .contains("whole segment")
        );
        assert!(
            PathTemplate::parse("/a/b")
                .unwrap_err()
                .contains("no {placeholder}")
        );
    }

    #[test]
    fn first_rule_in_order_wins() {
        let mut r = NameRules::default();
        let a = |order| Action {
            id: order as u16,
            order,
            how: How::Hash,
        };
        r.push(NameMatch::Glob(Glob::new("x-*")), a(2));
        r.push(NameMatch::Glob(Glob::new("x-key")), a(1));
        let mut s = Vec::new();
        assert_eq!(r.find(b"X-Key", &mut s).map(|a| a.order), Some(1));
        assert_eq!(r.find(b"x-other", &mut s).map(|a| a.order), Some(2));
        assert_eq!(r.find(b"y", &mut s), None);
    }
}
