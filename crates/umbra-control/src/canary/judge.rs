//! Judging a canary against production: per metric, per profile, per stage.
//!
//! The statistics are the analysis crate's ([`compare_histograms`] and
//! [`proportion_higher_p`]); this file only decides what their numbers mean for a
//! canary, in Kayenta's manner: each metric is Pass, Marginal or Fail, and the
//! stage's score is the share of judged metrics that passed.

use serde::{Deserialize, Serialize};
use umbra_analysis::compare::{CompareConfig, compare_histograms, proportion_higher_p};
use umbra_analysis::window::Window;

/// What a canary is judged on, for each profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The typical request: Hodges-Lehmann shift relative to production's median,
    /// Mann-Whitney U for significance.
    LatencyP50,
    /// The tail: p99 ratio − 1, and the share of requests above the pooled p99.
    LatencyP99,
    /// 5xx answers and requests that got none, as a share of requests.
    ErrorRate,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::LatencyP50, Metric::LatencyP99, Metric::ErrorRate];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::LatencyP50 => "latency_p50",
            Metric::LatencyP99 => "latency_p99",
            Metric::ErrorRate => "error_rate",
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on a metric, a profile or a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    /// A large change that is significant, but not at the strict level: not
    /// enough to roll back, not enough to go on.
    Marginal,
    Fail,
    /// Not enough requests on one side to say anything.
    NoData,
}

impl Outcome {
    /// Order for "the worst of": NoData < Pass < Marginal < Fail.
    fn severity(self) -> u8 {
        match self {
            Outcome::NoData => 0,
            Outcome::Pass => 1,
            Outcome::Marginal => 2,
            Outcome::Fail => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Marginal => "marginal",
            Outcome::Fail => "fail",
            Outcome::NoData => "no data",
        }
    }
}

/// One metric of one profile, canary against production.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricJudgement {
    pub metric: Metric,
    /// The canary's value: latency in ms, error rate as a share (0.03 = 3%).
    pub canary: Option<f64>,
    /// Production's value, in the same unit.
    pub production: Option<f64>,
    /// The change the threshold applies to: a relative rise for latency (0.2 =
    /// 20% slower), an absolute rise in rate for errors (0.01 = one point).
    pub change: Option<f64>,
    /// The p-value of "the canary is worse".
    pub p_value: Option<f64>,
    pub result: Outcome,
}

/// All metrics of one profile over the stage so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileJudgement {
    pub profile: String,
    pub canary_requests: u64,
    pub production_requests: u64,
    pub metrics: Vec<MetricJudgement>,
    /// The worst metric's result; NoData only when every metric is.
    pub result: Outcome,
}

/// The thresholds one judgement applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    pub min_requests: u64,
    pub latency_threshold: f64,
    pub error_threshold: f64,
    /// Significance that makes a metric Marginal (or, with a large change, Fail
    /// when it also meets `fail_alpha`).
    pub alpha: f64,
    /// Significance a large change needs to Fail; at most `alpha`.
    pub fail_alpha: f64,
}

/// The upper quantile the tail metric is about.
const TAIL_QUANTILE: f64 = 0.99;

/// Requests the change a count-based metric looks for must amount to before
/// it is judged. Both such metrics (the p99 and its tail test, the error rate)
/// rest on two-proportion z-tests, whose normal approximation is far too sure
/// of itself on a few events: against a 0.2% baseline, one 5xx in 60 canary
/// requests is "+1.5 points, p = 0.005", which happens to a healthy canary one
/// time in nine. So the p99 waits for 500 latencies a side (5 above it; the
/// "p99" of 60 requests is their maximum), and the error rate for
/// `5 / error_threshold` requests a side (500 at one point, where one point is
/// 5 errors rather than a fraction of one).
const MIN_EVENTS: f64 = 5.0;

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Fail when the change is large *and* significant at the strict level;
/// Marginal when it is large and significant only at `alpha`; Pass otherwise.
///
/// As in Kayenta's classifier, a metric is against the canary only when its
/// change is both significant and beyond the tolerance. A small change that
/// is significant passes: with thousands of requests a 3% difference is
/// significant, and it is what the threshold calls acceptable (holding on it
/// kept healthy canaries held until `max_holds` rolled them back: 5 of the 8
/// false rollbacks in 1000 simulated healthy canaries). A large change that is
/// not significant passes too: there is no evidence of it yet, and the next
/// stage's larger share, or the early check, will find it if it is real.
///
/// A rollback is an action, so it waits for the strict level (`fail_alpha`,
/// the early check's); a large change that only meets `alpha` holds the stage
/// for more data instead. Without this, 20% at 60 requests is only about three
/// standard errors, and healthy canaries were rolled back at the small stages
/// (4 runs in 1000 in the simulation).
fn classify(large: bool, significant: bool, strictly_significant: bool) -> Outcome {
    match (large, significant) {
        (true, _) if strictly_significant => Outcome::Fail,
        (true, true) => Outcome::Marginal,
        _ => Outcome::Pass,
    }
}

fn ms(us: Option<f64>) -> Option<f64> {
    us.and_then(|v| finite(v / 1000.0))
}

/// Judges one profile from the canary's and production's cumulative windows.
pub(crate) fn judge_profile(
    profile: &str,
    canary: Option<&Window>,
    production: Option<&Window>,
    rules: &Rules,
) -> ProfileJudgement {
    let mut j = measure_profile(profile, canary, production, rules);
    classify_profile(&mut j, rules, 1.0);
    j
}

/// Whether a metric had the data to be judged: a change and a p-value.
fn judgeable(m: &MetricJudgement) -> bool {
    m.change.is_some() && m.p_value.is_some()
}

/// Sets each metric's result from its change and p-value, at the levels of
/// `rules` divided by `tests`, and the profile's as the worst of them.
fn classify_profile(j: &mut ProfileJudgement, rules: &Rules, tests: f64) {
    let (alpha, fail_alpha) = (rules.alpha / tests, rules.fail_alpha / tests);
    for m in &mut j.metrics {
        let (Some(change), Some(p)) = (m.change, m.p_value) else {
            m.result = Outcome::NoData;
            continue;
        };
        // Mann-Whitney is two-sided: a significantly *faster* canary is no
        // concern. The tail test and the error test are one-sided already.
        let worse = m.metric != Metric::LatencyP50 || change > 0.0;
        let threshold = match m.metric {
            Metric::LatencyP50 | Metric::LatencyP99 => rules.latency_threshold,
            Metric::ErrorRate => rules.error_threshold,
        };
        m.result = classify(
            change >= threshold,
            worse && p < alpha,
            worse && p < fail_alpha,
        );
    }
    j.result = j
        .metrics
        .iter()
        .map(|m| m.result)
        .max_by_key(|r| r.severity())
        .unwrap_or(Outcome::NoData);
}

/// The values, changes and p-values of one profile's metrics, not yet
/// classified (results are NoData); a metric without the data to be judged
/// gets no change and no p-value.
fn measure_profile(
    profile: &str,
    canary: Option<&Window>,
    production: Option<&Window>,
    rules: &Rules,
) -> ProfileJudgement {
    let canary_requests = canary.map_or(0, |w| w.requests);
    let production_requests = production.map_or(0, |w| w.requests);
    let enough = canary_requests >= rules.min_requests && production_requests >= rules.min_requests;
    let comparison = match (canary, production) {
        (Some(c), Some(p)) if enough => compare_histograms(
            &c.latency,
            &p.latency,
            &CompareConfig {
                alpha: rules.alpha,
                min_samples: rules.min_requests,
                tail_quantile: TAIL_QUANTILE,
            },
        ),
        _ => None,
    };
    let value = |w: Option<&Window>, f: fn(&Window) -> Option<f64>| w.and_then(f);

    let p50 = {
        let mut m = MetricJudgement {
            metric: Metric::LatencyP50,
            canary: ms(value(canary, Window::p50)),
            production: ms(value(production, Window::p50)),
            change: None,
            p_value: None,
            result: Outcome::NoData,
        };
        if let Some(c) = &comparison {
            m.change = finite(c.relative_shift);
            m.p_value = finite(c.mann_whitney.p_value);
        }
        m
    };

    let p99 = {
        let mut m = MetricJudgement {
            metric: Metric::LatencyP99,
            canary: ms(value(canary, Window::p99)),
            production: ms(value(production, Window::p99)),
            change: None,
            p_value: None,
            result: Outcome::NoData,
        };
        let tail_samples = |w: Option<&Window>| w.map_or(0, |w| w.latency.len());
        let tail_min = (MIN_EVENTS / (1.0 - TAIL_QUANTILE)).round() as u64;
        let enough_tail = tail_samples(canary).min(tail_samples(production)) >= tail_min;
        if let (Some(c), true) = (&comparison, enough_tail) {
            m.change = finite(c.p99_ratio - 1.0);
            m.p_value = finite(c.tail.p_value);
        }
        m
    };

    let errors = {
        let mut m = MetricJudgement {
            metric: Metric::ErrorRate,
            canary: value(canary, Window::error_rate),
            production: value(production, Window::error_rate),
            change: None,
            p_value: None,
            result: Outcome::NoData,
        };
        let errors_min = (MIN_EVENTS / rules.error_threshold).ceil() as u64;
        let enough_errors = canary_requests.min(production_requests) >= errors_min;
        if let (Some(c), Some(p), true, true) = (canary, production, enough, enough_errors) {
            m.change = m.canary.zip(m.production).map(|(c, p)| c - p);
            m.p_value = finite(proportion_higher_p(
                c.errors_5xx,
                c.requests,
                p.errors_5xx,
                p.requests,
            ));
        }
        m
    };

    ProfileJudgement {
        profile: profile.to_string(),
        canary_requests,
        production_requests,
        metrics: vec![p50, p99, errors],
        result: Outcome::NoData,
    }
}

/// A stage's judgement: the score and what it means.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageJudgement {
    pub outcome: Outcome,
    /// 100 × passed metrics / judged metrics; None when nothing was judged.
    pub score: Option<f64>,
    pub passed: usize,
    pub judged: usize,
    pub profiles: Vec<ProfileJudgement>,
}

/// Judges a stage: each profile measured, every metric classified at
/// `rules.alpha` and `rules.fail_alpha` divided by the number of judged
/// metrics, then scored: any Fail fails; nothing judged is NoData; otherwise
/// the score against `pass_score` and `marginal_score`.
///
/// `alpha` is the stage's chance of calling a healthy canary different, not
/// each metric's: with 15 metrics at 0.01 each, a healthy canary would be held
/// about one stage in seven, and since the data accumulates across holds, the
/// same fluke would often hold it again until `max_holds` rolled it back
/// (10 healthy runs in 100 did so in the simulation before this correction).
/// A real regression is unaffected: its p-values are orders of magnitude
/// below either level.
pub(crate) fn judge_stage(
    sides: &[(&str, Option<&Window>, Option<&Window>)],
    rules: &Rules,
    pass_score: f64,
    marginal_score: f64,
) -> StageJudgement {
    let mut profiles: Vec<ProfileJudgement> = sides
        .iter()
        .map(|(p, c, w)| measure_profile(p, *c, *w, rules))
        .collect();
    let count = profiles
        .iter()
        .flat_map(|p| &p.metrics)
        .filter(|m| judgeable(m))
        .count();
    for p in &mut profiles {
        classify_profile(p, rules, count.max(1) as f64);
    }
    score_stage(profiles, pass_score, marginal_score)
}

/// Scores classified profiles.
pub(crate) fn score_stage(
    profiles: Vec<ProfileJudgement>,
    pass_score: f64,
    marginal_score: f64,
) -> StageJudgement {
    let results = || profiles.iter().flat_map(|p| &p.metrics).map(|m| m.result);
    let judged = results().filter(|r| *r != Outcome::NoData).count();
    let passed = results().filter(|r| *r == Outcome::Pass).count();
    let failed = results().any(|r| r == Outcome::Fail);
    let score = (judged > 0).then(|| 100.0 * passed as f64 / judged as f64);
    let outcome = match score {
        _ if failed => Outcome::Fail,
        None => Outcome::NoData,
        Some(s) if s >= pass_score => Outcome::Pass,
        Some(s) if s >= marginal_score => Outcome::Marginal,
        Some(_) => Outcome::Fail,
    };
    StageJudgement {
        outcome,
        score,
        passed,
        judged,
        profiles,
    }
}

/// "latency_p99 +31.2% against production (p = 2.1e-09)".
pub(crate) fn describe(m: &MetricJudgement) -> String {
    let change = match (m.metric, m.change) {
        (Metric::ErrorRate, Some(c)) => format!("{:+.2} points", c * 100.0),
        (_, Some(c)) => format!("{:+.1}%", c * 100.0),
        (_, None) => "no change measured".to_string(),
    };
    match m.p_value {
        Some(p) => format!("{} {change} against production (p = {p:.1e})", m.metric),
        None => format!("{} {change} against production", m.metric),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use umbra_analysis::window::{Role, WindowKey};

    const RULES: Rules = Rules {
        min_requests: 50,
        latency_threshold: 0.2,
        error_threshold: 0.01,
        alpha: 0.01,
        fail_alpha: 0.001,
    };

    /// A window with `n` latencies spread evenly over [lo, hi] ms and `errors` 5xx.
    fn window(role: Role, n: u64, lo: f64, hi: f64, errors: u64) -> Window {
        let mut w = Window::empty(WindowKey::new(role, "u", "p"), 0, 1000, 3).unwrap();
        for i in 0..n {
            let ms = lo + (hi - lo) * i as f64 / (n.max(2) - 1) as f64;
            w.latency.record((ms * 1000.0) as u64).unwrap();
        }
        w.requests = n;
        w.errors_5xx = errors;
        w
    }

    fn metric(p: &ProfileJudgement, m: Metric) -> &MetricJudgement {
        p.metrics.iter().find(|x| x.metric == m).unwrap()
    }

    #[test]
    fn classify_is_fail_only_when_large_and_significant() {
        assert_eq!(classify(true, true, true), Outcome::Fail);
        assert_eq!(classify(true, true, false), Outcome::Marginal);
        assert_eq!(classify(true, false, false), Outcome::Pass);
        assert_eq!(classify(false, true, true), Outcome::Pass);
        assert_eq!(classify(false, false, false), Outcome::Pass);
    }

    #[test]
    fn too_few_requests_on_either_side_is_no_data() {
        let c = window(Role::Canary, 49, 10.0, 30.0, 0);
        let p = window(Role::Production, 5000, 10.0, 30.0, 0);
        let j = judge_profile("p", Some(&c), Some(&p), &RULES);
        assert_eq!(j.result, Outcome::NoData);
        assert!(j.metrics.iter().all(|m| m.result == Outcome::NoData));
        // The values are still shown, only not judged.
        assert!(metric(&j, Metric::LatencyP50).canary.is_some());
        let j = judge_profile("p", Some(&c), None, &RULES);
        assert_eq!((j.result, j.production_requests), (Outcome::NoData, 0));
    }

    #[test]
    fn a_slower_canary_fails_latency_and_a_faster_one_passes() {
        let p = window(Role::Production, 2000, 10.0, 30.0, 0);
        let slow = window(Role::Canary, 500, 13.0, 39.0, 0);
        let j = judge_profile("p", Some(&slow), Some(&p), &RULES);
        let m = metric(&j, Metric::LatencyP50);
        assert_eq!(m.result, Outcome::Fail, "{m:?}");
        assert!((m.change.unwrap() - 0.3).abs() < 0.05, "{m:?}");
        assert_eq!(metric(&j, Metric::LatencyP99).result, Outcome::Fail);
        assert_eq!(metric(&j, Metric::ErrorRate).result, Outcome::Pass);
        assert_eq!(j.result, Outcome::Fail);

        let fast = window(Role::Canary, 500, 7.0, 21.0, 0);
        let j = judge_profile("p", Some(&fast), Some(&p), &RULES);
        assert_eq!(j.result, Outcome::Pass, "{j:?}");
    }

    #[test]
    fn errors_fail_on_an_absolute_rise() {
        let p = window(Role::Production, 5000, 10.0, 30.0, 25); // 0.5%
        let bad = window(Role::Canary, 1000, 10.0, 30.0, 35); // 3.5%
        let j = judge_profile("p", Some(&bad), Some(&p), &RULES);
        let m = metric(&j, Metric::ErrorRate);
        assert_eq!(m.result, Outcome::Fail, "{m:?}");
        assert!((m.change.unwrap() - 0.03).abs() < 1e-9);
        assert!(describe(m).starts_with("error_rate +3.00 points against production (p = "));
    }

    #[test]
    fn the_stage_score_is_the_share_of_judged_metrics_that_passed() {
        let m = |result| MetricJudgement {
            metric: Metric::LatencyP50,
            canary: None,
            production: None,
            change: None,
            p_value: None,
            result,
        };
        let profile = |results: &[Outcome]| ProfileJudgement {
            profile: "p".into(),
            canary_requests: 0,
            production_requests: 0,
            metrics: results.iter().map(|r| m(*r)).collect(),
            result: Outcome::NoData,
        };
        use Outcome::*;
        let s = score_stage(vec![profile(&[Pass; 3]), profile(&[NoData; 3])], 95.0, 75.0);
        assert_eq!((s.outcome, s.score, s.judged), (Pass, Some(100.0), 3));
        let s = score_stage(vec![profile(&[Pass, Pass, Pass, Marginal])], 95.0, 75.0);
        assert_eq!((s.outcome, s.score), (Marginal, Some(75.0)));
        let s = score_stage(vec![profile(&[Pass, Marginal, Marginal])], 95.0, 75.0);
        assert_eq!(s.outcome, Fail);
        let s = score_stage(vec![profile(&[Pass; 30]), profile(&[Fail])], 95.0, 75.0);
        assert_eq!(s.outcome, Fail);
        let s = score_stage(vec![profile(&[NoData; 3])], 95.0, 75.0);
        assert_eq!((s.outcome, s.score), (NoData, None));
        let s = score_stage(vec![], 95.0, 75.0);
        assert_eq!(s.outcome, NoData);
    }
}
