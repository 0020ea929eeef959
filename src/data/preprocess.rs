//! Preprocessing applied after loading, recorded in the report.

use serde::{Deserialize, Serialize};

use super::{Dataset, Split};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Pixels were divided by this to lie in [0, 1] (image formats).
    pub pixels_divided_by: Option<u16>,
    /// Every feature was centred and scaled by the training split's mean and
    /// (population) standard deviation; a constant feature is only centred.
    pub standardize: bool,
}

/// Standardises both sides with statistics of the training side only, so
/// nothing about the test set leaks into training.
pub fn standardize(split: Split) -> Split {
    let train = &split.train;
    let width = train.n_features;
    let n = train.len() as f64;
    let mut mean = vec![0.0f64; width];
    for row in train.features.chunks_exact(width) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += f64::from(x) / n;
        }
    }
    let mut variance = vec![0.0f64; width];
    for row in train.features.chunks_exact(width) {
        for ((v, &x), m) in variance.iter_mut().zip(row).zip(&mean) {
            *v += (f64::from(x) - m).powi(2) / n;
        }
    }
    let scale: Vec<f64> = variance
        .iter()
        .map(|&v| if v > 0.0 { v.sqrt() } else { 1.0 })
        .collect();
    let apply = |data: Dataset| Dataset {
        features: data
            .features
            .chunks_exact(width)
            .flat_map(|row| {
                row.iter()
                    .zip(&mean)
                    .zip(&scale)
                    .map(|((&x, m), s)| ((f64::from(x) - m) / s) as f32)
            })
            .collect(),
        ..data
    };
    Split {
        train: apply(split.train),
        test: apply(split.test),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(features: Vec<f32>) -> Dataset {
        let n = features.len() / 2;
        Dataset {
            name: "t".into(),
            features,
            n_features: 2,
            labels: vec![0; n],
            n_classes: 2,
            image_shape: None,
            class_names: None,
            ids: (0..n).collect(),
        }
    }

    #[test]
    fn statistics_come_from_the_training_side() {
        // Column 0: mean 2, std 1; column 1 is constant 5 (only centred).
        let split = Split {
            train: data(vec![1.0, 5.0, 3.0, 5.0]),
            test: data(vec![4.0, 7.0]),
        };
        let out = standardize(split);
        assert_eq!(out.train.features, vec![-1.0, 0.0, 1.0, 0.0]);
        assert_eq!(out.test.features, vec![2.0, 2.0]);
    }
}
