//! The reports: typed structs, serialised by serde, that every output format
//! renders. They carry enough (test labels, every model's predictions) for a
//! dashboard to recompute every churn figure from the JSON alone.

pub mod audit;
pub mod table;

use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::data::preprocess::Preprocessing;
use crate::data::{Prepared, SplitUsed};
use crate::metrics::analysis::{
    Analysis, ModelOutcome, PairAgreement, Reproducibility, TestSet, Unstable, Variation,
};
use crate::metrics::churn::{ChurnSummary, Flip};
use crate::metrics::stats::Summary;
use crate::metrics::{accuracy, count_unpredictable, predict, Prediction};
use crate::randomness::ModelSeeds;
use crate::train::{ModelSpec, TrainedModel};

/// Bumped whenever a field changes meaning or disappears (adding one is not a break).
pub const SCHEMA_VERSION: u32 = 1;

/// The report of `churn-audit run`: one group of models.
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
    pub pairs: Vec<PairAgreement>,
    pub unstable: Unstable,
    pub reproducibility: Reproducibility,
    pub variation: Variation,
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
    /// The run's intra-op thread count (each model's own is in `models[]`).
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

    pub fn test_set(&self) -> TestSet<'_> {
        TestSet {
            labels: &self.test_labels,
            ids: &self.test_ids,
            n_classes: self.n_classes,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    pub index: usize,
    /// sha256 of the recipe and this model's spec: models with equal keys are
    /// the same model, trained once.
    pub key: String,
    pub seeds: ModelSeeds,
    pub threads: usize,
    /// Share of the training set this model saw (null: all of it).
    pub refresh_fraction: Option<f64>,
    pub deterministic_kernels: bool,
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
        key: String,
        spec: &ModelSpec,
        trained: &TrainedModel,
        test: &DatasetInfo,
    ) -> Self {
        let predicted = predict(&trained.test_logits, test.n_classes);
        ModelReport {
            index,
            key,
            seeds: spec.seeds,
            threads: spec.threads,
            refresh_fraction: spec.refresh_fraction,
            deterministic_kernels: spec.deterministic_kernels,
            accuracy: accuracy(&predicted, &test.test_labels),
            unpredictable: count_unpredictable(&predicted),
            weights_sha256: trained.weights_sha256.clone(),
            predictions_sha256: trained.predictions_sha256.clone(),
            data_order_sha256: trained.data_order_sha256.clone(),
            steps: trained.steps,
            train_seconds: trained.seconds,
            predicted,
        }
    }

    pub fn outcome<'a>(&'a self, logits: &'a [f32]) -> ModelOutcome<'a> {
        ModelOutcome {
            predicted: &self.predicted,
            logits,
            accuracy: self.accuracy,
            weights_sha256: &self.weights_sha256,
            predictions_sha256: &self.predictions_sha256,
        }
    }
}

impl Report {
    pub fn build(
        config: RunConfig,
        execution: Execution,
        dataset: DatasetInfo,
        models: Vec<ModelReport>,
        analysis: Analysis,
    ) -> Self {
        let Analysis {
            accuracy,
            churn,
            pairs,
            unstable,
            reproducibility,
            variation,
            flips,
        } = analysis;
        Report {
            schema_version: SCHEMA_VERSION,
            tool: ToolInfo::current(),
            config_sha256: config.sha256(),
            config,
            execution,
            dataset,
            models,
            accuracy,
            churn,
            pairs,
            unstable,
            reproducibility,
            variation,
            flips,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a Report always serialises")
    }
}
