//! The report: one typed struct, serialised by serde, that every output format
//! renders. It carries enough (test labels, every model's predictions) for a
//! dashboard to recompute every churn figure from the JSON alone.

pub mod table;

use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::data::preprocess::Preprocessing;
use crate::data::{Prepared, SplitUsed};
use crate::metrics::churn::{churn_summary, flips, ChurnSummary, Flip};
use crate::metrics::stats::{summarize, Summary};
use crate::metrics::{accuracy, count_unpredictable, predict, Prediction};
use crate::randomness::{derive_seed, ModelSeeds, BOOTSTRAP_STREAM};
use crate::train::TrainedModel;

/// Bumped whenever a field changes meaning or disappears (adding one is not a break).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool: ToolInfo,
    pub config: RunConfig,
    pub config_sha256: String,
    pub execution: Execution,
    pub dataset: DatasetInfo,
    pub models: Vec<ModelReport>,
    pub accuracy: Summary,
    pub churn: ChurnSummary,
    pub unstable: Unstable,
    pub reproducibility: Reproducibility,
    /// Every test example on which the models do not all agree.
    pub flips: Vec<Flip>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
    pub libtorch: String,
}

impl ToolInfo {
    pub fn current() -> Self {
        ToolInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            libtorch: option_env!("CHURN_AUDIT_LIBTORCH_VERSION")
                .unwrap_or("unknown")
                .into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub device: String,
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    /// How models were trained: "sequential" (one after another).
    pub mode: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub name: String,
    pub n_train: usize,
    pub n_test: usize,
    pub n_features: usize,
    pub n_classes: usize,
    pub image_shape: Option<(usize, usize)>,
    /// A name per class, where the source defines them.
    pub class_names: Option<Vec<String>>,
    /// Where the test set came from: a stratified split, or the source's own.
    pub split: SplitUsed,
    pub preprocessing: Preprocessing,
    pub train_sha256: String,
    pub test_sha256: String,
    pub label_map_sha256: String,
    /// Source row of each test example, in test order.
    pub test_ids: Vec<usize>,
    pub test_labels: Vec<u16>,
}

impl DatasetInfo {
    pub fn describe(prepared: &Prepared) -> Self {
        let (train, test) = (&prepared.split.train, &prepared.split.test);
        DatasetInfo {
            name: test.name.clone(),
            n_train: train.len(),
            n_test: test.len(),
            n_features: test.n_features,
            n_classes: test.n_classes,
            image_shape: test.image_shape,
            class_names: test.class_names.clone(),
            split: prepared.split_used.clone(),
            preprocessing: prepared.preprocessing.clone(),
            train_sha256: train.fingerprint(),
            test_sha256: test.fingerprint(),
            label_map_sha256: test.label_map_fingerprint(),
            test_ids: test.ids.clone(),
            test_labels: test.labels.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    pub index: usize,
    pub seeds: ModelSeeds,
    pub accuracy: f64,
    /// Test rows whose logits held a NaN (no prediction; counted as wrong).
    pub unpredictable: usize,
    pub weights_sha256: String,
    pub predictions_sha256: String,
    pub data_order_sha256: String,
    pub steps: u64,
    pub train_seconds: f64,
    /// Predicted class per test example (null where unpredictable).
    pub predicted: Vec<Prediction>,
}

impl ModelReport {
    pub fn new(
        index: usize,
        seeds: ModelSeeds,
        trained: TrainedModel,
        test_labels: &[u16],
        n_classes: usize,
    ) -> Self {
        let predicted = predict(&trained.test_logits, n_classes);
        ModelReport {
            index,
            seeds,
            accuracy: accuracy(&predicted, test_labels),
            unpredictable: count_unpredictable(&predicted),
            weights_sha256: trained.weights_sha256,
            predictions_sha256: trained.predictions_sha256,
            data_order_sha256: trained.data_order_sha256,
            steps: trained.steps,
            train_seconds: trained.seconds,
            predicted,
        }
    }
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

fn distinct<'a>(hashes: impl Iterator<Item = &'a String>) -> usize {
    hashes.collect::<std::collections::BTreeSet<_>>().len()
}

impl Report {
    /// Derives every figure from the models' predictions.
    pub fn build(
        config: RunConfig,
        execution: Execution,
        dataset: DatasetInfo,
        models: Vec<ModelReport>,
    ) -> Self {
        let predictions: Vec<Vec<Prediction>> =
            models.iter().map(|m| m.predicted.clone()).collect();
        let accuracies: Vec<f64> = models.iter().map(|m| m.accuracy).collect();
        let flips = flips(&predictions, &dataset.test_labels, &dataset.test_ids);
        let distinct_weight_hashes = distinct(models.iter().map(|m| &m.weights_sha256));
        let distinct_prediction_hashes = distinct(models.iter().map(|m| &m.predictions_sha256));
        Report {
            schema_version: SCHEMA_VERSION,
            tool: ToolInfo::current(),
            config_sha256: config.sha256(),
            churn: churn_summary(
                &predictions,
                derive_seed(config.base_seed, BOOTSTRAP_STREAM, 0),
            ),
            config,
            execution,
            accuracy: summarize(&accuracies),
            unstable: Unstable {
                count: flips.len(),
                share: flips.len() as f64 / dataset.n_test as f64,
            },
            reproducibility: Reproducibility {
                distinct_weight_hashes,
                distinct_prediction_hashes,
                bitwise_reproducible: distinct_weight_hashes == 1
                    && distinct_prediction_hashes == 1,
            },
            flips,
            dataset,
            models,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a Report always serialises")
    }
}
