//! Clustering quality: the silhouette (to choose k) and the adjusted Rand index (to compare two
//! labelings, e.g. ours against scikit-learn's or against the truth in tests).

use ahash::AHashMap;
use rayon::prelude::*;

use super::kernel::sq_dist;
use super::{Matrix, sample_rows};

/// Mean silhouette of `sample` rows drawn at random (seeded by `seed`); all distances are
/// computed within the sample, so the cost is `sample² · dims`. Keep `sample` to a few thousand.
///
/// Follows scikit-learn's `silhouette_score`: Euclidean distances, and a row alone in its
/// cluster (within the sample) scores 0. Returns 0.0 when the sample holds fewer than two rows
/// or fewer than two clusters (the silhouette is undefined there), and NaN when the input is
/// inconsistent: `assignments.len() != data.rows`, a label `>= k`, or a malformed matrix.
pub fn silhouette(data: &Matrix, assignments: &[u32], k: usize, sample: usize, seed: u64) -> f64 {
    if data.check_shape().is_err()
        || assignments.len() != data.rows
        || assignments.iter().any(|&a| a as usize >= k)
    {
        return f64::NAN;
    }
    let picked = sample_rows(data, sample, seed);
    let labels: Vec<usize> = match &picked {
        Some((_, idx)) => idx.iter().map(|&i| assignments[i] as usize).collect(),
        None => assignments.iter().map(|&a| a as usize).collect(),
    };
    let rows = picked.as_ref().map_or(data, |(m, _)| m);
    silhouette_of_all(&Pairs::on_the_fly(rows), &labels, k)
}

/// Euclidean distances between the rows of a matrix: kept in a table when several labelings
/// of the same rows are scored (as `choose_k` does, once per candidate k), else computed as
/// needed.
pub(crate) struct Pairs<'a> {
    data: &'a Matrix,
    /// `rows × rows`, row-major, when kept.
    table: Option<Vec<f32>>,
}

impl<'a> Pairs<'a> {
    /// Most rows whose table is kept: 4096² f32 is 64 MiB.
    const MAX_TABLE_ROWS: usize = 4096;

    pub(crate) fn on_the_fly(data: &'a Matrix) -> Self {
        Pairs { data, table: None }
    }

    /// Computes the table now, unless it would exceed [`Self::MAX_TABLE_ROWS`] rows.
    pub(crate) fn tabulated(data: &'a Matrix) -> Self {
        let n = data.rows;
        if n > Self::MAX_TABLE_ROWS {
            return Self::on_the_fly(data);
        }
        let mut table = vec![0.0f32; n * n];
        table
            .par_chunks_mut(n.max(1))
            .enumerate()
            .for_each(|(i, out)| Self::compute_row(data, i, out));
        Pairs {
            data,
            table: Some(table),
        }
    }

    fn compute_row(data: &Matrix, i: usize, out: &mut [f32]) {
        let x = data.row(i);
        for (j, d) in out.iter_mut().enumerate() {
            *d = sq_dist(x, data.row(j)).sqrt();
        }
    }

    /// Calls `f` with the distances from row `i` to every row.
    fn with_row<R>(&self, i: usize, f: impl FnOnce(&[f32]) -> R) -> R {
        let n = self.data.rows;
        match &self.table {
            Some(t) => f(&t[i * n..(i + 1) * n]),
            None => {
                let mut row = vec![0.0f32; n];
                Self::compute_row(self.data, i, &mut row);
                f(&row)
            }
        }
    }
}

/// Mean silhouette over every row (labels already validated, all `< k`).
pub(crate) fn silhouette_of_all(pairs: &Pairs<'_>, labels: &[usize], k: usize) -> f64 {
    let n = pairs.data.rows;
    let mut sizes = vec![0usize; k];
    for &l in labels {
        sizes[l] += 1;
    }
    if n < 2 || sizes.iter().filter(|&&s| s > 0).count() < 2 {
        return 0.0;
    }
    let scores: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|i| {
            let own = labels[i];
            if sizes[own] < 2 {
                return 0.0;
            }
            // Row i's distance to itself is 0, so it adds nothing to its own cluster's sum.
            let mut sums = vec![0.0f64; k];
            pairs.with_row(i, |dists| {
                for (&l, &d) in labels.iter().zip(dists) {
                    sums[l] += f64::from(d);
                }
            });
            let a = sums[own] / (sizes[own] - 1) as f64;
            let b = (0..k)
                .filter(|&c| c != own && sizes[c] > 0)
                .map(|c| sums[c] / sizes[c] as f64)
                .fold(f64::INFINITY, f64::min);
            let denom = a.max(b);
            if denom > 0.0 { (b - a) / denom } else { 0.0 }
        })
        .collect();
    scores.iter().sum::<f64>() / n as f64
}

/// Adjusted Rand index of two labelings of the same rows (Hubert & Arabie 1985), computed as
/// scikit-learn's `adjusted_rand_score` does, from the pair confusion matrix: 1.0 for
/// identical partitions (whatever the label names), about 0.0 for independent ones, negative
/// for worse than chance. Returns NaN if the lengths differ.
pub fn adjusted_rand_index(a: &[u32], b: &[u32]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    let mut cells: AHashMap<(u32, u32), i128> = AHashMap::new();
    let mut rows: AHashMap<u32, i128> = AHashMap::new();
    let mut cols: AHashMap<u32, i128> = AHashMap::new();
    for (&x, &y) in a.iter().zip(b) {
        *cells.entry((x, y)).or_default() += 1;
        *rows.entry(x).or_default() += 1;
        *cols.entry(y).or_default() += 1;
    }
    // i128: the products below reach n⁴, beyond u64 for a few hundred thousand rows.
    let n = a.len() as i128;
    let sum_sq = |counts: &mut dyn Iterator<Item = &i128>| counts.map(|&c| c * c).sum::<i128>();
    let cells_sq = sum_sq(&mut cells.values());
    let rows_sq = sum_sq(&mut rows.values());
    let cols_sq = sum_sq(&mut cols.values());
    // Ordered pairs: together in both, in a only, in b only, apart in both.
    let tp = cells_sq - n;
    let fp = cols_sq - cells_sq;
    let fn_ = rows_sq - cells_sq;
    let tn = n * n - fp - fn_ - cells_sq;
    if fp == 0 && fn_ == 0 {
        return 1.0;
    }
    let num = 2 * (tp * tn - fn_ * fp);
    let den = (tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn);
    num as f64 / den as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ari_matches_scikit_learn_examples() {
        assert_eq!(adjusted_rand_index(&[0, 0, 1, 1], &[0, 0, 1, 1]), 1.0);
        assert_eq!(adjusted_rand_index(&[0, 0, 1, 1], &[1, 1, 0, 0]), 1.0);
        // scikit-learn 1.9 prints 0.5714285714285714 (= 4/7 rounded); its older docs, from
        // a formula with a different rounding, show 0.5714285714285715.
        assert_eq!(
            adjusted_rand_index(&[0, 0, 1, 2], &[0, 0, 1, 1]),
            0.5714285714285714
        );
        assert_eq!(
            adjusted_rand_index(&[0, 0, 1, 1], &[0, 0, 1, 2]),
            0.5714285714285714
        );
        assert!(
            (adjusted_rand_index(&[0, 0, 1, 1], &[0, 0, 1, 2]) - 0.5714285714285715).abs() < 1e-15
        );
        assert_eq!(adjusted_rand_index(&[0, 0, 0, 0], &[0, 1, 2, 3]), 0.0);
        assert_eq!(adjusted_rand_index(&[0, 0, 1, 1], &[0, 1, 0, 1]), -0.5);
        // Both unsplit, or both all singletons: sklearn calls these perfect matches.
        assert_eq!(adjusted_rand_index(&[3, 3, 3], &[7, 7, 7]), 1.0);
        assert_eq!(adjusted_rand_index(&[0, 1, 2], &[5, 4, 3]), 1.0);
        assert_eq!(adjusted_rand_index(&[], &[]), 1.0);
        assert!(adjusted_rand_index(&[0, 1], &[0]).is_nan());
    }

    #[test]
    fn ari_large_labelings_do_not_overflow() {
        let a: Vec<u32> = (0..300_000u32).map(|i| i % 7).collect();
        let b: Vec<u32> = (0..300_000u32).map(|i| (i % 7 + 3) % 7).collect();
        assert_eq!(adjusted_rand_index(&a, &b), 1.0);
        let c: Vec<u32> = (0..300_000u32).map(|i| i % 5).collect();
        assert!(adjusted_rand_index(&a, &c).abs() < 1e-3);
    }

    #[test]
    fn silhouette_known_value() {
        // Two clusters on a line: {0, 1} and {10, 11}. For row 0: a = 1, b = (10 + 11) / 2.
        let data = Matrix::from_vec(4, 1, vec![0.0, 1.0, 10.0, 11.0]).expect("shape");
        let s = silhouette(&data, &[0, 0, 1, 1], 2, 100, 1);
        let expected = [
            1.0 - 1.0 / 10.5,
            1.0 - 1.0 / 9.5,
            1.0 - 1.0 / 9.5,
            1.0 - 1.0 / 10.5,
        ];
        let expected = expected.iter().sum::<f64>() / 4.0;
        assert!((s - expected).abs() < 1e-9, "{s} vs {expected}");
        let kept = silhouette_of_all(&Pairs::tabulated(&data), &[0, 0, 1, 1], 2);
        assert_eq!(kept, s);
    }

    #[test]
    fn silhouette_degenerate_and_bad_input() {
        let data = Matrix::from_vec(3, 1, vec![0.0, 1.0, 2.0]).expect("shape");
        assert_eq!(silhouette(&data, &[0, 0, 0], 1, 10, 1), 0.0);
        assert_eq!(silhouette(&data, &[0, 1, 0], 2, 1, 1), 0.0);
        assert!(silhouette(&data, &[0, 1], 2, 10, 1).is_nan());
        assert!(silhouette(&data, &[0, 1, 2], 2, 10, 1).is_nan());
    }
}
