//! Requests as feature vectors.
//!
//! A request becomes a handful of categorical features (method, resource kind,
//! first path segment, path template, user-agent class, status class, content
//! type, header names) and numeric ones, all as `ln(1 + x)`: path depth, query
//! keys, body sizes, header count, latency.
//!
//! Scaling, so that no feature dominates the distance: a categorical feature is
//! one-hot with value 1, so two requests that differ in it are at squared
//! distance 2; a numeric feature is standardised (z-score with a floor on the
//! scale, clamped to ±5 so one outlier cannot stretch the space), so two typical
//! requests are at expected squared distance 2 or less. The path is one feature seen at two grains
//! (section, template), so those two share its weight: two requests in different
//! sections are at squared distance 2, two in one section with different
//! templates at 1. The resource kind (image, script, page, data...) is a feature
//! of its own. Header names are one feature
//! too, shared over their dimensions. Categories never seen in training get no
//! dimension, and a feature that never varies is left out.
//!
//! A one-hot dimension stores its weight as `1 / scale`, so a saved space
//! encodes new requests with the weights it was learned with.
//!
//! The [`FeatureSpace`] (names, centers, scales, vocabularies) is stored in the
//! profile set, so new requests are encoded exactly as the set was learned.

use std::collections::BTreeMap;

use ahash::AHashMap;
use umbra_core::{FeatureSpace, RequestRecord, StatusClass, UaClass};

use crate::user_agent;

/// Caps on the categorical vocabularies learned from data.
const MAX_SEGMENTS: usize = 16;
const MAX_TEMPLATES: usize = 24;
const MAX_HEADERS: usize = 8;
/// A segment, template or header needs at least this share of requests for a dimension of its own.
const MIN_CATEGORY_SHARE: f64 = 0.005;
const Z_CLAMP: f32 = 5.0;
/// Numeric features are log-scaled counts and sizes; dividing by their standard
/// deviation alone would blow up a rare one (a query string on 3% of requests
/// would put those requests four deviations away from the rest). So the scale
/// is at least one unit of `ln(1 + x)`, about a factor of e.
const MIN_NUMERIC_SCALE: f64 = 1.0;

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
/// The one-hot groups, in the order [`RawFeatures::categories`] gives them.
const GROUPS: [&str; 7] = [
    "method", "kind", "segment", "template", "ua", "status", "content",
];
/// The squared one-hot value of each group: half the squared distance between
/// two requests that differ in it. The path's two grains (section, template) sum to 1.
const GROUP_WEIGHT: [f64; 7] = [1.0, 1.0, 0.5, 0.5, 1.0, 0.5, 1.0];
const NUMERIC: [&str; 6] = [
    "depth",
    "query_keys",
    "log_request_bytes",
    "log_response_bytes",
    "header_count",
    "log_latency_ms",
];

/// What kind of resource a request is for, from its path and content type.
pub fn resource_kind(path: &str, content_type: Option<&str>) -> &'static str {
    let last = path.rsplit('/').next().unwrap_or("");
    if let Some(dot) = last.rfind('.') {
        let ext = &last[dot + 1..];
        let is = |names: &[&str]| names.iter().any(|n| n.eq_ignore_ascii_case(ext));
        if is(&[
            "png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "ico", "bmp",
        ]) {
            return "image";
        }
        if is(&["js", "mjs"]) {
            return "script";
        }
        if is(&["css"]) {
            return "style";
        }
        if is(&["woff", "woff2", "ttf", "otf", "eot"]) {
            return "font";
        }
        if is(&["mp4", "webm", "mp3", "ogg", "m3u8", "ts"]) {
            return "media";
        }
        if is(&["json", "xml", "rss", "atom"]) {
            return "data";
        }
        if is(&["pdf", "zip", "gz", "csv", "doc", "docx", "xlsx"]) {
            return "download";
        }
        if is(&["html", "htm", "php", "asp", "aspx", "jsp"]) {
            return "page";
        }
        if is(&["map", "txt", "webmanifest"]) {
            return "other";
        }
    }
    let lower_path = path.as_bytes();
    let starts =
        |p: &[u8]| lower_path.len() >= p.len() && lower_path[..p.len()].eq_ignore_ascii_case(p);
    if starts(b"/image") || starts(b"/img/") || starts(b"/images/") {
        return "image";
    }
    if starts(b"/api/")
        || starts(b"/graphql")
        || starts(b"/v1/")
        || starts(b"/v2/")
        || starts(b"/rpc/")
    {
        return "data";
    }
    if let Some(ct) = content_type
        && (ct.contains("json") || ct.contains("xml") || ct.contains("grpc"))
    {
        return "data";
    }
    "page"
}

/// The request content type as a small class.
pub fn content_class(content_type: Option<&str>) -> &'static str {
    match content_type {
        None => "none",
        Some(ct) => {
            // Content types are case-insensitive; compare without allocating.
            let has = |needle: &str| {
                ct.as_bytes()
                    .windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
            };
            if ct.trim().is_empty() {
                "none"
            } else if has("json") {
                "json"
            } else if has("x-www-form-urlencoded") {
                "form"
            } else if has("multipart") {
                "multipart"
            } else if ct.len() >= 5 && ct[..5].eq_ignore_ascii_case("text/") {
                "text"
            } else {
                "other"
            }
        }
    }
}

fn method_key(m: &str) -> &str {
    METHODS
        .iter()
        .find(|x| **x == m)
        .copied()
        .unwrap_or("other")
}

/// The section of the site a template belongs to: its first segment, and the
/// second too when that is a literal followed by more (`/m/filter/{slug}` is in
/// `m/filter`, `/api/v1/orders` in `api/v1`, `/product/{id}` in `product`). A
/// generic prefix such as a mobile or versioned root would otherwise put every
/// page under it in one section.
pub fn section(template: &str) -> &str {
    let p = template.strip_prefix('/').unwrap_or(template);
    let mut parts = p.splitn(3, '/');
    let first = parts.next().unwrap_or("");
    match (parts.next(), parts.next()) {
        (Some(second), Some(_)) if !second.is_empty() && !second.contains('{') => {
            &p[..first.len() + 1 + second.len()]
        }
        _ => first,
    }
}

fn status_key(r: &RequestRecord) -> &'static str {
    r.status_class().map(StatusClass::as_str).unwrap_or("none")
}

fn query_key_count(q: Option<&str>) -> usize {
    match q {
        Some(q) if !q.is_empty() => q.split('&').filter(|kv| !kv.is_empty()).count(),
        _ => 0,
    }
}

/// Everything about one record the encoder needs, computed once.
pub struct RawFeatures<'a> {
    pub method: &'a str,
    pub kind: &'static str,
    pub segment: &'a str,
    pub template: &'a str,
    pub ua: UaClass,
    pub status: &'static str,
    pub content: &'static str,
    pub headers: &'a [(String, String)],
    pub numeric: [Option<f64>; 6],
}

impl<'a> RawFeatures<'a> {
    /// The categorical values in [`GROUPS`] order.
    pub fn categories(&self) -> [&str; 7] {
        [
            self.method,
            self.kind,
            self.segment,
            self.template,
            self.ua.as_str(),
            self.status,
            self.content,
        ]
    }

    /// Computes everything from the record and its template (empty when unknown).
    pub fn of(r: &'a RequestRecord, template: &'a str, ua: UaClass) -> Self {
        let facts = PathFacts::of(if template.is_empty() {
            &r.path
        } else {
            template
        });
        RawFeatures::with_facts(r, template, facts, ua)
    }

    /// Like [`RawFeatures::of`] with the template's facts computed beforehand
    /// (once per template rather than once per request).
    pub fn with_facts(
        r: &'a RequestRecord,
        template: &'a str,
        facts: PathFacts<'a>,
        ua: UaClass,
    ) -> Self {
        let header_count = (!r.headers.is_empty()).then_some((r.headers.len() as f64).ln_1p());
        let content = content_class(r.content_type.as_deref());
        // A page-looking path that takes JSON or XML is an API call.
        let kind = if facts.kind == "page" && matches!(content, "json") {
            "data"
        } else {
            facts.kind
        };
        let query_keys = query_key_count(r.query.as_deref());
        RawFeatures {
            method: method_key(&r.method),
            kind,
            segment: facts.section,
            template,
            ua,
            status: status_key(r),
            content,
            headers: &r.headers,
            numeric: [
                Some(facts.ln_depth),
                Some(if query_keys == 0 {
                    0.0
                } else {
                    (query_keys as f64).ln_1p()
                }),
                Some(match r.request_bytes {
                    None | Some(0) => 0.0,
                    Some(b) => (b as f64).ln_1p(),
                }),
                r.response_bytes.map(|b| (b as f64).ln_1p()),
                header_count,
                r.duration_ms
                    .filter(|d| d.is_finite() && *d >= 0.0)
                    .map(f64::ln_1p),
            ],
        }
    }
}

/// What a path template says about a request, the same for every request with it.
#[derive(Debug, Clone, Copy)]
pub struct PathFacts<'a> {
    pub section: &'a str,
    /// The resource kind judged from the path alone.
    pub kind: &'static str,
    /// `ln(1 + depth)`.
    pub ln_depth: f64,
}

impl<'a> PathFacts<'a> {
    pub fn of(template: &'a str) -> PathFacts<'a> {
        let depth = template.split('/').filter(|s| !s.is_empty()).count();
        PathFacts {
            section: section(template),
            kind: resource_kind(template, None),
            ln_depth: (depth as f64).ln_1p(),
        }
    }
}

/// Finds the dimension of a categorical value: a scan for the small groups
/// (method, status... a handful of short strings), a hash map for the large ones.
enum Lookup {
    Small(Vec<(String, usize)>),
    Large(AHashMap<String, usize>),
}

impl Lookup {
    fn get(&self, value: &str) -> Option<usize> {
        match self {
            Lookup::Small(v) => v.iter().find(|(k, _)| k == value).map(|(_, i)| *i),
            Lookup::Large(m) => m.get(value).copied(),
        }
    }
}

/// Encodes records into rows of a [`FeatureSpace`].
pub struct Encoder {
    space: FeatureSpace,
    /// Per categorical group (in [`GROUPS`] order): dimension of each value, and of `(other)`.
    groups: Vec<(Lookup, Option<usize>)>,
    /// Per group: the one value seen in training when the group got no dimension
    /// (every request had it); `None` when the group has dimensions or is unknown.
    single: Vec<Option<String>>,
    /// Dimension of each header name.
    headers: AHashMap<String, usize>,
    /// Dimension index of each numeric feature present in the space.
    numeric: [Option<usize>; 6],
    ua_cache: AHashMap<String, UaClass>,
}

impl Encoder {
    pub fn new(space: FeatureSpace) -> Encoder {
        let mut groups: Vec<(AHashMap<String, usize>, Option<usize>)> =
            GROUPS.iter().map(|_| (AHashMap::new(), None)).collect();
        let mut headers = AHashMap::new();
        let mut numeric = [None; 6];
        for (i, name) in space.names.iter().enumerate() {
            if let Some(n) = NUMERIC.iter().position(|x| x == name) {
                numeric[n] = Some(i);
            } else if let Some((group, value)) = name.split_once('=') {
                if group == "header" {
                    headers.insert(value.to_string(), i);
                } else if let Some(g) = GROUPS.iter().position(|x| *x == group) {
                    if value == "(other)" {
                        groups[g].1 = Some(i);
                    } else {
                        groups[g].0.insert(value.to_string(), i);
                    }
                }
            }
        }
        let groups_dims: Vec<bool> = groups
            .iter()
            .map(|(v, o)| !v.is_empty() || o.is_some())
            .collect();
        let groups = groups
            .into_iter()
            .map(|(values, other)| {
                let lookup = if values.len() <= 12 {
                    Lookup::Small(values.into_iter().collect())
                } else {
                    Lookup::Large(values)
                };
                (lookup, other)
            })
            .collect();
        let single = GROUPS
            .iter()
            .enumerate()
            .map(|(g, name)| match space.vocab.get(*name) {
                Some(values) if values.len() == 1 && !groups_dims[g] => values.first().cloned(),
                _ => None,
            })
            .collect();
        Encoder {
            space,
            groups,
            single,
            headers,
            numeric,
            ua_cache: AHashMap::new(),
        }
    }

    pub fn space(&self) -> &FeatureSpace {
        &self.space
    }

    pub fn dims(&self) -> usize {
        self.space.names.len()
    }

    /// The user-agent class, cached: logs repeat a few hundred agents millions of times.
    pub fn ua_class(&mut self, ua: Option<&str>) -> UaClass {
        let key = ua.unwrap_or("");
        if let Some(c) = self.ua_cache.get(key) {
            return *c;
        }
        let c = user_agent::classify(ua);
        if self.ua_cache.len() < 100_000 {
            self.ua_cache.insert(key.to_string(), c);
        }
        c
    }

    /// The squared distance a request's categories would add if the space had a
    /// dimension for each value it has never seen. An unseen category encodes as
    /// all zeros in its group, which would put a request for a brand-new endpoint
    /// closer to a centroid than a request for a known one; novelty detection adds
    /// this back.
    pub fn unseen_penalty(&self, raw: &RawFeatures<'_>) -> f32 {
        let mut penalty = 0.0;
        for (g, value) in raw.categories().iter().enumerate() {
            let (values, other) = &self.groups[g];
            let seen = values.get(value).or(*other).is_some()
                || self.single[g].as_deref() == Some(*value)
                // A group the space knows nothing about (no dimension, no value): no
                // evidence either way.
                || (self.single[g].is_none() && !self.space.vocab.contains_key(GROUPS[g]));
            if !seen {
                penalty += GROUP_WEIGHT[g] as f32;
            }
        }
        penalty
    }

    /// Writes the scaled vector of `raw` into `out` (length [`Encoder::dims`]).
    pub fn encode(&self, raw: &RawFeatures<'_>, out: &mut [f32]) {
        out.fill(0.0);
        for ((values, other), value) in self.groups.iter().zip(raw.categories()) {
            if let Some(i) = values.get(value).or(*other) {
                out[i] = (1.0 / self.space.scale[i]) as f32;
            }
        }
        for (name, _) in raw.headers {
            if let Some(&i) = self.headers.get(name.as_str()) {
                out[i] = (1.0 / self.space.scale[i]) as f32;
            }
        }
        for (n, dim) in self.numeric.iter().enumerate() {
            if let Some(i) = *dim {
                // A missing value sits at the center (z = 0): it says nothing either way.
                out[i] = match raw.numeric[n] {
                    Some(v) => {
                        let z = ((v - self.space.center[i]) / self.space.scale[i]) as f32;
                        z.clamp(-Z_CLAMP, Z_CLAMP)
                    }
                    None => 0.0,
                };
            }
        }
    }
}

/// Learns a feature space from the raw features of a training set.
pub fn fit_space(raws: &[RawFeatures<'_>]) -> FeatureSpace {
    let n = raws.len().max(1) as f64;
    let mut names = Vec::new();
    let mut center = Vec::new();
    let mut scale = Vec::new();
    let mut vocab: BTreeMap<String, Vec<String>> = BTreeMap::new();

    // Counts per value of each categorical group.
    let mut count = |group: &str, g: usize, cap: Option<usize>| {
        let scale_of_group = 1.0 / GROUP_WEIGHT[g].sqrt();
        let mut counts: AHashMap<&str, u64> = AHashMap::new();
        for r in raws {
            *counts.entry(r.categories()[g]).or_default() += 1;
        }
        let mut values: Vec<(String, u64)> = counts
            .into_iter()
            .map(|(v, c)| (v.to_string(), c))
            .collect();
        values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let distinct = values.len();
        let mut kept: Vec<String> = match cap {
            Some(cap) => values
                .into_iter()
                .filter(|(_, c)| *c as f64 / n >= MIN_CATEGORY_SHARE)
                .take(cap)
                .map(|(v, _)| v)
                .collect(),
            None => values.into_iter().map(|(v, _)| v).collect(),
        };
        if kept.len() < distinct && cap.is_some() {
            kept.push("(other)".to_string());
        }
        // One value only carries no information: no dimension, but the value is
        // remembered so that novelty detection knows it is not new.
        if kept.len() <= 1 {
            vocab.insert(group.to_string(), kept);
            return;
        }
        for v in &kept {
            names.push(format!("{group}={v}"));
            center.push(0.0);
            scale.push(scale_of_group);
        }
        vocab.insert(group.to_string(), kept);
    };
    for (g, group) in GROUPS.iter().enumerate() {
        let cap = match *group {
            "segment" => Some(MAX_SEGMENTS),
            "template" => Some(MAX_TEMPLATES),
            _ => None,
        };
        count(group, g, cap);
    }

    // Header names: multi-hot over names that some but not all requests carry.
    let mut header_counts: AHashMap<&str, u64> = AHashMap::new();
    for r in raws {
        for (name, _) in r.headers {
            *header_counts.entry(name.as_str()).or_default() += 1;
        }
    }
    let mut headers: Vec<(&str, u64)> = header_counts
        .into_iter()
        .filter(|(_, c)| {
            let share = *c as f64 / n;
            (0.05..=0.95).contains(&share)
        })
        .collect();
    headers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    headers.truncate(MAX_HEADERS);
    if !headers.is_empty() {
        // The set of header names is one feature: its dimensions share one weight.
        let header_scale = (headers.len() as f64).sqrt();
        for (h, _) in &headers {
            names.push(format!("header={h}"));
            center.push(0.0);
            scale.push(header_scale);
        }
        vocab.insert(
            "header".into(),
            headers.iter().map(|(h, _)| h.to_string()).collect(),
        );
    }

    // Numeric features: mean and standard deviation over the records that have them.
    for (k, name) in NUMERIC.iter().enumerate() {
        let (mut s, mut s2, mut m) = (0.0f64, 0.0f64, 0u64);
        for r in raws {
            if let Some(v) = r.numeric[k] {
                s += v;
                s2 += v * v;
                m += 1;
            }
        }
        if m == 0 {
            continue;
        }
        let mean = s / m as f64;
        let var = (s2 / m as f64 - mean * mean).max(0.0);
        let sd = var.sqrt();
        if sd < 1e-9 {
            continue;
        }
        names.push((*name).to_string());
        center.push(mean);
        scale.push(sd.max(MIN_NUMERIC_SCALE));
    }

    FeatureSpace {
        names,
        center,
        scale,
        vocab,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Templater;

    fn rec(path: &str, ua: &str, bytes: u64) -> RequestRecord {
        RequestRecord {
            method: "GET".into(),
            path: path.into(),
            status: Some(200),
            response_bytes: Some(bytes),
            user_agent: Some(ua.into()),
            ..Default::default()
        }
    }

    #[test]
    fn sections() {
        assert_eq!(section("/m/filter/{slug}"), "m/filter");
        assert_eq!(section("/api/v1/orders"), "api/v1");
        assert_eq!(section("/product/{id}/{slug}"), "product");
        assert_eq!(section("/settings/logo"), "settings");
        assert_eq!(section("/"), "");
    }

    #[test]
    fn kinds() {
        assert_eq!(
            resource_kind("/image/1/productModel/200x200", None),
            "image"
        );
        assert_eq!(resource_kind("/static/app.js", None), "script");
        assert_eq!(resource_kind("/api/users", None), "data");
        assert_eq!(resource_kind("/product/1/x", None), "page");
        assert_eq!(resource_kind("/submit", Some("application/json")), "data");
    }

    #[test]
    fn scaled_features_are_balanced() {
        let recs: Vec<RequestRecord> = (0..200)
            .map(|i| {
                if i % 2 == 0 {
                    rec(&format!("/image/{i}"), "Googlebot/2.1", 1000 + i)
                } else {
                    rec(&format!("/product/{i}/x"), "Mozilla/5.0 (X11)", 50_000 + i)
                }
            })
            .collect();
        let templater = Templater::learn(recs.iter().map(|r| r.path.as_str()));
        let tps: Vec<String> = recs
            .iter()
            .map(|r| match templater.template_of(&r.path) {
                Some(m) => templater.template(m.template).to_string(),
                None => Templater::pattern_template(&r.path),
            })
            .collect();
        let raws: Vec<RawFeatures<'_>> = recs
            .iter()
            .zip(&tps)
            .map(|(r, t)| RawFeatures::of(r, t, user_agent::classify(r.user_agent.as_deref())))
            .collect();
        let space = fit_space(&raws);
        assert!(
            !space.names.iter().any(|n| n.starts_with("method=")),
            "one method: no dimension"
        );
        assert!(space.names.contains(&"ua=bot".to_string()));
        assert!(space.names.contains(&"log_response_bytes".to_string()));
        let enc = Encoder::new(space);
        let mut row = vec![0.0; enc.dims()];
        let mut sum = vec![0.0f64; enc.dims()];
        let mut sum2 = vec![0.0f64; enc.dims()];
        for r in &raws {
            enc.encode(r, &mut row);
            for (i, v) in row.iter().enumerate() {
                sum[i] += *v as f64;
                sum2[i] += (*v as f64).powi(2);
            }
        }
        // Numeric dimensions come out standardised.
        let i = enc
            .space()
            .names
            .iter()
            .position(|n| n == "log_response_bytes")
            .unwrap();
        let mean = sum[i] / raws.len() as f64;
        let var = sum2[i] / raws.len() as f64 - mean * mean;
        assert!(
            mean.abs() < 1e-3 && (var - 1.0).abs() < 1e-3,
            "mean {mean} var {var}"
        );
    }
}
