use rand::Rng;

use super::*;

/// Gaussian blobs: `per` rows around each of `centers` random centres in `dims` dimensions,
/// centres drawn uniformly from ±`spread`, unit noise. Returns the data and the true labels.
fn blobs(centers: usize, per: usize, dims: usize, spread: f32, seed: u64) -> (Matrix, Vec<u32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let means: Vec<Vec<f32>> = (0..centers)
        .map(|_| {
            (0..dims)
                .map(|_| rng.random_range(-spread..spread))
                .collect()
        })
        .collect();
    let mut m = Matrix::with_capacity(centers * per, dims);
    let mut truth = Vec::new();
    let mut row = vec![0.0; dims];
    for i in 0..centers * per {
        // Interleave clusters so no cluster owns a contiguous block of rows.
        let c = i % centers;
        for (x, &mu) in row.iter_mut().zip(&means[c]) {
            *x = mu + normal(&mut rng);
        }
        m.push(&row);
        truth.push(c as u32);
    }
    (m, truth)
}

/// Box–Muller: one standard normal draw.
fn normal(rng: &mut StdRng) -> f32 {
    let u: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
    let v: f64 = rng.random();
    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

fn cfg(k: usize) -> KMeansConfig {
    KMeansConfig {
        k,
        seed: 7,
        ..KMeansConfig::default()
    }
}

#[test]
fn recovers_well_separated_blobs() {
    let (data, truth) = blobs(6, 500, 10, 10.0, 1);
    let r = fit(&data, &cfg(6)).expect("fit");
    let ari = adjusted_rand_index(&r.assignments, &truth);
    assert!(ari >= 0.99, "ARI {ari}");
    assert_eq!(r.counts.iter().sum::<u64>(), data.rows as u64);
    assert_eq!((r.centroids.rows, r.centroids.dims), (6, 10));
}

#[test]
fn recovers_blobs_through_the_sample_path() {
    // More rows than `restart_sample`: restarts on a sample, refinement on everything.
    let (data, truth) = blobs(5, 3000, 8, 8.0, 2);
    let c = KMeansConfig {
        restart_sample: 2000,
        ..cfg(5)
    };
    let r = fit(&data, &c).expect("fit");
    assert!(adjusted_rand_index(&r.assignments, &truth) >= 0.99);
}

#[test]
fn result_is_self_consistent() {
    let (data, _) = blobs(4, 700, 5, 3.0, 3);
    let r = fit(&data, &cfg(4)).expect("fit");
    let (labels, dists) = assign(&data, &r.centroids);
    assert_eq!(
        labels, r.assignments,
        "assignments are the nearest centroids"
    );
    let inertia: f64 = dists.iter().map(|&d| f64::from(d)).sum();
    assert!(
        (inertia - r.inertia).abs() <= 1e-6 * r.inertia,
        "{inertia} vs {}",
        r.inertia
    );
    let (j, d) = nearest(data.row(5), &r.centroids);
    assert_eq!((j as u32, d), (labels[5], dists[5]));
}

/// Plain Lloyd, the textbook way, as a reference for the Hamerly-accelerated version.
fn naive_lloyd(data: &Matrix, mut c: Matrix, iterations: usize) -> Vec<u32> {
    let mut labels = assign(data, &c).0;
    for _ in 0..iterations {
        let mut sums = vec![0.0f64; c.rows * c.dims];
        let mut counts = vec![0usize; c.rows];
        for (i, &l) in labels.iter().enumerate() {
            counts[l as usize] += 1;
            for (s, &x) in sums[l as usize * c.dims..].iter_mut().zip(data.row(i)) {
                *s += f64::from(x);
            }
        }
        for (j, &n) in counts.iter().enumerate() {
            assert!(n > 0, "reference does not handle empty clusters");
            for d in 0..c.dims {
                c.data[j * c.dims + d] = (sums[j * c.dims + d] / n as f64) as f32;
            }
        }
        labels = assign(data, &c).0;
    }
    labels
}

#[test]
fn hamerly_matches_plain_lloyd() {
    // Overlapping clusters, so rows keep changing cluster for many iterations.
    let (data, _) = blobs(8, 500, 6, 2.0, 4);
    for seed in 0..2 {
        let init = lloyd::seed_plus_plus(&data, 8, &mut StdRng::seed_from_u64(seed));
        for iterations in [1, 5, 30] {
            // tol < 0 never converges on inertia; the run stops early only when no row moves,
            // after which the reference's extra updates change nothing.
            let run = lloyd::lloyd(&data, init.clone(), iterations, -1.0);
            assert!(run.iterations <= iterations);
            let reference = naive_lloyd(&data, init.clone(), iterations);
            let differ = run
                .labels
                .iter()
                .zip(&reference)
                .filter(|(a, b)| a != b)
                .count();
            // Float rounding may flip a row sitting exactly between two centroids; no more.
            assert!(
                differ <= 2,
                "seed {seed}, {iterations} iterations: {differ} rows differ"
            );
        }
    }
}

#[test]
fn deterministic_for_a_seed_and_any_thread_count() {
    // Over two CHUNK_ROWS chunks, and more rows than the restart sample.
    let (data, _) = blobs(6, 1500, 8, 2.0, 5);
    let c = KMeansConfig {
        restart_sample: 2000,
        restarts: 2,
        max_iter: 20,
        ..cfg(6)
    };
    let run_with = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool")
            .install(|| fit(&data, &c).expect("fit"))
    };
    let one = run_with(1);
    assert_eq!(one, run_with(3));
    assert_eq!(one, fit(&data, &c).expect("fit"));
    let other_seed = fit(
        &data,
        &KMeansConfig {
            seed: 8,
            ..c.clone()
        },
    )
    .expect("fit");
    assert_ne!(one.centroids, other_seed.centroids);
}

#[test]
fn lower_inertia_than_a_single_seeding_on_average() {
    // Restarts keep the best: never worse than the first restart alone.
    let (data, _) = blobs(10, 300, 4, 3.0, 6);
    let four = fit(&data, &cfg(10)).expect("fit");
    let one = fit(
        &data,
        &KMeansConfig {
            restarts: 1,
            ..cfg(10)
        },
    )
    .expect("fit");
    assert!(four.inertia <= one.inertia * (1.0 + 1e-9));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let (data, _) = blobs(2, 5, 3, 1.0, 7);
    assert_eq!(fit(&Matrix::new(3), &cfg(2)), Err(KMeansError::NoRows));
    assert_eq!(fit(&data, &cfg(0)), Err(KMeansError::ZeroK));
    assert_eq!(
        fit(&data, &cfg(11)),
        Err(KMeansError::TooFewRows { k: 11, rows: 10 })
    );
    let short = Matrix {
        rows: 10,
        dims: 3,
        data: vec![0.0; 29],
    };
    assert_eq!(
        fit(&short, &cfg(2)),
        Err(KMeansError::ShapeMismatch {
            rows: 10,
            dims: 3,
            values: 29
        })
    );
    let flat = Matrix {
        rows: 4,
        dims: 0,
        data: vec![],
    };
    assert_eq!(fit(&flat, &cfg(2)), Err(KMeansError::NoDims));

    let mut nan = data.clone();
    nan.data[7 * 3 + 2] = f32::NAN;
    let e = fit(&nan, &cfg(2)).expect_err("NaN");
    assert!(matches!(
        e,
        KMeansError::NonFinite {
            row: 7,
            column: 2,
            ..
        }
    ));
    assert_eq!(e.to_string(), "row 7, column 2: value NaN is not finite");
    let mut inf = data.clone();
    inf.data[0] = f32::NEG_INFINITY;
    assert!(matches!(
        choose_k(&inf, 2..=3, 100, &cfg(1)),
        Err(KMeansError::NonFinite {
            row: 0,
            column: 0,
            ..
        })
    ));
    #[allow(clippy::reversed_empty_ranges)]
    let empty_range = 5..=3;
    assert_eq!(
        choose_k(&data, empty_range, 100, &cfg(1)),
        Err(KMeansError::NoCandidates { start: 5, end: 3 })
    );
    assert_eq!(
        choose_k(&data, 0..=0, 100, &cfg(1)),
        Err(KMeansError::NoCandidates { start: 0, end: 0 })
    );
}

#[test]
fn fewer_distinct_rows_than_clusters() {
    // Three distinct points, repeated; k = 5 must leave two clusters empty, not panic or loop.
    let mut data = Matrix::new(2);
    for i in 0..30 {
        data.push(&[(i % 3) as f32, 0.0]);
    }
    let r = fit(&data, &cfg(5)).expect("fit");
    assert_eq!(r.inertia, 0.0);
    assert_eq!(r.counts.iter().filter(|&&c| c > 0).count(), 3);
    assert_eq!(r.counts.iter().sum::<u64>(), 30);

    let k = choose_k(&data, 4..=6, 100, &cfg(1)).expect("choose");
    assert_eq!(k.k, 3);
    assert!(k.reason.contains("only 3 distinct rows"), "{}", k.reason);
}

#[test]
fn empty_clusters_are_reseeded() {
    // Two far-apart groups but all three initial centroids inside the first group: one
    // cluster empties on the first update and must be moved onto the far group.
    let mut data = Matrix::new(1);
    for x in [0.0, 0.1, 0.2, 100.0, 100.1, 100.2, 200.0] {
        data.push(&[x]);
    }
    let init = Matrix::from_vec(3, 1, vec![0.0, 0.1, -50.0]).expect("shape");
    let run = lloyd::lloyd(&data, init, 20, 1e-9);
    let mut sizes = [0; 3];
    for &l in &run.labels {
        sizes[l as usize] += 1;
    }
    assert!(sizes.iter().all(|&s| s > 0), "{sizes:?}");
    assert!(run.inertia < 1000.0, "{}", run.inertia);
}

#[test]
fn k_equal_to_rows_and_k_one() {
    let (data, _) = blobs(3, 4, 2, 5.0, 8);
    let r = fit(&data, &cfg(12)).expect("fit");
    assert_eq!(r.inertia, 0.0);
    assert!(r.counts.iter().all(|&c| c == 1));
    let r = fit(&data, &cfg(1)).expect("fit");
    assert_eq!(r.assignments, vec![0; 12]);
}

#[test]
fn choose_k_finds_true_k() {
    for (true_k, seed) in [(3, 10), (6, 11)] {
        let (data, _) = blobs(true_k, 200, 8, 10.0, seed);
        let choice = choose_k(&data, 2..=8, 300, &cfg(1)).expect("choose");
        assert_eq!(choice.k, true_k, "{}", choice.reason);
        assert_eq!(choice.scores.len(), 7);
        assert!(
            choice
                .reason
                .starts_with(&format!("k={true_k} has the highest silhouette (")),
            "{}",
            choice.reason
        );
        assert!(
            choice.reason.ends_with("among k=2..8 on a 300-row sample"),
            "{}",
            choice.reason
        );
    }
}

#[test]
fn choose_k_on_identical_rows_is_one() {
    let mut data = Matrix::new(3);
    for _ in 0..50 {
        data.push(&[1.0, -0.0, 2.0]);
        data.push(&[1.0, 0.0, 2.0]);
    }
    let choice = choose_k(&data, 2..=8, 3000, &cfg(1)).expect("choose");
    assert_eq!(choice.k, 1);
    assert!(choice.scores.is_empty());
    assert_eq!(
        choice.reason,
        "all rows are identical on all 100 rows, so there is one cluster"
    );
}

#[test]
fn config_round_trips_through_serde_with_defaults() {
    let c: KMeansConfig = serde_json::from_str(r#"{"k": 12, "seed": 1}"#).expect("json");
    assert_eq!(
        c,
        KMeansConfig {
            k: 12,
            seed: 1,
            ..KMeansConfig::default()
        }
    );
    assert!(serde_json::from_str::<KMeansConfig>(r#"{"kk": 1}"#).is_err());
}
