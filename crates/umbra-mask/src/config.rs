//! The `[mask]` section of `umbra.toml`, as written. `Masker::new` compiles it
//! (and says what is wrong with it); every field has a safe default, so no section
//! at all still masks credentials and every detector's kind of value.

use serde::{Deserialize, Deserializer, Serialize};

/// The `[mask]` section of umbra.toml. See the crate README for every key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskConfig {
    /// Environment variable holding the secret that keys `hash` and `preserve`.
    /// Proxies that must agree on tokens need the same secret.
    pub secret_env: String,
    /// Refuse to start when `secret_env` is unset (instead of using a random
    /// per-process key).
    pub require_secret: bool,
    /// Include the default rules (credential headers, cookies, credential-named
    /// fields) after the rules written here.
    pub defaults: bool,
    /// What to do with a copy whose body cannot be masked safely.
    pub on_failure: OnFailure,
    /// Where the detectors run by themselves (without a rule asking).
    pub scan: Vec<ScanTarget>,
    /// Largest body, after decompression, that is masked; larger fails closed.
    pub max_body_bytes: u64,
    /// What `redact` writes.
    pub marker: String,
    /// Strategy per built-in detector, or `off`.
    pub detectors: DetectorsConfig,
    /// User-supplied detectors (regular expressions).
    pub patterns: Vec<PatternConfig>,
    /// Rules: where to look and what to do. The first matching rule wins.
    pub rules: Vec<RuleConfig>,
}

impl Default for MaskConfig {
    fn default() -> Self {
        MaskConfig {
            secret_env: "UMBRA_MASK_SECRET".into(),
            require_secret: false,
            defaults: true,
            on_failure: OnFailure::Drop,
            scan: vec![
                ScanTarget::Path,
                ScanTarget::Query,
                ScanTarget::Headers,
                ScanTarget::Body,
            ],
            max_body_bytes: 16 << 20,
            marker: "REDACTED".into(),
            detectors: DetectorsConfig::default(),
            patterns: Vec::new(),
            rules: Vec::new(),
        }
    }
}

impl MaskConfig {
    /// The `[mask]` table of a whole `umbra.toml` (other tables belong to other
    /// parts of Umbra and are ignored); the defaults when there is none. Errors
    /// carry the line and column.
    pub fn from_toml(text: &str) -> Result<MaskConfig, toml::de::Error> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            mask: MaskConfig,
        }
        toml::from_str::<File>(text).map(|f| f.mask)
    }
}

/// What happens to a copy whose body cannot be masked safely.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The copy is not sent.
    #[default]
    Drop,
    /// The copy is sent without its body (`Content-Length: 0`).
    StripBody,
}

/// Where detectors run without a rule asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanTarget {
    /// Path segments (decoded).
    Path,
    /// Query parameter names and values (decoded).
    Query,
    /// Header values, except framing and content negotiation headers.
    Headers,
    /// Bodies: JSON strings and numbers, form values, multipart parts, free text.
    Body,
}

/// A detector's strategy, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorSetting {
    Off,
    Redact,
    Hash,
    Preserve,
    Drop,
}

/// A strategy: what replaces a matched value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The marker (`REDACTED`); `0` in a JSON number.
    #[default]
    Redact,
    /// Keyed HMAC-SHA256 token (32 hex characters); same input, same token.
    Hash,
    /// Keyed, format-preserving fake of the same shape.
    Preserve,
    /// Remove the field, header, parameter, cookie or part (or the matched text).
    Drop,
}

/// A rule's strategy: a [`Strategy`], or `detect` (run the detectors over the
/// selected values whatever `scan` says).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleStrategy {
    #[default]
    Redact,
    Hash,
    Preserve,
    Drop,
    Detect,
}

/// Strategy per built-in detector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorsConfig {
    pub email: DetectorSetting,
    pub card: DetectorSetting,
    pub iban: DetectorSetting,
    pub ssn: DetectorSetting,
    pub phone: DetectorSetting,
    pub ipv4: DetectorSetting,
    pub ipv6: DetectorSetting,
    pub jwt: DetectorSetting,
    pub bearer: DetectorSetting,
    pub aws_key: DetectorSetting,
    /// Credential assignments in free text (`password=…`, `"api_key": "…"`).
    pub credential: DetectorSetting,
}

impl Default for DetectorsConfig {
    fn default() -> Self {
        let p = DetectorSetting::Preserve;
        DetectorsConfig {
            email: p,
            card: p,
            iban: p,
            ssn: p,
            phone: p,
            ipv4: p,
            ipv6: p,
            jwt: p,
            bearer: p,
            aws_key: p,
            credential: DetectorSetting::Redact,
        }
    }
}

impl DetectorsConfig {
    pub(crate) fn get(&self, d: crate::Detector) -> DetectorSetting {
        use crate::Detector as D;
        match d {
            D::Email => self.email,
            D::Card => self.card,
            D::Iban => self.iban,
            D::Ssn => self.ssn,
            D::Phone => self.phone,
            D::Ipv4 => self.ipv4,
            D::Ipv6 => self.ipv6,
            D::Jwt => self.jwt,
            D::Bearer => self.bearer,
            D::AwsKey => self.aws_key,
        }
    }
}

/// A user-supplied detector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    /// Name in reports and metrics (default `pattern-N`).
    #[serde(default)]
    pub name: Option<String>,
    /// A regular expression (Rust `regex` syntax); every match is masked.
    pub regex: String,
    #[serde(default)]
    pub strategy: Strategy,
}

/// A rule: where to look (one or more selectors) and what to do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name in reports and metrics (default `rule-N`).
    #[serde(default)]
    pub name: Option<String>,
    /// Header names (`*` globs, any case).
    #[serde(default, deserialize_with = "one_or_many")]
    pub header: Vec<String>,
    /// Cookie names inside `Cookie` and `Set-Cookie`.
    #[serde(default, deserialize_with = "one_or_many")]
    pub cookie: Vec<String>,
    /// Query parameter names.
    #[serde(default, deserialize_with = "one_or_many")]
    pub query: Vec<String>,
    /// Form field names (urlencoded and multipart).
    #[serde(default, deserialize_with = "one_or_many")]
    pub form: Vec<String>,
    /// JSON body fields, as JSONPath (`$.user.email`, `$..password`, `$.cards[*].number`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub json: Vec<String>,
    /// Path templates whose `{placeholders}` are masked (`/users/{id}`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub path: Vec<String>,
    #[serde(default)]
    pub strategy: RuleStrategy,
}

/// `header = "x"` and `header = ["x", "y"]` both work.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(s)) => Ok(vec![s]),
        Ok(OneOrMany::Many(v)) => Ok(v),
        Err(_) => Err(serde::de::Error::custom(
            "expected a string or a list of strings",
        )),
    }
}

/// What is wrong with a `[mask]` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MaskConfigError {
    /// A rule (1-based `number` in `[[mask.rules]]`).
    #[error("[[mask.rules]] number {number}{}: {problem}", named(.name))]
    Rule {
        number: usize,
        name: Option<String>,
        problem: String,
    },
    /// A user pattern (1-based `number` in `[[mask.patterns]]`).
    #[error("[[mask.patterns]] number {number}{}: {problem}", named(.name))]
    Pattern {
        number: usize,
        name: Option<String>,
        problem: String,
    },
    #[error(
        "mask.secret_env: environment variable {var} is not set (or empty), and mask.require_secret is true"
    )]
    MissingSecret { var: String },
    #[error("mask.secret_env {var:?}: {problem}")]
    SecretEnv { var: String, problem: String },
    #[error("mask.marker {marker:?}: {problem}")]
    Marker { marker: String, problem: String },
    #[error("mask.max_body_bytes: must be at least 1")]
    MaxBody,
    #[error(
        "mask: the name {name:?} is used twice ({first} and {second}); names label metrics, so they must be unique"
    )]
    DuplicateName {
        name: String,
        first: String,
        second: String,
    },
}

fn named(name: &Option<String>) -> String {
    name.as_ref()
        .map(|n| format!(" ({n:?})"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_is_the_defaults() {
        assert_eq!(MaskConfig::from_toml("").unwrap(), MaskConfig::default());
        assert_eq!(
            MaskConfig::from_toml("[proxy]\nlisten = 1\n[mask]\n").unwrap(),
            MaskConfig::default()
        );
    }

    #[test]
    fn full_section() {
        let c = MaskConfig::from_toml(
            r#"
            [mask]
            secret_env = "S"
            on_failure = "strip_body"
            scan = ["query", "body"]
            marker = "[x]"
            [mask.detectors]
            phone = "off"
            email = "hash"
            [[mask.patterns]]
            name = "customer"
            regex = 'CUST-\d{8}'
            strategy = "hash"
            [[mask.rules]]
            name = "pw"
            json = "$..password"
            form = ["password", "pw"]
            strategy = "drop"
            "#,
        )
        .unwrap();
        assert_eq!(c.secret_env, "S");
        assert_eq!(c.on_failure, OnFailure::StripBody);
        assert_eq!(c.scan, vec![ScanTarget::Query, ScanTarget::Body]);
        assert_eq!(c.detectors.phone, DetectorSetting::Off);
        assert_eq!(c.detectors.email, DetectorSetting::Hash);
        assert_eq!(c.detectors.card, DetectorSetting::Preserve);
        assert_eq!(c.patterns[0].strategy, Strategy::Hash);
        assert_eq!(c.rules[0].json, vec!["$..password"]);
        assert_eq!(c.rules[0].form, vec!["password", "pw"]);
        assert_eq!(c.rules[0].strategy, RuleStrategy::Drop);
    }

    #[test]
    fn unknown_keys_are_errors_with_positions() {
        let e = MaskConfig::from_toml("[mask]\nsecret = 1\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("unknown field `secret`"), "{msg}");
        let e = MaskConfig::from_toml("[mask]\n[[mask.rules]]\nheadr = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `headr`"), "{e}");
        let e = MaskConfig::from_toml("[mask]\n[[mask.rules]]\nstrategy = \"blur\"\n").unwrap_err();
        assert!(e.to_string().contains("blur"), "{e}");
    }
}
