//! Pairwise churn: the share of test examples on which two models' predicted
//! labels differ. An unpredictable (NaN) prediction agrees with nothing, not
//! even another NaN, since neither model produced a label.

use serde::{Deserialize, Serialize};

use super::Prediction;

pub fn pair_churn(a: &[Prediction], b: &[Prediction]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let differing = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.is_none() || x != y)
        .count();
    differing as f64 / a.len() as f64
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChurnSummary {
    /// N×N, symmetric, zero diagonal.
    pub matrix: Vec<Vec<f64>>,
    /// Over the N(N-1)/2 distinct pairs.
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

/// Churn of every pair of models. Needs at least two models.
pub fn churn_summary(models: &[Vec<Prediction>]) -> ChurnSummary {
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
    let mean = pairs.iter().sum::<f64>() / pairs.len() as f64;
    let min = pairs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = pairs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    ChurnSummary {
        matrix,
        mean,
        min,
        max,
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
        let summary = churn_summary(&models);
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
                    distinct_labels: 3
                },
                Flip {
                    position: 3,
                    id: 13,
                    label: 3,
                    predicted: vec![Some(3), None, Some(3)],
                    distinct_labels: 2
                },
            ]
        );
        // Every model unpredictable on an example: still listed.
        assert_eq!(flips(&[preds(&[-1]), preds(&[-1])], &[0], &[0]).len(), 1);
    }
}
