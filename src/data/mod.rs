//! Datasets: one loader per format, all producing the same [`Dataset`], the
//! seeded stratified split that every model of a run shares, and the one entry
//! point, [`load`], that turns a [`DataConfig`] into the split to train on.

pub mod csv;
pub mod digits;
pub mod fashion_mnist;
pub mod idx;
pub mod input;
pub mod libsvm;
pub mod preprocess;
pub mod source;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::DataConfig;
use crate::error::{Error, Result};
use crate::randomness::{derive_seed, Stream, SPLIT_STREAM};
use preprocess::Preprocessing;
use source::DataSource;

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
    /// A name per class, where the source defines them.
    pub class_names: Option<Vec<String>>,
    /// A stable id per example (its row in the source file), carried through the split.
    pub ids: Vec<usize>,
}

/// What a loader hands back: the training examples, the source's own test
/// set if it has one, and the pixel scaling it applied.
pub struct Loaded {
    pub train: Dataset,
    pub test: Option<Dataset>,
    pub pixels_divided_by: Option<u16>,
}

/// Which test set the run uses, recorded in the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SplitUsed {
    /// Carved out of the data by [`stratified_split`].
    Stratified(SplitSpec),
    /// The source's own test set (IDX t10k files, `--test`); no split is made.
    SourceTestSet,
}

/// The data a run trains and tests on, and how it got there.
pub struct Prepared {
    pub split: Split,
    pub split_used: SplitUsed,
    pub preprocessing: Preprocessing,
}

/// Loads the configured source, splits it unless it has its own test set,
/// and applies the configured preprocessing.
pub fn load(config: &DataConfig) -> Result<Prepared> {
    check_flags(config)?;
    let test = config.test.as_deref();
    let loaded = match &config.source {
        DataSource::Digits => digits::load()?,
        DataSource::FashionMnist { dir } => fashion_mnist::load(dir.as_deref())?,
        DataSource::Idx { dir } => {
            idx::load_dir(&config.source.to_string(), dir, config.num_classes)?
        }
        DataSource::Csv { path } => csv::load(
            path,
            test,
            csv::CsvOptions {
                label_column: config.label_column.as_deref(),
                num_classes: config.num_classes,
            },
        )?,
        DataSource::Libsvm { path } => libsvm::load(
            path,
            test,
            libsvm::LibsvmOptions {
                num_features: config.num_features,
                num_classes: config.num_classes,
            },
        )?,
    };
    let (split, split_used) = match loaded.test {
        Some(test) => (
            Split {
                train: loaded.train,
                test,
            },
            SplitUsed::SourceTestSet,
        ),
        None => (
            stratified_split(&loaded.train, config.split)?,
            SplitUsed::Stratified(config.split),
        ),
    };
    Ok(Prepared {
        split: if config.standardize {
            preprocess::standardize(split)
        } else {
            split
        },
        split_used,
        preprocessing: Preprocessing {
            pixels_divided_by: loaded.pixels_divided_by,
            standardize: config.standardize,
        },
    })
}

/// Format-specific flags are refused where they would be silently ignored.
fn check_flags(config: &DataConfig) -> Result<()> {
    let tabular = matches!(
        config.source,
        DataSource::Csv { .. } | DataSource::Libsvm { .. }
    );
    let checks = [
        ("--test", config.test.is_some(), tabular, "csv and libsvm"),
        (
            "--label-column",
            config.label_column.is_some(),
            matches!(config.source, DataSource::Csv { .. }),
            "csv",
        ),
        (
            "--num-features",
            config.num_features.is_some(),
            matches!(config.source, DataSource::Libsvm { .. }),
            "libsvm",
        ),
        (
            "--num-classes",
            config.num_classes.is_some(),
            tabular || matches!(config.source, DataSource::Idx { .. }),
            "csv, libsvm and idx",
        ),
    ];
    for (flag, given, applies, formats) in checks {
        if given && !applies {
            return Err(Error::usage(
                flag,
                format!("applies to {formats} data only, not {}", config.source),
            ));
        }
    }
    Ok(())
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
            class_names: self.class_names.clone(),
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

    /// sha256 of the label map: for each class in index order, its name's
    /// byte length (u64 LE) and the name (UTF-8), the name being the class
    /// name where the source has them, else the class index in decimal.
    pub fn label_map_fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for class in 0..self.n_classes {
            let name = self
                .class_names
                .as_ref()
                .and_then(|names| names.get(class).cloned())
                .unwrap_or_else(|| class.to_string());
            hasher.update((name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
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
    // Grouped in one pass (the class count can be large); classes without
    // rows are skipped, which draws nothing from the stream either way.
    let mut by_class: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (row, &label) in data.labels.iter().enumerate() {
        by_class.entry(label).or_default().push(row);
    }
    for mut rows in by_class.into_values() {
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
            class_names: None,
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
