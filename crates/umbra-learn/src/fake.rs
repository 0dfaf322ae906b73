//! Shape-preserving fakes for the example values stored in profiles.
//!
//! Profiles keep a few concrete values per placeholder and query key so the load
//! generator can send realistic requests, but a profile file is shared widely and
//! must not carry personal data. E-mail addresses, long numbers (phone, card,
//! account numbers) and opaque tokens are replaced by values of the same shape:
//! an e-mail stays an e-mail (at `example.com`), digits stay digits of the same
//! count, letters keep their case. The replacement is keyed, so a value maps to
//! the same fake within one run, and the key is drawn at random and never stored,
//! so fakes cannot be reversed by hashing guesses.

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
use std::sync::LazyLock;

use regex::Regex;

use crate::template::segment_kind;

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+(?:@|%40)[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
        .expect("static pattern")
});
/// Six or more digits: phone, card, account and national id numbers.
static LONG_NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[0-9]{6,}").expect("static pattern"));
/// Numbers written in groups (`0912-555-0147`, `+1 (415) 555 0123`, `4111 1111 1111 1111`):
/// faked when they hold seven digits or more.
static GROUPED_NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+?\(?[0-9][0-9\-. ()]{5,}[0-9]").expect("static pattern"));
static OPAQUE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9_\-+=.~]{20,}").expect("static pattern"));

/// Replaces personal values with keyed, shape-preserving fakes.
#[derive(Clone)]
pub struct Faker {
    hasher: ahash::RandomState,
}

impl Faker {
    /// A faker with a fresh random key.
    pub fn random() -> Faker {
        Faker {
            hasher: ahash::RandomState::new(),
        }
    }

    /// A faker with a fixed key (tests only: a known key makes fakes guessable).
    pub fn with_key(key: u64) -> Faker {
        Faker {
            hasher: ahash::RandomState::with_seeds(key, key ^ 0x9e37_79b9, key.rotate_left(17), 7),
        }
    }

    /// The value to store: unchanged when nothing in it looks personal.
    pub fn scrub<'a>(&self, value: &'a str) -> Cow<'a, str> {
        // A whole value that is a token, hash or uuid is faked as a whole.
        if matches!(segment_kind(value), Some("token" | "hash" | "hex" | "uuid")) {
            return Cow::Owned(self.same_shape(value));
        }
        let mut out = Cow::Borrowed(value);
        if EMAIL.is_match(&out) {
            out = Cow::Owned(
                EMAIL
                    .replace_all(&out, |c: &regex::Captures<'_>| self.fake_email(&c[0]))
                    .into_owned(),
            );
        }
        if OPAQUE.is_match(&out) {
            out = Cow::Owned(
                OPAQUE
                    .replace_all(&out, |c: &regex::Captures<'_>| {
                        let s = &c[0];
                        if matches!(segment_kind(s), Some("token" | "hash" | "hex" | "uuid"))
                            && !s.contains("example")
                        {
                            self.same_shape(s)
                        } else {
                            s.to_string()
                        }
                    })
                    .into_owned(),
            );
        }
        if GROUPED_NUMBER.is_match(&out) {
            out = Cow::Owned(
                GROUPED_NUMBER
                    .replace_all(&out, |c: &regex::Captures<'_>| {
                        let s = &c[0];
                        // Calendar dates are left alone: they are rarely personal, and a
                        // faked one would not be a date.
                        if s.bytes().filter(u8::is_ascii_digit).count() >= 7
                            && segment_kind(s) != Some("date")
                        {
                            self.same_shape(s)
                        } else {
                            s.to_string()
                        }
                    })
                    .into_owned(),
            );
        }
        if LONG_NUMBER.is_match(&out) {
            out = Cow::Owned(
                LONG_NUMBER
                    .replace_all(&out, |c: &regex::Captures<'_>| self.same_shape(&c[0]))
                    .into_owned(),
            );
        }
        out
    }

    fn fake_email(&self, email: &str) -> String {
        let (local, sep) = match email.find('@') {
            Some(i) => (&email[..i], "@"),
            None => (&email[..email.find("%40").unwrap_or(email.len())], "%40"),
        };
        format!("{}{sep}example.com", self.same_shape(local))
    }

    /// Same length and character classes; punctuation kept.
    fn same_shape(&self, s: &str) -> String {
        let mut h = self.hasher.build_hasher();
        h.write(s.as_bytes());
        let mut state = h.finish() | 1;
        let mut next = |n: u64| {
            // xorshift64*: plenty for picking characters.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n
        };
        s.chars()
            .enumerate()
            .map(|(i, c)| match c {
                '0'..='9' => {
                    // Keep a leading non-zero digit non-zero so lengths stay meaningful.
                    let d = if i == 0 && c != '0' {
                        1 + next(9)
                    } else {
                        next(10)
                    };
                    char::from(b'0' + d as u8)
                }
                'a'..='z' => char::from(b'a' + next(26) as u8),
                'A'..='Z' => char::from(b'A' + next(26) as u8),
                _ => c,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_values_are_replaced_with_same_shape() {
        let f = Faker::with_key(42);
        let e = f.scrub("jane.doe@corp.io");
        assert!(e.ends_with("@example.com") && !e.contains("jane"), "{e}");
        assert_eq!(e.len(), "jane.doe".len() + "@example.com".len());
        let n = f.scrub("09121234567");
        assert_eq!(n.len(), 11);
        assert!(n.chars().all(|c| c.is_ascii_digit()) && n != "09121234567");
        let t = f.scrub("a8F3kQ9zL2mN7pR4sT6vW1xY");
        assert_ne!(t, "a8F3kQ9zL2mN7pR4sT6vW1xY");
        assert_eq!(t.len(), 24);
        let grouped = f.scrub("tel=0912-555-0147");
        assert!(
            grouped.starts_with("tel=") && !grouped.contains("0912-555-0147"),
            "{grouped}"
        );
        assert_eq!(grouped.len(), "tel=0912-555-0147".len());
        assert_eq!(
            f.scrub("2019-01-22"),
            "2019-01-22",
            "a date has too few digits"
        );
        let mixed = f.scrub("user=jane%40corp.io&phone=4155550123");
        assert!(
            !mixed.contains("jane") && !mixed.contains("4155550123"),
            "{mixed}"
        );
        assert!(mixed.contains("%40example.com"), "{mixed}");
    }

    #[test]
    fn ordinary_values_are_kept_and_fakes_are_stable() {
        let f = Faker::with_key(1);
        for v in ["31893", "shoes", "200x200", "samsung-galaxy-s10", "p53,b19"] {
            assert_eq!(f.scrub(v), v);
        }
        assert_eq!(f.scrub("4155550123"), f.scrub("4155550123"));
        assert_ne!(
            f.scrub("4155550123"),
            Faker::with_key(2).scrub("4155550123")
        );
    }
}
