//! Pure functions over predictions: churn, flips and summary statistics. No
//! libtorch here, so every figure is tested exactly on hand-made cases.

pub mod agreement;
pub mod analysis;
pub mod anchor;
pub mod churn;
pub mod stats;

/// A model's predicted class for one example; `None` when the logit row held a
/// NaN, which is reported rather than mapped to some class.
pub type Prediction = Option<u16>;

/// Argmax of one logit row. Ties go to the lowest class index; any NaN makes
/// the row unpredictable (`None`).
pub fn argmax(row: &[f32]) -> Prediction {
    if row.iter().any(|value| value.is_nan()) {
        return None;
    }
    let mut best = 0;
    for (class, &value) in row.iter().enumerate().skip(1) {
        if value > row[best] {
            best = class;
        }
    }
    u16::try_from(best).ok().filter(|_| !row.is_empty())
}

/// Predictions for a row-major logit matrix with `n_classes` columns.
pub fn predict(logits: &[f32], n_classes: usize) -> Vec<Prediction> {
    logits.chunks(n_classes).map(argmax).collect()
}

/// Share of examples predicted correctly; an unpredictable row counts as wrong.
pub fn accuracy(predicted: &[Prediction], labels: &[u16]) -> f64 {
    let correct = predicted
        .iter()
        .zip(labels)
        .filter(|(p, &label)| **p == Some(label))
        .count();
    correct as f64 / labels.len() as f64
}

pub fn count_unpredictable(predicted: &[Prediction]) -> usize {
    predicted.iter().filter(|p| p.is_none()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_breaks_ties_low_and_refuses_nan() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), Some(1));
        assert_eq!(argmax(&[3.0, 3.0]), Some(0));
        assert_eq!(argmax(&[-1.0, f32::INFINITY, 0.0]), Some(1));
        assert_eq!(argmax(&[0.0, f32::NAN, 9.0]), None);
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn predict_and_accuracy() {
        let logits = [1.0, 0.0, 0.0, 2.0, f32::NAN, 0.0, 5.0, 5.0];
        let predicted = predict(&logits, 2);
        assert_eq!(predicted, vec![Some(0), Some(1), None, Some(0)]);
        assert_eq!(accuracy(&predicted, &[0, 1, 0, 1]), 0.5);
        assert_eq!(count_unpredictable(&predicted), 1);
    }
}
