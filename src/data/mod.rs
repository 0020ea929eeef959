//! Datasets: one loader per format, all producing the same [`Dataset`], and
//! the seeded stratified split that every model of a run shares.

pub mod digits;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::randomness::{derive_seed, Stream, SPLIT_STREAM};

/// Examples as a dense row-major matrix with integer class labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub name: String,
    pub features: Vec<f32>,
    pub n_features: usize,
    pub labels: Vec<u16>,
    pub n_classes: usize,
    /// (height, width) for image data, so image models and galleries can use it.
    pub image_shape: Option<(usize, usize)>,
    /// A stable id per example (its row in the source file), carried through the split.
    pub ids: Vec<usize>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The examples at `rows`, in that order.
    pub fn subset(&self, rows: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(rows.len() * self.n_features);
        for &row in rows {
            features.extend_from_slice(
                &self.features[row * self.n_features..(row + 1) * self.n_features],
            );
        }
        Dataset {
            name: self.name.clone(),
            features,
            n_features: self.n_features,
            labels: rows.iter().map(|&row| self.labels[row]).collect(),
            n_classes: self.n_classes,
            image_shape: self.image_shape,
            ids: rows.iter().map(|&row| self.ids[row]).collect(),
        }
    }

    /// sha256 of the decoded examples: n, n_features, n_classes (u64 LE each),
    /// then every feature as f32 LE, then every label as u16 LE. Two runs are
    /// comparable only if their test fingerprints match.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for size in [self.len(), self.n_features, self.n_classes] {
            hasher.update((size as u64).to_le_bytes());
        }
        for value in &self.features {
            hasher.update(value.to_le_bytes());
        }
        for label in &self.labels {
            hasher.update(label.to_le_bytes());
        }
        hex(&hasher.finalize())
    }
}

/// How the test set was carved out, recorded in every report.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitSpec {
    pub seed: u64,
    pub test_fraction: f64,
}

pub struct Split {
    pub train: Dataset,
    pub test: Dataset,
}

/// Stratified split: within each class (in ascending class order) the rows are
/// shuffled by the split stream and the first round(n_c · fraction) go to the
/// test set. Both sides keep the source's row order, so the split depends on
/// the seed and the data alone.
pub fn stratified_split(data: &Dataset, spec: SplitSpec) -> Result<Split> {
    if !(spec.test_fraction > 0.0 && spec.test_fraction < 1.0) {
        return Err(Error::usage(
            "--test-fraction",
            format!(
                "must be between 0 and 1 (exclusive), got {}",
                spec.test_fraction
            ),
        ));
    }
    let mut stream = Stream::new(derive_seed(spec.seed, SPLIT_STREAM, 0));
    let mut is_test = vec![false; data.len()];
    for class in 0..data.n_classes {
        let mut rows: Vec<usize> = (0..data.len())
            .filter(|&row| data.labels[row] as usize == class)
            .collect();
        stream.shuffle(&mut rows);
        let n_test = (rows.len() as f64 * spec.test_fraction).round() as usize;
        for &row in &rows[..n_test] {
            is_test[row] = true;
        }
    }
    let (test_rows, train_rows): (Vec<usize>, Vec<usize>) =
        (0..data.len()).partition(|&row| is_test[row]);
    if test_rows.is_empty() || train_rows.is_empty() {
        return Err(Error::usage(
            "--test-fraction",
            format!(
                "{} leaves {} training and {} test examples; both need at least one",
                spec.test_fraction,
                train_rows.len(),
                test_rows.len()
            ),
        ));
    }
    Ok(Split {
        train: data.subset(&train_rows),
        test: data.subset(&test_rows),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n_per_class: usize, classes: usize) -> Dataset {
        let n = n_per_class * classes;
        Dataset {
            name: "toy".into(),
            features: (0..n).map(|i| i as f32).collect(),
            n_features: 1,
            labels: (0..n).map(|i| (i % classes) as u16).collect(),
            n_classes: classes,
            image_shape: None,
            ids: (0..n).collect(),
        }
    }

    #[test]
    fn split_is_stratified_disjoint_and_seeded() {
        let data = toy(10, 3);
        let spec = SplitSpec {
            seed: 0,
            test_fraction: 0.2,
        };
        let split = stratified_split(&data, spec).unwrap();
        assert_eq!(split.test.len(), 6);
        for class in 0..3u16 {
            assert_eq!(split.test.labels.iter().filter(|&&l| l == class).count(), 2);
        }
        let mut all: Vec<usize> = split
            .train
            .ids
            .iter()
            .chain(&split.test.ids)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..30).collect::<Vec<_>>());
        assert_eq!(
            stratified_split(&data, spec).unwrap().test.ids,
            split.test.ids
        );
        let other = stratified_split(&data, SplitSpec { seed: 1, ..spec }).unwrap();
        assert_ne!(other.test.ids, split.test.ids);
    }

    #[test]
    fn split_refuses_fractions_that_empty_a_side() {
        let err = stratified_split(
            &toy(2, 2),
            SplitSpec {
                seed: 0,
                test_fraction: 0.1,
            },
        )
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "--test-fraction: 0.1 leaves 4 training and 0 test examples; both need at least one"
        );
    }

    #[test]
    fn fingerprint_is_pinned_and_sensitive() {
        let data = toy(1, 2);
        // n=2, n_features=1, n_classes=2, features [0.0, 1.0], labels [0, 1].
        let mut bytes = Vec::new();
        for v in [2u64, 1, 2] {
            bytes.extend(v.to_le_bytes());
        }
        bytes.extend(0f32.to_le_bytes());
        bytes.extend(1f32.to_le_bytes());
        bytes.extend(0u16.to_le_bytes());
        bytes.extend(1u16.to_le_bytes());
        assert_eq!(data.fingerprint(), hex(&Sha256::digest(&bytes)));
        let mut changed = data.clone();
        changed.labels[1] = 0;
        assert_ne!(changed.fingerprint(), data.fingerprint());
    }
}
