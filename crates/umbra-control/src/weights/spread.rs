//! The arithmetic of spreading 100 percent over servers: a floor that keeps the
//! total, a step that keeps both, and rounding to whole weights.

/// The total every set of weights adds up to.
pub const TOTAL: f64 = 100.0;

/// Scales `w` to add up to [`TOTAL`]; all zero (or empty) becomes equal shares.
pub fn normalise(w: &mut [f64]) {
    let sum: f64 = w.iter().filter(|x| x.is_finite() && **x > 0.0).sum();
    if w.is_empty() {
        return;
    }
    if sum <= 0.0 {
        let each = TOTAL / w.len() as f64;
        w.iter_mut().for_each(|x| *x = each);
        return;
    }
    for x in w.iter_mut() {
        *x = if x.is_finite() && *x > 0.0 {
            *x * TOTAL / sum
        } else {
            0.0
        };
    }
}

/// Gives each server with a `fixed` value that weight and scales the others to
/// fill the rest of [`TOTAL`], keeping their proportions: a server joining (or
/// back from ejection) starts small without the others' order changing. When
/// the fixed values leave no room, or every server is fixed, all get equal shares.
pub fn fix(w: &mut [f64], fixed: &[Option<f64>]) {
    let pinned: f64 = fixed.iter().flatten().sum();
    let free = fixed.iter().filter(|f| f.is_none()).count();
    if pinned == 0.0 && free == w.len() {
        normalise(w);
        return;
    }
    if free == 0 || pinned >= TOTAL {
        let each = TOTAL / w.len().max(1) as f64;
        w.iter_mut().for_each(|x| *x = each);
        return;
    }
    let room = TOTAL - pinned;
    let usable = |x: &f64| x.is_finite() && *x > 0.0;
    let kept: f64 = w
        .iter()
        .zip(fixed)
        .filter(|(x, f)| f.is_none() && usable(x))
        .map(|(x, _)| *x)
        .sum();
    for (x, f) in w.iter_mut().zip(fixed) {
        *x = match f {
            Some(v) => *v,
            None if kept > 0.0 && usable(x) => *x * room / kept,
            None if kept > 0.0 => 0.0,
            None => room / free as f64,
        };
    }
}

/// Lifts every weight below `floor` to it and takes the difference from the
/// others in proportion to what they have above the floor, so the total stays
/// [`TOTAL`] and the order of the others is kept (water-filling). When the
/// floor cannot be met for everyone (`n × floor ≥ 100`), all get equal shares.
///
/// Expects weights that add up to [`TOTAL`].
pub fn apply_floor(w: &mut [f64], floor: f64) {
    let n = w.len();
    if n == 0 || floor <= 0.0 {
        return;
    }
    if floor * n as f64 >= TOTAL {
        let each = TOTAL / n as f64;
        w.iter_mut().for_each(|x| *x = each);
        return;
    }
    // Each pass pins at least one more weight to the floor, so n passes suffice.
    let mut pinned = vec![false; n];
    for _ in 0..n {
        let pinned_total = floor * pinned.iter().filter(|p| **p).count() as f64;
        let free: f64 = w
            .iter()
            .zip(&pinned)
            .filter(|(_, p)| !**p)
            .map(|(x, _)| *x)
            .sum();
        let room = TOTAL - pinned_total;
        let mut changed = false;
        for (x, p) in w.iter_mut().zip(pinned.iter_mut()) {
            if *p {
                *x = floor;
                continue;
            }
            let scaled = if free > 0.0 { *x * room / free } else { 0.0 };
            if scaled < floor {
                *p = true;
                *x = floor;
                changed = true;
            } else {
                *x = scaled;
            }
        }
        if !changed {
            return;
        }
    }
}

/// Moves `from` toward `to` by the largest fraction of the way that changes no
/// weight by more than `max_step`. Both add up to [`TOTAL`] and respect a floor,
/// so every point between them does too: scaling the whole move (rather than
/// clipping each change) keeps the total and the floor without a fix-up.
pub fn step_toward(from: &[f64], to: &[f64], max_step: f64) -> Vec<f64> {
    let largest = from
        .iter()
        .zip(to)
        .map(|(a, b)| (b - a).abs())
        .fold(0.0, f64::max);
    let t = if largest > max_step {
        max_step / largest
    } else {
        1.0
    };
    from.iter().zip(to).map(|(a, b)| a + t * (b - a)).collect()
}

/// Whole weights adding up to 100 by the largest-remainder method; entries of
/// `keep` that would round to 0 get 1 (a whole weight of 0 means "no traffic" to
/// every balancer, which only an ejected server should get).
pub fn round(w: &[f64], keep: &[bool]) -> Vec<u32> {
    let mut out: Vec<u32> = w.iter().map(|x| x.max(0.0).floor() as u32).collect();
    let assigned: u32 = out.iter().sum();
    let mut left = (TOTAL as u32).saturating_sub(assigned);
    let mut order: Vec<usize> = (0..w.len()).filter(|i| w[*i] > 0.0).collect();
    // Largest fractional part first; ties keep the servers' order.
    order.sort_by(|a, b| {
        let fa = w[*a] - w[*a].floor();
        let fb = w[*b] - w[*b].floor();
        fb.total_cmp(&fa).then(a.cmp(b))
    });
    for i in order {
        if left == 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    for (o, k) in out.iter_mut().zip(keep) {
        if *k && *o == 0 {
            *o = 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn floor_lifts_the_starved_and_keeps_the_total() {
        let mut w = vec![60.0, 39.0, 1.0];
        apply_floor(&mut w, 5.0);
        // 4 points come from the other two in proportion: 60 and 39 of 99.
        assert!(
            close(&w, &[60.0 * 95.0 / 99.0, 39.0 * 95.0 / 99.0, 5.0]),
            "{w:?}"
        );
        let mut w = vec![97.0, 2.0, 1.0];
        apply_floor(&mut w, 5.0);
        assert!(close(&w, &[90.0, 5.0, 5.0]), "{w:?}");
        // A floor no set can meet: equal shares.
        let mut w = vec![97.0, 2.0, 1.0];
        apply_floor(&mut w, 40.0);
        assert!(close(&w, &[100.0 / 3.0; 3]), "{w:?}");
    }

    #[test]
    fn a_step_is_capped_for_the_largest_change() {
        let w = step_toward(&[50.0, 50.0], &[80.0, 20.0], 10.0);
        assert!(close(&w, &[60.0, 40.0]), "{w:?}");
        let w = step_toward(&[50.0, 50.0], &[55.0, 45.0], 10.0);
        assert!(close(&w, &[55.0, 45.0]), "{w:?}");
    }

    #[test]
    fn rounding_adds_up_to_100() {
        assert_eq!(
            round(&[100.0 / 3.0; 3], &[true; 3]),
            vec![34, 33, 33],
            "the first of equal remainders gets the spare point"
        );
        assert_eq!(round(&[39.6, 40.3, 20.1], &[true; 3]), vec![40, 40, 20]);
        assert_eq!(
            round(&[99.7, 0.3, 0.0], &[true, true, false]),
            vec![100, 1, 0]
        );
    }

    #[test]
    fn entries_start_at_their_weight_and_the_rest_keep_proportions() {
        let mut w = vec![60.0, 0.0, 40.0];
        fix(&mut w, &[None, Some(5.0), None]);
        assert!(close(&w, &[57.0, 5.0, 38.0]), "{w:?}");
    }

    #[test]
    fn normalise_handles_all_zero() {
        let mut w = vec![0.0, 0.0];
        normalise(&mut w);
        assert!(close(&w, &[50.0, 50.0]));
        let mut w = vec![1.0, 3.0];
        normalise(&mut w);
        assert!(close(&w, &[25.0, 75.0]));
    }
}
