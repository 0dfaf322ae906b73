//! Mann-Whitney U p-values and Hodges-Lehmann shifts against SciPy's, on the
//! samples in `fixtures/mannwhitney.json` (made by `fixtures/make_mannwhitney.py`).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use serde::Deserialize;
use umbra_analysis::compare::{
    Alternative, Method, Ranked, hodges_lehmann, mann_whitney_ranked, mann_whitney_u,
};

#[derive(Deserialize)]
struct Fixture {
    scipy: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    x: Vec<f64>,
    y: Vec<f64>,
    hodges_lehmann: f64,
    results: Vec<Expected>,
}

#[derive(Deserialize)]
struct Expected {
    alternative: Alternative,
    method: Method,
    statistic: f64,
    pvalue: f64,
}

const TOLERANCE: f64 = 1e-6;

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mannwhitney.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn p_values_match_scipy() {
    let f = fixture();
    let mut checked = 0;
    let mut worst = 0.0f64;
    for c in &f.cases {
        for e in &c.results {
            let r = mann_whitney_u(&c.x, &c.y, e.alternative, e.method).unwrap_or_else(|err| {
                panic!("{} {:?} {:?}: {err}", c.name, e.alternative, e.method)
            });
            assert!(
                (r.u1 - e.statistic).abs() <= 1e-9 * e.statistic.abs().max(1.0),
                "{} {:?} {:?}: U {} vs SciPy {}",
                c.name,
                e.alternative,
                e.method,
                r.u1,
                e.statistic
            );
            let diff = (r.p_value - e.pvalue).abs();
            worst = worst.max(diff);
            assert!(
                diff <= TOLERANCE,
                "{} {:?} {:?}: p {} vs SciPy {} (method used {:?})",
                c.name,
                e.alternative,
                e.method,
                r.p_value,
                e.pvalue,
                r.method
            );
            checked += 1;
        }
    }
    assert!(checked >= 300, "{checked}");
    eprintln!("{checked} p-values within {worst:e} of SciPy {}", f.scipy);
}

#[test]
fn auto_chooses_as_scipy_does() {
    for c in fixture().cases {
        let ties = {
            let mut all: Vec<f64> = c.x.iter().chain(&c.y).copied().collect();
            all.sort_by(f64::total_cmp);
            all.windows(2).any(|w| w[0] == w[1])
        };
        let r = mann_whitney_u(&c.x, &c.y, Alternative::TwoSided, Method::Auto).unwrap();
        let small = c.x.len() <= 8 || c.y.len() <= 8;
        let want = if small && !ties {
            Method::Exact
        } else {
            Method::Asymptotic
        };
        assert_eq!(r.method, want, "{}", c.name);
    }
}

#[test]
fn hodges_lehmann_matches_numpy() {
    let f = fixture();
    for c in &f.cases {
        let hl = hodges_lehmann(&c.x, &c.y).unwrap();
        assert!(
            (hl - c.hodges_lehmann).abs() <= TOLERANCE,
            "{}: {hl} vs NumPy {}",
            c.name,
            c.hodges_lehmann
        );
    }
}

/// Ranked samples (what histograms become) give the same answers as raw ones.
#[test]
fn ranked_samples_agree_with_raw_ones() {
    for c in fixture().cases {
        let x = Ranked::from_values(&c.x, "x").unwrap();
        let y = Ranked::from_values(&c.y, "y").unwrap();
        let a = mann_whitney_ranked(&x, &y, Alternative::TwoSided, Method::Asymptotic).unwrap();
        let b = mann_whitney_u(&c.x, &c.y, Alternative::TwoSided, Method::Asymptotic).unwrap();
        assert_eq!(a, b, "{}", c.name);
    }
}
