//! Configuration: OpenTelemetry's environment variables and the `[tracing]`
//! section of `umbra.toml`.
//!
//! Precedence, per setting: environment variable, then the file, then the
//! default. OpenTelemetry's SDK configuration page says values set with
//! environment variables override equivalent configuration in code; the
//! `[tracing]` section is Umbra's code-level configuration, so an operator's
//! `OTEL_*` variables win over a file shipped with a deployment. Within each
//! source the signal-specific setting beats the generic one
//! (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` over `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `traces_endpoint` over `endpoint`). An empty variable counts as unset, as
//! the specification requires.
//!
//! Where the specification lets an SDK fall back to a default on a bad value,
//! Umbra refuses to start instead and names the variable and the value: a
//! sampler typo silently turned into "trace everything" is costly at 20k
//! requests a second.
//!
//! Tracing is on when the `[tracing]` section is present (unless it says
//! `enabled = false`), when an OTLP endpoint variable is set, or when
//! `OTEL_TRACES_EXPORTER=otlp`; `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none` turn it off whatever else says.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer};

use crate::sampler::{Sampler, SamplerError};

/// Where OTLP/HTTP collectors listen by default.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4318/v1/traces";

/// The `[tracing]` section as written. Every field is optional so that the
/// environment can fill in what the file leaves out.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TraceFileConfig {
    pub enabled: Option<bool>,
    /// Base URL of the collector; `/v1/traces` is appended.
    pub endpoint: Option<String>,
    /// The full URL spans are posted to, used as given.
    pub traces_endpoint: Option<String>,
    pub service_name: Option<String>,
    /// An `OTEL_TRACES_SAMPLER` name.
    pub sampler: Option<String>,
    /// The ratio for the `traceidratio` samplers.
    pub sampler_arg: Option<f64>,
    /// Extra request headers for the collector (authentication).
    pub headers: Option<BTreeMap<String, String>>,
    pub resource_attributes: Option<BTreeMap<String, String>>,
    /// `none` or `gzip`.
    pub compression: Option<String>,
    #[serde(deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Spans per export request.
    pub batch_size: Option<usize>,
    /// Spans waiting for export; beyond this, spans are dropped and counted.
    pub queue_size: Option<usize>,
    /// Longest wait before a partial batch is sent.
    #[serde(deserialize_with = "opt_duration")]
    pub interval: Option<Duration>,
    /// Tail rule: keep every span at least this slow, sampled or not
    /// (default 1s; `0s` turns the rule off).
    #[serde(deserialize_with = "opt_duration")]
    pub slow: Option<Duration>,
    /// Tail rule: keep every span with a 5xx or an error, sampled or not.
    pub keep_errors: Option<bool>,
    /// A trace viewer URL with `{trace_id}` (and optionally `{span_id}`),
    /// e.g. `http://jaeger:16686/trace/{trace_id}`.
    pub link_template: Option<String>,
    /// Exemplars kept per (profile, role).
    pub exemplars: Option<usize>,
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim()).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration ({e}); write e.g. 500ms, 5s, 1m"
        ))
    })
}

/// Request body compression for export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// A trace viewer URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTemplate(String);

impl LinkTemplate {
    /// Checks that the template has `{trace_id}` and no other placeholder
    /// than `{span_id}`.
    pub fn parse(s: &str) -> Result<LinkTemplate, String> {
        if !s.contains("{trace_id}") {
            return Err("the template has no {trace_id}".into());
        }
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err("a '{' is never closed".into());
            };
            let name = &after[..close];
            if name != "trace_id" && name != "span_id" {
                return Err(format!(
                    "unknown placeholder {{{name}}}; use {{trace_id}} and {{span_id}}"
                ));
            }
            rest = &after[close + 1..];
        }
        Ok(LinkTemplate(s.to_string()))
    }

    pub fn render(&self, trace_id: crate::TraceId, span_id: Option<crate::SpanId>) -> String {
        let span = span_id.map(|s| s.to_hex());
        self.0
            .replace("{trace_id}", &trace_id.to_hex())
            .replace("{span_id}", span.as_deref().unwrap_or(""))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Everything resolved: what the tracer and exporter run with.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    pub enabled: bool,
    /// The URL spans are posted to (`…/v1/traces`).
    pub endpoint: http::Uri,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub compression: Compression,
    pub timeout: Duration,
    pub service_name: String,
    /// Resource attributes besides `service.name`.
    pub resource: Vec<(String, String)>,
    pub sampler: Sampler,
    pub batch_size: usize,
    pub queue_size: usize,
    pub interval: Duration,
    pub slow: Option<Duration>,
    pub keep_errors: bool,
    pub link_template: Option<LinkTemplate>,
    pub exemplars: usize,
}

/// Where a bad value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Env(&'static str),
    File(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::File(k) => write!(f, "[tracing] {k}"),
        }
    }
}

/// A bad setting: which variable or key, the value, what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{origin} = {value:?}: {problem}")]
pub struct ConfigError {
    pub origin: Origin,
    pub value: String,
    pub problem: String,
}

impl ConfigError {
    fn new(origin: Origin, value: &str, problem: impl fmt::Display) -> ConfigError {
        ConfigError {
            origin,
            value: value.to_string(),
            problem: problem.to_string(),
        }
    }
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BATCH: usize = 512;
const DEFAULT_QUEUE: usize = 2048;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_EXEMPLARS: usize = 8;
/// Slower than this through a proxy is worth a trace whatever the sampler said.
const DEFAULT_SLOW: Duration = Duration::from_secs(1);

impl TraceConfig {
    /// The process environment over `file` (the `[tracing]` section, `None`
    /// when the file has none).
    pub fn from_env_and(file: Option<&TraceFileConfig>) -> Result<TraceConfig, ConfigError> {
        TraceConfig::from_lookup(
            |k| match std::env::var(k) {
                Ok(v) => Some(v),
                // A value that is not UTF-8 is reported, not ignored.
                Err(std::env::VarError::NotUnicode(os)) => Some(os.to_string_lossy().into_owned()),
                Err(std::env::VarError::NotPresent) => None,
            },
            file,
        )
    }

    /// As [`TraceConfig::from_env_and`], with variables from `lookup` (tests
    /// cannot set the process environment without `unsafe`).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        file: Option<&TraceFileConfig>,
    ) -> Result<TraceConfig, ConfigError> {
        let env = |k: &'static str| lookup(k).filter(|v| !v.trim().is_empty()).map(|v| (k, v));
        let empty = TraceFileConfig::default();
        let f = file.unwrap_or(&empty);

        // On or off.
        let disabled = match env("OTEL_SDK_DISABLED") {
            Some((k, v)) => parse_bool(&v)
                .ok_or_else(|| ConfigError::new(Origin::Env(k), &v, "expected true or false"))?,
            None => false,
        };
        let exporter = match env("OTEL_TRACES_EXPORTER") {
            Some((k, v)) => {
                let mut otlp = false;
                let mut none = false;
                for part in v.split(',').map(str::trim) {
                    match part {
                        "otlp" => otlp = true,
                        "none" => none = true,
                        other => {
                            return Err(ConfigError::new(
                                Origin::Env(k),
                                &v,
                                format!(
                                    "exporter {other:?} is not supported; Umbra exports OTLP (otlp) or nothing (none)"
                                ),
                            ));
                        }
                    }
                }
                Some(otlp && !none)
            }
            None => None,
        };
        let env_endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .map(|(k, v)| (k, v, true))
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|(k, v)| (k, v, false)));
        let enabled = !disabled
            && match exporter {
                Some(on) => on,
                None => match f.enabled {
                    Some(on) => on,
                    None => file.is_some() || env_endpoint.is_some(),
                },
            };

        // Where to.
        let endpoint = match (&env_endpoint, &f.traces_endpoint, &f.endpoint) {
            (Some((k, v, full)), _, _) => {
                endpoint_url(v, *full).map_err(|p| ConfigError::new(Origin::Env(k), v, p))?
            }
            (None, Some(v), _) => endpoint_url(v, true)
                .map_err(|p| ConfigError::new(Origin::File("traces_endpoint"), v, p))?,
            (None, None, Some(v)) => endpoint_url(v, false)
                .map_err(|p| ConfigError::new(Origin::File("endpoint"), v, p))?,
            (None, None, None) => http::Uri::from_static(DEFAULT_ENDPOINT),
        };
        for k in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some((k, v)) = env(k) {
                if v.trim() != "http/protobuf" {
                    return Err(ConfigError::new(
                        Origin::Env(k),
                        &v,
                        "Umbra exports OTLP over HTTP with protobuf only; use http/protobuf",
                    ));
                }
                break;
            }
        }
        let headers = match env("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS"))
        {
            Some((k, v)) => parse_headers(Origin::Env(k), &v)?,
            None => match &f.headers {
                Some(map) => map
                    .iter()
                    .map(|(name, value)| header(Origin::File("headers"), name, value))
                    .collect::<Result<_, _>>()?,
                None => Vec::new(),
            },
        };
        let compression = match env("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION")
            .or_else(|| env("OTEL_EXPORTER_OTLP_COMPRESSION"))
        {
            Some((k, v)) => {
                parse_compression(&v).map_err(|p| ConfigError::new(Origin::Env(k), &v, p))?
            }
            None => match &f.compression {
                Some(v) => parse_compression(v)
                    .map_err(|p| ConfigError::new(Origin::File("compression"), v, p))?,
                None => Compression::None,
            },
        };
        let timeout = match env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|| env("OTEL_EXPORTER_OTLP_TIMEOUT"))
            .or_else(|| env("OTEL_BSP_EXPORT_TIMEOUT"))
        {
            Some((k, v)) => millis(k, &v)?,
            None => f.timeout.unwrap_or(DEFAULT_TIMEOUT),
        };
        if timeout.is_zero() {
            return Err(zero_duration(
                &env,
                f.timeout,
                "OTEL_EXPORTER_OTLP_TIMEOUT",
                "timeout",
            ));
        }

        // Who we are.
        let mut resource: BTreeMap<String, String> =
            f.resource_attributes.clone().unwrap_or_default();
        if let Some((k, v)) = env("OTEL_RESOURCE_ATTRIBUTES") {
            for (key, value) in parse_pairs(Origin::Env(k), &v)? {
                resource.insert(key, value);
            }
        }
        let service_name = match env("OTEL_SERVICE_NAME") {
            Some((_, v)) => v.trim().to_string(),
            None => resource
                .get("service.name")
                .cloned()
                .or_else(|| f.service_name.clone())
                .unwrap_or_else(|| "umbra".to_string()),
        };
        resource.remove("service.name");

        // What to keep.
        let sampler = match env("OTEL_TRACES_SAMPLER") {
            Some((k, name)) => {
                let arg = env("OTEL_TRACES_SAMPLER_ARG");
                Sampler::parse(&name, arg.as_ref().map(|(_, a)| a.as_str())).map_err(
                    |e| match e {
                        SamplerError::Ratio => {
                            let (ak, av) = arg
                                .clone()
                                .unwrap_or(("OTEL_TRACES_SAMPLER_ARG", String::new()));
                            ConfigError::new(Origin::Env(ak), &av, e)
                        }
                        _ => ConfigError::new(Origin::Env(k), &name, e),
                    },
                )?
            }
            None => {
                // A ratio from the environment applies to the file's sampler.
                let env_arg = env("OTEL_TRACES_SAMPLER_ARG");
                match &f.sampler {
                    Some(name) => {
                        let arg = match &env_arg {
                            Some((_, a)) => Some(a.clone()),
                            None => f.sampler_arg.map(|a| a.to_string()),
                        };
                        Sampler::parse(name, arg.as_deref()).map_err(|e| match (e, &env_arg) {
                            (SamplerError::Ratio, Some((ak, av))) => {
                                ConfigError::new(Origin::Env(ak), av, SamplerError::Ratio)
                            }
                            (SamplerError::Ratio, None) => ConfigError::new(
                                Origin::File("sampler_arg"),
                                &arg.unwrap_or_default(),
                                SamplerError::Ratio,
                            ),
                            (e, _) => ConfigError::new(Origin::File("sampler"), name, e),
                        })?
                    }
                    None => {
                        if let Some(a) = f.sampler_arg {
                            // A ratio without a sampler would silently do nothing.
                            return Err(ConfigError::new(
                                Origin::File("sampler_arg"),
                                &a.to_string(),
                                "set sampler = \"parentbased_traceidratio\" (or traceidratio) for the ratio to apply",
                            ));
                        }
                        Sampler::DEFAULT
                    }
                }
            }
        };
        // A zero threshold turns the latency rule off.
        let slow = Some(f.slow.unwrap_or(DEFAULT_SLOW)).filter(|d| !d.is_zero());

        // Batching.
        let batch_size = count(
            &env,
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            f.batch_size,
            "batch_size",
            DEFAULT_BATCH,
        )?;
        let queue_size = count(
            &env,
            "OTEL_BSP_MAX_QUEUE_SIZE",
            f.queue_size,
            "queue_size",
            DEFAULT_QUEUE,
        )?;
        let interval = match env("OTEL_BSP_SCHEDULE_DELAY") {
            Some((k, v)) => millis(k, &v)?,
            None => f.interval.unwrap_or(DEFAULT_INTERVAL),
        };
        if interval.is_zero() {
            return Err(zero_duration(
                &env,
                f.interval,
                "OTEL_BSP_SCHEDULE_DELAY",
                "interval",
            ));
        }

        let link_template = match &f.link_template {
            Some(t) => Some(
                LinkTemplate::parse(t)
                    .map_err(|p| ConfigError::new(Origin::File("link_template"), t, p))?,
            ),
            None => None,
        };
        let exemplars = f.exemplars.unwrap_or(DEFAULT_EXEMPLARS);
        if exemplars == 0 || exemplars > 1024 {
            return Err(ConfigError::new(
                Origin::File("exemplars"),
                &exemplars.to_string(),
                "expected 1 to 1024 exemplars per (profile, role)",
            ));
        }

        Ok(TraceConfig {
            enabled,
            endpoint,
            headers,
            compression,
            timeout,
            service_name,
            resource: resource.into_iter().collect(),
            sampler,
            // The specification caps a batch at the queue size.
            batch_size: batch_size.min(queue_size),
            queue_size,
            interval,
            slow,
            keep_errors: f.keep_errors.unwrap_or(true),
            link_template,
            exemplars,
        })
    }

    /// One line for a startup log. Header values are left out: they are
    /// usually credentials.
    pub fn summary(&self) -> String {
        if !self.enabled {
            return "tracing off".to_string();
        }
        let mut tail = Vec::new();
        if let Some(s) = self.slow {
            tail.push(format!("slower than {}", humantime::format_duration(s)));
        }
        if self.keep_errors {
            tail.push("5xx and errors".to_string());
        }
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        format!(
            "tracing: OTLP/HTTP to {}{}{} as {:?}; sampler {}; always kept: {}; batches of {} every {}, queue {}",
            self.endpoint,
            if self.compression == Compression::Gzip {
                " (gzip)"
            } else {
                ""
            },
            if names.is_empty() {
                String::new()
            } else {
                format!(" with headers {}", names.join(", "))
            },
            self.service_name,
            self.sampler,
            if tail.is_empty() {
                "nothing".to_string()
            } else {
                tail.join(", ")
            },
            self.batch_size,
            humantime::format_duration(self.interval),
            self.queue_size,
        )
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn parse_compression(v: &str) -> Result<Compression, &'static str> {
    match v.trim() {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        _ => Err("expected none or gzip"),
    }
}

/// A collector URL: `full` is used as given; a base gets `v1/traces`
/// appended (after a `/` if it lacks one), as the OTLP exporter spec says.
fn endpoint_url(v: &str, full: bool) -> Result<http::Uri, String> {
    let v = v.trim();
    if !(v.starts_with("http://") || v.starts_with("https://")) {
        return Err("expected an http:// or https:// URL".into());
    }
    let url = if full {
        v.to_string()
    } else if v.ends_with('/') {
        format!("{v}v1/traces")
    } else {
        format!("{v}/v1/traces")
    };
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("expected an http:// or https:// URL".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(uri)
}

fn millis(k: &'static str, v: &str) -> Result<Duration, ConfigError> {
    v.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| ConfigError::new(Origin::Env(k), v, "expected a whole number of milliseconds"))
}

fn zero_duration(
    env: &impl Fn(&'static str) -> Option<(&'static str, String)>,
    file: Option<Duration>,
    var: &'static str,
    key: &'static str,
) -> ConfigError {
    match env(var) {
        Some((k, v)) => ConfigError::new(Origin::Env(k), &v, "must be more than zero"),
        None => ConfigError::new(
            Origin::File(key),
            &file
                .map(|d| humantime::format_duration(d).to_string())
                .unwrap_or_default(),
            "must be more than zero",
        ),
    }
}

fn count(
    env: &impl Fn(&'static str) -> Option<(&'static str, String)>,
    var: &'static str,
    file: Option<usize>,
    key: &'static str,
    default: usize,
) -> Result<usize, ConfigError> {
    let (n, origin, raw) = match env(var) {
        Some((k, v)) => {
            let n = v
                .trim()
                .parse::<usize>()
                .map_err(|_| ConfigError::new(Origin::Env(k), &v, "expected a whole number"))?;
            (n, Origin::Env(k), v)
        }
        None => match file {
            Some(n) => (n, Origin::File(key), n.to_string()),
            None => return Ok(default),
        },
    };
    if n == 0 || n > 1_000_000 {
        return Err(ConfigError::new(origin, &raw, "expected 1 to 1000000"));
    }
    Ok(n)
}

/// `key=value,key2=value2` with percent-encoded values (the W3C baggage
/// form the specification uses for headers and resource attributes).
fn parse_pairs(origin: Origin, v: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            // Only the key part is shown: values are often secrets.
            let key = item.chars().take(40).collect::<String>();
            return Err(ConfigError::new(
                origin,
                v,
                format!("entry {key:?} has no '='; write key=value,key2=value2"),
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(ConfigError::new(origin, v, "an entry has an empty key"));
        }
        let value = percent_decode(value.trim()).ok_or_else(|| {
            ConfigError::new(
                origin.clone(),
                v,
                format!("the value of {key:?} has a bad %-escape"),
            )
        })?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn parse_headers(origin: Origin, v: &str) -> Result<Vec<(HeaderName, HeaderValue)>, ConfigError> {
    // The error must not echo the raw value: it carries credentials.
    let redacted = |e: ConfigError| ConfigError {
        value: "…".into(),
        ..e
    };
    parse_pairs(origin.clone(), v)
        .map_err(redacted)?
        .iter()
        .map(|(n, val)| header(origin.clone(), n, val).map_err(redacted))
        .collect()
}

fn header(
    origin: Origin,
    name: &str,
    value: &str,
) -> Result<(HeaderName, HeaderValue), ConfigError> {
    let n = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| ConfigError::new(origin.clone(), name, "not a valid header name"))?;
    let v = HeaderValue::from_str(value).map_err(|_| {
        ConfigError::new(
            origin,
            name,
            "the header's value has characters a header cannot carry",
        )
    })?;
    Ok((n, v))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sampler::RootSampler;

    fn resolve(
        vars: &[(&str, &str)],
        file: Option<&TraceFileConfig>,
    ) -> Result<TraceConfig, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TraceConfig::from_lookup(
            |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            file,
        )
    }

    fn file(toml_text: &str) -> TraceFileConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn off_by_default_and_on_with_an_endpoint_or_a_section() {
        let c = resolve(&[], None).unwrap();
        assert!(!c.enabled);
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(c.sampler, Sampler::DEFAULT);
        assert_eq!(c.service_name, "umbra");
        assert_eq!(c.slow, Some(Duration::from_secs(1)));
        assert!(c.keep_errors);
        assert_eq!(
            resolve(&[], Some(&file("slow = \"0s\""))).unwrap().slow,
            None
        );
        let c = resolve(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")],
            None,
        )
        .unwrap();
        assert!(c.enabled);
        assert_eq!(c.endpoint, "http://collector:4318/v1/traces");
        assert!(
            resolve(&[], Some(&TraceFileConfig::default()))
                .unwrap()
                .enabled
        );
        let off = file("enabled = false");
        assert!(!resolve(&[], Some(&off)).unwrap().enabled);
        assert!(
            resolve(&[("OTEL_TRACES_EXPORTER", "otlp")], Some(&off))
                .unwrap()
                .enabled
        );
        assert!(
            !resolve(
                &[("OTEL_SDK_DISABLED", "true")],
                Some(&TraceFileConfig::default())
            )
            .unwrap()
            .enabled
        );
        assert!(
            !resolve(
                &[("OTEL_TRACES_EXPORTER", "none")],
                Some(&TraceFileConfig::default())
            )
            .unwrap()
            .enabled
        );
        // Empty means unset.
        assert!(
            !resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")], None)
                .unwrap()
                .enabled
        );
    }

    #[test]
    fn endpoints_follow_the_otlp_rules_and_env_beats_file() {
        let f = file("endpoint = \"http://file:4318/\"");
        assert_eq!(
            resolve(&[], Some(&f)).unwrap().endpoint,
            "http://file:4318/v1/traces"
        );
        let f =
            file("endpoint = \"http://file:4318\"\ntraces_endpoint = \"http://file:9999/custom\"");
        assert_eq!(
            resolve(&[], Some(&f)).unwrap().endpoint,
            "http://file:9999/custom"
        );
        let c = resolve(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://env:4318/base")],
            Some(&f),
        )
        .unwrap();
        assert_eq!(c.endpoint, "https://env:4318/base/v1/traces");
        let c = resolve(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://env:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://env-traces:1234/x",
                ),
            ],
            Some(&f),
        )
        .unwrap();
        assert_eq!(c.endpoint, "http://env-traces:1234/x");
    }

    #[test]
    fn sampler_from_env_or_file() {
        let c = resolve(
            &[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ],
            None,
        )
        .unwrap();
        assert!(c.sampler.parent_based);
        assert_eq!(c.sampler.root, Sampler::ratio(0.25).unwrap());
        let f = file("sampler = \"traceidratio\"\nsampler_arg = 0.1");
        let c = resolve(&[], Some(&f)).unwrap();
        assert!(!c.sampler.parent_based);
        assert_eq!(c.sampler.root, Sampler::ratio(0.1).unwrap());
        // The environment's ratio applies to the file's sampler.
        let c = resolve(&[("OTEL_TRACES_SAMPLER_ARG", "0.5")], Some(&f)).unwrap();
        assert_eq!(c.sampler.root, Sampler::ratio(0.5).unwrap());
        let c = resolve(&[("OTEL_TRACES_SAMPLER", "always_off")], Some(&f)).unwrap();
        assert_eq!(c.sampler.root, RootSampler::AlwaysOff);
    }

    #[test]
    fn errors_name_the_variable_and_the_value() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("OTEL_TRACES_SAMPLER", "always_of")],
                "environment variable OTEL_TRACES_SAMPLER = \"always_of\": unknown sampler",
            ),
            (
                &[
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
                ],
                "environment variable OTEL_TRACES_SAMPLER_ARG = \"1.5\": the ratio must be a number from 0 to 1",
            ),
            (
                &[("OTEL_TRACES_SAMPLER", "jaeger_remote")],
                "environment variable OTEL_TRACES_SAMPLER = \"jaeger_remote\": this sampler needs",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
                "environment variable OTEL_EXPORTER_OTLP_ENDPOINT = \"collector:4318\": expected an http:// or https:// URL",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://")],
                "environment variable OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = \"http://\": not a URL",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                "environment variable OTEL_EXPORTER_OTLP_PROTOCOL = \"grpc\": Umbra exports OTLP over HTTP with protobuf only",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")],
                "environment variable OTEL_EXPORTER_OTLP_TIMEOUT = \"10s\": expected a whole number of milliseconds",
            ),
            (
                &[("OTEL_SDK_DISABLED", "yes")],
                "environment variable OTEL_SDK_DISABLED = \"yes\": expected true or false",
            ),
            (
                &[("OTEL_TRACES_EXPORTER", "zipkin")],
                "environment variable OTEL_TRACES_EXPORTER = \"zipkin\": exporter \"zipkin\" is not supported",
            ),
            (
                &[("OTEL_BSP_MAX_QUEUE_SIZE", "0")],
                "environment variable OTEL_BSP_MAX_QUEUE_SIZE = \"0\": expected 1 to 1000000",
            ),
            (
                &[("OTEL_BSP_SCHEDULE_DELAY", "0")],
                "environment variable OTEL_BSP_SCHEDULE_DELAY = \"0\": must be more than zero",
            ),
            (
                &[("OTEL_RESOURCE_ATTRIBUTES", "team")],
                "environment variable OTEL_RESOURCE_ATTRIBUTES = \"team\": entry \"team\" has no '='",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")],
                "environment variable OTEL_EXPORTER_OTLP_COMPRESSION = \"zstd\": expected none or gzip",
            ),
        ];
        for (vars, want) in cases {
            let err = resolve(vars, None).unwrap_err().to_string();
            assert!(
                err.starts_with(want),
                "{vars:?}:\n got  {err}\n want {want}"
            );
        }
    }

    #[test]
    fn header_errors_do_not_echo_secrets() {
        let err = resolve(
            &[(
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer s3\u{1}cret",
            )],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("s3cret"), "{err}");
        assert!(err.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{err}");
        let c = resolve(
            &[("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,x-tenant=t1")],
            None,
        )
        .unwrap();
        assert_eq!(c.headers.len(), 2);
        assert_eq!(c.headers[0].1, "a b");
        assert!(!c.summary().contains("a b"));
    }

    #[test]
    fn file_errors_name_the_key() {
        let f = file("sampler = \"ratio\"");
        assert_eq!(
            resolve(&[], Some(&f)).unwrap_err().to_string(),
            "[tracing] sampler = \"ratio\": unknown sampler; expected always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
        );
        let f = file("sampler = \"traceidratio\"\nsampler_arg = 2.0");
        assert!(
            resolve(&[], Some(&f))
                .unwrap_err()
                .to_string()
                .starts_with("[tracing] sampler_arg = \"2\"")
        );
        let f = file("sampler_arg = 0.2");
        assert!(
            resolve(&[], Some(&f))
                .unwrap_err()
                .to_string()
                .contains("set sampler")
        );
        let f = file("link_template = \"http://jaeger/trace/{id}\"");
        assert!(
            resolve(&[], Some(&f))
                .unwrap_err()
                .to_string()
                .contains("has no {trace_id}")
        );
        let f = file("link_template = \"http://jaeger/trace/{trace_id}?x={traceid}\"");
        assert!(
            resolve(&[], Some(&f))
                .unwrap_err()
                .to_string()
                .contains("unknown placeholder {traceid}")
        );
        let err = toml::from_str::<TraceFileConfig>("slow = \"fast\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"fast\" is not a duration"), "{err}");
        let err = toml::from_str::<TraceFileConfig>("sampling = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `sampling`"), "{err}");
    }

    #[test]
    fn service_name_and_resource_attributes() {
        let f = file(
            "service_name = \"file-name\"\n[resource_attributes]\n\"deployment.environment\" = \"staging\"\nteam = \"sre\"",
        );
        let c = resolve(&[], Some(&f)).unwrap();
        assert_eq!(c.service_name, "file-name");
        let c = resolve(
            &[(
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-attrs,team=platform",
            )],
            Some(&f),
        )
        .unwrap();
        assert_eq!(c.service_name, "from-attrs");
        assert!(
            c.resource
                .contains(&("team".to_string(), "platform".to_string()))
        );
        assert!(
            c.resource
                .contains(&("deployment.environment".to_string(), "staging".to_string()))
        );
        assert!(!c.resource.iter().any(|(k, _)| k == "service.name"));
        let c = resolve(
            &[
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"),
                ("OTEL_SERVICE_NAME", "svc"),
            ],
            Some(&f),
        )
        .unwrap();
        assert_eq!(c.service_name, "svc");
    }

    #[test]
    fn batching_and_tail_settings() {
        let f = file(
            "batch_size = 100\nqueue_size = 50\ninterval = \"250ms\"\ntimeout = \"2s\"\nslow = \"300ms\"\nkeep_errors = false\nexemplars = 4\nlink_template = \"http://jaeger:16686/trace/{trace_id}\"",
        );
        let c = resolve(&[], Some(&f)).unwrap();
        assert_eq!(c.batch_size, 50, "capped at the queue size");
        assert_eq!(c.queue_size, 50);
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.slow, Some(Duration::from_millis(300)));
        assert!(!c.keep_errors);
        assert_eq!(c.exemplars, 4);
        let c = resolve(
            &[
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "20"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            ],
            Some(&f),
        )
        .unwrap();
        assert_eq!(c.batch_size, 20);
        assert_eq!(c.timeout, Duration::from_millis(1500));
        let t = c.link_template.unwrap();
        let id = crate::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(
            t.render(id, None),
            "http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
