//! Trace and span ids: fixed-size values with lowercase hex in and out.
//!
//! Formatting writes into stack buffers ([`Hex`]), never a `String`: ids are
//! formatted once per request on the live path (the `traceparent` sent to
//! production), and `format!` there showed in the load generator's profiles.

use std::fmt;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A 16-byte trace id. All zeros is invalid (W3C Trace Context), so the
/// constructors that take outside input refuse it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(u128);

/// An 8-byte span id. All zeros is invalid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(u64);

/// Why a hex id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected {expected} hex digits, found {found} characters")]
    Length { expected: usize, found: usize },
    #[error("{0:?} is not a lowercase hex digit")]
    Digit(char),
    #[error("an id of all zeros is invalid")]
    Zero,
}

impl TraceId {
    /// A fresh random id: all 128 bits random, so the rightmost 56 bits meet
    /// W3C Trace Context Level 2's randomness requirement and samplers
    /// downstream may rely on them.
    pub fn random() -> TraceId {
        loop {
            let v: u128 = rand::random();
            if v != 0 {
                return TraceId(v);
            }
        }
    }

    /// `None` for zero.
    pub const fn from_u128(v: u128) -> Option<TraceId> {
        if v == 0 { None } else { Some(TraceId(v)) }
    }

    pub const fn to_u128(self) -> u128 {
        self.0
    }

    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// 32 lowercase hex digits (W3C), or 16 (B3's 64-bit ids, which are
    /// left-padded with zeros as the B3 spec says).
    pub fn from_hex(s: &str) -> Result<TraceId, IdError> {
        let v = match s.len() {
            32 => parse_hex(s.as_bytes())?,
            16 => parse_hex(s.as_bytes())?,
            n => {
                return Err(IdError::Length {
                    expected: 32,
                    found: n,
                });
            }
        };
        TraceId::from_u128(v).ok_or(IdError::Zero)
    }

    /// The rightmost 56 bits: the randomness value that W3C Trace Context
    /// Level 2 guarantees and OpenTelemetry's consistent samplers use.
    pub const fn randomness(self) -> u64 {
        (self.0 as u64) & ((1 << 56) - 1)
    }

    pub fn to_hex(self) -> Hex<32> {
        Hex::of(self.0, 32)
    }
}

impl SpanId {
    pub fn random() -> SpanId {
        loop {
            let v: u64 = rand::random();
            if v != 0 {
                return SpanId(v);
            }
        }
    }

    pub const fn from_u64(v: u64) -> Option<SpanId> {
        if v == 0 { None } else { Some(SpanId(v)) }
    }

    pub const fn to_u64(self) -> u64 {
        self.0
    }

    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Exactly 16 lowercase hex digits.
    pub fn from_hex(s: &str) -> Result<SpanId, IdError> {
        if s.len() != 16 {
            return Err(IdError::Length {
                expected: 16,
                found: s.len(),
            });
        }
        let v = parse_hex(s.as_bytes())?;
        SpanId::from_u64(v as u64).ok_or(IdError::Zero)
    }

    pub fn to_hex(self) -> Hex<16> {
        Hex::of(self.0 as u128, 16)
    }
}

/// Parses up to 32 lowercase hex digits. Uppercase is refused: W3C Trace
/// Context says lowercase only, and B3 says lower-hex.
pub(crate) fn parse_hex(s: &[u8]) -> Result<u128, IdError> {
    let mut v: u128 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return Err(IdError::Digit(b as char)),
        };
        v = (v << 4) | d as u128;
    }
    Ok(v)
}

/// Writes `v`'s low `out.len()` nibbles as lowercase hex into `out`.
pub(crate) fn write_hex(v: u128, out: &mut [u8]) {
    let n = out.len();
    for (i, o) in out.iter_mut().enumerate() {
        *o = HEX[((v >> (4 * (n - 1 - i))) & 0xf) as usize];
    }
}

/// Hex digits on the stack; derefs to `str`.
#[derive(Clone, Copy)]
pub struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    fn of(v: u128, digits: usize) -> Hex<N> {
        let mut b = [b'0'; N];
        write_hex(v, &mut b[..digits.min(N)]);
        Hex(b)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl<const N: usize> std::ops::Deref for Hex<N> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hex_round_trips() {
        let t = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.to_bytes()[0], 0x4b);
        let s = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        assert_eq!(s.to_hex().as_str(), "00f067aa0ba902b7");
        assert_eq!(format!("{s:?}"), "SpanId(00f067aa0ba902b7)");
    }

    #[test]
    fn short_b3_trace_ids_are_left_padded() {
        let t = TraceId::from_hex("a3ce929d0e0e4736").unwrap();
        assert_eq!(t.to_string(), "0000000000000000a3ce929d0e0e4736");
    }

    #[test]
    fn bad_ids_are_refused_with_the_reason() {
        assert_eq!(
            TraceId::from_hex("4BF92F3577B34DA6A3CE929D0E0E4736"),
            Err(IdError::Digit('B'))
        );
        assert_eq!(
            TraceId::from_hex("00000000000000000000000000000000"),
            Err(IdError::Zero)
        );
        assert_eq!(
            SpanId::from_hex("00f067aa0ba902b"),
            Err(IdError::Length {
                expected: 16,
                found: 15
            })
        );
        assert_eq!(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e47"),
            Err(IdError::Length {
                expected: 32,
                found: 30
            })
        );
        assert_eq!(
            SpanId::from_hex("00f067aa0ba902bx"),
            Err(IdError::Digit('x'))
        );
    }

    #[test]
    fn random_ids_are_nonzero_and_differ() {
        let a = TraceId::random();
        let b = TraceId::random();
        assert_ne!(a, b);
        assert_ne!(a.to_u128(), 0);
        assert_eq!(
            a.randomness(),
            u64::from_be_bytes(a.to_bytes()[8..].try_into().unwrap()) & ((1 << 56) - 1)
        );
    }
}
