//! Pairwise churn: the share of test examples on which two models' predicted
//! labels differ. An unpredictable (NaN) prediction agrees with nothing, not
//! even another NaN, since neither model produced a label.

use serde::{Deserialize, Serialize};

use super::stats::Interval;
use super::Prediction;
use crate::randomness::Stream;

/// Bootstrap replicates behind the interval for mean churn.
pub const BOOTSTRAP_REPLICATES: usize = 2000;

pub fn pair_churn(a: &[Prediction], b: &[Prediction]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let differing = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.is_none() || x != y)
        .count();
    differing as f64 / a.len() as f64
}

/// Mean churn over the distinct pairs of at least two models.
pub fn mean_pairwise_churn(models: &[Vec<Prediction>]) -> f64 {
    let n = models.len();
    let total: f64 = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .map(|(i, j)| pair_churn(&models[i], &models[j]))
        .sum();
    total / (n * (n - 1) / 2) as f64
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChurnSummary {
    /// N×N, symmetric, zero diagonal.
    pub matrix: Vec<Vec<f64>>,
    /// Over the N(N-1)/2 distinct pairs.
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// 95% bootstrap interval for the mean, resampling models and examples
    /// (see [`bootstrap_mean_churn`]).
    pub ci95: Interval,
    /// How `ci95` was computed, in words, so the report states it.
    pub ci95_method: String,
}

/// Churn of every pair of models, with a bootstrap interval for the mean drawn
/// from `bootstrap_seed`. Needs at least two models.
pub fn churn_summary(models: &[Vec<Prediction>], bootstrap_seed: u64) -> ChurnSummary {
    let n = models.len();
    let mut matrix = vec![vec![0.0; n]; n];
    let mut pairs = Vec::with_capacity(n * n.saturating_sub(1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let churn = pair_churn(&models[i], &models[j]);
            matrix[i][j] = churn;
            matrix[j][i] = churn;
            pairs.push(churn);
        }
    }
    let mean = mean_pairwise_churn(models);
    let min = pairs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = pairs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let ci95 = bootstrap_mean_churn(models, bootstrap_seed, BOOTSTRAP_REPLICATES);
    let ci95_method = format!(
        "percentile bootstrap, {BOOTSTRAP_REPLICATES} replicates resampling models and test examples with replacement, \
         pairs of distinct models only, seed {bootstrap_seed}"
    );
    ChurnSummary {
        matrix,
        mean,
        min,
        max,
        ci95,
        ci95_method,
    }
}

/// Percentile interval (2.5%, 97.5%) for mean pairwise churn. Pairwise churns
/// share models and examples, so they are not independent samples: each
/// replicate resamples the N models and the n test examples, both with
/// replacement, and averages churn over the pairs of distinct models drawn
/// (a model paired with its own copy says nothing about churn). With two
/// models this reduces to resampling examples.
pub fn bootstrap_mean_churn(models: &[Vec<Prediction>], seed: u64, replicates: usize) -> Interval {
    let n_models = models.len();
    let n_examples = models[0].len();
    // Per pair, only the examples where the two differ: churn is usually a few
    // percent, so replicates touch far fewer entries than N²·n.
    let differing: Vec<Vec<Vec<u32>>> = (0..n_models)
        .map(|a| {
            (0..n_models)
                .map(|b| {
                    (0..n_examples as u32)
                        .filter(|&e| {
                            let (x, y) = (models[a][e as usize], models[b][e as usize]);
                            a != b && (x.is_none() || x != y)
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let mut stream = Stream::new(seed);
    let mut weights = vec![0u32; n_examples];
    let mut means = Vec::with_capacity(replicates);
    while means.len() < replicates {
        let drawn: Vec<usize> = (0..n_models)
            .map(|_| stream.below(n_models as u64) as usize)
            .collect();
        draw_example_weights(&mut stream, &mut weights);
        let mut total = 0.0;
        let mut pairs = 0usize;
        for i in 0..n_models {
            for j in i + 1..n_models {
                if drawn[i] != drawn[j] {
                    let count: u32 = differing[drawn[i]][drawn[j]]
                        .iter()
                        .map(|&e| weights[e as usize])
                        .sum();
                    total += f64::from(count) / n_examples as f64;
                    pairs += 1;
                }
            }
        }
        if pairs > 0 {
            means.push(total / pairs as f64);
        }
    }
    percentile_interval(means)
}

/// A bootstrap resample of the examples, as how many times each was drawn.
pub(super) fn draw_example_weights(stream: &mut Stream, weights: &mut [u32]) {
    let n = weights.len();
    weights.iter_mut().for_each(|w| *w = 0);
    for _ in 0..n {
        weights[stream.below(n as u64) as usize] += 1;
    }
}

/// The 2.5% and 97.5% percentiles of bootstrap replicates.
pub(super) fn percentile_interval(mut replicates: Vec<f64>) -> Interval {
    replicates.sort_by(f64::total_cmp);
    let last = replicates.len() - 1;
    let at = |q: f64| replicates[(q * last as f64).round() as usize];
    Interval {
        low: at(0.025),
        high: at(0.975),
    }
}

/// One test example on which the models do not all agree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flip {
    /// Position in the test set (the column of each model's `predicted`).
    pub position: usize,
    /// The example's id in the source data (its row).
    pub id: usize,
    pub label: u16,
    /// Each model's prediction, in model order.
    pub predicted: Vec<Prediction>,
    /// How many distinct predictions (an unpredictable row counts as one).
    pub distinct_labels: usize,
    /// The example's features as the models saw them, row-major, for image
    /// datasets only, so reports can show the picture (see `Report::attach_pixels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixels: Option<Vec<f32>>,
}

/// Every test example the models disagree on (or any model could not predict).
pub fn flips(models: &[Vec<Prediction>], labels: &[u16], ids: &[usize]) -> Vec<Flip> {
    (0..labels.len())
        .filter_map(|position| {
            let predicted: Vec<Prediction> = models.iter().map(|m| m[position]).collect();
            let mut distinct = predicted.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let stable = distinct.len() == 1 && distinct[0].is_some();
            (!stable).then(|| Flip {
                position,
                id: ids[position],
                label: labels[position],
                distinct_labels: distinct.len(),
                predicted,
                pixels: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preds(labels: &[i32]) -> Vec<Prediction> {
        labels.iter().map(|&l| u16::try_from(l).ok()).collect()
    }

    #[test]
    fn hand_computed_pair_churn() {
        // Differ at positions 1 and 3 of 4.
        assert_eq!(
            pair_churn(&preds(&[0, 1, 2, 3]), &preds(&[0, 2, 2, 1])),
            0.5
        );
        assert_eq!(pair_churn(&preds(&[4, 4]), &preds(&[4, 4])), 0.0);
        // A NaN row (-1 here) never agrees, even with another NaN row.
        assert_eq!(
            pair_churn(&preds(&[-1, 0, 0, 0]), &preds(&[-1, 0, 0, 0])),
            0.25
        );
    }

    #[test]
    fn hand_computed_matrix() {
        let models = vec![
            preds(&[0, 0, 0, 0]),
            preds(&[0, 0, 0, 1]),
            preds(&[1, 1, 0, 1]),
        ];
        let summary = churn_summary(&models, 0);
        assert_eq!(
            summary.matrix,
            vec![
                vec![0.0, 0.25, 0.75],
                vec![0.25, 0.0, 0.5],
                vec![0.75, 0.5, 0.0]
            ]
        );
        assert_eq!(summary.mean, 0.5);
        assert_eq!(summary.min, 0.25);
        assert_eq!(summary.max, 0.75);
    }

    #[test]
    fn bootstrap_interval_brackets_the_mean_and_is_seeded() {
        // 3 models, 100 examples: model 2 differs from the others on 10 of them.
        let base: Vec<i32> = (0..100).map(|e| e % 10).collect();
        let mut odd = base.clone();
        odd[..10].iter_mut().for_each(|l| *l = 9 - *l);
        let models = vec![preds(&base), preds(&base), preds(&odd)];
        let summary = churn_summary(&models, 7);
        assert!((summary.mean - 0.2 / 3.0).abs() < 1e-12);
        assert!(
            summary.ci95.low < summary.mean && summary.mean < summary.ci95.high,
            "{:?}",
            summary.ci95
        );
        assert!(summary.ci95.low >= 0.0 && summary.ci95.high < 0.2);
        assert_eq!(
            bootstrap_mean_churn(&models, 7, 500),
            bootstrap_mean_churn(&models, 7, 500)
        );
        // Models that differ everywhere: every replicate's mean is exactly 1.
        let shifted: Vec<i32> = base.iter().map(|l| (l + 1) % 10).collect();
        let opposite = vec![preds(&base), preds(&shifted)];
        assert_eq!(
            bootstrap_mean_churn(&opposite, 3, 100),
            Interval {
                low: 1.0,
                high: 1.0
            }
        );
        // Identical models: no churn in any replicate.
        let same = vec![preds(&base), preds(&base)];
        assert_eq!(
            bootstrap_mean_churn(&same, 1, 100),
            Interval {
                low: 0.0,
                high: 0.0
            }
        );
    }

    #[test]
    fn flip_list_names_disagreements() {
        let models = vec![
            preds(&[0, 1, 2, 3]),
            preds(&[0, 2, 2, -1]),
            preds(&[0, 3, 2, 3]),
        ];
        let found = flips(&models, &[0, 1, 2, 3], &[10, 11, 12, 13]);
        assert_eq!(
            found,
            vec![
                Flip {
                    position: 1,
                    id: 11,
                    label: 1,
                    predicted: vec![Some(1), Some(2), Some(3)],
                    distinct_labels: 3,
                    pixels: None
                },
                Flip {
                    position: 3,
                    id: 13,
                    label: 3,
                    predicted: vec![Some(3), None, Some(3)],
                    distinct_labels: 2,
                    pixels: None
                },
            ]
        );
        // Every model unpredictable on an example: still listed.
        assert_eq!(flips(&[preds(&[-1]), preds(&[-1])], &[0], &[0]).len(), 1);
    }
}
