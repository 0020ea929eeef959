//! The resolved configuration: every choice a run depends on, with defaults
//! filled in. It is recorded in the report, and its sha256 names the run.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cli::RunArgs;
use crate::data::source::DataSource;
use crate::data::{hex, SplitSpec};
use crate::model::{ModelConfig, ModelKind};
use crate::randomness::Source;
use crate::train::{OptimizerKind, TrainConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Number of models.
    pub models: usize,
    pub base_seed: u64,
    /// Sources that differ between models; the others use model 0's seed.
    pub vary: BTreeSet<Source>,
    /// libtorch intra-op threads.
    pub threads: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    pub source: DataSource,
    /// A separate test file instead of the split (csv and libsvm).
    pub test: Option<PathBuf>,
    /// CSV label column: a header name or a 0-based index (default the last).
    pub label_column: Option<String>,
    /// LibSVM width (default the largest index present).
    pub num_features: Option<usize>,
    /// Class count (default one past the largest label).
    pub num_classes: Option<usize>,
    /// Standardise features with the training split's statistics.
    pub standardize: bool,
    /// Used only when the source has no test set of its own.
    pub split: SplitSpec,
}

impl RunConfig {
    pub fn from_args(args: &RunArgs) -> Self {
        let default_learning_rate = match args.optimizer {
            OptimizerKind::Adam => 0.001,
            OptimizerKind::Sgd => 0.05,
        };
        RunConfig {
            data: DataConfig {
                source: args.data.clone(),
                test: args.test.clone(),
                label_column: args.label_column.clone(),
                num_features: args.num_features,
                num_classes: args.num_classes,
                standardize: args.standardize,
                split: SplitSpec {
                    seed: args.split_seed,
                    test_fraction: args.test_fraction,
                },
            },
            model: ModelConfig {
                kind: args.model,
                // A linear model has no hidden layers, whatever --hidden says.
                hidden: match args.model {
                    ModelKind::Linear => Vec::new(),
                    ModelKind::Mlp | ModelKind::Cnn => args.hidden.clone(),
                },
                dropout: args.dropout,
            },
            train: TrainConfig {
                optimizer: args.optimizer,
                learning_rate: args.learning_rate.unwrap_or(default_learning_rate),
                momentum: args.momentum,
                epochs: args.epochs,
                batch_size: args.batch_size,
            },
            models: args.seeds,
            base_seed: args.base_seed,
            vary: args.vary.clone(),
            threads: args.threads.unwrap_or_else(all_cores),
        }
    }

    /// sha256 of the configuration's JSON form (fields in declaration order).
    pub fn sha256(&self) -> String {
        let json = serde_json::to_vec(self).expect("a RunConfig always serialises");
        hex(&Sha256::digest(json))
    }
}

fn all_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
