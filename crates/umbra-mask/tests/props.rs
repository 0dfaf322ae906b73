//! Property tests: planted private values of every detector's kind never survive
//! masking, the copy still parses as what it was, masked cards pass Luhn and
//! masked e-mails are still e-mails; arbitrary bytes never make the masker panic.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::Write;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Uri};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};
use umbra_mask::{MaskConfig, MaskRequest, Masker};

const SECRET: &[u8] = b"property test secret";

fn masker() -> Masker {
    Masker::with_secret(&MaskConfig::default(), SECRET).unwrap()
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Email,
    Card,
    Iban,
    Ssn,
    Phone,
    Ipv4,
    Ipv6,
    Jwt,
    Bearer,
    AwsKey,
}

/// A value to plant: the text written into the body, and the private part of it
/// (for `Bearer x`, only `x` is private).
#[derive(Clone, Debug)]
struct Planted {
    kind: Kind,
    text: String,
    private: String,
}

fn planted(kind: Kind, text: String) -> Planted {
    Planted {
        kind,
        private: text.clone(),
        text,
    }
}

fn digit_string(d: &[u8]) -> String {
    d.iter().map(|x| char::from(b'0' + x)).collect()
}

fn luhn_digits(d: &[u32]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                if x * 2 > 9 { x * 2 - 9 } else { x * 2 }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn luhn(s: &str) -> bool {
    let d: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    (13..=19).contains(&d.len()) && luhn_digits(&d)
}

fn mod97(s: &str) -> u32 {
    let c: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    let mut r = 0u32;
    for ch in c[4..].iter().chain(&c[..4]) {
        let ch = ch.to_ascii_uppercase();
        r = match ch.to_digit(10) {
            Some(d) => (r * 10 + d) % 97,
            None => (r * 100 + (ch as u32 - 'A' as u32 + 10)) % 97,
        };
    }
    r
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let labels: Vec<&str> = domain.split('.').collect();
    !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c))
        && labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        && labels
            .last()
            .is_some_and(|t| t.len() >= 2 && t.chars().all(|c| c.is_ascii_alphabetic()))
}

fn email() -> impl Strategy<Value = Planted> {
    (
        "[a-z]{1,8}(\\.[a-z0-9]{1,6})?",
        "[a-z]{2,10}",
        select(vec!["com", "org", "net", "io", "de"]),
    )
        .prop_map(|(l, d, t)| planted(Kind::Email, format!("{l}@{d}.{t}")))
}

fn card() -> impl Strategy<Value = Planted> {
    let brands: Vec<(&'static [u8], usize)> = vec![
        (&[4], 16),
        (&[4], 13),
        (&[4], 19),
        (&[5, 1], 16),
        (&[5, 5], 16),
        (&[2, 2, 2, 1], 16),
        (&[3, 4], 15),
        (&[3, 7], 15),
        (&[6, 0, 1, 1], 16),
        (&[6, 2], 19),
    ];
    (
        select(brands),
        prop::collection::vec(0u8..10, 19),
        0..3usize,
    )
        .prop_map(|((prefix, len), fill, style)| {
            let mut d: Vec<u8> = prefix.to_vec();
            d.extend_from_slice(&fill[..len - 1 - prefix.len()]);
            let check = (0..10u8)
                .find(|c| {
                    let all: Vec<u32> = d
                        .iter()
                        .chain(std::iter::once(c))
                        .map(|&x| u32::from(x))
                        .collect();
                    luhn_digits(&all)
                })
                .unwrap();
            d.push(check);
            let s = digit_string(&d);
            let text = match (style, len) {
                (1, 16) => format!("{} {} {} {}", &s[..4], &s[4..8], &s[8..12], &s[12..]),
                (2, 16) => format!("{}-{}-{}-{}", &s[..4], &s[4..8], &s[8..12], &s[12..]),
                (1 | 2, 15) => format!("{} {} {}", &s[..4], &s[4..10], &s[10..]),
                _ => s,
            };
            planted(Kind::Card, text)
        })
}

fn iban() -> impl Strategy<Value = Planted> {
    // (country, BBAN letters, BBAN digits)
    let countries: Vec<(&'static str, usize, usize)> = vec![
        ("DE", 0, 18),
        ("GB", 4, 14),
        ("NL", 4, 10),
        ("FR", 0, 23),
        ("ES", 0, 20),
        ("NO", 0, 11),
        ("IT", 1, 22),
    ];
    (
        select(countries),
        "[A-Z]{4}",
        prop::collection::vec(0u8..10, 23),
        any::<bool>(),
    )
        .prop_map(|((cc, letters, digits), l, d, spaced)| {
            let bban = format!("{}{}", &l[..letters], digit_string(&d[..digits]));
            let r = mod97(&format!("{cc}00{bban}"));
            let compact = format!("{cc}{:02}{bban}", 98 - r);
            let text = if spaced {
                compact
                    .as_bytes()
                    .chunks(4)
                    .map(|c| std::str::from_utf8(c).unwrap())
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                compact
            };
            planted(Kind::Iban, text)
        })
}

fn ssn() -> impl Strategy<Value = Planted> {
    (1u32..899, 1u32..100, 1u32..10000).prop_map(|(a, g, s)| {
        let a = if a == 666 { 667 } else { a };
        planted(Kind::Ssn, format!("{a:03}-{g:02}-{s:04}"))
    })
}

fn phone() -> impl Strategy<Value = Planted> {
    (
        2u32..10,
        0u32..100,
        2u32..10,
        0u32..100,
        0u32..10000,
        0..6usize,
    )
        .prop_map(|(a1, a2, e1, e2, line, style)| {
            let area = format!("{a1}{a2:02}");
            let exch = format!("{e1}{e2:02}");
            let text = match style {
                0 => format!("+1{area}{exch}{line:04}"),
                1 => format!("+1 {area} {exch} {line:04}"),
                2 => format!("({area}) {exch}-{line:04}"),
                3 => format!("{area}-{exch}-{line:04}"),
                4 => format!("+44 20 {e1}{e2:03} {line:04}"),
                _ => format!("020 {e1}{e2:03} {line:04}"),
            };
            planted(Kind::Phone, text)
        })
}

fn ipv4() -> impl Strategy<Value = Planted> {
    (1u8..224, any::<u8>(), any::<u8>(), any::<u8>())
        .prop_map(|(a, b, c, d)| planted(Kind::Ipv4, format!("{a}.{b}.{c}.{d}")))
}

fn ipv6() -> impl Strategy<Value = Planted> {
    (
        1u16..,
        prop::array::uniform7(prop_oneof![Just(0u16), any::<u16>()]),
    )
        .prop_map(|(first, rest)| {
            let mut g = [0u16; 8];
            g[0] = first;
            g[1..].copy_from_slice(&rest);
            planted(Kind::Ipv6, std::net::Ipv6Addr::from(g).to_string())
        })
}

fn jwt() -> impl Strategy<Value = Planted> {
    (
        "[A-Za-z0-9_-]{8,30}",
        "[A-Za-z0-9_-]{8,60}",
        "[A-Za-z0-9_-]{20,43}",
    )
        .prop_map(|(h, p, s)| planted(Kind::Jwt, format!("eyJ{h}.eyJ{p}.{s}")))
}

fn bearer() -> impl Strategy<Value = Planted> {
    "[A-Za-z0-9][A-Za-z0-9._~+/-]{15,40}".prop_map(|t| Planted {
        kind: Kind::Bearer,
        text: format!("Bearer {t}"),
        private: t,
    })
}

fn aws_key() -> impl Strategy<Value = Planted> {
    "(AKIA|ASIA)[A-Z0-9]{16}".prop_map(|k| planted(Kind::AwsKey, k))
}

fn any_planted() -> impl Strategy<Value = Planted> {
    prop_oneof![
        email(),
        card(),
        iban(),
        ssn(),
        phone(),
        ipv4(),
        ipv6(),
        jwt(),
        bearer(),
        aws_key()
    ]
}

/// Filler that no detector takes: lowercase words.
fn words() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z]{1,8}", 0..6).prop_map(|w| w.join(" "))
}

fn noise_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0i64..100_000).prop_map(|n| json!(n)),
        (-1000.0f64..1000.0).prop_map(|f| json!((f * 100.0).round() / 100.0)),
        "[a-z ]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("q[a-z]{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn request(content_type: &str, body: Vec<u8>) -> MaskRequest {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_str(content_type).unwrap());
    h.insert("content-length", HeaderValue::from(body.len()));
    MaskRequest {
        method: Method::POST,
        uri: Uri::from_static("/submit"),
        headers: h,
        body: Bytes::from(body),
    }
}

/// The planted value's private part must appear nowhere in `text`.
fn assert_gone(text: &str, plants: &[Planted]) -> Result<(), TestCaseError> {
    for p in plants {
        prop_assert!(!text.contains(&p.private), "{:?} survived in {text}", p);
    }
    Ok(())
}

/// What a planted value became must still be of its kind.
fn assert_shape(p: &Planted, masked: &str) -> Result<(), TestCaseError> {
    let masked_private = if p.kind == Kind::Bearer {
        masked.strip_prefix("Bearer ").unwrap_or(masked)
    } else {
        masked
    };
    prop_assert_ne!(masked_private, p.private.as_str());
    match p.kind {
        Kind::Card => {
            prop_assert!(luhn(masked), "{masked} from {}", p.text);
            prop_assert_eq!(masked.len(), p.text.len());
        }
        Kind::Email => prop_assert!(is_email(masked), "{masked} from {}", p.text),
        Kind::Iban => prop_assert_eq!(mod97(masked), 1, "{} from {}", masked, p.text),
        Kind::Ipv4 => prop_assert!(masked.parse::<std::net::Ipv4Addr>().is_ok(), "{masked}"),
        Kind::Ipv6 => prop_assert!(masked.parse::<std::net::Ipv6Addr>().is_ok(), "{masked}"),
        Kind::Ssn | Kind::Phone | Kind::Jwt | Kind::AwsKey | Kind::Bearer => {
            prop_assert_eq!(masked.len(), p.text.len(), "{} from {}", masked, p.text);
        }
    }
    Ok(())
}

fn strings_in(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Number(n) => {
            out.push_str(&n.to_string());
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|x| strings_in(x, out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| {
            out.push_str(k);
            out.push('\n');
            strings_in(x, out);
        }),
        _ => {}
    }
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(c).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{c:02X}"),
        })
        .collect()
}

fn form_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn json_bodies(plants in prop::collection::vec(any_planted(), 1..8), noise in noise_json(), pad in words()) {
        let mut obj = serde_json::Map::new();
        for (i, p) in plants.iter().enumerate() {
            obj.insert(format!("p{i}"), json!(p.text));
            obj.insert(format!("t{i}"), json!(format!("{pad} {} {pad}", p.text)));
            if p.kind == Kind::Card && p.text.bytes().all(|c| c.is_ascii_digit()) {
                let n: u64 = p.text.parse().unwrap_or(0);
                if n > 0 && n < u64::MAX / 2 {
                    obj.insert(format!("n{i}"), json!(n));
                }
            }
        }
        obj.insert("noise".into(), noise.clone());
        let input = serde_json::to_vec(&Value::Object(obj.clone())).unwrap();
        let mut r = request("application/json", input);
        let rep = masker().mask(&mut r).unwrap();
        let out: Value = serde_json::from_slice(&r.body).expect("still JSON");
        prop_assert_eq!(r.headers["content-length"].to_str().unwrap(), r.body.len().to_string());
        let mut all = String::new();
        strings_in(&out, &mut all);
        assert_gone(&all, &plants)?;
        assert_gone(&String::from_utf8_lossy(&r.body), &plants)?;
        prop_assert_eq!(&out["noise"], &noise, "nothing else changed");
        for (i, p) in plants.iter().enumerate() {
            assert_shape(p, out[format!("p{i}")].as_str().unwrap())?;
            if let Some(n) = out.get(format!("n{i}")) {
                prop_assert!(n.is_u64() && luhn(&n.to_string()), "{n}");
            }
        }
        prop_assert!(rep.total() as usize >= plants.len() * 2);
    }

    #[test]
    fn form_bodies(plants in prop::collection::vec(any_planted(), 1..8), pad in words()) {
        let mut pairs = Vec::new();
        for (i, p) in plants.iter().enumerate() {
            pairs.push(format!("p{i}={}", form_encode(&p.text)));
            pairs.push(format!("t{i}={}", form_encode(&format!("{pad} {} {pad}", p.text))));
            pairs.push(format!("w{i}={}", form_encode(&pad)));
        }
        let mut r = request("application/x-www-form-urlencoded", pairs.join("&").into_bytes());
        masker().mask(&mut r).unwrap();
        let body = String::from_utf8(r.body.to_vec()).expect("ASCII");
        let out: Vec<(String, String)> = body
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("every pair keeps its '='");
                (form_decode(k).expect("valid encoding"), form_decode(v).expect("valid encoding"))
            })
            .collect();
        prop_assert_eq!(out.len(), pairs.len());
        let all: String = out.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        assert_gone(&all, &plants)?;
        for (i, p) in plants.iter().enumerate() {
            prop_assert_eq!(&out[i * 3].0, &format!("p{i}"));
            assert_shape(p, &out[i * 3].1)?;
            prop_assert_eq!(&out[i * 3 + 2].1, &pad);
        }

        // The same pairs as a query string.
        let mut r = request("text/plain", Vec::new());
        r.uri = format!("/search?{}", pairs.join("&")).parse().unwrap();
        masker().mask(&mut r).unwrap();
        let query = r.uri.query().unwrap_or_default();
        let decoded: String = query
            .split('&')
            .map(|kv| form_decode(kv).expect("valid encoding") + "\n")
            .collect();
        assert_gone(&decoded, &plants)?;
        prop_assert_eq!(query.split('&').count(), pairs.len());
    }

    #[test]
    fn text_and_multipart_bodies(plants in prop::collection::vec(any_planted(), 1..8), pad in words()) {
        let text: String = plants.iter().map(|p| format!("{pad} {} {pad}\n", p.text)).collect();
        let mut r = request("text/plain", text.clone().into_bytes());
        masker().mask(&mut r).unwrap();
        let out = String::from_utf8(r.body.to_vec()).unwrap();
        assert_gone(&out, &plants)?;
        prop_assert_eq!(out.lines().count(), text.lines().count());

        let mut mp = Vec::new();
        for (i, p) in plants.iter().enumerate() {
            write!(mp, "--BoUnD\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\n{pad} {} {pad}\r\n", p.text).unwrap();
        }
        mp.extend_from_slice(b"--BoUnD--\r\n");
        let mut r = request("multipart/form-data; boundary=BoUnD", mp);
        masker().mask(&mut r).unwrap();
        let out = String::from_utf8(r.body.to_vec()).unwrap();
        assert_gone(&out, &plants)?;
        prop_assert_eq!(out.matches("--BoUnD\r\n").count(), plants.len());
        prop_assert!(out.ends_with("--BoUnD--\r\n"));
    }

    #[test]
    fn same_secret_same_copy_other_secret_other_copy(plants in prop::collection::vec(any_planted(), 1..4)) {
        let body: String = plants.iter().map(|p| format!("{}\n", p.text)).collect();
        let run = |secret: &[u8]| {
            let m = Masker::with_secret(&MaskConfig::default(), secret).unwrap();
            let mut r = request("text/plain", body.clone().into_bytes());
            m.mask(&mut r).unwrap();
            r.body
        };
        prop_assert_eq!(run(b"one"), run(b"one"));
        prop_assert_ne!(run(b"one"), run(b"two"));
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..600),
        ct in select(vec![
            "application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
            "multipart/form-data", "text/plain", "application/octet-stream", "",
        ]),
        coding in select(vec!["", "gzip", "deflate", "br", "gzip, br"]),
        encode_it in any::<bool>(),
        strip in any::<bool>(),
    ) {
        let mut cfg = MaskConfig::default();
        if strip {
            cfg.on_failure = umbra_mask::OnFailure::StripBody;
        }
        let m = Masker::with_secret(&cfg, SECRET).unwrap();
        let payload = if encode_it && !coding.is_empty() { compress(coding, &body) } else { body.clone() };
        let mut h = HeaderMap::new();
        if !ct.is_empty() {
            h.insert("content-type", HeaderValue::from_static(ct));
        }
        if !coding.is_empty() {
            h.insert("content-encoding", HeaderValue::from_static(coding));
        }
        h.insert("content-length", HeaderValue::from(payload.len()));
        let mut r = MaskRequest { method: Method::PUT, uri: Uri::from_static("/x"), headers: h, body: payload.into() };
        if let Ok(rep) = m.mask(&mut r) {
            prop_assert_eq!(r.headers["content-length"].to_str().unwrap(), r.body.len().to_string());
            if rep.body_stripped().is_some() {
                prop_assert!(r.body.is_empty());
            }
        } else {
            prop_assert!(!strip);
        }
    }

    #[test]
    fn json_bodies_with_arbitrary_text_stay_json(v in noise_json(), s in "\\PC{0,40}") {
        let doc = json!({"a": v, "s": s, "k": {"password": s}});
        let mut r = request("application/json", serde_json::to_vec(&doc).unwrap());
        masker().mask(&mut r).unwrap();
        let out: Value = serde_json::from_slice(&r.body).expect("still JSON");
        prop_assert_eq!(&out["k"]["password"], "REDACTED");
    }

    #[test]
    fn arbitrary_uris_headers_and_text_never_panic(
        path in "(/[a-zA-Z0-9%@:.+=&;,~_-]{0,12}){0,4}",
        query in "[a-zA-Z0-9%@:.+=&;,~_/-]{0,40}",
        header in prop::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')], 0..80),
        text in "\\PC{0,80}",
    ) {
        let m = masker();
        let Ok(uri) = format!("{}?{query}", if path.is_empty() { "/" } else { &path }).parse::<Uri>() else {
            return Ok(());
        };
        let Ok(hv) = HeaderValue::from_bytes(&header) else { return Ok(()) };
        let mut h = HeaderMap::new();
        for name in ["cookie", "set-cookie", "authorization", "x-custom", "referer"] {
            h.insert(name, hv.clone());
        }
        let mut r = MaskRequest { method: Method::GET, uri, headers: h, body: Bytes::new() };
        m.mask(&mut r).unwrap();
        let (masked, _) = m.mask_text(&text);
        prop_assert_eq!(masked.lines().count(), text.lines().count());
    }
}

fn compress(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut data = data.to_vec();
    for c in coding.split(',').map(str::trim) {
        data = match c {
            "gzip" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&data).unwrap();
                e.finish().unwrap()
            }
            "deflate" => {
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&data).unwrap();
                e.finish().unwrap()
            }
            _ => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 1, 22);
                    w.write_all(&data).unwrap();
                }
                out
            }
        };
    }
    data
}

#[test]
fn compressed_json_with_plants_decodes_masked() {
    let body = br#"{"email":"zed@example.com","card":"4111 1111 1111 1111"}"#;
    for coding in ["gzip", "deflate", "br", "gzip, br"] {
        let mut r = request("application/json", compress(coding, body));
        r.headers
            .insert("content-encoding", HeaderValue::from_static(coding));
        masker().mask(&mut r).unwrap();
        let mut data = r.body.to_vec();
        for c in coding.split(',').map(str::trim).rev() {
            let mut out = Vec::new();
            use std::io::Read;
            match c {
                "gzip" => flate2::read::GzDecoder::new(&data[..])
                    .read_to_end(&mut out)
                    .unwrap(),
                "deflate" => flate2::read::ZlibDecoder::new(&data[..])
                    .read_to_end(&mut out)
                    .unwrap(),
                _ => brotli::Decompressor::new(&data[..], 4096)
                    .read_to_end(&mut out)
                    .unwrap(),
            };
            data = out;
        }
        let v: Value = serde_json::from_slice(&data).unwrap();
        assert!(
            is_email(v["email"].as_str().unwrap()) && v["email"] != "zed@example.com",
            "{coding}"
        );
        assert!(luhn(v["card"].as_str().unwrap()), "{coding}");
    }
}
