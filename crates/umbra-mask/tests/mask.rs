//! Whole copies through `Masker::mask`: rules, defaults, bodies, codecs, failures.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::{Read, Write};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Uri};
use serde_json::Value;
use umbra_mask::{Dropped, MaskConfig, MaskConfigError, MaskRequest, Masker, OnFailure, raw};

const SECRET: &[u8] = b"test secret, 32 bytes of it....!";

fn masker(toml: &str) -> Masker {
    let cfg = MaskConfig::from_toml(toml).expect("config parses");
    Masker::with_secret(&cfg, SECRET).expect("config compiles")
}

fn req(uri: &str, headers: &[(&str, &str)], body: &[u8]) -> MaskRequest {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    MaskRequest {
        method: Method::POST,
        uri: uri.parse::<Uri>().unwrap(),
        headers: h,
        body: Bytes::copy_from_slice(body),
    }
}

fn json_req(body: &str) -> MaskRequest {
    req(
        "/",
        &[
            ("content-type", "application/json"),
            ("content-length", "0"),
        ],
        body.as_bytes(),
    )
}

fn body_json(r: &MaskRequest) -> Value {
    serde_json::from_slice(&r.body).expect("masked body is JSON")
}

fn luhn(s: &str) -> bool {
    let d: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
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

macro_rules! dropped {
    ($m:expr, $r:expr, $pat:pat) => {{
        let mut r = $r;
        match $m.mask(&mut r) {
            Err(e @ $pat) => e,
            other => panic!("expected {}, got {other:?}", stringify!($pat)),
        }
    }};
}

#[test]
fn defaults_mask_credentials_but_keep_their_shape() {
    let m = masker("");
    let mut r = req(
        "/search?q=shoes&access_token=abcdef123&Password=hunter2",
        &[
            (
                "authorization",
                "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
            ),
            ("proxy-authorization", "Basic dXNlcjpwYXNz"),
            ("x-api-key", "k-123"),
            ("cookie", "session=s3cr3t; theme=dark"),
            ("user-agent", "curl/8.0"),
            ("host", "api.example.com"),
        ],
        b"",
    );
    let rep = m.mask(&mut r).unwrap();
    let h = &r.headers;
    let auth = h["authorization"].to_str().unwrap();
    assert!(
        auth.starts_with("Bearer ") && !auth.contains("eyJ"),
        "{auth}"
    );
    assert!(
        h["proxy-authorization"]
            .to_str()
            .unwrap()
            .starts_with("Basic ")
    );
    assert!(
        !h["proxy-authorization"]
            .to_str()
            .unwrap()
            .contains("dXNlcjpwYXNz")
    );
    assert_ne!(h["x-api-key"], "k-123");
    let cookie = h["cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("session=") && cookie.contains("; theme="),
        "{cookie}"
    );
    assert!(!cookie.contains("s3cr3t") && !cookie.contains("dark"));
    assert_eq!(h["user-agent"], "curl/8.0");
    assert_eq!(h["host"], "api.example.com");
    let q = r.uri.query().unwrap();
    assert!(q.starts_with("q=shoes&access_token="), "{q}");
    assert!(q.contains("&Password=REDACTED"), "{q}");
    assert!(!q.contains("abcdef123"));
    assert_eq!(rep.count("credential_header"), 3);
    assert_eq!(rep.count("cookie"), 2);
    assert_eq!(rep.count("token_field"), 1);
    assert_eq!(rep.count("secret_field"), 1);
    assert_eq!(rep.total(), 7);
    assert!(rep.body_stripped().is_none());
}

#[test]
fn detectors_run_over_path_query_and_headers() {
    let m = masker("");
    let mut r = req(
        "/users/alice%40example.com/cards?ip=10.1.2.3&note=call+%2B14155550123",
        &[
            ("referer", "https://x.test/?email=bob@example.org"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
        b"",
    );
    let rep = m.mask(&mut r).unwrap();
    let path = r.uri.path();
    assert!(
        path.starts_with("/users/") && path.ends_with("/cards"),
        "{path}"
    );
    assert!(
        !path.contains("alice") && path.contains('@') && path.ends_with(".com/cards"),
        "{path}"
    );
    let q = r.uri.query().unwrap();
    assert!(!q.contains("10.1.2.3") && q.starts_with("ip=10."), "{q}");
    assert!(!q.contains("4155550123"), "{q}");
    assert!(!r.headers["referer"].to_str().unwrap().contains("bob@"));
    assert!(
        !r.headers["x-forwarded-for"]
            .to_str()
            .unwrap()
            .contains("203.0.113.9")
    );
    assert_eq!(rep.count("email"), 2);
    assert_eq!(rep.count("ipv4"), 2);
    assert_eq!(rep.count("phone"), 1);
}

#[test]
fn json_rules_follow_their_paths() {
    let m = masker(
        r#"
        [[mask.rules]]
        name = "user-email"
        json = "$.user.email"
        strategy = "preserve"
        [[mask.rules]]
        name = "pw"
        json = "$..password"
        strategy = "drop"
        [[mask.rules]]
        name = "cards"
        json = "$.cards[*].number"
        strategy = "preserve"
        [[mask.rules]]
        name = "first-tag"
        json = "$.tags[0]"
        strategy = "hash"
        [[mask.rules]]
        name = "ids"
        json = "$..id"
        strategy = "hash"
        "#,
    );
    let mut r = json_req(
        r#"{"password":"a","user":{"email":"carol@example.org","name":"Carol","password":"b","id":1234},
            "cards":[{"number":"4111 1111 1111 1111"},{"number":"5500000000000004"}],
            "tags":["x","y"], "nested":{"deep":[{"password":"c"}]}}"#,
    );
    let rep = m.mask(&mut r).unwrap();
    let v = body_json(&r);
    assert!(v.get("password").is_none());
    assert!(v["user"].get("password").is_none());
    assert_eq!(v["nested"]["deep"][0], serde_json::json!({}));
    let email = v["user"]["email"].as_str().unwrap();
    assert!(email.ends_with(".org") && email.contains('@') && email != "carol@example.org");
    assert_eq!(v["user"]["name"], "Carol");
    for c in v["cards"].as_array().unwrap() {
        let n = c["number"].as_str().unwrap();
        assert!(luhn(n), "{n}");
    }
    assert_eq!(v["cards"][0]["number"].as_str().unwrap().len(), 19);
    let digits: String = v["cards"][0]["number"]
        .as_str()
        .unwrap()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    assert!(
        digits.starts_with("411111") && digits != "4111111111111111",
        "the BIN stays"
    );
    assert_eq!(v["tags"][0].as_str().unwrap().len(), 32);
    assert_eq!(v["tags"][1], "y");
    // A number under hash stays a number of the same length.
    let id = &v["user"]["id"];
    assert!(
        id.is_u64() && id.to_string().len() == 4 && id != 1234,
        "{id}"
    );
    assert_eq!(rep.count("pw"), 3);
    assert_eq!(rep.count("cards"), 2);
    assert_eq!(rep.count("user-email"), 1);
    assert_eq!(
        r.headers["content-length"],
        r.body.len().to_string().as_str()
    );
}

#[test]
fn json_detectors_see_strings_numbers_keys_and_escapes() {
    let m = masker("");
    let mut r = json_req(
        r#"{"msg":"mail dan@example.net now","card":4111111111111111,"esc":"e\u0040x.com",
            "bob@example.com":true,"list":[1,2.5,"10.0.0.1"],"ok":"nothing here 12:30:45"}"#,
    );
    let rep = m.mask(&mut r).unwrap();
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let v = body_json(&r);
    assert!(!text.contains("dan@example.net"));
    assert!(!text.contains("4111111111111111"));
    assert!(v["card"].is_u64() && luhn(&v["card"].to_string()));
    assert!(!v["esc"].as_str().unwrap().contains("e@x.com"));
    assert!(v.get("bob@example.com").is_none());
    assert_eq!(v["list"][0], 1);
    assert_eq!(v["list"][1], 2.5);
    assert_eq!(v["ok"], "nothing here 12:30:45");
    assert_eq!(rep.count("email"), 3);
    assert_eq!(rep.count("card"), 1);
    assert_eq!(rep.count("ipv4"), 1);
}

#[test]
fn drop_keeps_json_valid_everywhere() {
    let m = masker("[[mask.rules]]\njson = \"$..x\"\nstrategy = \"drop\"\n");
    for (input, want) in [
        (r#"{"x":1}"#, r#"{}"#),
        (r#"{"x":1,"a":2}"#, r#"{"a":2}"#),
        (r#"{"a":2,"x":1}"#, r#"{"a":2}"#),
        (
            r#"{ "x" : 1 , "x":2, "a" : 3 , "x":[1,{"x":2}] }"#,
            r#"{ "a" : 3 }"#,
        ),
        (r#"[{"x":1},{"y":{"x":{}}}]"#, r#"[{},{"y":{}}]"#),
    ] {
        let mut r = json_req(input);
        m.mask(&mut r).unwrap();
        let got = String::from_utf8(r.body.to_vec()).unwrap();
        let got_v: Value = serde_json::from_str(&got).expect("valid JSON");
        assert_eq!(
            got_v,
            serde_json::from_str::<Value>(want).unwrap(),
            "{input} -> {got}"
        );
    }
    let m = masker("[[mask.rules]]\njson = \"$.a[*]\"\nstrategy = \"drop\"\n");
    let mut r = json_req(r#"{"a":[1,2,3],"b":[1]}"#);
    m.mask(&mut r).unwrap();
    assert_eq!(body_json(&r), serde_json::json!({"a":[],"b":[1]}));
    let m = masker("[[mask.rules]]\njson = \"$.a[1]\"\nstrategy = \"drop\"\n");
    let mut r = json_req(r#"{"a":[1,2,3]}"#);
    m.mask(&mut r).unwrap();
    assert_eq!(body_json(&r), serde_json::json!({"a":[1,3]}));
}

#[test]
fn a_rule_on_a_container_masks_everything_inside() {
    let m = masker("[[mask.rules]]\njson = \"$.user\"\nstrategy = \"redact\"\n");
    let mut r = json_req(r#"{"user":{"name":"Al","age":40,"tags":["a"],"ok":true},"keep":"x"}"#);
    m.mask(&mut r).unwrap();
    assert_eq!(
        body_json(&r),
        serde_json::json!({"user":{"name":"REDACTED","age":0,"tags":["REDACTED"],"ok":true},"keep":"x"})
    );
}

#[test]
fn forms_urlencoded_and_multipart() {
    let m = masker("[[mask.rules]]\nform = [\"card\", \"avatar\"]\nstrategy = \"drop\"\n");
    let mut r = req(
        "/",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"name=Al&email=al%40example.com&card=4111111111111111&password=x+y&note=hi+there",
    );
    let rep = m.mask(&mut r).unwrap();
    let b = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(
        b.starts_with("name=Al&email=") && b.ends_with("&password=REDACTED&note=hi+there"),
        "{b}"
    );
    assert!(
        !b.contains("card=") && !b.contains("al%40example.com") && !b.contains("al@example.com")
    );
    assert_eq!(rep.count("rule-1"), 1);

    let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nzoe@example.com\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"avatar\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"password\":\"p\",\"ip\":\"10.9.8.7\"}\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"zoe@example.com.txt\"\r\n\r\ncard 4111 1111 1111 1111\r\n\
--XyZ--\r\n";
    let mut r = req(
        "/",
        &[("content-type", "multipart/form-data; boundary=XyZ")],
        body,
    );
    let rep = m.mask(&mut r).unwrap();
    let b = String::from_utf8_lossy(&r.body).into_owned();
    assert!(!b.contains("zoe@example.com"), "{b}");
    assert!(!b.contains("PNG") && !b.contains("name=\"avatar\""), "{b}");
    assert!(b.contains("{\"password\":\"REDACTED\",\"ip\":\"10."), "{b}");
    assert!(!b.contains("4111 1111 1111 1111"));
    assert!(b.starts_with("--XyZ\r\n") && b.ends_with("--XyZ--\r\n"));
    assert_eq!(b.matches("--XyZ\r\n").count(), 3);
    assert_eq!(rep.count("email"), 2);
    assert_eq!(rep.count("rule-1"), 1);
}

#[test]
fn free_text_bodies() {
    let m = masker("");
    let mut r = req(
        "/",
        &[("content-type", "text/plain"), ("content-length", "1")],
        b"password=hunter2 call +44 20 7946 0958, iban GB82 WEST 1234 5698 7654 32, ssn 123-45-6789, key AKIAIOSFODNN7EXAMPLE",
    );
    let rep = m.mask(&mut r).unwrap();
    let b = String::from_utf8(r.body.to_vec()).unwrap();
    for gone in [
        "hunter2",
        "7946 0958",
        "WEST 1234",
        "123-45-6789",
        "IOSFODNN7EXAMPLE",
    ] {
        assert!(!b.contains(gone), "{gone} in {b}");
    }
    assert!(b.starts_with("password=REDACTED call +44 "), "{b}");
    assert_eq!(r.headers["content-length"], b.len().to_string().as_str());
    for n in ["credential", "phone", "iban", "ssn", "aws_key"] {
        assert_eq!(rep.count(n), 1, "{n}");
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn compressed_bodies_are_decoded_masked_and_encoded() {
    let m = masker("");
    let plain = br#"{"email":"erin@example.com","n":1}"#;
    let mut r = req(
        "/",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
            ("content-length", "1"),
        ],
        &gzip(plain),
    );
    m.mask(&mut r).unwrap();
    let out = gunzip(&r.body);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_ne!(v["email"], "erin@example.com");
    assert_eq!(v["n"], 1);
    assert_eq!(r.headers["content-encoding"], "gzip");
    assert_eq!(
        r.headers["content-length"],
        r.body.len().to_string().as_str()
    );

    let mut br = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
        w.write_all(plain).unwrap();
    }
    let mut r = req(
        "/",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ],
        &br,
    );
    m.mask(&mut r).unwrap();
    let mut out = Vec::new();
    brotli::Decompressor::new(&r.body[..], 4096)
        .read_to_end(&mut out)
        .unwrap();
    assert!(!String::from_utf8(out).unwrap().contains("erin@"));

    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(plain).unwrap();
    let mut r = req(
        "/",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "deflate"),
        ],
        &z.finish().unwrap(),
    );
    m.mask(&mut r).unwrap();
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(&r.body[..])
        .read_to_end(&mut out)
        .unwrap();
    assert!(!String::from_utf8(out).unwrap().contains("erin@"));
}

#[test]
fn nothing_to_mask_leaves_the_bytes_alone() {
    let m = masker("");
    let gz = gzip(br#"{"a":1, "b": "plain words"}"#);
    let mut r = req(
        "/x?y=1",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        &gz,
    );
    let rep = m.mask(&mut r).unwrap();
    assert_eq!(rep.total(), 0);
    assert_eq!(&r.body[..], &gz[..]);
    assert_eq!(r.uri, "/x?y=1");
}

#[test]
fn failures_are_closed() {
    let m = masker("");
    dropped!(
        m,
        req("/", &[("content-encoding", "zstd")], b"xx"),
        Dropped::UnsupportedEncoding { .. }
    );
    dropped!(
        m,
        req("/", &[("content-encoding", "gzip")], b"not gzip at all"),
        Dropped::UndecodableEncoding { .. }
    );
    dropped!(
        m,
        req(
            "/",
            &[("content-type", "application/octet-stream")],
            &gzip(b"secret")
        ),
        Dropped::OpaqueBody { what: "gzip" }
    );
    let small = masker("[mask]\nmax_body_bytes = 100\n");
    dropped!(
        small,
        req("/", &[("content-encoding", "gzip")], &gzip(&[b'a'; 1000])),
        Dropped::BodyTooLarge { limit: 100 }
    );
    let multipart = b"--b\r\nContent-Disposition: form-data; name=\"f\"\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJD\r\n--b--";
    dropped!(
        m,
        req(
            "/",
            &[("content-type", "multipart/form-data; boundary=b")],
            multipart
        ),
        Dropped::OpaqueBody { .. }
    );
}

#[test]
fn unparseable_bodies_fall_back_to_text_unless_user_rules_need_fields() {
    // Defaults only: masked as free text, credential assignments included.
    let m = masker("");
    let mut r = json_req(r#"{"password": "hunter2", "email": "al@example.com", oops"#);
    let rep = m.mask(&mut r).unwrap();
    let b = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(
        !b.contains("hunter2") && !b.contains("al@example.com"),
        "{b}"
    );
    assert_eq!(rep.count("credential"), 1);

    // A user JSON rule cannot be honoured in free text: fail closed.
    let m = masker("[[mask.rules]]\njson = \"$.user.name\"\n");
    let e = dropped!(
        m,
        json_req(r#"{"user": {"name": "Al"}"#),
        Dropped::UnparseableBody { .. }
    );
    assert_eq!(e.as_str(), "unparseable_body");
    assert!(e.to_string().contains("JSON"), "{e}");

    // ... or send it without its body.
    let m = masker("[mask]\non_failure = \"strip_body\"\n[[mask.rules]]\njson = \"$.user.name\"\n");
    let mut r = json_req(r#"{"user": {"name": "Al"}"#);
    r.headers
        .insert("content-encoding", HeaderValue::from_static("identity"));
    let rep = m.mask(&mut r).unwrap();
    assert!(r.body.is_empty());
    assert_eq!(r.headers["content-length"], "0");
    assert!(!r.headers.contains_key("content-encoding"));
    assert_eq!(
        rep.body_stripped().map(Dropped::as_str),
        Some("unparseable_body")
    );

    // Undeclared bodies that look like JSON but are not: text, never a failure.
    let m = masker("[[mask.rules]]\njson = \"$.user.name\"\n");
    let mut r = req("/", &[], br#"{"broken": "al@example.com""#);
    m.mask(&mut r).unwrap();
    assert!(!String::from_utf8_lossy(&r.body).contains("al@example.com"));
}

#[test]
fn same_secret_same_tokens_different_secret_different_tokens() {
    let cfg = MaskConfig::default();
    let one = Masker::with_secret(&cfg, b"shared secret one").unwrap();
    let two = Masker::with_secret(&cfg, b"shared secret one").unwrap();
    let other = Masker::with_secret(&cfg, b"shared secret two").unwrap();
    let make = || {
        req(
            "/u/alice@example.com?card=4111111111111111",
            &[
                ("authorization", "Bearer tok-123456789"),
                ("content-type", "application/json"),
            ],
            br#"{"email":"alice@example.com","token":"t-1"}"#,
        )
    };
    let run = |m: &Masker| {
        let mut r = make();
        m.mask(&mut r).unwrap();
        raw_bytes(r)
    };
    assert_eq!(run(&one), run(&two));
    assert_eq!(run(&one), run(&one), "across requests");
    assert_ne!(run(&one), run(&other));
    // The same value maps to the same fake wherever it is found.
    let mut r = make();
    one.mask(&mut r).unwrap();
    let path_email = r.uri.path().trim_start_matches("/u/").to_string();
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["email"], path_email.as_str());
    assert_eq!(one.mask_text("alice@example.com").0, path_email);
}

fn raw_bytes(r: MaskRequest) -> Vec<u8> {
    let mut text = format!("{} {}\n", r.method, r.uri).into_bytes();
    for (k, v) in &r.headers {
        text.extend_from_slice(format!("{k}: {}\n", v.to_str().unwrap()).as_bytes());
    }
    text.extend_from_slice(&r.body);
    text
}

#[test]
fn path_templates_and_cookie_rules() {
    let m = masker(
        r#"
        [[mask.rules]]
        name = "user-id"
        path = "/users/{id}/**"
        strategy = "hash"
        [[mask.rules]]
        name = "session"
        cookie = "sid"
        strategy = "drop"
        [[mask.rules]]
        name = "secret-headers"
        header = "x-*-secret"
        strategy = "redact"
        "#,
    );
    let mut r = req(
        "/users/12345/orders/9",
        &[
            ("cookie", "sid=abc; lang=en"),
            ("x-app-secret", "s"),
            ("set-cookie", "sid=x; Path=/"),
        ],
        b"",
    );
    let rep = m.mask(&mut r).unwrap();
    let segs: Vec<&str> = r.uri.path().split('/').collect();
    assert_eq!(segs[1], "users");
    assert_eq!(segs[2].len(), 32);
    assert_eq!(&segs[3..], ["orders", "9"]);
    let cookie = r.headers["cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("lang=") && !cookie.contains("sid"),
        "{cookie}"
    );
    assert_eq!(r.headers["x-app-secret"], "REDACTED");
    assert!(!r.headers.contains_key("set-cookie"));
    assert_eq!(rep.count("session"), 2);
    assert_eq!(rep.count("user-id"), 1);
}

#[test]
fn userinfo_in_absolute_targets_is_removed() {
    let m = masker("");
    let mut r = req("http://user:pw@api.example.com/x", &[], b"");
    let rep = m.mask(&mut r).unwrap();
    assert_eq!(r.uri, "http://api.example.com/x");
    assert_eq!(rep.count("userinfo"), 1);
}

#[test]
fn user_patterns_and_detector_settings() {
    let m = masker(
        r#"
        [mask]
        scan = ["body"]
        [mask.detectors]
        email = "hash"
        phone = "off"
        [[mask.patterns]]
        name = "customer"
        regex = 'CUST-[0-9]{6}'
        strategy = "redact"
        "#,
    );
    let mut r = req(
        "/u/al@example.com",
        &[("content-type", "text/plain")],
        b"CUST-123456 al@example.com +14155550123",
    );
    let rep = m.mask(&mut r).unwrap();
    let b = String::from_utf8(r.body.to_vec()).unwrap();
    let words: Vec<&str> = b.split(' ').collect();
    assert_eq!(words[0], "REDACTED");
    assert_eq!(words[1].len(), 32);
    assert_eq!(words[2], "+14155550123");
    assert_eq!(r.uri.path(), "/u/al@example.com", "path is not scanned");
    assert_eq!(rep.count("customer"), 1);
}

#[test]
fn config_errors_name_the_rule_and_the_problem() {
    let err = |toml: &str| {
        Masker::with_secret(&MaskConfig::from_toml(toml).unwrap(), b"k")
            .map(|_| ())
            .unwrap_err()
    };
    let e = err(
        "[[mask.rules]]\nname = \"a\"\nheader = \"x\"\n[[mask.rules]]\nname = \"b\"\njson = \"$.a[?(@.x)]\"\n",
    );
    assert!(
        matches!(&e, MaskConfigError::Rule { number: 2, .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "[[mask.rules]] number 2 (\"b\"): json: JSONPath \"$.a[?(@.x)]\", character 5: filter expressions are not supported"
    );
    let e = err(
        "[[mask.patterns]]\nregex = \"ok\"\n[[mask.patterns]]\nname = \"bad\"\nregex = \"(x\"\n",
    );
    assert!(
        matches!(&e, MaskConfigError::Pattern { number: 2, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("bad regular expression"), "{e}");
    let e = err("[[mask.rules]]\nname = \"x\"\n");
    assert!(e.to_string().contains("selects nothing"), "{e}");
    let e = err("[[mask.rules]]\npath = \"/u/{id}\"\nstrategy = \"drop\"\n");
    assert!(
        e.to_string().contains("drop cannot remove a path segment"),
        "{e}"
    );
    let e = err("[[mask.rules]]\npath = \"u/{id}\"\n");
    assert!(e.to_string().contains("must start with '/'"), "{e}");
    let e = err("[[mask.rules]]\nname = \"email\"\nheader = \"x\"\n");
    assert!(matches!(e, MaskConfigError::DuplicateName { .. }), "{e:?}");
    let e = err("[mask]\nmarker = \"bad\\nmarker\"\n");
    assert!(matches!(e, MaskConfigError::Marker { .. }), "{e:?}");
    let e = err("[[mask.rules]]\nname = \"has space\"\nheader = \"x\"\n");
    assert!(e.to_string().contains("may only hold"), "{e}");
}

#[test]
fn secret_sources() {
    // A variable nobody sets: random, and said so.
    let mut cfg = MaskConfig {
        secret_env: "UMBRA_MASK_TEST_UNSET_VARIABLE".into(),
        ..MaskConfig::default()
    };
    let m = Masker::new(&cfg).unwrap();
    assert!(m.secret_source().is_random());
    assert!(m.secret_source().to_string().contains("random"));
    cfg.require_secret = true;
    let e = Masker::new(&cfg).unwrap_err();
    assert!(matches!(e, MaskConfigError::MissingSecret { .. }));
    assert!(e.to_string().contains("UMBRA_MASK_TEST_UNSET_VARIABLE"));
    // Two random keys disagree: that is why the source is reported.
    let a = Masker::new(&MaskConfig {
        require_secret: false,
        ..cfg.clone()
    })
    .unwrap();
    let b = Masker::new(&MaskConfig {
        require_secret: false,
        ..cfg
    })
    .unwrap();
    assert_ne!(
        a.mask_text("x@example.com").0,
        b.mask_text("x@example.com").0
    );
    assert!(
        Masker::defaults()
            .rule_names()
            .any(|n| n == "credential_header")
    );
}

#[test]
fn raw_requests_round_trip_through_the_masker() {
    let m = masker("");
    let mut input = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in [&br#"{"e":"a@exam"#[..], b"ple.com\"", b"}"] {
        input.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        input.extend_from_slice(chunk);
        input.extend_from_slice(b"\r\n");
    }
    input.extend_from_slice(b"0\r\n\r\n");
    let mut r = raw::parse(&input).unwrap();
    m.mask(&mut r.request).unwrap();
    let out = r.write();
    let again = raw::parse(&out).unwrap();
    let v: Value = serde_json::from_slice(&again.request.body).unwrap();
    assert_ne!(v["e"], "a@example.com");
    assert!(v["e"].as_str().unwrap().ends_with(".com"));
    assert_eq!(
        r.request.headers["content-length"],
        again.request.body.len().to_string().as_str()
    );
}

#[test]
fn on_failure_default_is_drop() {
    assert_eq!(MaskConfig::default().on_failure, OnFailure::Drop);
    assert_eq!(Dropped::LABELS.len(), 8);
}

#[test]
fn the_readme_example_compiles_and_lists_every_default_name() {
    let readme = include_str!("../README.md");
    let start = readme.find("```toml\n[mask]").expect("a full example") + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let config = MaskConfig::from_toml(&readme[start..end]).expect("the example parses");
    assert!(config.require_secret && config.rules.len() >= 8 && config.patterns.len() == 2);
    let m = Masker::with_secret(&config, SECRET).expect("the example compiles");
    let mut r = req(
        "/users/42/orders?email=al@example.com&q=call+%2B14155550123",
        &[("content-type", "application/json")],
        br#"{"user":{"email":"al@example.com","first_name":"Al"},"notes":"x","id":"CUST-12345678"}"#,
    );
    let rep = m.mask(&mut r).unwrap();
    for name in [
        "user-email",
        "names",
        "free-notes",
        "user-in-path",
        "customer-id",
        "search-text",
    ] {
        assert!(
            rep.count(name) > 0 || name == "search-text",
            "{name}: {rep:?}"
        );
    }
    assert_eq!(rep.count("phone"), 1, "detect rule on q");
    let documented = |n: &str| {
        // `client_secret` is documented with its underscore; the lists hold normalised names.
        readme.contains(&format!("`{n}`")) || readme.replace('_', "").contains(&format!("`{n}`"))
    };
    for n in umbra_mask::SECRET_NAMES
        .iter()
        .chain(umbra_mask::TOKEN_NAMES)
    {
        assert!(documented(n), "{n} is not in the README");
    }
}
