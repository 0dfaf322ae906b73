//! Masking private data in shadow copies of requests.
//!
//! A [`Masker`] is built once from the `[mask]` section ([`MaskConfig`]) and
//! shared (it is `Send + Sync`); [`Masker::mask`] rewrites one copy in place and
//! either says it is safe to send ([`MaskReport`], with counts per rule) or that it
//! must not be sent ([`Dropped`], with a reason for the metric label). The live
//! request is never touched: the proxy masks the copy it made.
//!
//! What runs, in order, on a copy:
//!
//! 1. the body: decoded (`gzip`, `deflate`, `br`), masked by content type (JSON
//!    with JSONPath rules, urlencoded and multipart forms by field name, anything
//!    else as free text), re-encoded; a body that cannot be masked safely fails
//!    closed (the copy is dropped or sent without its body, per `on_failure`);
//! 2. headers: rules by name (credential headers by default: the scheme of
//!    `Authorization` stays, cookie names stay, values go), detectors over the
//!    other values; `Content-Length` is set to the masked body's length;
//! 3. the URI: path templates, query parameters by name, detectors over decoded
//!    segments and values; credentials in the authority (`user:pass@`) are removed.
//!
//! `hash` and `preserve` are keyed with a secret from the environment
//! ([`MaskConfig::secret_env`]): the same value becomes the same token in every
//! request and on every proxy sharing the secret, so one user still looks like one
//! user, and nobody without the secret can guess tokens by hashing candidates.

#![forbid(unsafe_code)]

mod body;
mod config;
mod ctx;
mod detect;
mod encode;
mod jsonpath;
mod key;
mod preserve;
pub mod raw;
mod request;
mod rules;

use std::fmt;
use std::sync::Arc;

pub use bytes;
pub use http;

pub use config::{
    DetectorSetting, DetectorsConfig, MaskConfig, MaskConfigError, OnFailure, PatternConfig,
    RuleConfig, RuleStrategy, ScanTarget, Strategy,
};
pub use detect::{Detector, SECRET_NAMES, TOKEN_NAMES};
pub use jsonpath::JsonPathError;

use detect::Detectors;
use jsonpath::{JsonPath, JsonRules};
use key::Key;
use rules::{Action, Glob, How, NameMatch, NameRules, PathTemplate};

/// One shadow copy: what the proxy mirrors. `body` is the whole body as received
/// (still content-encoded); masking replaces it.
#[derive(Clone, Debug, Default)]
pub struct MaskRequest {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

/// What was masked in one copy: values masked per rule or detector name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaskReport {
    masked: Vec<(Arc<str>, u32)>,
    body_stripped: Option<Dropped>,
}

impl MaskReport {
    /// `(rule or detector name, values masked)`, in the order the names were
    /// configured (detectors first); only names with at least one value.
    pub fn masked(&self) -> &[(Arc<str>, u32)] {
        &self.masked
    }

    /// Values masked by the rule or detector called `name`.
    pub fn count(&self, name: &str) -> u32 {
        self.masked
            .iter()
            .find(|(n, _)| &**n == name)
            .map_or(0, |(_, c)| *c)
    }

    /// Values masked in all.
    pub fn total(&self) -> u32 {
        self.masked.iter().map(|(_, c)| c).sum()
    }

    /// Set when the body could not be masked and `on_failure = "strip_body"`
    /// removed it: the reason it could not be masked.
    pub fn body_stripped(&self) -> Option<&Dropped> {
        self.body_stripped.as_ref()
    }
}

/// Why a copy must not be sent. Each reason has a stable label ([`Dropped::as_str`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Dropped {
    /// The body is not what its `Content-Type` says, and rules for that type exist
    /// that free-text masking cannot honour.
    #[error("body is not valid {content_type} ({detail}), and field rules for it exist")]
    UnparseableBody {
        content_type: String,
        detail: String,
    },
    /// A `Content-Encoding` this crate does not decode (only gzip, deflate, br).
    #[error("content-encoding {coding:?} is not supported (gzip, deflate and br are)")]
    UnsupportedEncoding { coding: String },
    /// The body does not decode as its `Content-Encoding` says.
    #[error("body does not decode as {coding}: {detail}")]
    UndecodableEncoding {
        coding: &'static str,
        detail: String,
    },
    /// The body, decoded, is larger than `max_body_bytes`.
    #[error("body is larger than {limit} bytes (mask.max_body_bytes)")]
    BodyTooLarge { limit: u64 },
    /// The body (or a part of it) is a compressed or packed format whose content
    /// detectors cannot see (zip, gzip file, PDF, base64 part…).
    #[error("body holds {what} content that cannot be inspected")]
    OpaqueBody { what: &'static str },
    /// Re-encoding the masked body failed (or masking would break its framing).
    #[error("masked body cannot be re-encoded as {coding}: {detail}")]
    EncodeFailed {
        coding: &'static str,
        detail: String,
    },
    /// A masked header value is not a valid header value.
    #[error("masked value of header {name} is not a valid header value")]
    InvalidHeader { name: String },
    /// The masked URI does not parse.
    #[error("masked URI is invalid: {detail}")]
    InvalidUri { detail: String },
}

impl Dropped {
    /// A stable snake_case label for metrics (`copies_dropped_total{reason=…}`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Dropped::UnparseableBody { .. } => "unparseable_body",
            Dropped::UnsupportedEncoding { .. } => "unsupported_encoding",
            Dropped::UndecodableEncoding { .. } => "undecodable_encoding",
            Dropped::BodyTooLarge { .. } => "body_too_large",
            Dropped::OpaqueBody { .. } => "opaque_body",
            Dropped::EncodeFailed { .. } => "encode_failed",
            Dropped::InvalidHeader { .. } => "invalid_header",
            Dropped::InvalidUri { .. } => "invalid_uri",
        }
    }

    /// Every label [`Dropped::as_str`] can return (to pre-register metric series).
    pub const LABELS: [&'static str; 8] = [
        "unparseable_body",
        "unsupported_encoding",
        "undecodable_encoding",
        "body_too_large",
        "opaque_body",
        "encode_failed",
        "invalid_header",
        "invalid_uri",
    ];
}

/// Where the key for `hash` and `preserve` came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// Read from the environment variable `var` (`bytes` long: under 16 is weak).
    Env { var: String, bytes: usize },
    /// `var` was unset or empty: a random key, for this process only. Tokens
    /// differ between processes and runs; set the variable to make them agree.
    Random { var: String },
    /// Given to [`Masker::with_secret`].
    Given,
}

impl SecretSource {
    pub fn is_random(&self) -> bool {
        matches!(self, SecretSource::Random { .. })
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env { var, bytes } => {
                write!(f, "environment variable {var} ({bytes} bytes)")
            }
            SecretSource::Random { var } => write!(
                f,
                "a random key for this process ({var} is not set): tokens will not match other processes"
            ),
            SecretSource::Given => f.write_str("a secret given by the caller"),
        }
    }
}

/// Which parts detectors scan without a rule asking.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Scan {
    pub path: bool,
    pub query: bool,
    pub headers: bool,
    pub body: bool,
}

/// Masks shadow copies. Built once from a [`MaskConfig`], shared across tasks.
pub struct Masker {
    key: Key,
    secret: SecretSource,
    /// Counter names: detectors, `credential`, `userinfo`, then rules and patterns.
    names: Vec<Arc<str>>,
    marker: Box<[u8]>,
    on_failure: OnFailure,
    max_body: u64,
    scan: Scan,
    /// Order of the first default rule: lower orders are the user's rules.
    first_default: u32,
    headers: NameRules,
    cookies: NameRules,
    query: NameRules,
    form: NameRules,
    json: JsonRules,
    paths: Vec<(PathTemplate, Action)>,
    detectors: Detectors,
    userinfo: u16,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("secret", &self.secret)
            .field("names", &self.names)
            .field("on_failure", &self.on_failure)
            .finish_non_exhaustive()
    }
}

const CREDENTIAL: u16 = 10;
const USERINFO: u16 = 11;

fn how(s: RuleStrategy) -> How {
    match s {
        RuleStrategy::Redact => How::Redact,
        RuleStrategy::Hash => How::Hash,
        RuleStrategy::Preserve => How::Preserve,
        RuleStrategy::Drop => How::Drop,
        RuleStrategy::Detect => How::Detect,
    }
}

fn strategy_how(s: Strategy) -> How {
    match s {
        Strategy::Redact => How::Redact,
        Strategy::Hash => How::Hash,
        Strategy::Preserve => How::Preserve,
        Strategy::Drop => How::Drop,
    }
}

fn setting_how(s: DetectorSetting) -> Option<How> {
    match s {
        DetectorSetting::Off => None,
        DetectorSetting::Redact => Some(How::Redact),
        DetectorSetting::Hash => Some(How::Hash),
        DetectorSetting::Preserve => Some(How::Preserve),
        DetectorSetting::Drop => Some(How::Drop),
    }
}

/// Counter names, with who registered each (for the duplicate-name error).
struct Names {
    names: Vec<Arc<str>>,
    owners: Vec<String>,
}

impl Names {
    fn add(&mut self, name: &str, owner: String) -> Result<u16, MaskConfigError> {
        if let Some(i) = self.names.iter().position(|n| &**n == name) {
            return Err(MaskConfigError::DuplicateName {
                name: name.to_string(),
                first: self.owners[i].clone(),
                second: owner,
            });
        }
        self.names.push(name.into());
        self.owners.push(owner);
        Ok((self.names.len() - 1) as u16)
    }
}

impl Masker {
    /// Compiles `config`, reading the secret from `config.secret_env` (a random
    /// per-process key when it is unset, unless `require_secret`).
    pub fn new(config: &MaskConfig) -> Result<Masker, MaskConfigError> {
        let var = &config.secret_env;
        if var.is_empty() || var.contains(['=', '\0']) {
            return Err(MaskConfigError::SecretEnv {
                var: var.clone(),
                problem: "must be the name of an environment variable".into(),
            });
        }
        match std::env::var_os(var) {
            Some(v) if !v.is_empty() => {
                let secret = v.into_encoded_bytes();
                let bytes = secret.len();
                Masker::build(
                    config,
                    &secret,
                    SecretSource::Env {
                        var: var.clone(),
                        bytes,
                    },
                )
            }
            _ if config.require_secret => Err(MaskConfigError::MissingSecret { var: var.clone() }),
            _ => {
                let secret: [u8; 32] = rand::random();
                Masker::build(config, &secret, SecretSource::Random { var: var.clone() })
            }
        }
    }

    /// Compiles `config` with an explicit secret (tests, or a secret from
    /// elsewhere than the environment); `secret_env` is not read.
    pub fn with_secret(config: &MaskConfig, secret: &[u8]) -> Result<Masker, MaskConfigError> {
        Masker::build(config, secret, SecretSource::Given)
    }

    /// The safe defaults (no `[mask]` section): credential headers and cookies
    /// hashed, credential-named fields masked, every detector over paths, queries,
    /// headers and bodies. The secret comes from `UMBRA_MASK_SECRET` (random
    /// per process when unset).
    pub fn defaults() -> Masker {
        match Masker::new(&MaskConfig::default()) {
            Ok(m) => m,
            // Only a broken default config could fail; the random key cannot.
            Err(_) => {
                let secret: [u8; 32] = rand::random();
                let source = SecretSource::Random {
                    var: MaskConfig::default().secret_env,
                };
                Masker::build(&MaskConfig::default(), &secret, source)
                    .expect("the default configuration compiles")
            }
        }
    }

    /// Where the key came from: callers should warn when it is random, since two
    /// proxies then disagree on every token.
    pub fn secret_source(&self) -> &SecretSource {
        &self.secret
    }

    /// Every name a [`MaskReport`] can hold (to pre-register metric series).
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|n| &**n)
    }

    fn build(
        config: &MaskConfig,
        secret: &[u8],
        source: SecretSource,
    ) -> Result<Masker, MaskConfigError> {
        let marker = &config.marker;
        let bad_marker = |problem: &str| MaskConfigError::Marker {
            marker: marker.clone(),
            problem: problem.into(),
        };
        if marker.is_empty() || marker.len() > 64 {
            return Err(bad_marker("must be 1 to 64 characters"));
        }
        if !marker.bytes().all(|c| (0x20..0x7f).contains(&c)) {
            return Err(bad_marker(
                "must be printable ASCII (it goes into headers and URLs)",
            ));
        }
        if marker.starts_with(' ') || marker.ends_with(' ') {
            return Err(bad_marker("must not start or end with a space"));
        }
        if config.max_body_bytes == 0 {
            return Err(MaskConfigError::MaxBody);
        }

        let mut names = Names {
            names: Vec::new(),
            owners: Vec::new(),
        };
        // Detector counters first, at their index, then the fixed ones.
        for i in 0..10 {
            let d = detect::Detector::from_index(i).expect("ten detectors");
            names.add(d.name(), format!("detector {}", d.name()))?;
        }
        names.add("credential", "detector credential".into())?;
        names.add("userinfo", "built-in userinfo removal".into())?;

        let mut builtin = [None; 10];
        for d in Detector::ALL {
            builtin[d.index()] = setting_how(config.detectors.get(d)).map(|how| Action {
                id: d.index() as u16,
                order: 0,
                how,
            });
        }
        let credential = setting_how(config.detectors.credential).map(|how| Action {
            id: CREDENTIAL,
            order: 0,
            how,
        });

        // User patterns.
        let mut pats = Vec::new();
        let mut pat_actions = Vec::new();
        for (i, p) in config.patterns.iter().enumerate() {
            let number = i + 1;
            let name = p
                .name
                .clone()
                .unwrap_or_else(|| format!("pattern-{number}"));
            check_name(&name).map_err(|problem| MaskConfigError::Pattern {
                number,
                name: p.name.clone(),
                problem,
            })?;
            let id = names.add(&name, format!("[[mask.patterns]] number {number}"))?;
            pats.push(p.regex.as_str());
            pat_actions.push(Action {
                id,
                order: 0,
                how: strategy_how(p.strategy),
            });
        }
        let user = if pats.is_empty() {
            None
        } else {
            let re = detect::compile_user(&pats).map_err(|(i, e)| MaskConfigError::Pattern {
                number: i + 1,
                name: config.patterns.get(i).and_then(|p| p.name.clone()),
                problem: format!("bad regular expression: {e}"),
            })?;
            Some((re, pat_actions))
        };

        let mut m = Masker {
            key: Key::new(secret),
            secret: source,
            names: Vec::new(),
            marker: marker.as_bytes().into(),
            on_failure: config.on_failure,
            max_body: config.max_body_bytes,
            scan: Scan {
                path: config.scan.contains(&ScanTarget::Path),
                query: config.scan.contains(&ScanTarget::Query),
                headers: config.scan.contains(&ScanTarget::Headers),
                body: config.scan.contains(&ScanTarget::Body),
            },
            first_default: config.rules.len() as u32,
            headers: NameRules::default(),
            cookies: NameRules::default(),
            query: NameRules::default(),
            form: NameRules::default(),
            json: JsonRules::default(),
            paths: Vec::new(),
            detectors: Detectors::new(builtin, user, credential),
            userinfo: USERINFO,
        };

        for (i, r) in config.rules.iter().enumerate() {
            let number = i + 1;
            let err = |problem: String| MaskConfigError::Rule {
                number,
                name: r.name.clone(),
                problem,
            };
            let name = r.name.clone().unwrap_or_else(|| format!("rule-{number}"));
            check_name(&name).map_err(err)?;
            let selectors = [&r.header, &r.cookie, &r.query, &r.form, &r.json, &r.path];
            if selectors.iter().all(|s| s.is_empty()) {
                return Err(err(
                    "selects nothing: give at least one of header, cookie, query, form, json, path"
                        .into(),
                ));
            }
            let id = names.add(&name, format!("[[mask.rules]] number {number}"))?;
            let a = Action {
                id,
                order: i as u32,
                how: how(r.strategy),
            };
            let places: [(&str, &Vec<String>, &mut NameRules); 4] = [
                ("header", &r.header, &mut m.headers),
                ("cookie", &r.cookie, &mut m.cookies),
                ("query", &r.query, &mut m.query),
                ("form", &r.form, &mut m.form),
            ];
            for (what, list, rules) in places {
                for n in list {
                    if n.is_empty() {
                        return Err(err(format!("{what}: an empty name matches nothing")));
                    }
                    rules.push(NameMatch::Glob(Glob::new(n)), a);
                }
            }
            for j in &r.json {
                let p = JsonPath::parse(j).map_err(|e| err(format!("json: {e}")))?;
                m.json.push(p, a);
            }
            for p in &r.path {
                if a.how == How::Drop {
                    return Err(err(
                        "path: drop cannot remove a path segment (the shadow would route elsewhere); use redact, hash or preserve".into(),
                    ));
                }
                let t = PathTemplate::parse(p).map_err(|e| err(format!("path: {e}")))?;
                m.paths.push((t, a));
            }
        }

        if config.defaults {
            let base = config.rules.len() as u32;
            let mut def = |name: &str, k: u32, h: How| -> Result<Action, MaskConfigError> {
                let id = names.add(name, format!("default rule {name}"))?;
                Ok(Action {
                    id,
                    order: base + k,
                    how: h,
                })
            };
            let headers = def("credential_header", 0, How::Hash)?;
            let cookies = def("cookie", 1, How::Hash)?;
            let secrets = def("secret_field", 2, How::Redact)?;
            let tokens = def("token_field", 3, How::Hash)?;
            for h in ["authorization", "proxy-authorization", "x-api-key"] {
                m.headers.push(NameMatch::Glob(Glob::new(h)), headers);
            }
            for h in ["cookie", "set-cookie"] {
                m.headers.push(NameMatch::Glob(Glob::new(h)), cookies);
            }
            for (list, a) in [
                (NameMatch::secrets(), secrets),
                (NameMatch::tokens(), tokens),
            ] {
                m.query.push(list.clone(), a);
                m.form.push(list.clone(), a);
                m.json.push(JsonPath::any_depth(list), a);
            }
        }
        m.names = names.names;
        Ok(m)
    }

    /// Masks one shadow copy in place. `Ok`: safe to send. `Err`: must not be sent
    /// (the copy may be half-rewritten; drop it).
    pub fn mask(&self, req: &mut MaskRequest) -> Result<MaskReport, Dropped> {
        request::mask(self, req)
    }

    /// Masks free text with the detectors and user patterns (no field rules): for
    /// example values that `umbra learn` stores. Returns the text and how many
    /// values were masked.
    pub fn mask_text(&self, text: &str) -> (String, u32) {
        let mut cx = ctx::Ctx::new(self);
        let mut out = Vec::with_capacity(text.len());
        if !cx.detect(text.as_bytes(), true, &mut out) {
            return (text.to_string(), 0);
        }
        let n = cx.total();
        // Replacements of UTF-8 are UTF-8 (markers are ASCII, fakes keep or
        // ASCII-fy characters); the lossy path is only a guard.
        let s = String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        (s, n)
    }
}

/// Rule and pattern names label metrics: printable, short, no quotes.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("name {name:?} must be 1 to 64 characters"));
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':'))
    {
        return Err(format!(
            "name {name:?} may only hold letters, digits, '_', '-', '.' and ':'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proxy builds one masker and shares it across tasks and threads.
    #[test]
    fn shared_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Masker>();
        check::<MaskReport>();
        check::<Dropped>();
        check::<MaskRequest>();
    }

    #[test]
    fn every_drop_reason_has_its_label() {
        let all = [
            Dropped::UnparseableBody {
                content_type: "JSON".into(),
                detail: "x".into(),
            },
            Dropped::UnsupportedEncoding {
                coding: "zstd".into(),
            },
            Dropped::UndecodableEncoding {
                coding: "gzip",
                detail: "x".into(),
            },
            Dropped::BodyTooLarge { limit: 1 },
            Dropped::OpaqueBody { what: "zip" },
            Dropped::EncodeFailed {
                coding: "br",
                detail: "x".into(),
            },
            Dropped::InvalidHeader { name: "x".into() },
            Dropped::InvalidUri { detail: "x".into() },
        ];
        let labels: Vec<&str> = all.iter().map(Dropped::as_str).collect();
        assert_eq!(labels, Dropped::LABELS);
    }
}
