//! Every figure about one group of models, computed from their outputs.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::agreement::{accuracy_floor, decompose, near_ties, soft_churn, wilson, Decomposition};
use super::churn::{churn_summary, flips, ChurnSummary, Flip};
use super::stats::{summarize, Interval, Summary};
use super::Prediction;

/// What analysis needs of one trained model.
pub struct ModelOutcome<'a> {
    pub predicted: &'a [Prediction],
    pub logits: &'a [f32],
    pub accuracy: f64,
    pub weights_sha256: &'a str,
    pub predictions_sha256: &'a str,
}

/// The test examples, in test order.
pub struct TestSet<'a> {
    pub labels: &'a [u16],
    pub ids: &'a [usize],
    pub n_classes: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub accuracy: Summary,
    pub churn: ChurnSummary,
    pub pairs: Vec<PairAgreement>,
    pub unstable: Unstable,
    pub reproducibility: Reproducibility,
    pub variation: Variation,
    /// Every test example on which the models do not all agree.
    pub flips: Vec<Flip>,
}

/// One pair of models (a < b).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairAgreement {
    pub a: usize,
    pub b: usize,
    pub churn: f64,
    /// Wilson 95% interval of the churn rate over test examples.
    pub churn_wilson95: Interval,
    /// Mean total-variation distance between the softmax outputs.
    pub total_variation: f64,
    /// Mean symmetric KL divergence ½(KL(p‖q) + KL(q‖p)).
    pub symmetric_kl: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unstable {
    /// Test examples on which not every model predicts the same label.
    pub count: usize,
    pub share: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reproducibility {
    pub distinct_weight_hashes: usize,
    pub distinct_prediction_hashes: usize,
    /// Every model's weights and test logits are bitwise identical.
    pub bitwise_reproducible: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variation {
    /// sqrt(Σ p_i(1−p_i))/n: the accuracy std that test-set sampling alone gives.
    pub accuracy_floor: f64,
    /// Mean churn over accuracy std (null when the std is 0): large values say
    /// churn is not accuracy variation.
    pub churn_to_accuracy_std: Option<f64>,
    /// Each other model against model 0 (the first of the group).
    pub against_first: Vec<Decomposition>,
    /// Test examples where some model's top-2 logit margin is below the tie epsilon.
    pub near_ties: usize,
    pub tie_epsilon: f64,
}

/// Analyses at least two models over the same test set.
pub fn analyze(
    models: &[ModelOutcome],
    test: &TestSet,
    tie_epsilon: f64,
    bootstrap_seed: u64,
) -> Analysis {
    let predictions: Vec<Vec<Prediction>> = models.iter().map(|m| m.predicted.to_vec()).collect();
    let mut accuracy = summarize(&models.iter().map(|m| m.accuracy).collect::<Vec<_>>());
    // A share cannot leave [0, 1], whatever the t-interval's width.
    accuracy.ci95 = Interval {
        low: accuracy.ci95.low.max(0.0),
        high: accuracy.ci95.high.min(1.0),
    };
    let churn = churn_summary(&predictions, bootstrap_seed);
    let n_test = test.labels.len();
    let mut pairs = Vec::new();
    for a in 0..models.len() {
        for b in a + 1..models.len() {
            let differing = (churn.matrix[a][b] * n_test as f64).round() as usize;
            let (total_variation, symmetric_kl) =
                soft_churn(models[a].logits, models[b].logits, test.n_classes);
            pairs.push(PairAgreement {
                a,
                b,
                churn: churn.matrix[a][b],
                churn_wilson95: wilson(differing, n_test),
                total_variation,
                symmetric_kl,
            });
        }
    }
    let flips = flips(&predictions, test.labels, test.ids);
    let distinct_weight_hashes = models
        .iter()
        .map(|m| m.weights_sha256)
        .collect::<BTreeSet<_>>()
        .len();
    let distinct_prediction_hashes = models
        .iter()
        .map(|m| m.predictions_sha256)
        .collect::<BTreeSet<_>>()
        .len();
    let logits: Vec<&[f32]> = models.iter().map(|m| m.logits).collect();
    Analysis {
        variation: Variation {
            accuracy_floor: accuracy_floor(&predictions, test.labels),
            churn_to_accuracy_std: (accuracy.std > 0.0).then(|| churn.mean / accuracy.std),
            against_first: predictions[1..]
                .iter()
                .map(|other| decompose(&predictions[0], other, test.labels))
                .collect(),
            near_ties: near_ties(&logits, test.n_classes, tie_epsilon),
            tie_epsilon,
        },
        accuracy,
        churn,
        pairs,
        unstable: Unstable {
            count: flips.len(),
            share: flips.len() as f64 / n_test as f64,
        },
        reproducibility: Reproducibility {
            distinct_weight_hashes,
            distinct_prediction_hashes,
            bitwise_reproducible: distinct_weight_hashes == 1 && distinct_prediction_hashes == 1,
        },
        flips,
    }
}
