//! `umbra.toml`: the proxy's configuration, parsed and checked before anything starts.
//!
//! Every value that can be wrong is checked while it is deserialised (durations,
//! sizes, percentages, URLs, regexes), so the TOML parser's position and
//! serde_path_to_error's key path name exactly where: `umbra.toml: line 12, column
//! 11, key mirror.rules[0].percent: "110%" is over 100%`. Cross-references (a rule
//! naming a shadow that does not exist) are checked afterwards and name the key.
//! `examples/umbra.toml` documents every field.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// The whole file. Sections other than these are refused, so a typo never passes
/// silently.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Listen,
    #[serde(default)]
    pub admin: Option<Admin>,
    pub production: Production,
    #[serde(default)]
    pub shadow: Vec<Shadow>,
    #[serde(default)]
    pub mirror: Mirror,
    /// A new version that answers a share of live traffic, stage by stage.
    #[serde(default)]
    pub canary: Option<Canary>,
    #[serde(default)]
    pub profiles: Option<Profiles>,
    #[serde(default)]
    pub access_log: Option<AccessLog>,
    /// The masking rules of the copies (see `umbra-mask`).
    #[serde(default)]
    pub mask: Option<umbra_mask::MaskConfig>,
    /// Tracing (OpenTelemetry): the `OTEL_*` environment variables override it.
    #[serde(default)]
    pub tracing: Option<umbra_trace::TraceFileConfig>,
    /// Sections the `umbra` binary reads itself (with [`parse_toml`]); the proxy
    /// lets them through unread.
    #[serde(default)]
    pub analysis: Option<de::IgnoredAny>,
    #[serde(default)]
    pub alerts: Option<de::IgnoredAny>,
    #[serde(default)]
    pub store: Option<de::IgnoredAny>,
    #[serde(default)]
    pub control: Option<de::IgnoredAny>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub address: SocketAddr,
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Time allowed for a request's head to arrive, from the first byte (slowloris cut-off).
    #[serde(default = "defaults::header_timeout", with = "duration")]
    pub header_timeout: Duration,
    /// Longest silence allowed between two pieces of a request body.
    #[serde(default = "defaults::body_timeout", with = "duration")]
    pub body_timeout: Duration,
    /// The largest request head accepted; bigger ones get 431.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: ByteSize,
    /// Which forwarding headers production receives.
    #[serde(default)]
    pub forwarded: Forwarded,
    /// How long a graceful shutdown waits for in-flight requests.
    #[serde(default = "defaults::drain_timeout", with = "duration")]
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Forwarded {
    /// Append the client to `X-Forwarded-For` and set `X-Forwarded-Proto` (nginx's habit).
    #[default]
    XForwardedFor,
    /// Append an RFC 7239 `Forwarded` element.
    Forwarded,
    Both,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub address: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Production {
    pub servers: Vec<Server>,
    #[serde(default = "defaults::connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Time allowed for production's response head.
    #[serde(default = "defaults::upstream_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub host: HostPolicy,
    #[serde(default)]
    pub health: Option<HealthCheck>,
    #[serde(default)]
    pub ejection: Ejection,
    /// How often each upstream's `metrics` endpoint is read (production and shadow).
    #[serde(default = "defaults::metrics_interval", with = "duration")]
    pub metrics_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub url: UpstreamUrl,
    /// Relative share of traffic (balancing is weighted power of two choices).
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// A Prometheus-format endpoint with this server's CPU and memory.
    #[serde(default)]
    pub metrics: Option<UpstreamUrl>,
    /// Cores this server has: with `metrics`, the weights use its CPU headroom
    /// (1 − cores in use / cpus).
    #[serde(default)]
    pub cpus: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default = "defaults::health_path")]
    pub path: String,
    #[serde(default = "defaults::health_interval", with = "duration")]
    pub interval: Duration,
    #[serde(default = "defaults::health_timeout", with = "duration")]
    pub timeout: Duration,
    /// Consecutive failed checks before a server is taken out (HAProxy's `fall`).
    #[serde(default = "defaults::fall")]
    pub fall: u32,
    /// Consecutive good checks before it comes back (HAProxy's `rise`).
    #[serde(default = "defaults::rise")]
    pub rise: u32,
}

/// Passive ejection: a server that fails live requests in a row is rested.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ejection {
    /// Consecutive failures (connection errors, timeouts, 502/503/504) that eject; 0 disables.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: u32,
    /// First ejection time; doubles for each repeat, up to `max_time`.
    #[serde(default = "defaults::ejection_time", with = "duration")]
    pub base_time: Duration,
    #[serde(default = "defaults::max_ejection_time", with = "duration")]
    pub max_time: Duration,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            consecutive_failures: defaults::consecutive_failures(),
            base_time: defaults::ejection_time(),
            max_time: defaults::max_ejection_time(),
        }
    }
}

/// What `Host` an upstream receives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HostPolicy {
    /// The client's own `Host` (or HTTP/2 `:authority`).
    #[default]
    Original,
    /// The upstream URL's host and port.
    Upstream,
    /// A fixed value.
    Fixed(String),
}

impl<'de> Deserialize<'de> for HostPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "original" => HostPolicy::Original,
            "upstream" => HostPolicy::Upstream,
            "" => {
                return Err(de::Error::custom(
                    "host is empty; write \"original\", \"upstream\" or a host name",
                ));
            }
            other => {
                http::HeaderValue::from_str(other).map_err(|_| {
                    de::Error::custom(format!("{other:?} is not a valid Host value"))
                })?;
                HostPolicy::Fixed(other.to_string())
            }
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shadow {
    pub name: String,
    pub url: UpstreamUrl,
    #[serde(default)]
    pub host: HostPolicy,
    /// Time allowed for the whole shadow exchange.
    #[serde(default = "defaults::shadow_timeout", with = "duration")]
    pub timeout: Duration,
    /// Shadow requests in flight at once; more wait in the queue.
    #[serde(default = "defaults::shadow_concurrency")]
    pub concurrency: usize,
    /// Copies waiting to be sent; a full queue drops (and counts) new copies.
    #[serde(default = "defaults::shadow_queue")]
    pub queue: usize,
    #[serde(default)]
    pub metrics: Option<UpstreamUrl>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Share of requests copied when no rule matches.
    #[serde(default)]
    pub percent: Percent,
    /// Sampling: `random` (the default) or consistent on `header:NAME` / `cookie:NAME`.
    #[serde(default)]
    pub key: SampleKey,
    /// Most copies per second over all targets (0: no cap).
    #[serde(default)]
    pub rate_limit: f64,
    /// Bodies larger than this are not mirrored (counted).
    #[serde(default = "defaults::max_body")]
    pub max_body: ByteSize,
    /// Which shadows receive copies (default: all).
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    #[serde(default)]
    pub rules: Vec<MirrorRule>,
}

impl Default for Mirror {
    fn default() -> Self {
        Mirror {
            percent: Percent::default(),
            key: SampleKey::default(),
            rate_limit: 0.0,
            max_body: defaults::max_body(),
            targets: None,
            rules: Vec::new(),
        }
    }
}

/// `[canary]`: the new version's servers and how users are split. The share it
/// gets at each moment is set by the canary controller (`[control.canary]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// The new version's name (`v2.4.0`): labels its shadow-stage copies and keys
    /// its progress in the store, so a restart with the same name resumes it.
    pub name: String,
    pub servers: Vec<Server>,
    /// Sticky per user: `header:NAME` or `cookie:NAME`. Default `random` (per request).
    #[serde(default)]
    pub key: SampleKey,
    /// What `Host` the canary receives.
    #[serde(default)]
    pub host: HostPolicy,
    /// Shadow stage: share of requests copied (masked) to the canary. Default 100%.
    #[serde(default = "defaults::canary_mirror")]
    pub mirror: Percent,
    /// Shadow stage: time allowed for one copy's exchange.
    #[serde(default = "defaults::shadow_timeout", with = "duration")]
    pub timeout: Duration,
    /// Shadow stage: copies in flight at once.
    #[serde(default = "defaults::shadow_concurrency")]
    pub concurrency: usize,
    /// Shadow stage: copies waiting; a full queue drops (and counts) new ones.
    #[serde(default = "defaults::shadow_queue")]
    pub queue: usize,
}

impl Canary {
    /// The shadow target its shadow-stage copies go through: the first server,
    /// under the canary's name.
    pub fn copy_target(&self) -> Shadow {
        Shadow {
            name: self.name.clone(),
            url: self.servers[0].url.clone(),
            host: self.host.clone(),
            timeout: self.timeout,
            concurrency: self.concurrency,
            queue: self.queue,
            metrics: self.servers[0].metrics.clone(),
        }
    }
}

/// A per-route sampling rule; the first rule that matches decides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorRule {
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub path_regex: Option<Pattern>,
    /// Methods matched (any when absent).
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub header: Option<HeaderMatch>,
    pub percent: Percent,
    #[serde(default)]
    pub key: Option<SampleKey>,
    #[serde(default)]
    pub targets: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: HeaderNameValue,
    /// Exact value; when neither `value` nor `regex` is given the header only has to be present.
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub regex: Option<Pattern>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profiles {
    pub file: PathBuf,
    /// How often the file is checked for changes.
    #[serde(default = "defaults::profiles_reload", with = "duration")]
    pub reload: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    pub path: PathBuf,
    /// `combined` (with `$request_time`, the default), `common`, `json`, or an
    /// nginx-style `log_format` string with `$variables`.
    #[serde(default = "defaults::log_format")]
    pub format: String,
}

/// A percentage, written `10%`, `0.5%` or as a number of percent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percent(pub f64);

impl Percent {
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl std::str::FromStr for Percent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let number = t.strip_suffix('%').unwrap_or(t).trim();
        let v: f64 = number
            .parse()
            .map_err(|_| format!("{s:?} is not a percentage; write it like 10% or 0.5%"))?;
        Percent::checked(v)
    }
}

impl Percent {
    fn checked(v: f64) -> Result<Percent, String> {
        if !(0.0..=100.0).contains(&v) {
            return Err(format!("{v}% is outside 0% to 100%"));
        }
        Ok(Percent(v))
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(v) => Percent::checked(v).map_err(de::Error::custom),
            Raw::Text(s) => s.parse().map_err(de::Error::custom),
        }
    }
}

/// A byte count, written as a number or with a unit: `64KiB`, `1MiB`, `1MB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a size; write it like 65536, 64KiB or 1MiB"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "{s:?}: unknown unit {other:?}; use B, KiB, MiB, GiB, KB, MB or GB"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(v) => Ok(ByteSize(v)),
            Raw::Text(s) => s.parse().map_err(de::Error::custom),
        }
    }
}

/// How a request is picked for mirroring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SampleKey {
    /// Independent of the request (an evenly spread sequence, so the share holds exactly).
    #[default]
    Random,
    /// Hash of this header's value: all of one key's requests, or none.
    Header(http::HeaderName),
    /// Hash of this cookie's value.
    Cookie(String),
}

impl std::str::FromStr for SampleKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "random" {
            return Ok(SampleKey::Random);
        }
        let bad =
            || format!("{s:?} is not a sampling key; write random, header:NAME or cookie:NAME");
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        let name = name.trim();
        if name.is_empty() {
            return Err(bad());
        }
        match kind.trim() {
            "header" => http::HeaderName::from_bytes(name.as_bytes())
                .map(SampleKey::Header)
                .map_err(|_| format!("{name:?} is not a valid header name")),
            "cookie" => Ok(SampleKey::Cookie(name.to_string())),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for SampleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SampleKey::Random => f.write_str("random"),
            SampleKey::Header(h) => write!(f, "header:{h}"),
            SampleKey::Cookie(c) => write!(f, "cookie:{c}"),
        }
    }
}

impl<'de> Deserialize<'de> for SampleKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// A compiled regular expression.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        regex::Regex::new(&s)
            .map(Pattern)
            .map_err(|e| de::Error::custom(format!("{s:?} is not a valid regex: {e}")))
    }
}

#[derive(Debug, Clone)]
pub struct HeaderNameValue(pub http::HeaderName);

impl<'de> Deserialize<'de> for HeaderNameValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        http::HeaderName::from_bytes(s.as_bytes())
            .map(HeaderNameValue)
            .map_err(|_| de::Error::custom(format!("{s:?} is not a valid header name")))
    }
}

/// An `http://` or `https://` URL with a host, and no path beyond `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamUrl(pub http::Uri);

impl UpstreamUrl {
    pub fn authority(&self) -> &str {
        self.0.authority().map(|a| a.as_str()).unwrap_or_default()
    }
    pub fn is_https(&self) -> bool {
        self.0.scheme_str() == Some("https")
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for UpstreamUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => {
                return Err(format!(
                    "{s:?}: the URL must start with http:// or https://"
                ));
            }
        }
        if uri.authority().is_none() {
            return Err(format!("{s:?}: the URL has no host"));
        }
        Ok(UpstreamUrl(uri))
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// Durations as humantime strings (`10s`, `250ms`, `1m30s`).
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map_err(|e| {
            de::Error::custom(format!(
                "{s:?} is not a duration ({e}); write it like 30s, 500ms or 1m"
            ))
        })
    }
}

mod defaults {
    use std::time::Duration;

    use super::ByteSize;

    pub fn header_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn body_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_header_bytes() -> ByteSize {
        ByteSize(64 * 1024)
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn upstream_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn weight() -> u32 {
        100
    }
    pub fn health_path() -> String {
        "/".into()
    }
    pub fn health_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn health_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn fall() -> u32 {
        3
    }
    pub fn rise() -> u32 {
        2
    }
    pub fn consecutive_failures() -> u32 {
        5
    }
    pub fn ejection_time() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_ejection_time() -> Duration {
        Duration::from_secs(300)
    }
    pub fn canary_mirror() -> super::Percent {
        super::Percent(100.0)
    }
    pub fn shadow_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn shadow_concurrency() -> usize {
        64
    }
    pub fn shadow_queue() -> usize {
        1024
    }
    pub fn max_body() -> ByteSize {
        ByteSize(1 << 20)
    }
    pub fn metrics_interval() -> Duration {
        Duration::from_secs(10)
    }
    pub fn profiles_reload() -> Duration {
        Duration::from_secs(5)
    }
    pub fn log_format() -> String {
        "combined".into()
    }
}

/// A config that could not be used; the message names the file, the position and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::parse(&file, &text)
    }

    /// Parses and checks `text`, naming it `file` in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let config: Config = parse_toml(file, text)?;
        config.check().map_err(|message| ConfigError::Invalid {
            file: file.to_string(),
            message,
        })?;
        Ok(config)
    }

    /// The checks that span several keys.
    fn check(&self) -> Result<(), String> {
        if self.production.servers.is_empty() {
            return Err("key production.servers: at least one production server is needed".into());
        }
        let mut seen = HashSet::new();
        for (i, s) in self.production.servers.iter().enumerate() {
            if let Some(c) = s.cpus
                && !(c.is_finite() && c > 0.0)
            {
                return Err(format!(
                    "key production.servers[{i}].cpus: {c} is not a number of cores above 0"
                ));
            }
            if !seen.insert(&s.url) {
                return Err(format!(
                    "key production.servers[{i}].url: {} is listed twice",
                    s.url
                ));
            }
        }
        let mut names = HashSet::new();
        for (i, s) in self.shadow.iter().enumerate() {
            if s.name.is_empty() {
                return Err(format!("key shadow[{i}].name: the name is empty"));
            }
            if !names.insert(s.name.as_str()) {
                return Err(format!(
                    "key shadow[{i}].name: a shadow named {:?} is already defined",
                    s.name
                ));
            }
            if s.concurrency == 0 || s.queue == 0 {
                return Err(format!(
                    "key shadow[{i}]: concurrency and queue must be at least 1"
                ));
            }
        }
        let check_targets = |key: &str, targets: &Option<Vec<String>>| -> Result<(), String> {
            for (j, t) in targets.iter().flatten().enumerate() {
                if !names.contains(t.as_str()) {
                    return Err(format!("key {key}[{j}]: no shadow is named {t:?}"));
                }
            }
            Ok(())
        };
        check_targets("mirror.targets", &self.mirror.targets)?;
        for (i, rule) in self.mirror.rules.iter().enumerate() {
            check_targets(&format!("mirror.rules[{i}].targets"), &rule.targets)?;
            for (j, m) in rule.methods.iter().flatten().enumerate() {
                if http::Method::from_bytes(m.as_bytes()).is_err() {
                    return Err(format!(
                        "key mirror.rules[{i}].methods[{j}]: {m:?} is not an HTTP method"
                    ));
                }
            }
        }
        let mirrors =
            self.mirror.percent.0 > 0.0 || self.mirror.rules.iter().any(|r| r.percent.0 > 0.0);
        if mirrors && self.shadow.is_empty() {
            return Err("key mirror: copies are asked for but no [[shadow]] is defined".into());
        }
        if !(self.mirror.rate_limit.is_finite() && self.mirror.rate_limit >= 0.0) {
            return Err(
                "key mirror.rate_limit: must be a number of copies per second, 0 for no cap".into(),
            );
        }
        if let Some(c) = &self.canary {
            if c.name.trim().is_empty() {
                return Err("key canary.name: the name is empty".into());
            }
            if names.contains(c.name.as_str()) {
                return Err(format!(
                    "key canary.name: {:?} is also a [[shadow]] name; the canary's copies need a name of their own",
                    c.name
                ));
            }
            if c.servers.is_empty() {
                return Err("key canary.servers: at least one canary server is needed".into());
            }
            for (i, s) in c.servers.iter().enumerate() {
                if self.production.servers.iter().any(|p| p.url == s.url) {
                    return Err(format!(
                        "key canary.servers[{i}].url: {} is also a production server",
                        s.url
                    ));
                }
                if c.servers[..i].iter().any(|o| o.url == s.url) {
                    return Err(format!(
                        "key canary.servers[{i}].url: {} is listed twice",
                        s.url
                    ));
                }
            }
            if c.concurrency == 0 || c.queue == 0 {
                return Err("key canary: concurrency and queue must be at least 1".into());
            }
        }
        if let Some(admin) = &self.admin
            && admin.address == self.listen.address
        {
            return Err("key admin.address: the admin listener needs its own address".into());
        }
        if self.listen.max_header_bytes.0 < 8192 {
            return Err("key listen.max_header_bytes: must be at least 8KiB".into());
        }
        if let Some(log) = &self.access_log {
            crate::access_log::LogFormat::parse(&log.format)
                .map_err(|e| format!("key access_log.format: {e}"))?;
        }
        Ok(())
    }

    /// A config from the command-line flags alone (the one-liner form).
    pub fn from_flags(flags: &Flags) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            file: "command line".into(),
            message,
        };
        let servers = flags
            .production
            .iter()
            .map(|u| {
                Ok(Server {
                    url: u
                        .parse()
                        .map_err(|e: String| invalid(format!("--production: {e}")))?,
                    weight: defaults::weight(),
                    metrics: None,
                    cpus: None,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let shadow = flags
            .shadow
            .iter()
            .enumerate()
            .map(|(i, u)| {
                Ok(Shadow {
                    name: if flags.shadow.len() == 1 {
                        "shadow".into()
                    } else {
                        format!("shadow-{}", i + 1)
                    },
                    url: u
                        .parse()
                        .map_err(|e: String| invalid(format!("--shadow: {e}")))?,
                    host: HostPolicy::Original,
                    timeout: defaults::shadow_timeout(),
                    concurrency: defaults::shadow_concurrency(),
                    queue: defaults::shadow_queue(),
                    metrics: None,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let percent = match &flags.mirror {
            Some(p) => p
                .parse()
                .map_err(|e: String| invalid(format!("--mirror: {e}")))?,
            None if shadow.is_empty() => Percent(0.0),
            None => Percent(100.0),
        };
        let config = Config {
            listen: Listen {
                address: flags.listen,
                tls: None,
                header_timeout: defaults::header_timeout(),
                body_timeout: defaults::body_timeout(),
                max_header_bytes: defaults::max_header_bytes(),
                forwarded: Forwarded::default(),
                drain_timeout: defaults::drain_timeout(),
            },
            admin: flags.admin.map(|address| Admin { address }),
            production: Production {
                servers,
                connect_timeout: defaults::connect_timeout(),
                timeout: defaults::upstream_timeout(),
                host: HostPolicy::Original,
                health: None,
                ejection: Ejection::default(),
                metrics_interval: defaults::metrics_interval(),
            },
            shadow,
            mirror: Mirror {
                percent,
                ..Mirror::default()
            },
            canary: None,
            profiles: flags.profiles.as_ref().map(|file| Profiles {
                file: file.clone(),
                reload: defaults::profiles_reload(),
            }),
            access_log: flags.access_log.as_ref().map(|path| AccessLog {
                path: path.clone(),
                format: defaults::log_format(),
            }),
            mask: None,
            tracing: None,
            analysis: None,
            alerts: None,
            store: None,
            control: None,
        };
        config.check().map_err(invalid)?;
        Ok(config)
    }
}

/// The one-liner flags, as `umbra proxy` passes them.
#[derive(Debug, Clone)]
pub struct Flags {
    pub listen: SocketAddr,
    pub production: Vec<String>,
    pub shadow: Vec<String>,
    pub mirror: Option<String>,
    pub admin: Option<SocketAddr>,
    pub profiles: Option<PathBuf>,
    pub access_log: Option<PathBuf>,
}

/// Deserialises `text` (TOML) into `T`, naming the file, line, column and key
/// of the first bad value. The binary reads its own sections of `umbra.toml` with it.
pub fn parse_toml<T: de::DeserializeOwned>(file: &str, text: &str) -> Result<T, ConfigError> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let position = inner
            .span()
            .map(|span| {
                let (line, column) = line_column(text, span.start);
                format!("line {line}, column {column}, ")
            })
            .unwrap_or_default();
        let key = if key == "." || key.is_empty() {
            String::new()
        } else {
            format!("key {key}: ")
        };
        ConfigError::Invalid {
            file: file.to_string(),
            message: format!("{position}{key}{}", inner.message().trim()),
        }
    })
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[listen]
address = "127.0.0.1:8080"

[production]
servers = [{ url = "http://127.0.0.1:9000" }]
"#;

    fn error(text: &str) -> String {
        match Config::parse("umbra.toml", text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_takes_the_defaults() {
        let c = Config::parse("umbra.toml", MINIMAL).expect("valid");
        assert_eq!(c.production.servers[0].weight, 100);
        assert_eq!(c.mirror.percent, Percent(0.0));
        assert_eq!(c.mirror.max_body, ByteSize(1 << 20));
        assert_eq!(c.listen.header_timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_bad_value_is_named_by_file_line_and_key() {
        let text = format!(
            "{MINIMAL}\n[[shadow]]\nname = \"v2\"\nurl = \"http://127.0.0.1:9001\"\n\n[mirror]\npercent = \"110%\"\n"
        );
        let e = error(&text);
        assert!(e.starts_with("umbra.toml: line 13"), "{e}");
        assert!(e.contains("key mirror.percent"), "{e}");
        assert!(e.contains("outside 0% to 100%"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_urls_are_refused() {
        let e = error(&MINIMAL.replace("address", "adress"));
        assert!(e.contains("line 3") && e.contains("adress"), "{e}");
        let e = error(&MINIMAL.replace("http://127.0.0.1:9000", "ftp://x"));
        assert!(
            e.contains("key production.servers[0].url") && e.contains("http://"),
            "{e}"
        );
    }

    #[test]
    fn cross_references_are_checked() {
        let text = format!(
            "{MINIMAL}\n[[shadow]]\nname = \"v2\"\nurl = \"http://127.0.0.1:9001\"\n\n[[mirror.rules]]\npercent = 5\ntargets = [\"v3\"]\n"
        );
        let e = error(&text);
        assert!(
            e.contains("mirror.rules[0].targets[0]") && e.contains("\"v3\""),
            "{e}"
        );
        let e = error(&format!("{MINIMAL}\n[mirror]\npercent = \"10%\"\n"));
        assert!(e.contains("no [[shadow]]"), "{e}");
    }

    #[test]
    fn sizes_percentages_and_keys_parse() {
        assert_eq!("64KiB".parse::<ByteSize>(), Ok(ByteSize(65536)));
        assert_eq!("1MB".parse::<ByteSize>(), Ok(ByteSize(1_000_000)));
        assert!("1XB".parse::<ByteSize>().is_err());
        assert_eq!("0.5%".parse::<Percent>(), Ok(Percent(0.5)));
        assert!("-1%".parse::<Percent>().is_err());
        assert_eq!(
            "cookie:session".parse::<SampleKey>(),
            Ok(SampleKey::Cookie("session".into()))
        );
        assert!("header:".parse::<SampleKey>().is_err());
        assert!("user".parse::<SampleKey>().is_err());
    }
}
