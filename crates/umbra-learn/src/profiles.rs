//! From clusters to profiles: what `umbra learn` writes.
//!
//! [`learn`] runs the whole pipeline on records already read: templates, features,
//! k-means, then one [`Profile`] per cluster with its share, centroid and the
//! request templates inside it, described well enough for the load generator to
//! send look-alike requests (placeholder examples, query keys, headers, user
//! agents, size and latency quantiles, status mix).

use std::collections::BTreeMap;

use ahash::AHashMap;
use umbra_core::{
    ClusteringInfo, FeatureSpace, HeaderSpec, PROFILE_FORMAT, PROFILE_VERSION, ParamSpec, Profile,
    ProfileSet, Quantiles, QuerySpec, RequestRecord, RequestTemplate, SourceSummary, Weighted,
};

use crate::fake::Faker;
use crate::features::{Encoder, PathFacts, RawFeatures, fit_space};
use crate::kmeans::{self, KMeansConfig, KMeansResult, Matrix};
use crate::template::{Templater, segment_kind};

/// Templates kept per profile, heaviest first; the rest of the profile's weight is
/// spread over these (the load generator draws only what the file lists).
pub const MAX_TEMPLATES_PER_PROFILE: usize = 32;
/// `--k auto` keeps everything in one profile when no k reaches this silhouette.
const MIN_STRUCTURE_SILHOUETTE: f64 = 0.25;
/// Distinct example values kept per placeholder or query key.
const MAX_EXAMPLES: usize = 3;
/// How many clusters to look for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KSpec {
    Fixed(usize),
    /// Choose by silhouette among 2..=max.
    Auto {
        max: usize,
    },
}

impl std::str::FromStr for KSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<KSpec, String> {
        if s == "auto" {
            return Ok(KSpec::Auto { max: 16 });
        }
        if let Some(max) = s.strip_prefix("auto:") {
            return match max.parse::<usize>() {
                Ok(m) if m >= 2 => Ok(KSpec::Auto { max: m }),
                _ => Err(format!("--k {s:?}: expected auto:N with N >= 2")),
            };
        }
        match s.parse::<usize>() {
            Ok(k) if k >= 1 => Ok(KSpec::Fixed(k)),
            _ => Err(format!("--k {s:?}: expected a number >= 1, or `auto`")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LearnOptions {
    pub k: KSpec,
    pub seed: u64,
    pub restarts: usize,
    /// Rows used to choose k by silhouette.
    pub silhouette_sample: usize,
    /// When set, records are weighted by `2^(-(newest - t) / half_life)`.
    pub half_life_secs: Option<f64>,
    /// Overrides the baseline rate measured from the records' timestamps.
    pub baseline_rps: Option<f64>,
    pub stress: f64,
    pub retire_below: f64,
}

impl Default for LearnOptions {
    fn default() -> Self {
        LearnOptions {
            k: KSpec::Auto { max: 16 },
            seed: 1,
            restarts: 4,
            silhouette_sample: 3000,
            half_life_secs: None,
            baseline_rps: None,
            stress: 1.0,
            retire_below: 0.005,
        }
    }
}

/// Why learning could not produce a set.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("no requests to learn from")]
    NoRecords,
    #[error("clustering failed")]
    Cluster(#[from] kmeans::KMeansError),
}

/// A learned set, with what tests and benchmarks want to look at.
pub struct Learned {
    pub set: ProfileSet,
    /// The cluster of each record, in input order (index into `set.profiles`).
    pub assignments: Vec<u32>,
    /// The feature matrix the clustering ran on.
    pub features: Matrix,
    pub timings: Timings,
}

/// Where the time went, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Templating, fitting the feature space and encoding every record.
    pub featurise_secs: f64,
    /// Choosing k, k-means and the final assignment.
    pub cluster_secs: f64,
    /// Building the profiles' summaries.
    pub summarise_secs: f64,
}

/// The per-record facts every later stage needs, computed once.
pub(crate) struct Prepared {
    pub templates: Vec<u32>,
    pub templater: Templater,
}

/// Templates every record's path.
pub(crate) fn prepare(records: &[RequestRecord], mut templater: Templater) -> Prepared {
    let templates = templater.extend_and_template(records.iter().map(|r| r.path.as_str()));
    Prepared {
        templates,
        templater,
    }
}

/// Computes raw features record by record, classifying each user agent once and
/// reading each template once (logs repeat a few hundred agents and a few
/// thousand templates millions of times).
pub(crate) struct RawMaker<'a> {
    prepared: &'a Prepared,
    ua_cache: AHashMap<&'a str, umbra_core::UaClass>,
    facts: Vec<Option<PathFacts<'a>>>,
}

impl<'a> RawMaker<'a> {
    pub(crate) fn new(prepared: &'a Prepared) -> Self {
        RawMaker {
            prepared,
            ua_cache: AHashMap::new(),
            facts: vec![None; prepared.templater.len()],
        }
    }

    pub(crate) fn raw(&mut self, r: &'a RequestRecord, t: u32) -> RawFeatures<'a> {
        let ua_key = r.user_agent.as_deref();
        let ua = *self
            .ua_cache
            .entry(ua_key.unwrap_or(""))
            .or_insert_with(|| crate::user_agent::classify(ua_key));
        match self.facts.get_mut(t as usize) {
            Some(slot) => {
                let template = self.prepared.templater.template(t);
                let f = *slot.get_or_insert_with(|| PathFacts::of(template));
                RawFeatures::with_facts(r, template, f, ua)
            }
            None => RawFeatures::of(r, "", ua),
        }
    }
}

/// The feature space is fitted on at most this many records, evenly spaced:
/// vocabularies (categories of at least 0.5%) and means are settled long before.
const FIT_SAMPLE: usize = 200_000;

/// Fits the feature space on an evenly spaced sample of the records.
pub(crate) fn fit_features(records: &[RequestRecord], prepared: &Prepared) -> FeatureSpace {
    let stride = records.len().div_ceil(FIT_SAMPLE).max(1);
    let mut maker = RawMaker::new(prepared);
    let raws: Vec<RawFeatures<'_>> = (0..records.len())
        .step_by(stride)
        .map(|i| maker.raw(&records[i], prepared.templates[i]))
        .collect();
    fit_space(&raws)
}

/// Encodes every record into a row of a matrix, without keeping raw features around.
pub(crate) fn encode_all(
    records: &[RequestRecord],
    prepared: &Prepared,
    encoder: &Encoder,
) -> Matrix {
    let mut m = Matrix::with_capacity(records.len(), encoder.dims());
    let mut row = vec![0.0f32; encoder.dims()];
    let mut maker = RawMaker::new(prepared);
    for (r, &t) in records.iter().zip(&prepared.templates) {
        encoder.encode(&maker.raw(r, t), &mut row);
        m.push(&row);
    }
    m
}

/// Per record: the squared distance its never-seen categories add (see
/// [`Encoder::unseen_penalty`]).
pub(crate) fn unseen_penalties(
    records: &[RequestRecord],
    prepared: &Prepared,
    encoder: &Encoder,
) -> Vec<f32> {
    let mut maker = RawMaker::new(prepared);
    records
        .iter()
        .zip(&prepared.templates)
        .map(|(r, &t)| encoder.unseen_penalty(&maker.raw(r, t)))
        .collect()
}

/// Decay weight of each record relative to the newest timestamp.
pub(crate) fn decay_weights(
    records: &[RequestRecord],
    as_of_ms: Option<i64>,
    half_life_secs: Option<f64>,
) -> Vec<f64> {
    match (as_of_ms, half_life_secs) {
        (Some(now), Some(h)) if h > 0.0 => records
            .iter()
            .map(|r| match r.timestamp_ms {
                Some(t) => 0.5f64.powf(((now - t).max(0) as f64 / 1000.0) / h),
                None => 1.0,
            })
            .collect(),
        _ => vec![1.0; records.len()],
    }
}

/// Learns a profile set from records.
pub fn learn(
    records: &[RequestRecord],
    sources: Vec<SourceSummary>,
    opts: &LearnOptions,
) -> Result<Learned, LearnError> {
    if records.is_empty() {
        return Err(LearnError::NoRecords);
    }
    let t0 = std::time::Instant::now();
    let prepared = prepare(records, Templater::default());
    let space = fit_features(records, &prepared);
    let encoder = Encoder::new(space.clone());
    let features = encode_all(records, &prepared, &encoder);
    let featurise_secs = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();

    let cfg = KMeansConfig {
        k: 1,
        restarts: opts.restarts,
        seed: opts.seed,
        ..KMeansConfig::default()
    };
    let distinct_cap = records.len();
    let (k, k_choice, reason, result, silhouette, sq) = if features.dims == 0 || records.len() == 1
    {
        // Nothing varies between the requests (or there is one): one profile,
        // and nothing for k-means to do.
        let reason = if records.len() == 1 {
            "one request: one profile".to_string()
        } else {
            "no feature varies between the requests: one profile".to_string()
        };
        let result = KMeansResult {
            centroids: {
                let mut m = Matrix::new(0);
                m.push(&[]);
                m
            },
            assignments: vec![0; records.len()],
            inertia: 0.0,
            iterations: 0,
            counts: vec![records.len() as u64],
        };
        let sq = vec![0.0f32; records.len()];
        (1, "single".to_string(), reason, result, None, sq)
    } else {
        let (k, k_choice, reason) = match opts.k {
            KSpec::Fixed(k) => {
                let k = k.min(distinct_cap);
                (k, "fixed".to_string(), format!("k={k} was given with --k"))
            }
            KSpec::Auto { max } => {
                let hi = max.min(distinct_cap.saturating_sub(1)).max(2);
                let choice = kmeans::choose_k(&features, 2..=hi, opts.silhouette_sample, &cfg)?;
                let best = choice.scores.iter().map(|s| s.1).fold(f64::MIN, f64::max);
                if best < MIN_STRUCTURE_SILHOUETTE {
                    // Silhouette cannot score k = 1; below this no split is real
                    // structure (Kaufman and Rousseeuw's reading of the score).
                    let reason = format!(
                        "no k in 2..{hi} reaches a silhouette of {MIN_STRUCTURE_SILHOUETTE} (best {best:.2}), so the requests form one profile"
                    );
                    (1, "silhouette".to_string(), reason)
                } else {
                    (choice.k, "silhouette".to_string(), choice.reason)
                }
            }
        };
        let result = kmeans::fit(&features, &KMeansConfig { k, ..cfg.clone() })?;
        let silhouette = (k > 1).then(|| {
            kmeans::silhouette(
                &features,
                &result.assignments,
                k,
                opts.silhouette_sample,
                opts.seed,
            )
        });
        let (_, sq) = kmeans::assign(&features, &result.centroids);
        (k, k_choice, reason, result, silhouette, sq)
    };
    let cluster_secs = t1.elapsed().as_secs_f64();
    let t2 = std::time::Instant::now();

    let as_of_ms = records.iter().filter_map(|r| r.timestamp_ms).max();
    let weights = decay_weights(records, as_of_ms, opts.half_life_secs);
    let baseline_rps = opts.baseline_rps.unwrap_or_else(|| measured_rate(records));

    let faker = Faker::random();
    let mut profiles: Vec<Profile> = Vec::new();
    let mut cluster_to_profile = vec![u32::MAX; k];
    let total: f64 = weights.iter().sum();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, a) in result.assignments.iter().enumerate() {
        members[*a as usize].push(i);
    }
    for (c, (m, slot)) in members
        .iter()
        .zip(cluster_to_profile.iter_mut())
        .enumerate()
    {
        if m.is_empty() {
            continue;
        }
        let centroid: Vec<f64> = result.centroids.row(c).iter().map(|v| *v as f64).collect();
        let p = build_profile(
            records, &prepared, m, &weights, &sq, centroid, total, &faker,
        );
        *slot = profiles.len() as u32;
        profiles.push(p);
    }
    assign_ids(&mut profiles, &[]);
    let assignments = result
        .assignments
        .iter()
        .map(|c| cluster_to_profile[*c as usize])
        .collect();

    let set = ProfileSet {
        format: PROFILE_FORMAT.to_string(),
        version: PROFILE_VERSION,
        generated_at: now_rfc3339(),
        as_of_ms,
        half_life_secs: opts.half_life_secs,
        retire_below: opts.retire_below,
        baseline_rps,
        stress: opts.stress,
        sources,
        clustering: ClusteringInfo {
            k: profiles.len(),
            k_choice,
            reason,
            silhouette,
            inertia: result.inertia,
            restarts: opts.restarts,
            seed: opts.seed,
        },
        features: space,
        profiles,
    };
    Ok(Learned {
        set,
        assignments,
        features,
        timings: Timings {
            featurise_secs,
            cluster_secs,
            summarise_secs: t2.elapsed().as_secs_f64(),
        },
    })
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Requests per second over the records' time span; 10 when the span is unknown.
pub(crate) fn measured_rate(records: &[RequestRecord]) -> f64 {
    let ts = records.iter().filter_map(|r| r.timestamp_ms);
    let (lo, hi) = ts.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
    if lo < hi {
        // A log whose timestamps have one-second resolution covers one more second than its span.
        let secs = (hi - lo) as f64 / 1000.0 + 1.0;
        records.len() as f64 / secs
    } else {
        10.0
    }
}

/// Accumulates one (method, template) inside a profile.
#[derive(Default)]
struct TemplateAcc<'a> {
    weight: f64,
    request_bytes: Vec<f64>,
    response_bytes: Vec<f64>,
    latency: Vec<f64>,
    status: BTreeMap<u16, f64>,
    no_status: f64,
    user_agents: AHashMap<&'a str, f64>,
    content_types: AHashMap<&'a str, f64>,
    query: BTreeMap<&'a str, (f64, Vec<&'a str>)>,
    headers: BTreeMap<&'a str, (f64, AHashMap<&'a str, f64>)>,
    params: Vec<Vec<&'a str>>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn build_profile(
    records: &[RequestRecord],
    prepared: &Prepared,
    members: &[usize],
    weights: &[f64],
    sq_dist: &[f32],
    centroid: Vec<f64>,
    total_mass: f64,
    faker: &Faker,
) -> Profile {
    let mut accs: AHashMap<(&str, u32), TemplateAcc<'_>> = AHashMap::new();
    let mut ua_classes: BTreeMap<String, f64> = BTreeMap::new();
    let mut status_classes: BTreeMap<String, f64> = BTreeMap::new();
    let mut mass = 0.0;
    let mut sq_sum = 0.0;
    let mut ua_cache: AHashMap<&str, umbra_core::UaClass> = AHashMap::new();
    for &i in members {
        let r = &records[i];
        let w = weights[i];
        mass += w;
        sq_sum += sq_dist[i] as f64 * w;
        let ua = *ua_cache
            .entry(r.user_agent.as_deref().unwrap_or(""))
            .or_insert_with(|| crate::user_agent::classify(r.user_agent.as_deref()));
        *ua_classes.entry(ua.as_str().to_string()).or_default() += w;
        let sc = r.status_class().map_or("none", |s| s.as_str());
        *status_classes.entry(sc.to_string()).or_default() += w;

        let acc = accs
            .entry((r.method.as_str(), prepared.templates[i]))
            .or_default();
        acc.weight += w;
        acc.request_bytes.push(r.request_bytes.unwrap_or(0) as f64);
        if let Some(b) = r.response_bytes {
            acc.response_bytes.push(b as f64);
        }
        if let Some(d) = r.duration_ms.filter(|d| d.is_finite() && *d >= 0.0) {
            acc.latency.push(d);
        }
        match r.status {
            Some(s) => *acc.status.entry(s).or_default() += w,
            None => acc.no_status += w,
        }
        if let Some(ua) = r
            .user_agent
            .as_deref()
            .filter(|u| !u.is_empty() && *u != "-")
        {
            *acc.user_agents.entry(ua).or_default() += w;
        }
        if let Some(ct) = r.content_type.as_deref() {
            *acc.content_types.entry(ct).or_default() += w;
        }
        if let Some(q) = r.query.as_deref() {
            for kv in q.split('&').filter(|kv| !kv.is_empty()) {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                let e = acc.query.entry(k).or_default();
                e.0 += w;
                if e.1.len() < MAX_EXAMPLES && !v.is_empty() && !e.1.contains(&v) {
                    e.1.push(v);
                }
            }
        }
        for (name, value) in &r.headers {
            let e = acc.headers.entry(name.as_str()).or_default();
            e.0 += w;
            if e.1.len() < 64 {
                *e.1.entry(value.as_str()).or_default() += w;
            }
        }
        let t = prepared.templates[i];
        if t != u32::MAX
            && prepared.templater.template(t).contains('{')
            && acc.params.iter().all(|p| p.len() < MAX_EXAMPLES)
            && let Some(m) = prepared.templater.template_of(&r.path)
        {
            if acc.params.is_empty() {
                acc.params = vec![Vec::new(); m.values.len()];
            }
            for (slot, v) in acc.params.iter_mut().zip(m.values) {
                if slot.len() < MAX_EXAMPLES && !slot.contains(&v) {
                    slot.push(v);
                }
            }
        }
    }

    let mut templates: Vec<RequestTemplate> = accs
        .into_iter()
        .map(|((method, t), acc)| finish_template(method, t, acc, &prepared.templater, faker))
        .collect();
    templates.sort_by(|a, b| {
        b.weight
            .total_cmp(&a.weight)
            .then_with(|| a.path.cmp(&b.path))
    });
    templates.truncate(MAX_TEMPLATES_PER_PROFILE);
    let kept: f64 = templates.iter().map(|t| t.weight).sum();
    for t in &mut templates {
        t.weight /= kept;
    }
    normalise(&mut ua_classes);
    normalise(&mut status_classes);

    let mut p = Profile {
        id: String::new(),
        name: String::new(),
        share: if total_mass > 0.0 {
            mass / total_mass
        } else {
            0.0
        },
        weight: None,
        mass,
        centroid,
        spread: if mass > 0.0 {
            (sq_sum / mass).sqrt()
        } else {
            0.0
        },
        user_agent_classes: ua_classes,
        status_classes,
        templates,
    };
    p.name = profile_name(&p);
    p
}

fn normalise<K>(m: &mut BTreeMap<K, f64>) {
    let total: f64 = m.values().sum();
    if total > 0.0 {
        for v in m.values_mut() {
            *v /= total;
        }
    }
}

fn finish_template(
    method: &str,
    t: u32,
    acc: TemplateAcc<'_>,
    templater: &Templater,
    faker: &Faker,
) -> RequestTemplate {
    let path = if t == u32::MAX {
        "/".to_string()
    } else {
        templater.template(t).to_string()
    };
    let names = placeholder_names(&path);
    let params = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| ParamSpec {
            name,
            examples: acc
                .params
                .get(i)
                .map(|v| v.iter().map(|x| faker.scrub(x).into_owned()).collect())
                .unwrap_or_default(),
        })
        .collect();
    let query = acc
        .query
        .into_iter()
        .map(|(key, (w, examples))| QuerySpec {
            key: key.to_string(),
            presence: (w / acc.weight).min(1.0),
            kind: value_kind(&examples),
            examples: examples
                .iter()
                .map(|x| faker.scrub(x).into_owned())
                .collect(),
        })
        .collect();
    let headers = acc
        .headers
        .into_iter()
        .map(|(name, (w, values))| {
            let example = if umbra_core::is_credential_header(name) {
                None
            } else {
                top(values).map(|v| faker.scrub(v).into_owned())
            };
            HeaderSpec {
                name: name.to_string(),
                presence: (w / acc.weight).min(1.0),
                example,
            }
        })
        .collect();
    let mut uas: Vec<(&str, f64)> = acc.user_agents.into_iter().collect();
    uas.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let ua_total: f64 = uas.iter().map(|u| u.1).sum();
    let user_agents = uas
        .into_iter()
        .take(3)
        .map(|(v, w)| Weighted {
            value: v.to_string(),
            weight: w / ua_total,
        })
        .collect();
    let mut status: BTreeMap<String, f64> = acc
        .status
        .into_iter()
        .map(|(s, w)| (s.to_string(), w))
        .collect();
    if acc.no_status > 0.0 {
        status.insert("none".to_string(), acc.no_status);
    }
    normalise(&mut status);
    RequestTemplate {
        method: method.to_string(),
        path,
        weight: acc.weight,
        params,
        query,
        headers,
        user_agents,
        content_type: top(acc.content_types).map(str::to_string),
        request_bytes: Quantiles::from_unsorted(&acc.request_bytes)
            .unwrap_or(Quantiles::constant(0.0)),
        response_bytes: Quantiles::from_unsorted(&acc.response_bytes)
            .unwrap_or(Quantiles::constant(0.0)),
        latency_ms: Quantiles::from_unsorted(&acc.latency),
        status,
    }
}

fn top(m: AHashMap<&str, f64>) -> Option<&str> {
    m.into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(v, _)| v)
}

/// `/a/{id}/b/{slug}.js` → `["id", "slug"]`.
pub fn placeholder_names(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                out.push(after[..close].to_string());
                rest = &after[close + 1..];
            }
            None => break,
        }
    }
    out
}

/// The generalised kind of a query value, by majority over examples.
fn value_kind(examples: &[&str]) -> String {
    let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
    for e in examples {
        let k = segment_kind(e).unwrap_or(if e.is_empty() { "empty" } else { "text" });
        *votes.entry(k).or_default() += 1;
    }
    votes
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or("empty".to_string(), |(k, _)| k.to_string())
}

/// `GET /product/{id} · browser · small`.
pub(crate) fn profile_name(p: &Profile) -> String {
    let Some(first) = p.templates.first() else {
        return "empty".to_string();
    };
    let mut name = format!("{} {}", first.method, first.path);
    if p.templates.len() > 1 && first.weight < 0.5 {
        name.push_str(&format!(" (+{} more)", p.templates.len() - 1));
    }
    if let Some((ua, _)) = p
        .user_agent_classes
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
    {
        name.push_str(" · ");
        name.push_str(ua);
    }
    let median: f64 = p
        .templates
        .iter()
        .map(|t| t.weight * t.response_bytes.p50)
        .sum();
    name.push_str(" · ");
    name.push_str(size_class(median));
    name
}

fn size_class(bytes: f64) -> &'static str {
    if bytes < 10.0 * 1024.0 {
        "small"
    } else if bytes < 100.0 * 1024.0 {
        "medium"
    } else {
        "large"
    }
}

/// Gives every profile without an id a stable one, derived from its name, unique
/// within the set; `taken` are ids already used by profiles kept from before.
pub(crate) fn assign_ids(profiles: &mut [Profile], taken: &[String]) {
    let mut used: Vec<String> = taken.to_vec();
    used.extend(
        profiles
            .iter()
            .filter(|p| !p.id.is_empty())
            .map(|p| p.id.clone()),
    );
    for p in profiles.iter_mut().filter(|p| p.id.is_empty()) {
        let base = format!("p-{:08x}", fnv1a(p.name.as_bytes()) as u32);
        let mut id = base.clone();
        let mut n = 2;
        while used.contains(&id) {
            id = format!("{base}-{n}");
            n += 1;
        }
        used.push(id.clone());
        p.id = id;
    }
    // Names must be unique too, so that `--mix name=...` is unambiguous.
    let mut names: Vec<String> = Vec::new();
    for p in profiles.iter_mut() {
        let mut name = p.name.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{} #{n}", p.name);
            n += 1;
        }
        names.push(name.clone());
        p.name = name;
    }
}

/// FNV-1a: a fixed hash, so ids do not change between builds or platforms.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_spec_parses() {
        assert_eq!("auto".parse::<KSpec>(), Ok(KSpec::Auto { max: 16 }));
        assert_eq!("auto:8".parse::<KSpec>(), Ok(KSpec::Auto { max: 8 }));
        assert_eq!("12".parse::<KSpec>(), Ok(KSpec::Fixed(12)));
        assert!("0".parse::<KSpec>().is_err());
        assert!("many".parse::<KSpec>().is_err());
    }

    #[test]
    fn placeholder_names_in_order() {
        assert_eq!(
            placeholder_names("/u/{id}/o/{uuid}/{slug}.js"),
            vec!["id", "uuid", "slug"]
        );
        assert!(placeholder_names("/plain").is_empty());
    }
}
