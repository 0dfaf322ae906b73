//! One request as read from a log, a HAR file or the proxy.

use serde::{Deserialize, Serialize};

/// One request, with whatever its source knew about it.
///
/// Readers fill what their format carries and leave the rest `None` (a common-format
/// log has no user agent, a HAR file has no client address). Nothing here is
/// normalised beyond splitting the query from the path: templating and
/// featurising happen in `umbra-learn`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// When the request started, in milliseconds since the Unix epoch (UTC).
    pub timestamp_ms: Option<i64>,
    /// Client address as logged (IPv4 or IPv6), or the first forwarded-for address.
    pub client: Option<String>,
    /// Upper-case method (`GET`, `POST`, ...), as logged.
    pub method: String,
    /// The path as logged (still percent-encoded), always starting with `/`.
    pub path: String,
    /// The raw query string, without the leading `?`.
    pub query: Option<String>,
    /// `HTTP/1.1`, `HTTP/2.0`, ... when known.
    pub protocol: Option<String>,
    /// Response status; `None` when the request got no response (HAR status 0).
    pub status: Option<u16>,
    /// Request size in bytes, when known: the body where the source gives it (HAR,
    /// JSON logs), the whole request where it only has that (nginx `$request_length`
    /// counts the request line and headers too).
    pub request_bytes: Option<u64>,
    /// Response body size in bytes, when known.
    pub response_bytes: Option<u64>,
    /// Time to serve the request, in milliseconds, when the source logs it.
    pub duration_ms: Option<f64>,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
    /// The request's content type (`application/json`), when known.
    pub content_type: Option<String>,
    /// Request headers as (name, value) pairs, names lower-cased, when the source has them.
    pub headers: Vec<(String, String)>,
}

impl RequestRecord {
    /// The status class of the response, or `None` when there was no response.
    pub fn status_class(&self) -> Option<StatusClass> {
        self.status.and_then(StatusClass::of)
    }

    /// Looks up a request header by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Request headers that carry credentials (lower-case). Profiles keep no example of
/// them, the load generator never sends them from a profile, and the masking hook
/// masks them on every shadow copy.
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
    "x-csrf-token",
    "x-xsrf-token",
    "x-amz-security-token",
];

/// Whether a header name (any case) carries credentials.
pub fn is_credential_header(name: &str) -> bool {
    CREDENTIAL_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// The first digit of an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusClass {
    #[serde(rename = "1xx")]
    Informational,
    #[serde(rename = "2xx")]
    Success,
    #[serde(rename = "3xx")]
    Redirect,
    #[serde(rename = "4xx")]
    ClientError,
    #[serde(rename = "5xx")]
    ServerError,
}

impl StatusClass {
    pub const ALL: [StatusClass; 5] = [
        StatusClass::Informational,
        StatusClass::Success,
        StatusClass::Redirect,
        StatusClass::ClientError,
        StatusClass::ServerError,
    ];

    pub fn of(status: u16) -> Option<StatusClass> {
        match status {
            100..=199 => Some(StatusClass::Informational),
            200..=299 => Some(StatusClass::Success),
            300..=399 => Some(StatusClass::Redirect),
            400..=499 => Some(StatusClass::ClientError),
            500..=599 => Some(StatusClass::ServerError),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirect => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }
}

/// What kind of client sent a request, judged from its user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UaClass {
    Browser,
    Mobile,
    Bot,
    /// HTTP libraries and SDKs: okhttp, python-requests, Go-http-client, axios...
    Api,
    /// Command-line tools: curl, wget, HTTPie...
    Cli,
    /// No user agent, or one we cannot place.
    Unknown,
}

impl UaClass {
    pub const ALL: [UaClass; 6] = [
        UaClass::Browser,
        UaClass::Mobile,
        UaClass::Bot,
        UaClass::Api,
        UaClass::Cli,
        UaClass::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UaClass::Browser => "browser",
            UaClass::Mobile => "mobile",
            UaClass::Bot => "bot",
            UaClass::Api => "api",
            UaClass::Cli => "cli",
            UaClass::Unknown => "unknown",
        }
    }
}
