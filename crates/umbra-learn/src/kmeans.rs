//! k-means clustering of feature vectors into request profiles.
//!
//! [`fit`] seeds with greedy k-means++, runs several restarts on a random sample of rows (cheap,
//! and the sample is big enough to tell a good seeding from a bad one), keeps the restart with
//! the lowest inertia and refines it with Lloyd's iterations on all rows. Lloyd's iterations
//! use Hamerly's bounds (see `lloyd.rs`) so that most rows are skipped once clusters settle.
//!
//! [`choose_k`] picks the number of clusters by silhouette on a sample; [`adjusted_rand_index`]
//! compares two labelings.
//!
//! Everything is deterministic for a given seed, whatever the number of threads: parallel loops
//! reduce over fixed-size chunks of rows and add the partial results in chunk order.
//!
//! Our own code rather than linfa's because profiles need decayed and streaming updates.

mod kernel;
mod lloyd;
mod matrix;
mod score;

use std::ops::RangeInclusive;

use ahash::AHashSet;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use matrix::Matrix;
pub use score::{adjusted_rand_index, silhouette};

/// What is wrong with the input to [`fit`] or [`choose_k`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KMeansError {
    #[error("no rows to cluster")]
    NoRows,
    #[error("rows have zero dimensions")]
    NoDims,
    #[error("k must be at least 1")]
    ZeroK,
    #[error("k = {k} clusters but only {rows} rows")]
    TooFewRows { k: usize, rows: usize },
    #[error("matrix shape is {rows} rows × {dims} dims but it holds {values} values")]
    ShapeMismatch {
        rows: usize,
        dims: usize,
        values: usize,
    },
    #[error("row {row} has {len} values, rows have {dims} dims")]
    RowLength { row: usize, len: usize, dims: usize },
    #[error("row {row}, column {column}: value {value} is not finite")]
    NonFinite {
        row: usize,
        column: usize,
        value: f32,
    },
    #[error("no usable candidate k in {start}..={end} (k starts at 1)")]
    NoCandidates { start: usize, end: usize },
}

/// Settings for [`fit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KMeansConfig {
    /// Number of clusters.
    pub k: usize,
    /// Independent k-means++ seedings tried on the sample; the lowest inertia wins. 0 acts as 1.
    pub restarts: usize,
    /// Most centroid updates per run.
    pub max_iter: usize,
    /// Stop when inertia changes by less than this fraction between iterations (or when no
    /// row changes cluster). Restarts on the sample use `tol / 100`, see [`fit`].
    pub tol: f64,
    pub seed: u64,
    /// Restarts run on a random sample of this many rows (all rows if there are fewer, or if 0);
    /// the best seeding is then refined on all rows.
    pub restart_sample: usize,
}

impl Default for KMeansConfig {
    fn default() -> Self {
        KMeansConfig {
            k: 8,
            restarts: 4,
            max_iter: 100,
            tol: 1e-4,
            seed: 0,
            restart_sample: 100_000,
        }
    }
}

/// The clustering [`fit`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansResult {
    /// `k × dims`.
    pub centroids: Matrix,
    /// Index of the nearest centroid, per row.
    pub assignments: Vec<u32>,
    /// Σ over all rows of the squared distance to the assigned centroid.
    pub inertia: f64,
    /// Centroid updates in the final run on all rows.
    pub iterations: usize,
    /// Rows per cluster. A cluster can only be empty when there are fewer distinct rows than k.
    pub counts: Vec<u64>,
}

/// Restarts on the sample stop at `tol` times this.
const RESTART_TOL_FACTOR: f64 = 1e-2;

/// Clusters the rows of `data` into `cfg.k` clusters.
///
/// `cfg.restarts` k-means++ seedings are each run to near-convergence (`tol / 100`) on a random
/// sample of `cfg.restart_sample` rows; the one with the lowest inertia is refined on all rows
/// until the relative inertia change is below `cfg.tol`, no row changes cluster, or
/// `cfg.max_iter` updates. The result is the same for a given seed on any number of threads.
pub fn fit(data: &Matrix, cfg: &KMeansConfig) -> Result<KMeansResult, KMeansError> {
    validate(data)?;
    if cfg.k == 0 {
        return Err(KMeansError::ZeroK);
    }
    if cfg.k > data.rows {
        return Err(KMeansError::TooFewRows {
            k: cfg.k,
            rows: data.rows,
        });
    }

    // Restarts on a sample (never fewer rows than clusters); None means "all rows".
    let sample_size = match cfg.restart_sample {
        0 => data.rows,
        s => s.max(cfg.k),
    };
    let sample = sample_rows(data, sample_size, cfg.seed).map(|(m, _)| m);
    let on = sample.as_ref().unwrap_or(data);
    let restart = |r: usize| {
        let mut rng = rng_for(cfg.seed, 1 + r as u64);
        let init = lloyd::seed_plus_plus(on, cfg.k, &mut rng);
        // Restarts are compared at (near) convergence: stopped at `tol`, a restart that is
        // still migrating a centroid between clusters can look better or worse than it ends up
        // (seen on skewed mixtures: 2.7% worse inertia). On the sample the extra iterations
        // are cheap.
        lloyd::lloyd(on, init, cfg.max_iter, cfg.tol * RESTART_TOL_FACTOR)
    };
    let mut run = restart(0);
    for r in 1..cfg.restarts {
        let other = restart(r);
        if other.inertia < run.inertia {
            run = other;
        }
    }
    if sample.is_some() {
        run = lloyd::lloyd(data, run.centroids, cfg.max_iter, cfg.tol);
    }

    let mut counts = vec![0u64; cfg.k];
    for &a in &run.labels {
        counts[a as usize] += 1;
    }
    Ok(KMeansResult {
        centroids: run.centroids,
        assignments: run.labels,
        inertia: run.inertia,
        iterations: run.iterations,
        counts,
    })
}

/// Nearest centroid of every row, and the squared distance to it. Parallel over rows.
///
/// # Panics
/// If `centroids` has no rows or a different number of dims than `data`, or `data.data` does
/// not hold `rows × dims` values: centroids come from [`fit`], so these are bugs, not bad data.
pub fn assign(data: &Matrix, centroids: &Matrix) -> (Vec<u32>, Vec<f32>) {
    if let Err(e) = data.check_shape() {
        panic!("kmeans::assign: {e}");
    }
    check_centroids(data.dims, centroids);
    if data.dims == 0 {
        return (vec![0; data.rows], vec![0.0; data.rows]);
    }
    lloyd::assign(data, centroids)
}

/// Index of the nearest centroid to `row`, and the squared distance to it. Ties go to the
/// lower index.
///
/// # Panics
/// If `centroids` has no rows or `row.len() != centroids.dims`.
pub fn nearest(row: &[f32], centroids: &Matrix) -> (usize, f32) {
    check_centroids(row.len(), centroids);
    if row.is_empty() {
        return (0, 0.0);
    }
    let (j, d) = kernel::nearest_one(row, &centroids.data);
    (j as usize, d)
}

/// The number of clusters [`choose_k`] settled on, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KChoice {
    pub k: usize,
    /// Mean silhouette per candidate k that could be scored, in increasing k.
    pub scores: Vec<(usize, f64)>,
    /// One sentence for humans, e.g. "k=7 has the highest silhouette (0.61) among k=2..16 on
    /// a 3000-row sample".
    pub reason: String,
}

/// Picks k from `candidates` by mean silhouette: draws `sample` rows, fits each candidate k on
/// them (with `cfg`, whose `k` is ignored) and scores the fit on the same rows. The highest
/// score wins; ties go to the smaller k.
///
/// The silhouette is undefined for k = 1, so k = 1 is chosen only when nothing else can be: all
/// sampled rows identical, or a candidate range of just 1. Candidates above the number of
/// distinct sampled rows are skipped; if that leaves none, k is that number of distinct rows.
/// `sample` is at least 2. Pairwise distances are computed once (`sample² × dims`) and kept
/// for up to 4096 rows (64 MiB), then each candidate costs a fit plus `sample²` additions; keep
/// `sample` to a few thousand.
pub fn choose_k(
    data: &Matrix,
    candidates: RangeInclusive<usize>,
    sample: usize,
    cfg: &KMeansConfig,
) -> Result<KChoice, KMeansError> {
    validate(data)?;
    let (start, end) = (*candidates.start(), *candidates.end());
    if end == 0 || start > end {
        return Err(KMeansError::NoCandidates { start, end });
    }
    let picked = sample_rows(data, sample.max(2), cfg.seed).map(|(m, _)| m);
    let rows = picked.as_ref().unwrap_or(data);
    let on = match &picked {
        Some(_) => format!("on a {}-row sample", rows.rows),
        None => format!("on all {} rows", rows.rows),
    };
    let distinct = distinct_rows(rows, end);

    if distinct == 1 {
        let reason = format!("all rows are identical {on}, so there is one cluster");
        return Ok(one_cluster(reason));
    }
    let scored = start.max(2)..=end.min(distinct);
    // Distances between sampled rows do not depend on k: compute them once for all candidates.
    let pairs = match scored.is_empty() {
        true => score::Pairs::on_the_fly(rows),
        false => score::Pairs::tabulated(rows),
    };
    let mut scores = Vec::new();
    for k in scored.clone() {
        let cfg = KMeansConfig {
            k,
            restart_sample: rows.rows,
            ..cfg.clone()
        };
        let fitted = fit(rows, &cfg)?;
        let labels: Vec<usize> = fitted.assignments.iter().map(|&a| a as usize).collect();
        scores.push((k, score::silhouette_of_all(&pairs, &labels, k)));
    }

    let skipped = if end > distinct {
        format!("; k above {distinct} skipped: the sample has only {distinct} distinct rows")
    } else {
        String::new()
    };
    let Some(&(k, best)) = scores
        .iter()
        .fold(None, |best: Option<&(usize, f64)>, s| match best {
            Some(b) if b.1 >= s.1 => Some(b),
            _ => Some(s),
        })
    else {
        if end == 1 {
            return Ok(one_cluster(format!("k=1 is the only candidate{skipped}")));
        }
        // Every candidate exceeds the number of distinct rows: one cluster per distinct row.
        return Ok(KChoice {
            k: distinct,
            scores,
            reason: format!(
                "the sample has only {distinct} distinct rows, fewer than the smallest candidate \
                 k={start}, so k={distinct} ({} rows sampled)",
                rows.rows
            ),
        });
    };
    let range = format!("k={}..{}", scored.start(), scored.end());
    Ok(KChoice {
        k,
        reason: format!("k={k} has the highest silhouette ({best:.2}) among {range} {on}{skipped}"),
        scores,
    })
}

fn one_cluster(reason: String) -> KChoice {
    KChoice {
        k: 1,
        scores: Vec::new(),
        reason,
    }
}

/// Checks shape, emptiness and finiteness; names the first bad value.
fn validate(data: &Matrix) -> Result<(), KMeansError> {
    data.check_shape()?;
    if data.rows == 0 {
        return Err(KMeansError::NoRows);
    }
    if data.dims == 0 {
        return Err(KMeansError::NoDims);
    }
    // Chunk by chunk: a per-value `position_first` costs more than a whole Lloyd iteration.
    // The non-short-circuiting fold vectorises; only a chunk that fails is searched again.
    let block = lloyd::CHUNK_ROWS * data.dims;
    let bad_chunk = data
        .data
        .par_chunks(block)
        .position_first(|chunk| chunk.iter().fold(false, |bad, v| bad | !v.is_finite()));
    let Some(chunk) = bad_chunk else {
        return Ok(());
    };
    let first = data.data[chunk * block..]
        .iter()
        .position(|v| !v.is_finite())
        .map_or(chunk * block, |i| chunk * block + i);
    Err(KMeansError::NonFinite {
        row: first / data.dims,
        column: first % data.dims,
        value: data.data[first],
    })
}

fn check_centroids(dims: usize, centroids: &Matrix) {
    assert!(centroids.rows > 0, "no centroids to compare against");
    if let Err(e) = centroids.check_shape() {
        panic!("centroids: {e}");
    }
    assert_eq!(
        dims, centroids.dims,
        "rows have {dims} dims but centroids have {}",
        centroids.dims
    );
}

/// Number of distinct rows (bitwise, with -0.0 = 0.0), counting no further than `cap + 1`.
fn distinct_rows(data: &Matrix, cap: usize) -> usize {
    let mut seen = AHashSet::new();
    for i in 0..data.rows {
        let key: Vec<u32> = data.row(i).iter().map(|&v| (v + 0.0).to_bits()).collect();
        seen.insert(key);
        if seen.len() > cap {
            break;
        }
    }
    seen.len()
}

/// `size` distinct rows drawn at random (in their original order), with their indices, or None
/// when `size` covers all rows.
pub(crate) fn sample_rows(data: &Matrix, size: usize, seed: u64) -> Option<(Matrix, Vec<usize>)> {
    if size >= data.rows {
        return None;
    }
    let mut rng = rng_for(seed, 0);
    let mut idx = rand::seq::index::sample(&mut rng, data.rows, size).into_vec();
    // Sorted, the copy streams through memory instead of jumping about.
    idx.sort_unstable();
    let mut m = Matrix::with_capacity(size, data.dims);
    for &i in &idx {
        m.push(data.row(i));
    }
    Some((m, idx))
}

/// An independent random stream per purpose (0: row sample, 1..: restarts) from one seed.
fn rng_for(seed: u64, stream: u64) -> StdRng {
    // splitmix64 finaliser, so neighbouring seeds and streams give unrelated generators.
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

#[cfg(test)]
mod tests;
