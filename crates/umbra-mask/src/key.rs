//! The secret and what is derived from it: hash tokens and the keyed streams that
//! format-preserving replacements draw their characters from.
//!
//! Everything is HMAC-SHA256 under one secret. A value's replacement depends only
//! on the secret and the value, never on the request or the process, so the same
//! e-mail becomes the same token in every request and on every proxy that shares
//! the secret; that is what keeps one user's traffic looking like one user.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Domain separation: a hash token and a preserve stream of the same value must be
/// unrelated, or one would leak the other.
const HASH: u8 = 1;
const PRESERVE: u8 = 2;

/// How many bytes of the HMAC a hash token shows (hex, so twice as many characters).
/// 128 bits: collisions are out of reach, and the token stays short in URLs.
const TOKEN_BYTES: usize = 16;

/// The keyed HMAC state, ready to clone (keying costs two SHA-256 blocks; cloning is a copy).
#[derive(Clone)]
pub(crate) struct Key {
    mac: HmacSha256,
}

impl Key {
    pub(crate) fn new(secret: &[u8]) -> Key {
        Key {
            // HMAC accepts keys of any length; the error type only exists for fixed-size MACs.
            mac: HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    fn tag(&self, domain: u8, kind: u8, value: &[u8]) -> [u8; 32] {
        let mut m = self.mac.clone();
        m.update(&[domain, kind]);
        m.update(value);
        m.finalize().into_bytes().into()
    }

    /// The `hash` strategy's token: 32 lowercase hex characters. The kind of value is
    /// not part of the input, so a value hashes the same wherever it was found.
    pub(crate) fn hash_token(&self, value: &[u8]) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let t = self.tag(HASH, 0, value);
        let mut s = String::with_capacity(TOKEN_BYTES * 2);
        for b in &t[..TOKEN_BYTES] {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 15)] as char);
        }
        s
    }

    /// A stream of keyed bytes for replacing `value` (of detector `kind`) in place.
    pub(crate) fn stream(&self, kind: u8, value: &[u8]) -> Stream {
        Stream {
            seed: self.tag(PRESERVE, kind, value),
            block: [0; 32],
            used: 32,
            counter: 0,
        }
    }
}

/// Keyed pseudo-random bytes: SHA-256(seed ‖ counter) blocks. The seed is an HMAC
/// output, so without the secret the stream is unpredictable.
pub(crate) struct Stream {
    seed: [u8; 32],
    block: [u8; 32],
    used: usize,
    counter: u64,
}

impl Stream {
    pub(crate) fn byte(&mut self) -> u8 {
        if self.used == self.block.len() {
            let mut h = Sha256::new();
            h.update(self.seed);
            h.update(self.counter.to_le_bytes());
            self.block = h.finalize().into();
            self.counter += 1;
            self.used = 0;
        }
        let b = self.block[self.used];
        self.used += 1;
        b
    }

    /// A number in `0..n` (n ≥ 1). Sixteen bits modulo a small n: the bias is far
    /// below anything that matters for a fake value.
    pub(crate) fn below(&mut self, n: u16) -> u16 {
        let v = u16::from(self.byte()) << 8 | u16::from(self.byte());
        v % n.max(1)
    }

    pub(crate) fn digit(&mut self) -> u8 {
        b'0' + self.below(10) as u8
    }

    pub(crate) fn digit_from(&mut self, lowest: u8) -> u8 {
        let lowest = lowest.min(9);
        b'0' + lowest + self.below(u16::from(10 - lowest)) as u8
    }

    pub(crate) fn lower(&mut self) -> u8 {
        b'a' + self.below(26) as u8
    }

    pub(crate) fn upper(&mut self) -> u8 {
        b'A' + self.below(26) as u8
    }

    pub(crate) fn hex_like(&mut self, original: u8) -> u8 {
        let d = self.below(16) as u8;
        match d {
            0..=9 => b'0' + d,
            _ if original.is_ascii_uppercase() => b'A' + d - 10,
            _ => b'a' + d - 10,
        }
    }

    /// A character of the same class as `c`: digit, lowercase or uppercase letter;
    /// anything else is kept.
    pub(crate) fn same_class(&mut self, c: u8) -> u8 {
        match c {
            b'0'..=b'9' => self.digit(),
            b'a'..=b'z' => self.lower(),
            b'A'..=b'Z' => self.upper(),
            _ => c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_keyed_and_stable() {
        let a = Key::new(b"secret one");
        let b = Key::new(b"secret one");
        let c = Key::new(b"secret two");
        assert_eq!(a.hash_token(b"alice"), b.hash_token(b"alice"));
        assert_ne!(a.hash_token(b"alice"), c.hash_token(b"alice"));
        assert_ne!(a.hash_token(b"alice"), a.hash_token(b"alicf"));
        let t = a.hash_token(b"alice");
        assert_eq!(t.len(), 32);
        assert!(
            t.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn streams_differ_by_kind_and_value_and_repeat() {
        let k = Key::new(b"k");
        let take = |kind, v: &[u8]| {
            let mut s = k.stream(kind, v);
            (0..100).map(|_| s.byte()).collect::<Vec<_>>()
        };
        assert_eq!(take(1, b"x"), take(1, b"x"));
        assert_ne!(take(1, b"x"), take(2, b"x"));
        assert_ne!(take(1, b"x"), take(1, b"y"));
    }

    #[test]
    fn classes_are_kept() {
        let k = Key::new(b"k");
        let mut s = k.stream(0, b"v");
        for _ in 0..500 {
            assert!(s.digit().is_ascii_digit());
            assert!(s.lower().is_ascii_lowercase());
            assert!(s.upper().is_ascii_uppercase());
            assert!((b'2'..=b'9').contains(&s.digit_from(2)));
            assert_eq!(s.same_class(b'-'), b'-');
            assert!(s.hex_like(b'A').is_ascii_hexdigit());
        }
    }
}
