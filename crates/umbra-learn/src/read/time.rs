//! Timestamps and durations, parsed by hand.
//!
//! The log formats are fixed-width or nearly so, and a timestamp is parsed on every
//! line, so a small hand-written parser beats a general date library here. Every
//! function returns `None` for anything it does not fully understand; the caller
//! turns that into a bad line with its own wording.

/// A unit for numbers that carry none of their own (epoch times, durations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl Unit {
    /// How many milliseconds one of this unit is.
    pub fn in_ms(self) -> f64 {
        match self {
            Unit::Seconds => 1000.0,
            Unit::Millis => 1.0,
            Unit::Micros => 1e-3,
            Unit::Nanos => 1e-6,
        }
    }

    /// Parses a unit suffix as written in a mapping (`s`, `ms`, `us`, `ns`).
    pub fn parse(s: &str) -> Option<Unit> {
        match s {
            "s" | "sec" | "secs" | "seconds" => Some(Unit::Seconds),
            "ms" | "millis" => Some(Unit::Millis),
            "us" | "µs" | "μs" | "micros" => Some(Unit::Micros),
            "ns" | "nanos" => Some(Unit::Nanos),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::Millis => "ms",
            Unit::Micros => "us",
            Unit::Nanos => "ns",
        }
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// All-digit bytes as a number; `None` if empty or anything else is in there.
fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 {
        return None;
    }
    let mut n = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(c - b'0');
    }
    Some(n)
}

/// Milliseconds since the epoch for a UTC wall-clock time, after range checks.
fn to_ms(
    (year, month, day): (i64, u32, u32),
    (hour, minute, second): (u32, u32, u32),
    millis: u32,
    offset_s: i64,
) -> Option<i64> {
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_s;
    Some(secs * 1000 + i64::from(millis))
}

/// A `±hhmm` or `±hh:mm` or `±hh` offset, in seconds east of UTC.
fn offset(b: &[u8]) -> Option<i64> {
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = match b.len() {
        3 => (digits(&b[1..3])?, 0),
        5 => (digits(&b[1..3])?, digits(&b[3..5])?),
        6 if b[3] == b':' => (digits(&b[1..3])?, digits(&b[4..6])?),
        _ => return None,
    };
    if h > 23 || m > 59 {
        return None;
    }
    Some(sign * i64::from(h * 3600 + m * 60))
}

fn month(b: &[u8]) -> Option<u32> {
    let m = [
        b[0].to_ascii_lowercase(),
        b[1].to_ascii_lowercase(),
        b[2].to_ascii_lowercase(),
    ];
    Some(match &m {
        b"jan" => 1,
        b"feb" => 2,
        b"mar" => 3,
        b"apr" => 4,
        b"may" => 5,
        b"jun" => 6,
        b"jul" => 7,
        b"aug" => 8,
        b"sep" => 9,
        b"oct" => 10,
        b"nov" => 11,
        b"dec" => 12,
        _ => return None,
    })
}

/// nginx `$time_local` / Apache `%t` without brackets: `22/Jan/2019:03:56:14 +0330`.
pub fn parse_time_local(b: &[u8]) -> Option<i64> {
    if b.len() != 26 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[20] != b' ' {
        return None;
    }
    if b[14] != b':' || b[17] != b':' {
        return None;
    }
    let day = digits(&b[0..2])?;
    let month = month(&b[3..6])?;
    let year = digits(&b[7..11])?;
    let hms = (
        digits(&b[12..14])?,
        digits(&b[15..17])?,
        digits(&b[18..20])?,
    );
    to_ms((i64::from(year), month, day), hms, 0, offset(&b[21..26])?)
}

/// RFC 3339 / ISO 8601 date-times as loggers write them: `2019-01-22T03:56:14+03:30`,
/// with `T`, `t` or a space between date and time, any number of fraction digits
/// (kept to the millisecond), and `Z`, `±hh:mm`, `±hhmm` or `±hh`. A time without
/// any zone is taken as UTC, which is what every logger we know means by it.
pub fn parse_rfc3339(b: &[u8]) -> Option<i64> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hms = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let mut rest = &b[19..];
    let mut millis = 0u32;
    if let Some(frac) = rest.strip_prefix(b".").or_else(|| rest.strip_prefix(b",")) {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        for i in 0..3 {
            millis = millis * 10
                + frac
                    .get(i)
                    .filter(|_| i < n)
                    .map_or(0, |c| u32::from(c - b'0'));
        }
        rest = &frac[n..];
    }
    let off = match rest {
        [] | b"Z" | b"z" => 0,
        _ => offset(rest)?,
    };
    to_ms((i64::from(year), month, day), hms, millis, off)
}

/// An epoch time as a number, in `unit` if given, else guessed from its size:
/// below 1e11 it is seconds (1e11 s is the year 5138), below 1e14 milliseconds,
/// below 1e17 microseconds, else nanoseconds.
pub fn epoch_to_ms(v: f64, unit: Option<Unit>) -> Option<i64> {
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let unit = unit.unwrap_or(if v < 1e11 {
        Unit::Seconds
    } else if v < 1e14 {
        Unit::Millis
    } else if v < 1e17 {
        Unit::Micros
    } else {
        Unit::Nanos
    });
    let ms = (v * unit.in_ms()).round();
    // Stay well inside i64 and inside years a log can plausibly hold.
    (ms < 1e16).then_some(ms as i64)
}

/// A decimal number like `0.123` scaled by `10^shift`, computed from its digits
/// so that `0.123` seconds is exactly `123.0` ms. Falls back to the standard
/// parser for anything with an exponent.
pub fn decimal(b: &[u8], shift: i32) -> Option<f64> {
    let mut mantissa = 0u64;
    let mut frac_digits = 0i32;
    let mut seen_dot = false;
    let mut seen_digit = false;
    for &c in b {
        match c {
            b'0'..=b'9' => {
                if mantissa > (u64::MAX - 9) / 10 {
                    return slow_decimal(b, shift);
                }
                mantissa = mantissa * 10 + u64::from(c - b'0');
                seen_digit = true;
                if seen_dot {
                    frac_digits += 1;
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => return slow_decimal(b, shift),
        }
    }
    if !seen_digit {
        return None;
    }
    let exp = shift - frac_digits;
    let m = mantissa as f64;
    Some(if exp >= 0 {
        m * 10f64.powi(exp)
    } else {
        m / 10f64.powi(-exp)
    })
}

fn slow_decimal(b: &[u8], shift: i32) -> Option<f64> {
    let v: f64 = std::str::from_utf8(b).ok()?.parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| v * 10f64.powi(shift))
}

/// A duration written with units, in milliseconds: `12ms`, `0.3s`, `150us`,
/// `1.5µs`, `2m`, and Go's compound form `1m30.5s`. A bare number is not
/// accepted here: its unit depends on where it came from.
pub fn parse_duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let mut rest = s;
    let mut total = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value = decimal(&rest.as_bytes()[..num_len], 0)?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match rest[..unit_len].trim() {
            "h" => 3_600_000.0,
            "m" | "min" => 60_000.0,
            unit => Unit::parse(unit)?.in_ms(),
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn time_local_honours_the_offset() {
        // 03:56:14 at +03:30 is 00:26:14 UTC.
        let ms = parse_time_local(b"22/Jan/2019:03:56:14 +0330");
        assert_eq!(ms, Some(1_548_116_774_000));
        assert_eq!(
            parse_time_local(b"22/Jan/2019:00:26:14 +0000"),
            Some(1_548_116_774_000)
        );
        assert_eq!(
            parse_time_local(b"21/Jan/2019:19:26:14 -0500"),
            Some(1_548_116_774_000)
        );
    }

    #[test]
    fn time_local_rejects_nonsense() {
        assert_eq!(parse_time_local(b"22/Foo/2019:03:56:14 +0330"), None);
        assert_eq!(parse_time_local(b"31/Feb/2019:03:56:14 +0330"), None);
        assert_eq!(parse_time_local(b"22/Jan/2019:25:56:14 +0330"), None);
        assert_eq!(parse_time_local(b"22/Jan/2019 03:56:14 +0330"), None);
        assert_eq!(parse_time_local(b""), None);
    }

    #[test]
    fn rfc3339_variants() {
        let want = Some(1_548_116_774_000);
        assert_eq!(parse_rfc3339(b"2019-01-22T00:26:14Z"), want);
        assert_eq!(parse_rfc3339(b"2019-01-22T03:56:14+03:30"), want);
        assert_eq!(parse_rfc3339(b"2019-01-22T03:56:14+0330"), want);
        assert_eq!(parse_rfc3339(b"2019-01-22 00:26:14"), want);
        assert_eq!(parse_rfc3339(b"2019-01-21T16:26:14.000-08:00"), want);
        assert_eq!(
            parse_rfc3339(b"2023-07-25T11:03:15.216374+00:00"),
            Some(1_690_282_995_216)
        );
        assert_eq!(
            parse_rfc3339(b"2023-03-29T16:58:59.3-07:00"),
            Some(1_680_134_339_300)
        );
        assert_eq!(parse_rfc3339(b"2019-01-22T00:26:14."), None);
        assert_eq!(parse_rfc3339(b"2019-13-22T00:26:14Z"), None);
        assert_eq!(parse_rfc3339(b"2019-01-22T00:26:14 UTC"), None);
    }

    #[test]
    fn epoch_guesses_its_unit() {
        assert_eq!(epoch_to_ms(1_548_116_774.5, None), Some(1_548_116_774_500));
        assert_eq!(
            epoch_to_ms(1_548_116_774_500.0, None),
            Some(1_548_116_774_500)
        );
        assert_eq!(
            epoch_to_ms(1_548_116_774_500_000.0, None),
            Some(1_548_116_774_500)
        );
        assert_eq!(epoch_to_ms(5.0, Some(Unit::Millis)), Some(5));
        assert_eq!(epoch_to_ms(-1.0, None), None);
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(decimal(b"0.123", 3), Some(123.0));
        assert_eq!(decimal(b"12", 3), Some(12_000.0));
        assert_eq!(decimal(b"1.5e2", 0), Some(150.0));
        assert_eq!(decimal(b"", 0), None);
        assert_eq!(decimal(b".", 0), None);
        assert_eq!(decimal(b"-1", 0), None);
        assert_eq!(decimal(b"0.1.2", 0), None);
    }

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration_ms("12ms"), Some(12.0));
        assert_eq!(parse_duration_ms("0.3s"), Some(300.0));
        assert_eq!(parse_duration_ms("150us"), Some(0.15));
        assert_eq!(parse_duration_ms("1m30.5s"), Some(90_500.0));
        assert_eq!(parse_duration_ms("2 ms"), Some(2.0));
        assert_eq!(parse_duration_ms("12"), None);
        assert_eq!(parse_duration_ms("fast"), None);
        assert_eq!(parse_duration_ms(""), None);
    }
}
