//! k-means++ seeding and Lloyd's iterations, accelerated with Hamerly's bounds.
//!
//! Hamerly (2010) keeps, per row, an upper bound on the distance to its own centroid and a
//! lower bound on the distance to every other centroid. When centroids move, the bounds move by
//! at most the distance the centroids moved (triangle inequality), and a row whose upper bound
//! is still below `max(lower, half the gap from its centroid to the nearest other centroid)`
//! cannot change cluster, so it is skipped without computing any distance. After the first few
//! iterations nearly every row is skipped, which is what makes 100 iterations over a million
//! rows affordable. The answer is the same as plain Lloyd's; only the work differs.
//!
//! Determinism: every parallel loop works on fixed chunks of [`CHUNK_ROWS`] rows, and partial
//! sums are combined in chunk order, so results are bit-identical for any number of threads.

use rand::Rng;
use rand::rngs::StdRng;
use rayon::prelude::*;

use super::Matrix;
use super::kernel::{Blocked, for_rows, smallest, sq_dist, two_smallest};

/// Rows per parallel task. A constant, never derived from the thread count (see module docs).
pub(crate) const CHUNK_ROWS: usize = 4096;

/// The outcome of one k-means run on one matrix.
pub(crate) struct Run {
    pub centroids: Matrix,
    pub labels: Vec<u32>,
    /// Σ of squared distances from each row to its nearest final centroid.
    pub inertia: f64,
    /// Centroid updates performed.
    pub iterations: usize,
}

/// Local trials per greedy k-means++ step. scikit-learn uses 2 + ln k (4 for k = 12). On a
/// skewed 12-cluster mixture with 2% background noise (the `kmeans` bench data), 4 trials put
/// a restart in the best basin 5 times in 24 and best-of-4 restarts missed it for half the
/// seeds; 16 trials did 21 in 32 and never missed. The seeding sample pays for the extra work.
fn local_trials(k: usize) -> usize {
    16.max(2 + (k as f64).ln().floor() as usize)
}

/// Rows k-means++ looks at: a seeding only has to land near the clusters, which a few
/// thousand rows show as well as a hundred thousand, at a tenth of the cost.
fn seeding_rows(k: usize) -> usize {
    10_000.max(100 * k)
}

/// Greedy k-means++ (Arthur & Vassilvitskii 2007; the greedy variant scikit-learn uses): each
/// new centroid is the best, by resulting inertia, of [`local_trials`] rows drawn with
/// probability proportional to their squared distance from the nearest centroid so far.
/// Runs on a random subset of [`seeding_rows`] rows when `data` is larger.
pub(crate) fn seed_plus_plus(data: &Matrix, k: usize, rng: &mut StdRng) -> Matrix {
    let rows = seeding_rows(k);
    if data.rows <= rows {
        return greedy_plus_plus(data, k, rng);
    }
    let mut idx = rand::seq::index::sample(rng, data.rows, rows).into_vec();
    idx.sort_unstable();
    let mut subset = Matrix::with_capacity(rows, data.dims);
    for &i in &idx {
        subset.push(data.row(i));
    }
    greedy_plus_plus(&subset, k, rng)
}

fn greedy_plus_plus(data: &Matrix, k: usize, rng: &mut StdRng) -> Matrix {
    let (n, dims) = (data.rows, data.dims);
    let trials = local_trials(k);
    let mut centroids = Matrix::with_capacity(k, dims);
    let first = data.row(rng.random_range(0..n));
    centroids.push(first);
    let mut closest: Vec<f32> = data
        .data
        .par_chunks(dims)
        .map(|row| sq_dist(row, first))
        .collect();
    let mut cumulative = vec![0.0f64; n];
    let mut cand_dist = vec![0.0f32; n * trials];

    while centroids.rows < k {
        let mut total = 0.0f64;
        for (c, &d) in cumulative.iter_mut().zip(&closest) {
            total += f64::from(d);
            *c = total;
        }
        let candidates: Vec<&[f32]> = (0..trials)
            .map(|_| {
                let i = if total > 0.0 && total.is_finite() {
                    let r = rng.random::<f64>() * total;
                    cumulative.partition_point(|&c| c <= r).min(n - 1)
                } else {
                    // Every row sits on a centroid already: any row is as good as another.
                    rng.random_range(0..n)
                };
                data.row(i)
            })
            .collect();

        // Inertia if each candidate were added, all candidates in one pass over the data;
        // the distances are kept so the winner's need not be computed again.
        let t = candidates.len();
        let partials: Vec<Vec<f64>> = data
            .data
            .par_chunks(CHUNK_ROWS * dims)
            .zip(closest.par_chunks(CHUNK_ROWS))
            .zip(cand_dist.par_chunks_mut(CHUNK_ROWS * t))
            .map(|((rows, closest), cand_dist)| {
                let mut pot = vec![0.0f64; t];
                let per_row = rows
                    .chunks_exact(dims)
                    .zip(closest)
                    .zip(cand_dist.chunks_exact_mut(t));
                for ((row, &near), dists) in per_row {
                    for ((p, cand), d) in pot.iter_mut().zip(&candidates).zip(dists) {
                        *d = near.min(sq_dist(row, cand));
                        *p += f64::from(*d);
                    }
                }
                pot
            })
            .collect();
        let mut pots = vec![0.0f64; t];
        for part in &partials {
            for (p, q) in pots.iter_mut().zip(part) {
                *p += q;
            }
        }
        let mut best = 0;
        for (i, &p) in pots.iter().enumerate() {
            if p < pots[best] {
                best = i;
            }
        }
        let chosen = candidates[best];
        for (c, dists) in closest.iter_mut().zip(cand_dist.chunks_exact(t)) {
            *c = dists[best];
        }
        centroids.push(chosen);
    }
    centroids
}

/// Lloyd's iterations from `init` until the relative change in inertia drops below `tol`, no
/// row changes cluster, or `max_iter` centroid updates have been made. Requires
/// `data.dims > 0` and `init.rows >= 1`.
pub(crate) fn lloyd(data: &Matrix, init: Matrix, max_iter: usize, tol: f64) -> Run {
    let (n, k) = (data.rows, init.rows);
    // Inertia = Σ‖x‖² − Σ_j (2 c_j·S_j − n_j‖c_j‖²), where S_j and n_j are the sum and count of
    // cluster j. Σ‖x‖² is fixed, so inertia per iteration costs O(k·dims), not a pass.
    let total_sq = ordered_sum(&data.data, data.dims, sq_norm);
    let mut c = init;
    let mut labels = vec![0u32; n];
    let mut upper = vec![0.0f32; n];
    let mut lower = vec![0.0f32; n];
    let mut stats = full_pass(data, &c, &mut labels, &mut upper, &mut lower);
    let mut prev = stats.inertia(&c, total_sq);
    let mut iterations = 0;

    while iterations < max_iter {
        iterations += 1;
        let relocated = relocate_empty(data, &c, &mut labels, &mut stats);
        let next = stats.means(&c);
        if relocated {
            // Moved rows invalidate their bounds; rebuild all of them (rare).
            c = next;
            stats = full_pass(data, &c, &mut labels, &mut upper, &mut lower);
        } else {
            let shift: Vec<f32> = (0..k)
                .map(|j| sq_dist(c.row(j), next.row(j)).sqrt())
                .collect();
            c = next;
            match hamerly_pass(data, &c, &shift, &mut labels, &mut upper, &mut lower) {
                Some(delta) => stats.merge(&delta),
                // No row changed cluster: the next means would be these centroids again.
                None => break,
            }
        }
        let cur = stats.inertia(&c, total_sq);
        // NaN (from values so large their squares overflow) stops rather than spins.
        let converged = prev.is_nan() || prev <= 0.0 || ((prev - cur) / prev).abs() < tol;
        prev = cur;
        if converged {
            break;
        }
    }

    // Hamerly's labels are the nearest centroids up to f32 rounding in the bounds; one plain
    // pass makes them exactly what `assign` and `nearest` say, and gives the exact inertia.
    let (labels, dists) = assign(data, &c);
    let parts: Vec<f64> = dists
        .par_chunks(CHUNK_ROWS)
        .map(|d| d.iter().map(|&d| f64::from(d)).sum::<f64>())
        .collect();
    Run {
        centroids: c,
        labels,
        inertia: parts.iter().sum(),
        iterations,
    }
}

/// Nearest centroid of every row and the squared distance to it (see `kmeans::assign`).
/// Requires `data.dims > 0` and `c.dims == data.dims`.
pub(crate) fn assign(data: &Matrix, c: &Matrix) -> (Vec<u32>, Vec<f32>) {
    let dims = data.dims;
    let blocked = Blocked::new(&c.data, dims);
    let mut labels = vec![0u32; data.rows];
    let mut dists = vec![0.0f32; data.rows];
    data.data
        .par_chunks(CHUNK_ROWS * dims)
        .zip(labels.par_chunks_mut(CHUNK_ROWS))
        .zip(dists.par_chunks_mut(CHUNK_ROWS))
        .for_each(|((rows, labels), dists)| {
            let mut scratch = vec![0.0f32; 2 * blocked.padded()];
            let all = 0..labels.len();
            for_rows(rows, all, &blocked, &mut scratch, |i, d| {
                (labels[i], dists[i]) = smallest(d);
            });
        });
    (labels, dists)
}

/// Sum, count per cluster: enough to compute means and inertia without another pass.
#[derive(Clone)]
struct Stats {
    dims: usize,
    sums: Vec<f64>,
    counts: Vec<i64>,
}

impl Stats {
    fn new(k: usize, dims: usize) -> Self {
        Stats {
            dims,
            sums: vec![0.0; k * dims],
            counts: vec![0; k],
        }
    }

    fn add(&mut self, j: usize, row: &[f32]) {
        for (s, &x) in self.sums[j * self.dims..(j + 1) * self.dims]
            .iter_mut()
            .zip(row)
        {
            *s += f64::from(x);
        }
        self.counts[j] += 1;
    }

    fn remove(&mut self, j: usize, row: &[f32]) {
        for (s, &x) in self.sums[j * self.dims..(j + 1) * self.dims]
            .iter_mut()
            .zip(row)
        {
            *s -= f64::from(x);
        }
        self.counts[j] -= 1;
    }

    fn merge(&mut self, other: &Stats) {
        for (s, o) in self.sums.iter_mut().zip(&other.sums) {
            *s += o;
        }
        for (c, o) in self.counts.iter_mut().zip(&other.counts) {
            *c += o;
        }
    }

    /// Cluster means; an empty cluster keeps its previous centroid.
    fn means(&self, prev: &Matrix) -> Matrix {
        let mut out = prev.clone();
        for (j, (&count, sums)) in self
            .counts
            .iter()
            .zip(self.sums.chunks_exact(self.dims))
            .enumerate()
        {
            if count > 0 {
                let inv = 1.0 / count as f64;
                for (o, &s) in out.data[j * self.dims..(j + 1) * self.dims]
                    .iter_mut()
                    .zip(sums)
                {
                    *o = (s * inv) as f32;
                }
            }
        }
        out
    }

    /// Inertia of the current assignment against centroids `c` (see [`lloyd`]).
    fn inertia(&self, c: &Matrix, total_sq: f64) -> f64 {
        let mut cross = 0.0;
        for (j, (&count, sums)) in self
            .counts
            .iter()
            .zip(self.sums.chunks_exact(self.dims))
            .enumerate()
        {
            let (mut dot, mut norm) = (0.0f64, 0.0f64);
            for (&s, &x) in sums.iter().zip(c.row(j)) {
                dot += s * f64::from(x);
                norm += f64::from(x) * f64::from(x);
            }
            cross += 2.0 * dot - count as f64 * norm;
        }
        (total_sq - cross).max(0.0)
    }
}

/// Assigns every row from scratch, setting exact bounds, and returns the cluster statistics.
fn full_pass(
    data: &Matrix,
    c: &Matrix,
    labels: &mut [u32],
    upper: &mut [f32],
    lower: &mut [f32],
) -> Stats {
    let dims = data.dims;
    let blocked = Blocked::new(&c.data, dims);
    let parts: Vec<Stats> = data
        .data
        .par_chunks(CHUNK_ROWS * dims)
        .zip(labels.par_chunks_mut(CHUNK_ROWS))
        .zip(upper.par_chunks_mut(CHUNK_ROWS))
        .zip(lower.par_chunks_mut(CHUNK_ROWS))
        .map(|(((rows, labels), upper), lower)| {
            let mut stats = Stats::new(c.rows, dims);
            let mut scratch = vec![0.0f32; 2 * blocked.padded()];
            let all = 0..labels.len();
            for_rows(rows, all, &blocked, &mut scratch, |i, d| {
                let (j, d1, d2) = two_smallest(d);
                labels[i] = j;
                upper[i] = d1.sqrt();
                lower[i] = d2.sqrt();
                stats.add(j as usize, &rows[i * dims..(i + 1) * dims]);
            });
            stats
        })
        .collect();
    let mut total = Stats::new(c.rows, dims);
    for part in &parts {
        total.merge(part);
    }
    total
}

/// One Hamerly assignment step after centroids moved by `shift`. Returns the change in cluster
/// statistics, or `None` if no row changed cluster.
fn hamerly_pass(
    data: &Matrix,
    c: &Matrix,
    shift: &[f32],
    labels: &mut [u32],
    upper: &mut [f32],
    lower: &mut [f32],
) -> Option<Stats> {
    let (dims, k) = (data.dims, c.rows);
    // Half the distance from each centroid to its nearest neighbour: a row closer than that to
    // its own centroid is closer to it than to any other.
    let half_gap: Vec<f32> = (0..k)
        .map(|j| {
            let nearest = (0..k)
                .filter(|&o| o != j)
                .map(|o| sq_dist(c.row(j), c.row(o)))
                .fold(f32::INFINITY, f32::min);
            0.5 * nearest.sqrt()
        })
        .collect();
    // The lower bound covers all other centroids, so it drops by the largest shift among them.
    let (mut top, mut top_at, mut second) = (0.0f32, usize::MAX, 0.0f32);
    for (j, &s) in shift.iter().enumerate() {
        if s > top {
            (second, top, top_at) = (top, s, j);
        } else if s > second {
            second = s;
        }
    }

    let blocked = Blocked::new(&c.data, dims);
    let parts: Vec<Option<Stats>> = data
        .data
        .par_chunks(CHUNK_ROWS * dims)
        .zip(labels.par_chunks_mut(CHUNK_ROWS))
        .zip(upper.par_chunks_mut(CHUNK_ROWS))
        .zip(lower.par_chunks_mut(CHUNK_ROWS))
        .map(|(((rows, labels), upper), lower)| {
            // First the bounds, collecting the rows they cannot vouch for; then those rows
            // against all centroids, two at a time.
            let mut unsure = Vec::new();
            let per_row = rows
                .chunks_exact(dims)
                .zip(labels.iter())
                .zip(upper.iter_mut())
                .zip(lower.iter_mut());
            for (i, (((row, &label), up), lo)) in per_row.enumerate() {
                let a = label as usize;
                *up += shift[a];
                *lo -= if a == top_at { second } else { top };
                let bound = lo.max(half_gap[a]);
                if *up <= bound {
                    continue;
                }
                // The upper bound may just be loose: tighten it before scanning all centroids.
                *up = sq_dist(row, c.row(a)).sqrt();
                if *up > bound {
                    unsure.push(i);
                }
            }
            if unsure.is_empty() {
                return None;
            }
            let mut delta: Option<Stats> = None;
            let mut scratch = vec![0.0f32; 2 * blocked.padded()];
            for_rows(rows, unsure.into_iter(), &blocked, &mut scratch, |i, d| {
                let (j, d1, d2) = two_smallest(d);
                upper[i] = d1.sqrt();
                lower[i] = d2.sqrt();
                let a = labels[i] as usize;
                if j as usize != a {
                    labels[i] = j;
                    let row = &rows[i * dims..(i + 1) * dims];
                    let d = delta.get_or_insert_with(|| Stats::new(k, dims));
                    d.remove(a, row);
                    d.add(j as usize, row);
                }
            });
            delta
        })
        .collect();
    let mut total: Option<Stats> = None;
    for part in parts.iter().flatten() {
        match &mut total {
            Some(t) => t.merge(part),
            None => total = Some(part.clone()),
        }
    }
    total
}

/// Gives each empty cluster the row farthest from its centroid (as scikit-learn does), taking
/// that row out of its old cluster. Returns whether any row moved. Rows at distance zero are
/// never moved: with fewer distinct rows than clusters some clusters must stay empty.
fn relocate_empty(data: &Matrix, c: &Matrix, labels: &mut [u32], stats: &mut Stats) -> bool {
    let empty: Vec<usize> = (0..c.rows).filter(|&j| stats.counts[j] == 0).collect();
    if empty.is_empty() {
        return false;
    }
    let dist: Vec<f32> = data
        .data
        .par_chunks(data.dims)
        .zip(labels.par_iter())
        .map(|(row, &j)| sq_dist(row, c.row(j as usize)))
        .collect();
    // The `empty.len()` farthest rows, farthest first, ties to the lower index.
    let mut far: Vec<(f32, usize)> = Vec::with_capacity(empty.len() + 1);
    for (i, &d) in dist.iter().enumerate() {
        if d > 0.0 && (far.len() < empty.len() || far.last().is_some_and(|&(f, _)| d > f)) {
            let at = far.partition_point(|&(f, _)| f >= d);
            far.insert(at, (d, i));
            far.truncate(empty.len());
        }
    }
    let mut moved = false;
    for (&j, &(_, i)) in empty.iter().zip(&far) {
        let from = labels[i] as usize;
        if stats.counts[from] <= 1 {
            continue; // would just empty another cluster
        }
        stats.remove(from, data.row(i));
        stats.add(j, data.row(i));
        labels[i] = j as u32;
        moved = true;
    }
    moved
}

/// Σ f(row) over all rows in f64, in chunk order (deterministic for any thread count).
fn ordered_sum(values: &[f32], dims: usize, f: impl Fn(&[f32]) -> f64 + Sync) -> f64 {
    let parts: Vec<f64> = values
        .par_chunks(CHUNK_ROWS * dims)
        .map(|rows| rows.chunks_exact(dims).map(&f).sum::<f64>())
        .collect();
    parts.iter().sum()
}

/// ‖row‖² in f64 with four independent accumulators (see `kernel` on why).
fn sq_norm(row: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let mut chunks = row.chunks_exact(4);
    for x in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(x) {
            *a += f64::from(v) * f64::from(v);
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum();
    (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail
}
