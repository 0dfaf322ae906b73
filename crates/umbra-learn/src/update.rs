//! Folding new traffic into an existing profile set (`umbra learn --update`).
//!
//! Weights decay exponentially by the records' own timestamps: a request seen
//! `t` seconds before the newest one counts `2^(-t / half_life)`, and the mass
//! already in the set decays by the time between its `as_of` and the new newest
//! request. So with a half-life of 6 h, a set learned six hours before new
//! traffic keeps half its weight.
//!
//! New records go to their nearest profile when their path template is known to
//! the set and they are close enough to it (within `novelty` times its spread,
//! counting never-seen categories as distance); the rest are new behaviour and are
//! clustered into new profiles when there is enough of it. Matched profiles move
//! their centroid (a weighted mean, as mini-batch k-means with decay does) and
//! merge their template statistics; a profile whose share decays below the
//! set's `retire_below` retires.

use std::collections::BTreeMap;

use umbra_core::{Profile, ProfileSet, Quantiles, RequestRecord, RequestTemplate, SourceSummary};

use crate::classify::set_templater;
use crate::fake::Faker;
use crate::features::Encoder;
use crate::kmeans::{self, KMeansConfig, Matrix};
use crate::profiles::{
    LearnError, MAX_TEMPLATES_PER_PROFILE, assign_ids, build_profile, decay_weights, encode_all,
    now_rfc3339, prepare, profile_name, unseen_penalties,
};

/// Default half-life when neither the command line nor the set gives one: 6 hours.
pub const DEFAULT_HALF_LIFE_SECS: f64 = 6.0 * 3600.0;

/// New behaviour splits into several profiles only with at least this silhouette:
/// distinct behaviours score 0.75 and more, while one behaviour cut along a size or
/// latency spread can score 0.5.
const MIN_SPLIT_SILHOUETTE: f64 = 0.7;

#[derive(Debug, Clone)]
pub struct UpdateOptions {
    /// Overrides the set's half-life.
    pub half_life_secs: Option<f64>,
    /// A record farther than `novelty × spread` from its nearest centroid is new behaviour.
    pub novelty: f64,
    /// Spread used for profiles tighter than this (a profile of identical requests has spread 0).
    pub min_spread: f64,
    /// New behaviour becomes profiles only when it has at least this share of the updated mass
    /// and at least `min_new_records` records; otherwise it joins the nearest profiles.
    pub min_new_share: f64,
    pub min_new_records: usize,
    pub seed: u64,
    pub restarts: usize,
}

impl Default for UpdateOptions {
    fn default() -> Self {
        UpdateOptions {
            half_life_secs: None,
            novelty: 3.0,
            min_spread: 0.5,
            min_new_share: 0.01,
            min_new_records: 20,
            seed: 1,
            restarts: 4,
        }
    }
}

/// What an update did.
#[derive(Debug, Clone, Default)]
pub struct UpdateReport {
    /// Factor the old mass was multiplied by.
    pub decay: f64,
    pub half_life_secs: f64,
    pub matched: u64,
    pub novel: u64,
    /// Names of profiles created from new behaviour.
    pub created: Vec<String>,
    /// Names of profiles retired because their share fell below the floor.
    pub retired: Vec<String>,
}

/// Returns the updated set; the input set is not changed.
pub fn update(
    set: &ProfileSet,
    records: &[RequestRecord],
    sources: Vec<SourceSummary>,
    opts: &UpdateOptions,
) -> Result<(ProfileSet, UpdateReport), LearnError> {
    if records.is_empty() {
        return Err(LearnError::NoRecords);
    }
    let half_life = opts
        .half_life_secs
        .or(set.half_life_secs)
        .unwrap_or(DEFAULT_HALF_LIFE_SECS);
    let newest = records.iter().filter_map(|r| r.timestamp_ms).max();
    let as_of = match (set.as_of_ms, newest) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let decay = match (set.as_of_ms, as_of) {
        (Some(old), Some(now)) => 0.5f64.powf(((now - old).max(0) as f64 / 1000.0) / half_life),
        _ => 1.0,
    };
    let weights = decay_weights(records, as_of, Some(half_life));

    let known = set_templater(set);
    let known_templates = known.len() as u32;
    let prepared = prepare(records, known);
    let encoder = Encoder::new(set.features.clone());
    let features = encode_all(records, &prepared, &encoder);
    let mut centroids = Matrix::with_capacity(set.profiles.len(), encoder.dims());
    for p in &set.profiles {
        centroids.push(&p.centroid.iter().map(|v| *v as f32).collect::<Vec<_>>());
    }
    let (nearest, sq) = kmeans::assign(&features, &centroids);

    let mut members: Vec<Vec<usize>> = vec![Vec::new(); set.profiles.len()];
    let mut novel: Vec<usize> = Vec::new();
    let penalties = unseen_penalties(records, &prepared, &encoder);
    for i in 0..records.len() {
        // New behaviour: a path template the set has never seen (a new endpoint),
        // or a request too far from its nearest profile, counting categories the
        // set has never seen as distance.
        let p = &set.profiles[nearest[i] as usize];
        let radius = opts.novelty * p.spread.max(opts.min_spread);
        let new_template = prepared.templates[i] >= known_templates;
        let distance = sq[i] as f64 + penalties[i] as f64;
        if !new_template && distance <= radius * radius {
            members[nearest[i] as usize].push(i);
        } else {
            novel.push(i);
        }
    }
    let old_total: f64 = set.profiles.iter().map(|p| p.mass).sum::<f64>() * decay;
    let new_total: f64 = weights.iter().sum();
    let novel_mass: f64 = novel.iter().map(|&i| weights[i]).sum();
    let make_new = novel.len() >= opts.min_new_records
        && novel_mass >= opts.min_new_share * (old_total + new_total);
    if !make_new {
        // Too little to be a behaviour of its own: it still counts, in the nearest profile.
        for &i in &novel {
            members[nearest[i] as usize].push(i);
        }
    }

    let faker = Faker::random();
    let mut report = UpdateReport {
        decay,
        half_life_secs: half_life,
        matched: (records.len() - if make_new { novel.len() } else { 0 }) as u64,
        novel: if make_new { novel.len() as u64 } else { 0 },
        ..Default::default()
    };
    let mut profiles: Vec<Profile> = Vec::new();
    for (p, m) in set.profiles.iter().zip(&members) {
        let old_mass = p.mass * decay;
        if m.is_empty() {
            let mut kept = p.clone();
            kept.mass = old_mass;
            profiles.push(kept);
            continue;
        }
        let fresh = build_profile(
            records,
            &prepared,
            m,
            &weights,
            &sq,
            p.centroid.clone(),
            1.0,
            &faker,
        );
        // The spread of the new members around the *old* centroid, recomputed
        // around the merged centroid below.
        let new_mass = fresh.mass;
        let mut sum = vec![0.0f64; encoder.dims()];
        for &i in m {
            for (s, v) in sum.iter_mut().zip(features.row(i)) {
                *s += weights[i] * *v as f64;
            }
        }
        let total = old_mass + new_mass;
        let centroid: Vec<f64> = p
            .centroid
            .iter()
            .zip(&sum)
            .map(|(c, s)| (c * old_mass + s) / total)
            .collect();
        let shift2: f64 = p
            .centroid
            .iter()
            .zip(&centroid)
            .map(|(a, b)| (a - b).powi(2))
            .sum();
        let mut new_sq = 0.0;
        for &i in m {
            let d2: f64 = features
                .row(i)
                .iter()
                .zip(&centroid)
                .map(|(x, c)| (*x as f64 - c).powi(2))
                .sum();
            new_sq += weights[i] * d2;
        }
        let spread = ((old_mass * (p.spread.powi(2) + shift2) + new_sq) / total).sqrt();
        let mut merged = merge_profiles(p, old_mass, &fresh, new_mass);
        merged.centroid = centroid;
        merged.spread = spread;
        merged.mass = total;
        profiles.push(merged);
    }

    if make_new {
        let mut sub = Matrix::with_capacity(novel.len(), encoder.dims());
        for &i in &novel {
            sub.push(features.row(i));
        }
        let cfg = KMeansConfig {
            k: 1,
            seed: opts.seed,
            restarts: opts.restarts,
            ..KMeansConfig::default()
        };
        // New behaviour is one profile unless it splits cleanly: silhouette can't
        // score k = 1, so a split must earn a clearly good silhouette.
        let k = if novel.len() < 50 {
            1
        } else {
            let choice = kmeans::choose_k(&sub, 2..=4, 2000, &cfg)?;
            let best = choice.scores.iter().map(|s| s.1).fold(f64::MIN, f64::max);
            if best >= MIN_SPLIT_SILHOUETTE {
                choice.k
            } else {
                1
            }
        };
        let result = kmeans::fit(&sub, &KMeansConfig { k, ..cfg })?;
        let mut sub_sq = vec![0.0f32; records.len()];
        let (_, d) = kmeans::assign(&sub, &result.centroids);
        for (j, &i) in novel.iter().enumerate() {
            sub_sq[i] = d[j];
        }
        for c in 0..k {
            let m: Vec<usize> = novel
                .iter()
                .enumerate()
                .filter(|(j, _)| result.assignments[*j] as usize == c)
                .map(|(_, &i)| i)
                .collect();
            if m.is_empty() {
                continue;
            }
            let centroid = result.centroids.row(c).iter().map(|v| *v as f64).collect();
            let p = build_profile(
                records, &prepared, &m, &weights, &sub_sq, centroid, 1.0, &faker,
            );
            report.created.push(p.name.clone());
            profiles.push(p);
        }
    }

    // Shares from masses; retire what decayed below the floor (never the last one).
    let total: f64 = profiles.iter().map(|p| p.mass).sum();
    for p in &mut profiles {
        p.share = if total > 0.0 { p.mass / total } else { 0.0 };
    }
    let (keep, retire): (Vec<Profile>, Vec<Profile>) = profiles
        .into_iter()
        .partition(|p| p.share >= set.retire_below);
    let mut profiles = if keep.is_empty() {
        retire.clone()
    } else {
        keep
    };
    if profiles.len() < set.profiles.len() + report.created.len() {
        report.retired = retire.iter().map(|p| p.name.clone()).collect();
    }
    let total: f64 = profiles.iter().map(|p| p.mass).sum();
    for p in &mut profiles {
        p.share = if total > 0.0 { p.mass / total } else { 0.0 };
    }
    let taken: Vec<String> = set.profiles.iter().map(|p| p.id.clone()).collect();
    assign_ids(&mut profiles, &taken);
    // Names created above already went through assign_ids' de-duplication.
    report.created = profiles
        .iter()
        .filter(|p| !taken.contains(&p.id))
        .map(|p| p.name.clone())
        .collect();

    let mut out = set.clone();
    out.generated_at = now_rfc3339();
    out.as_of_ms = as_of;
    out.half_life_secs = Some(half_life);
    out.sources.extend(sources);
    out.clustering.k = profiles.len();
    out.profiles = profiles;
    Ok((out, report))
}

/// Merges the statistics of `fresh` (new members, weight `wb`) into `old`
/// (weight `wa`), keeping `old`'s id and user weight.
fn merge_profiles(old: &Profile, wa: f64, fresh: &Profile, wb: f64) -> Profile {
    let mix_map = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| {
        let mut out: BTreeMap<String, f64> = BTreeMap::new();
        for (k, v) in a {
            *out.entry(k.clone()).or_default() += v * wa;
        }
        for (k, v) in b {
            *out.entry(k.clone()).or_default() += v * wb;
        }
        let t: f64 = out.values().sum();
        if t > 0.0 {
            out.values_mut().for_each(|v| *v /= t);
        }
        out
    };
    let mut templates: Vec<RequestTemplate> = Vec::new();
    for t in &old.templates {
        let mut t = t.clone();
        t.weight *= wa;
        templates.push(t);
    }
    for f in &fresh.templates {
        let fw = f.weight * wb;
        match templates
            .iter_mut()
            .find(|t| t.method == f.method && t.path == f.path)
        {
            Some(t) => {
                let tw = t.weight;
                *t = merge_templates(t, tw, f, fw);
            }
            None => {
                let mut f = f.clone();
                f.weight = fw;
                templates.push(f);
            }
        }
    }
    templates.sort_by(|a, b| {
        b.weight
            .total_cmp(&a.weight)
            .then_with(|| a.path.cmp(&b.path))
    });
    templates.truncate(MAX_TEMPLATES_PER_PROFILE);
    let t: f64 = templates.iter().map(|t| t.weight).sum();
    if t > 0.0 {
        templates.iter_mut().for_each(|x| x.weight /= t);
    }
    let mut p = Profile {
        id: old.id.clone(),
        name: String::new(),
        share: 0.0,
        weight: old.weight,
        mass: wa + wb,
        centroid: old.centroid.clone(),
        spread: old.spread,
        user_agent_classes: mix_map(&old.user_agent_classes, &fresh.user_agent_classes),
        status_classes: mix_map(&old.status_classes, &fresh.status_classes),
        templates,
    };
    p.name = profile_name(&p);
    p
}

fn merge_templates(a: &RequestTemplate, wa: f64, b: &RequestTemplate, wb: f64) -> RequestTemplate {
    let total = wa + wb;
    let mut out = a.clone();
    out.weight = total;
    out.request_bytes = a.request_bytes.mix(wa, &b.request_bytes, wb);
    out.response_bytes = a.response_bytes.mix(wa, &b.response_bytes, wb);
    out.latency_ms = match (&a.latency_ms, &b.latency_ms) {
        (Some(x), Some(y)) => Some(x.mix(wa, y, wb)),
        (x, y) => x.or(*y).map(|q: Quantiles| q),
    };
    let mut status: BTreeMap<String, f64> = BTreeMap::new();
    for (k, v) in &a.status {
        *status.entry(k.clone()).or_default() += v * wa / total;
    }
    for (k, v) in &b.status {
        *status.entry(k.clone()).or_default() += v * wb / total;
    }
    out.status = status;
    for (pa, pb) in out.params.iter_mut().zip(&b.params) {
        for e in &pb.examples {
            if pa.examples.len() < 3 && !pa.examples.contains(e) {
                pa.examples.push(e.clone());
            }
        }
    }
    for q in &mut out.query {
        q.presence *= wa / total;
    }
    for qb in &b.query {
        match out.query.iter_mut().find(|q| q.key == qb.key) {
            Some(q) => {
                q.presence += qb.presence * wb / total;
                for e in &qb.examples {
                    if q.examples.len() < 3 && !q.examples.contains(e) {
                        q.examples.push(e.clone());
                    }
                }
            }
            None => {
                let mut q = qb.clone();
                q.presence *= wb / total;
                out.query.push(q);
            }
        }
    }
    for h in &mut out.headers {
        h.presence *= wa / total;
    }
    for hb in &b.headers {
        match out.headers.iter_mut().find(|h| h.name == hb.name) {
            Some(h) => h.presence += hb.presence * wb / total,
            None => {
                let mut h = hb.clone();
                h.presence *= wb / total;
                out.headers.push(h);
            }
        }
    }
    let mut uas: Vec<(String, f64)> = Vec::new();
    for (list, w) in [(&a.user_agents, wa), (&b.user_agents, wb)] {
        for u in list {
            match uas.iter_mut().find(|(v, _)| *v == u.value) {
                Some(e) => e.1 += u.weight * w,
                None => uas.push((u.value.clone(), u.weight * w)),
            }
        }
    }
    uas.sort_by(|x, y| y.1.total_cmp(&x.1));
    uas.truncate(3);
    let ut: f64 = uas.iter().map(|u| u.1).sum();
    out.user_agents = uas
        .into_iter()
        .map(|(value, w)| umbra_core::Weighted {
            value,
            weight: if ut > 0.0 { w / ut } else { 0.0 },
        })
        .collect();
    if out.content_type.is_none() {
        out.content_type = b.content_type.clone();
    }
    out
}
