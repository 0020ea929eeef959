//! How two models agree beyond "same label or not": per-pair intervals, soft
//! churn over probabilities, the decomposition of disagreements against a
//! reference model, near-ties, and the test-set noise floor of accuracy.

use serde::{Deserialize, Serialize};

use super::stats::Interval;
use super::Prediction;

/// Two-sided 95% normal quantile.
const Z95: f64 = 1.959_963_984_540_054;

/// Wilson score interval for a share `successes / trials` (trials > 0).
pub fn wilson(successes: usize, trials: usize) -> Interval {
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = Z95 * Z95;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let half = Z95 / denominator * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Interval {
        low: (center - half).max(0.0),
        high: (center + half).min(1.0),
    }
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row
        .iter()
        .map(|&v| f64::from(v))
        .fold(f64::NEG_INFINITY, f64::max);
    let log_sum = row
        .iter()
        .map(|&v| (f64::from(v) - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row.iter().map(|&v| f64::from(v) - log_sum).collect()
}

/// Mean over test examples of the total-variation distance ½·Σ|p−q| and of
/// the symmetric KL divergence ½·(KL(p‖q) + KL(q‖p)) between two models'
/// softmax outputs. Rows where either model's logits are not finite are skipped.
pub fn soft_churn(a: &[f32], b: &[f32], n_classes: usize) -> (f64, f64) {
    let mut total_variation = 0.0;
    let mut symmetric_kl = 0.0;
    let mut rows = 0usize;
    for (row_a, row_b) in a.chunks(n_classes).zip(b.chunks(n_classes)) {
        if !row_a.iter().chain(row_b).all(|v| v.is_finite()) {
            continue;
        }
        let (log_p, log_q) = (log_softmax(row_a), log_softmax(row_b));
        let mut tv = 0.0;
        let mut kl = 0.0;
        for (lp, lq) in log_p.iter().zip(&log_q) {
            let (p, q) = (lp.exp(), lq.exp());
            tv += (p - q).abs();
            kl += p * (lp - lq) + q * (lq - lp);
        }
        total_variation += tv / 2.0;
        symmetric_kl += kl / 2.0;
        rows += 1;
    }
    if rows == 0 {
        return (f64::NAN, f64::NAN);
    }
    (total_variation / rows as f64, symmetric_kl / rows as f64)
}

/// How model `other` relates to a reference model, example by example.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decomposition {
    pub both_right: usize,
    pub both_wrong_same: usize,
    pub both_wrong_different: usize,
    /// Reference right, other wrong: churn that hurts.
    pub only_reference_right: usize,
    /// Reference wrong, other right: churn that helps.
    pub only_other_right: usize,
}

pub fn decompose(reference: &[Prediction], other: &[Prediction], labels: &[u16]) -> Decomposition {
    let mut counts = Decomposition::default();
    for ((r, o), &label) in reference.iter().zip(other).zip(labels) {
        let (r_right, o_right) = (*r == Some(label), *o == Some(label));
        match (r_right, o_right) {
            (true, true) => counts.both_right += 1,
            (true, false) => counts.only_reference_right += 1,
            (false, true) => counts.only_other_right += 1,
            (false, false) if r.is_some() && r == o => counts.both_wrong_same += 1,
            (false, false) => counts.both_wrong_different += 1,
        }
    }
    counts
}

/// Test examples on which some model's top-2 logit margin is below `epsilon`
/// (or whose logits are not finite): last-bit noise can flip these.
pub fn near_ties(models: &[&[f32]], n_classes: usize, epsilon: f64) -> usize {
    let n_examples = models.first().map_or(0, |logits| logits.len() / n_classes);
    (0..n_examples)
        .filter(|&e| {
            models.iter().any(|logits| {
                let row = &logits[e * n_classes..(e + 1) * n_classes];
                if row.iter().any(|v| !v.is_finite()) {
                    return true;
                }
                let mut sorted: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
                sorted.sort_by(|x, y| y.total_cmp(x));
                sorted.len() > 1 && sorted[0] - sorted[1] < epsilon
            })
        })
        .count()
}

/// Test-set sampling floor of accuracy's spread across models (Jordan, ICLR
/// 2024): sqrt(Σ p_i(1−p_i)) / n, where p_i is the share of models that get
/// example i right. Spread near this floor is what test-set sampling alone
/// would produce.
pub fn accuracy_floor(models: &[Vec<Prediction>], labels: &[u16]) -> f64 {
    let n_models = models.len() as f64;
    let variance_sum: f64 = labels
        .iter()
        .enumerate()
        .map(|(e, &label)| {
            let p = models.iter().filter(|m| m[e] == Some(label)).count() as f64 / n_models;
            p * (1.0 - p)
        })
        .sum();
    variance_sum.sqrt() / labels.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn hand_computed_wilson() {
        // p = 0.1, n = 100: centre (0.1 + 1.9208/100)/1.038415 = 0.114797...,
        // half 1.959964/1.038415 · sqrt(0.0009 + 0.0000960365) = 0.059571...
        let interval = wilson(10, 100);
        close(interval.low, 0.055_229_137_060_675_1);
        close(interval.high, 0.174_365_661_504_913_45);
    }

    #[test]
    fn wilson_at_zero_is_not_degenerate() {
        let interval = wilson(0, 359);
        assert_eq!(interval.low, 0.0);
        close(interval.high, 0.010_587_155_153_602_403);
    }

    #[test]
    fn soft_churn_of_identical_and_opposite_rows() {
        assert_eq!(soft_churn(&[1.0, 2.0], &[1.0, 2.0], 2), (0.0, 0.0));
        // p = (e/(1+e), 1/(1+e)), q reversed: TV = |2p-1| = (e-1)/(e+1); KL both ways = (2p-1)·1.
        let (tv, kl) = soft_churn(&[1.0, 0.0], &[0.0, 1.0], 2);
        let e = std::f64::consts::E;
        close(tv, (e - 1.0) / (e + 1.0));
        close(kl, (e - 1.0) / (e + 1.0));
        // A NaN row is skipped, not averaged in.
        let (tv, _) = soft_churn(&[f32::NAN, 0.0, 1.0, 0.0], &[0.0, 0.0, 0.0, 1.0], 2);
        close(tv, (e - 1.0) / (e + 1.0));
    }

    #[test]
    fn decomposition_counts_each_case() {
        let reference = [Some(0), Some(1), Some(2), Some(3), Some(4), None];
        let other = [Some(0), Some(9), Some(8), Some(3), Some(5), Some(5)];
        let labels = [0, 1, 7, 9, 5, 5];
        let counts = decompose(&reference, &other, &labels);
        assert_eq!(
            counts,
            Decomposition {
                both_right: 1,
                only_reference_right: 1,
                both_wrong_different: 1,
                both_wrong_same: 1,
                only_other_right: 2
            }
        );
    }

    #[test]
    fn near_ties_and_floor() {
        let a = [1.0, 1.0, 0.0, 5.0];
        let b = [2.0, 1.0, 0.0, 5.0];
        assert_eq!(near_ties(&[&a, &b], 2, 1e-6), 1);
        assert_eq!(near_ties(&[&b], 2, 1.5), 1);
        // Two models, example 0 right in one of them (p=½), example 1 right in both.
        let floor = accuracy_floor(&[vec![Some(0), Some(1)], vec![Some(1), Some(1)]], &[0, 1]);
        close(floor, 0.25f64.sqrt() / 2.0);
    }
}
