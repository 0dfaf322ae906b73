//! k-means benchmarks on a synthetic mixture of Gaussians (1,000,000 × 48, 12 centres).
//!
//! Criterion:
//!     cargo bench -p umbra-learn --bench kmeans
//!
//! One plain timed run (no criterion), printing one JSON line; optionally writes the matrix as
//! .npy for `bench/kmeans_sklearn.py`, so both cluster the very same numbers:
//!     UMBRA_KMEANS_PLAIN=1 UMBRA_KMEANS_NPY=/tmp/features.npy \
//!         cargo bench -p umbra-learn --bench kmeans
//!     python3 bench/kmeans_sklearn.py /tmp/features.npy --k 12 --seed 1
//! `UMBRA_KMEANS_ROWS`, `UMBRA_KMEANS_DIMS`, `UMBRA_KMEANS_K` and `UMBRA_KMEANS_SPREAD` (half-width
//! of the box the centres are drawn from; smaller means more overlap) change the data.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use umbra_learn::kmeans::{self, KMeansConfig, Matrix};

/// Rows generated per parallel task; each task has its own seeded generator, so the data are
/// the same whatever the thread count.
const GEN_CHUNK: usize = 16_384;

/// A mixture of `k` Gaussians with unequal sizes and spreads, plus 2% uniform background noise
/// (labelled `k`). Returns the matrix and the true component of each row.
fn mixture(rows: usize, dims: usize, k: usize, spread: f32, seed: u64) -> (Matrix, Vec<u32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..k)
        .map(|_| {
            (0..dims)
                .map(|_| rng.random_range(-spread..spread))
                .collect()
        })
        .collect();
    let sigmas: Vec<f32> = (0..k).map(|_| rng.random_range(0.5..1.5)).collect();
    // Component weights 1..=k, so the largest cluster is k times the smallest.
    let total = (k * (k + 1) / 2) as f64;
    let cumulative: Vec<f64> = (1..=k)
        .scan(0.0, |s, w| {
            *s += w as f64 / total;
            Some(*s)
        })
        .collect();

    let mut data = vec![0.0f32; rows * dims];
    let mut truth = vec![0u32; rows];
    data.par_chunks_mut(GEN_CHUNK * dims)
        .zip(truth.par_chunks_mut(GEN_CHUNK))
        .enumerate()
        .for_each(|(chunk, (data, truth))| {
            let mut rng =
                StdRng::seed_from_u64(seed ^ (chunk as u64 + 1).wrapping_mul(0x9E37_79B9));
            for (row, label) in data.chunks_exact_mut(dims).zip(truth) {
                if rng.random::<f64>() < 0.02 {
                    *label = k as u32;
                    for x in row.iter_mut() {
                        *x = rng.random_range(-spread - 3.0..spread + 3.0);
                    }
                    continue;
                }
                let u: f64 = rng.random();
                let c = cumulative.partition_point(|&p| p < u).min(k - 1);
                *label = c as u32;
                for (x, &mu) in row.iter_mut().zip(&centres[c]) {
                    *x = mu + sigmas[c] * normal(&mut rng);
                }
            }
        });
    (Matrix { rows, dims, data }, truth)
}

/// Box–Muller: one standard normal draw.
fn normal(rng: &mut StdRng) -> f32 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

fn plain(rows: usize, dims: usize, k: usize, spread: f32) {
    let started = Instant::now();
    let (data, truth) = mixture(rows, dims, k, spread, 42);
    let generate = started.elapsed().as_secs_f64();
    if let Ok(path) = std::env::var("UMBRA_KMEANS_NPY") {
        data.write_npy(&path)
            .unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
    let cfg = KMeansConfig {
        k,
        seed: 1,
        ..KMeansConfig::default()
    };
    let started = Instant::now();
    let result = kmeans::fit(&data, &cfg).unwrap_or_else(|e| panic!("fit: {e}"));
    let seconds = started.elapsed().as_secs_f64();
    let ari = kmeans::adjusted_rand_index(&result.assignments, &truth);
    println!(
        "{{\"rows\": {rows}, \"dims\": {dims}, \"k\": {k}, \"spread\": {spread}, \
         \"threads\": {}, \"generate_seconds\": {generate:.3}, \"seconds\": {seconds:.3}, \
         \"inertia\": {}, \"iterations\": {}, \"ari_vs_truth\": {ari:.4}}}",
        rayon::current_num_threads(),
        result.inertia,
        result.iterations
    );
}

fn benches(c: &mut Criterion, rows: usize, dims: usize, k: usize, spread: f32) {
    let (data, _) = mixture(rows, dims, k, spread, 42);
    let cfg = KMeansConfig {
        k,
        seed: 1,
        ..KMeansConfig::default()
    };
    let fitted = kmeans::fit(&data, &cfg).unwrap_or_else(|e| panic!("fit: {e}"));
    let name = format!("{rows}x{dims}_k{k}");

    let mut slow = c.benchmark_group("kmeans");
    slow.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(2));
    slow.bench_function(format!("fit/{name}"), |b| {
        b.iter(|| kmeans::fit(black_box(&data), &cfg))
    });
    slow.bench_function(format!("assign/{name}"), |b| {
        b.iter(|| kmeans::assign(black_box(&data), &fitted.centroids))
    });
    let small = Matrix {
        rows: 3000,
        dims,
        data: data.data[..3000 * dims].to_vec(),
    };
    slow.bench_function(format!("choose_k/3000x{dims}_k2..16"), |b| {
        b.iter(|| kmeans::choose_k(black_box(&small), 2..=16, 3000, &cfg))
    });
    slow.finish();

    // The per-request classifier path.
    c.bench_function(&format!("kmeans/nearest/{dims}d_k{k}"), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % rows;
            kmeans::nearest(black_box(data.row(i)), &fitted.centroids)
        })
    });
}

fn main() {
    let rows = env("UMBRA_KMEANS_ROWS", 1_000_000usize);
    let dims = env("UMBRA_KMEANS_DIMS", 48usize);
    let k = env("UMBRA_KMEANS_K", 12usize);
    let spread = env("UMBRA_KMEANS_SPREAD", 3.0f32);
    if std::env::var_os("UMBRA_KMEANS_PLAIN").is_some() {
        plain(rows, dims, k, spread);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, rows, dims, k, spread);
    c.final_summary();
}
