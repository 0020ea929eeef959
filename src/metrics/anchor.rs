//! How new models moved relative to a previous one (the anchor): the churn a
//! release would show its users, split into changes that fixed an error and
//! changes that broke a right answer.

use serde::{Deserialize, Serialize};

use super::churn::{draw_example_weights, percentile_interval, BOOTSTRAP_REPLICATES};
use super::stats::Interval;
use super::Prediction;
use crate::randomness::Stream;

/// One model against the anchor, each a share of the test set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersusAnchor {
    pub index: usize,
    /// Predictions that differ from the anchor's.
    pub churn: f64,
    /// Anchor wrong, this model right.
    pub good_churn: f64,
    /// Anchor right, this model wrong.
    pub bad_churn: f64,
    /// good / bad churn; null when no prediction got worse.
    pub win_loss: Option<f64>,
    pub accuracy: f64,
}

pub fn versus_anchor(
    index: usize,
    anchor: &[Prediction],
    model: &[Prediction],
    labels: &[u16],
) -> VersusAnchor {
    let n = labels.len() as f64;
    let (mut changed, mut good, mut bad, mut right) = (0usize, 0usize, 0usize, 0usize);
    for ((&a, &m), &label) in anchor.iter().zip(model).zip(labels) {
        let (anchor_right, model_right) = (a == Some(label), m == Some(label));
        changed += usize::from(a != m);
        good += usize::from(!anchor_right && model_right);
        bad += usize::from(anchor_right && !model_right);
        right += usize::from(model_right);
    }
    VersusAnchor {
        index,
        churn: changed as f64 / n,
        good_churn: good as f64 / n,
        bad_churn: bad as f64 / n,
        win_loss: (bad > 0).then(|| good as f64 / bad as f64),
        accuracy: right as f64 / n,
    }
}

/// A share averaged over the models, with its spread and interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanShare {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// 95% percentile bootstrap interval, resampling models and test examples.
    pub ci95: Interval,
}

/// Every model against the anchor, with the means over models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnchorAnalysis {
    pub anchor_accuracy: f64,
    /// Predictions that differ from the anchor's.
    pub churn: MeanShare,
    /// Anchor wrong, model right.
    pub good_churn: MeanShare,
    /// Anchor right, model wrong.
    pub bad_churn: MeanShare,
    pub models: Vec<VersusAnchor>,
}

/// At least one model, each with its index, against the anchor's
/// predictions; `bootstrap_seed` draws the intervals' resamples.
pub fn analyze_anchor(
    anchor: &[Prediction],
    models: &[(usize, &[Prediction])],
    labels: &[u16],
    bootstrap_seed: u64,
) -> AnchorAnalysis {
    let versus: Vec<VersusAnchor> = models
        .iter()
        .map(|&(index, predicted)| versus_anchor(index, anchor, predicted, labels))
        .collect();
    // The examples where each model shows each kind of change, for the bootstrap.
    let events = |kind: fn(bool, bool, bool) -> bool| -> Vec<Vec<u32>> {
        models
            .iter()
            .map(|(_, predicted)| {
                (0..labels.len() as u32)
                    .filter(|&k| {
                        let (a, m) = (anchor[k as usize], predicted[k as usize]);
                        let label = Some(labels[k as usize]);
                        kind(a != m, a == label, m == label)
                    })
                    .collect()
            })
            .collect()
    };
    let share = |figure: fn(&VersusAnchor) -> f64, kind: fn(bool, bool, bool) -> bool| {
        let values: Vec<f64> = versus.iter().map(figure).collect();
        MeanShare {
            mean: values.iter().sum::<f64>() / values.len() as f64,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ci95: bootstrap_mean_share(&events(kind), labels.len(), bootstrap_seed),
        }
    };
    AnchorAnalysis {
        anchor_accuracy: super::accuracy(anchor, labels),
        churn: share(|v| v.churn, |changed, _, _| changed),
        good_churn: share(
            |v| v.good_churn,
            |_, anchor_right, right| !anchor_right && right,
        ),
        bad_churn: share(
            |v| v.bad_churn,
            |_, anchor_right, right| anchor_right && !right,
        ),
        models: versus,
    }
}

/// Percentile interval for the mean over models of a share of examples,
/// given each model's examples where the event happens: each replicate
/// resamples the models and the examples, both with replacement.
fn bootstrap_mean_share(events: &[Vec<u32>], n_examples: usize, seed: u64) -> Interval {
    let mut stream = Stream::new(seed);
    let mut weights = vec![0u32; n_examples];
    let replicates = (0..BOOTSTRAP_REPLICATES)
        .map(|_| {
            let drawn: Vec<usize> = (0..events.len())
                .map(|_| stream.below(events.len() as u64) as usize)
                .collect();
            draw_example_weights(&mut stream, &mut weights);
            let total: u32 = drawn
                .iter()
                .flat_map(|&m| &events[m])
                .map(|&k| weights[k as usize])
                .sum();
            f64::from(total) / (n_examples * drawn.len()) as f64
        })
        .collect();
    percentile_interval(replicates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad_churn_by_hand() {
        let labels = [0u16, 1, 2, 3, 4];
        // Anchor right on 0, 1, 2; wrong on 3 and 4.
        let anchor = [Some(0), Some(1), Some(2), Some(0), Some(0)];
        // Breaks 1 (bad), fixes 3 (good), changes 4 wrong → wrong (neither),
        // and has no prediction on 2 (bad).
        let model = [Some(0), Some(2), None, Some(3), Some(1)];
        let v = versus_anchor(7, &anchor, &model, &labels);
        assert_eq!(v.index, 7);
        assert_eq!(v.churn, 4.0 / 5.0);
        assert_eq!(v.good_churn, 1.0 / 5.0);
        assert_eq!(v.bad_churn, 2.0 / 5.0);
        assert_eq!(v.win_loss, Some(0.5));
        assert_eq!(v.accuracy, 2.0 / 5.0);
        let same = versus_anchor(0, &anchor, &anchor, &labels);
        assert_eq!((same.churn, same.win_loss), (0.0, None));
    }

    #[test]
    fn means_over_models() {
        let labels = [0u16, 1];
        let anchor = [Some(0), Some(0)];
        let a = [Some(0), Some(1)];
        let b = [Some(0), Some(0)];
        let analysis = analyze_anchor(&anchor, &[(0, &a), (1, &b)], &labels, 3);
        assert_eq!(analysis.anchor_accuracy, 0.5);
        assert_eq!(analysis.churn.mean, 0.25);
        assert_eq!((analysis.churn.min, analysis.churn.max), (0.0, 0.5));
        assert_eq!(analysis.good_churn.mean, 0.25);
        assert_eq!(analysis.bad_churn.mean, 0.0);
        assert_eq!(
            analysis.bad_churn.ci95,
            Interval {
                low: 0.0,
                high: 0.0
            }
        );
        assert_eq!(analysis.models[0].win_loss, None);
        // Shares of resampled examples: the interval stays within [0, 1].
        let ci = analysis.churn.ci95;
        assert!(
            0.0 <= ci.low && ci.low <= 0.25 && 0.25 <= ci.high && ci.high <= 1.0,
            "{ci:?}"
        );
    }
}
