//! Distance kernels: the inner loops every other part of k-means spends its time in.
//!
//! LLVM will not reassociate a floating-point sum (that would change the result), so a loop
//! with one accumulator runs at one add per add-latency. Both kernels here keep 8 independent
//! accumulators in a fixed-size array, which LLVM maps onto SIMD registers lane by lane; the
//! lanes are combined in a fixed order, so results do not depend on the machine.
//!
//! * [`sq_dist`] compares one row with one centroid (8 dims per step).
//! * [`Blocked`] compares rows with all centroids at once: centroids are stored in groups of
//!   8, dimension-major, so one step takes one dim of a row against 8 centroids. There is no
//!   horizontal sum at the end, and two rows share each centroid load. This is the assignment
//!   step's kernel. Measured single-threaded on 48 dims, k = 12 (2-core EPYC VM, best of
//!   three): 85 ns per row with the 12 centroids padded to 16, against 112 ns for the best
//!   `sq_dist`-per-centroid loop and 161 ns for a first version whose lane sum was a tree
//!   (LLVM then chose 2-wide vectors).
//!
//! The form is Σ(x − c)², not ‖x‖² − 2x·c + ‖c‖² (half the arithmetic, as BLAS-based k-means
//! uses): the latter cancels catastrophically in f32 when points sit far from the origin, and
//! Hamerly's bounds need distances that are right, not just the right argmin.

/// Independent accumulators per kernel: two SSE or one AVX register of f32.
const LANES: usize = 8;

/// Squared Euclidean distance between two equally long rows.
#[inline]
pub(crate) fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        // Fixed-size arrays tell LLVM the trip count; a slice zip vectorises less well.
        let (Ok(x), Ok(y)) = (<&[f32; LANES]>::try_from(x), <&[f32; LANES]>::try_from(y)) else {
            continue; // unreachable: chunks_exact yields LANES-long chunks
        };
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            let d = x - y;
            *s += d * d;
        }
    }
    // A plain left-to-right sum: a tree here makes LLVM pick 2-wide vectors for the loop.
    let mut sum = 0.0f32;
    for s in acc {
        sum += s;
    }
    for (&x, &y) in ta.iter().zip(tb) {
        let d = x - y;
        sum += d * d;
    }
    sum
}

/// Centroids laid out for comparing a row with all of them at once (see the module docs).
pub(crate) struct Blocked {
    k: usize,
    dims: usize,
    /// Group `g`, dim `i`: `lanes[g * dims + i][l]` is dim `i` of centroid `g * LANES + l`.
    /// Padding lanes past `k` are zero and their distances ignored.
    lanes: Vec<[f32; LANES]>,
}

impl Blocked {
    /// `centroids` is a flat row-major `k × dims` buffer; `dims > 0`.
    pub(crate) fn new(centroids: &[f32], dims: usize) -> Self {
        let k = centroids.len() / dims;
        let mut lanes = vec![[0.0f32; LANES]; k.div_ceil(LANES) * dims];
        for (j, c) in centroids.chunks_exact(dims).enumerate() {
            for (i, &v) in c.iter().enumerate() {
                lanes[(j / LANES) * dims + i][j % LANES] = v;
            }
        }
        Blocked { k, dims, lanes }
    }

    /// Length of the buffers [`Self::distances`] and [`Self::distances2`] fill: `k` rounded up
    /// to a multiple of 8.
    pub(crate) fn padded(&self) -> usize {
        self.lanes.len() / self.dims * LANES
    }

    /// Squared distances from `row` to every centroid, into `out[..k]`.
    #[inline]
    pub(crate) fn distances(&self, row: &[f32], out: &mut [f32]) {
        for (group, out) in self
            .lanes
            .chunks_exact(self.dims)
            .zip(out.chunks_exact_mut(LANES))
        {
            let mut acc = [0.0f32; LANES];
            for (&x, c) in row.iter().zip(group) {
                for (s, &c) in acc.iter_mut().zip(c) {
                    let d = x - c;
                    *s += d * d;
                }
            }
            out.copy_from_slice(&acc);
        }
    }

    /// [`Self::distances`] for two rows at once: each centroid load serves both, and the two
    /// sets of accumulators keep twice as many additions in flight.
    #[inline]
    pub(crate) fn distances2(&self, rows: [&[f32]; 2], out: [&mut [f32]; 2]) {
        let [r0, r1] = rows;
        let [o0, o1] = out;
        let groups = self.lanes.chunks_exact(self.dims);
        for ((group, o0), o1) in groups
            .zip(o0.chunks_exact_mut(LANES))
            .zip(o1.chunks_exact_mut(LANES))
        {
            let mut a0 = [0.0f32; LANES];
            let mut a1 = [0.0f32; LANES];
            for ((&x0, &x1), c) in r0.iter().zip(r1).zip(group) {
                for (s, &c) in a0.iter_mut().zip(c) {
                    let d = x0 - c;
                    *s += d * d;
                }
                for (s, &c) in a1.iter_mut().zip(c) {
                    let d = x1 - c;
                    *s += d * d;
                }
            }
            o0.copy_from_slice(&a0);
            o1.copy_from_slice(&a1);
        }
    }
}

/// Nearest and second-nearest of the first `k` distances: `(index, best, second)`; `second`
/// is infinite when `k == 1`. Ties go to the lower index.
#[inline]
pub(crate) fn two_smallest(d: &[f32]) -> (u32, f32, f32) {
    let mut best = (0u32, f32::INFINITY);
    let mut second = f32::INFINITY;
    for (j, &d) in d.iter().enumerate() {
        if d < best.1 {
            second = best.1;
            best = (j as u32, d);
        } else if d < second {
            second = d;
        }
    }
    (best.0, best.1, second)
}

/// Nearest of the first `k` distances: `(index, distance)`, ties to the lower index.
#[inline]
pub(crate) fn smallest(d: &[f32]) -> (u32, f32) {
    let mut best = (0u32, f32::INFINITY);
    for (j, &d) in d.iter().enumerate() {
        if d < best.1 {
            best = (j as u32, d);
        }
    }
    best
}

/// Nearest centroid of one row, without building a [`Blocked`] (the per-request path).
/// Sums each distance over dims in order, as [`Blocked`] does per lane, so the answer is
/// bit-for-bit the one the assignment step gives.
#[inline]
pub(crate) fn nearest_one(row: &[f32], centroids: &[f32]) -> (u32, f32) {
    let mut best = (0u32, f32::INFINITY);
    for (j, c) in centroids.chunks_exact(row.len()).enumerate() {
        let mut d = 0.0f32;
        for (&x, &c) in row.iter().zip(c) {
            let t = x - c;
            d += t * t;
        }
        if d < best.1 {
            best = (j as u32, d);
        }
    }
    best
}

/// Calls `f(i, distances from row i to every centroid)` for each `i` in `which` (indices into
/// the row-major buffer `rows`), two rows at a time. `scratch` holds `2 * blocked.padded()`.
#[inline]
pub(crate) fn for_rows(
    rows: &[f32],
    which: impl Iterator<Item = usize>,
    blocked: &Blocked,
    scratch: &mut [f32],
    mut f: impl FnMut(usize, &[f32]),
) {
    let (dims, k, p) = (blocked.dims, blocked.k, blocked.padded());
    let (d0, d1) = scratch.split_at_mut(p);
    let row = |i: usize| &rows[i * dims..(i + 1) * dims];
    let mut which = which.peekable();
    while let Some(i) = which.next() {
        match which.next() {
            Some(j) => {
                blocked.distances2([row(i), row(j)], [&mut *d0, &mut *d1]);
                f(i, &d0[..k]);
                f(j, &d1[..k]);
            }
            None => {
                blocked.distances(row(i), d0);
                f(i, &d0[..k]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sq_dist_matches_naive_for_all_tail_lengths() {
        for dims in 0..40 {
            let a: Vec<f32> = (0..dims).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..dims).map(|i| (i * i) as f32 * 0.01).collect();
            let naive: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| f64::from(x - y).powi(2))
                .sum();
            let fast = f64::from(sq_dist(&a, &b));
            assert!((naive - fast).abs() <= 1e-5 * naive.max(1.0), "dims {dims}");
        }
    }

    #[test]
    fn blocked_matches_sequential_sums_bit_for_bit() {
        for (k, dims) in [(1, 1), (3, 5), (8, 8), (12, 48), (17, 3)] {
            let c: Vec<f32> = (0..k * dims)
                .map(|i| ((i * 37) % 11) as f32 * 0.3 - 1.0)
                .collect();
            let rows: Vec<f32> = (0..5 * dims).map(|i| ((i * 13) % 7) as f32 * 0.7).collect();
            let blocked = Blocked::new(&c, dims);
            assert_eq!(blocked.padded(), k.div_ceil(8) * 8);
            let mut scratch = vec![0.0; 2 * blocked.padded()];
            let mut seen = Vec::new();
            for_rows(
                &rows,
                [4, 0, 2].into_iter(),
                &blocked,
                &mut scratch,
                |i, d| {
                    let x = &rows[i * dims..(i + 1) * dims];
                    assert_eq!(d.len(), k);
                    let (j, best) = smallest(d);
                    assert_eq!(nearest_one(x, &c), (j, best));
                    for (dj, cj) in d.iter().zip(c.chunks_exact(dims)) {
                        let naive: f64 = x
                            .iter()
                            .zip(cj)
                            .map(|(&a, &b)| f64::from(a - b).powi(2))
                            .sum();
                        assert!((f64::from(*dj) - naive).abs() <= 1e-5 * naive.max(1.0));
                    }
                    seen.push(i);
                },
            );
            assert_eq!(seen, [4, 0, 2]);
        }
    }

    #[test]
    fn smallest_two_orders_and_breaks_ties_low() {
        assert_eq!(two_smallest(&[3.0, 1.0, 1.0, 5.0]), (1, 1.0, 1.0));
        assert_eq!(two_smallest(&[2.0, 4.0, 3.0]), (0, 2.0, 3.0));
        let (j, d1, d2) = two_smallest(&[0.5]);
        assert_eq!((j, d1), (0, 0.5));
        assert!(d2.is_infinite());
        assert_eq!(smallest(&[4.0, 1.0, 1.0]), (1, 1.0));
    }
}
