//! The resolved configuration: every choice a run depends on, with defaults
//! filled in. It is recorded in the report, and its sha256 names the run.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cli::{
    AnchorMethodArg, AuditArgs, CommonArgs, ExecutionChoice, MitigationKind, RunArgs,
};
use crate::data::source::DataSource;
use crate::data::{hex, SplitSpec};
use crate::error::{Error, Result};
use crate::model::{ModelConfig, ModelKind};
use crate::randomness::{ModelSeeds, Source};
use crate::train::{AnchorMethod, DeviceChoice, Mitigation, ModelSpec, OptimizerKind, TrainConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Number of models (per group, in an audit).
    pub models: usize,
    pub base_seed: u64,
    /// Sources that differ between models; the others use model 0's seed
    /// (data-refresh, when not varied, means the full training set).
    pub vary: BTreeSet<Source>,
    /// libtorch intra-op threads (sequential), or worker threads (parallel).
    pub threads: usize,
    /// How groups of models train (`--execution`).
    #[serde(default)]
    pub execution: ExecutionChoice,
    pub device: DeviceChoice,
    /// Share of the training set each model sees when data-refresh varies.
    pub refresh_fraction: f64,
    /// Top-2 logit margin under which an example counts as a near-tie.
    pub tie_epsilon: f64,
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

/// β of `--mitigate entropy` when `--entropy-weight` is not given.
const DEFAULT_ENTROPY_WEIGHT: f64 = 0.1;
/// α of `--mitigate codistill` and `anchor` when `--alpha` is not given.
const DEFAULT_ALPHA: f64 = 0.5;

/// A mitigation's flag given without its mitigation would silently do
/// nothing: refused instead.
fn check_mitigation_flags(args: &CommonArgs) -> Result<()> {
    use MitigationKind::{Anchor, Codistill, Entropy};
    let given = [
        (
            "--entropy-weight",
            args.entropy_weight.is_some(),
            &[Entropy][..],
            "entropy",
        ),
        (
            "--alpha",
            args.alpha.is_some(),
            &[Codistill, Anchor][..],
            "codistill or anchor",
        ),
        (
            "--temperature",
            args.temperature.is_some(),
            &[Codistill, Anchor][..],
            "codistill or anchor",
        ),
        (
            "--codistill-k",
            args.codistill_k.is_some(),
            &[Codistill][..],
            "codistill",
        ),
        (
            "--burn-in",
            args.burn_in.is_some(),
            &[Codistill][..],
            "codistill",
        ),
        (
            "--anchor-method",
            args.anchor_method.is_some(),
            &[Anchor][..],
            "anchor",
        ),
    ];
    for (flag, present, mitigations, names) in given {
        if present && !mitigations.contains(&args.mitigate) {
            return Err(Error::usage(
                flag,
                format!("applies only with --mitigate {names}"),
            ));
        }
    }
    if args.mitigate == Anchor && args.anchor.is_none() {
        return Err(Error::usage(
            "--mitigate",
            "anchor needs --anchor PATH (a model saved with --save-models, or a predictions file)",
        ));
    }
    if args.mitigate == Anchor
        && args.temperature.is_some()
        && args.anchor_method == Some(AnchorMethodArg::Rcp)
    {
        return Err(Error::usage(
            "--temperature",
            "applies only to --anchor-method distill",
        ));
    }
    Ok(())
}

/// What makes a model, beyond its spec: the part of the config every model of
/// a run or audit shares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
}

/// One model's whole configuration, its recipe and its spec (a JSON array of
/// the two); its sha256 is the model's key: equal keys, same model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedModel(pub Recipe, pub ModelSpec);

impl ResolvedModel {
    pub fn key(&self) -> String {
        sha256_json(self)
    }
}

impl RunConfig {
    pub fn from_args(args: &RunArgs) -> Result<Self> {
        if args.checks.max_churn_vs_anchor.is_some() && args.common.anchor.is_none() {
            return Err(Error::usage(
                "--max-churn-vs-anchor",
                "needs --anchor PATH: the churn it judges is measured against that model",
            ));
        }
        Self::from_common(&args.common, args.vary.clone())
    }

    fn from_common(args: &CommonArgs, vary: BTreeSet<Source>) -> Result<Self> {
        check_mitigation_flags(args)?;
        let default_learning_rate = match args.optimizer {
            OptimizerKind::Adam => 0.001,
            OptimizerKind::Sgd => 0.05,
        };
        Ok(RunConfig {
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
                mitigation: match args.mitigate {
                    MitigationKind::None => Mitigation::None,
                    MitigationKind::Entropy => Mitigation::Entropy {
                        weight: args.entropy_weight.unwrap_or(DEFAULT_ENTROPY_WEIGHT),
                    },
                    MitigationKind::Codistill => Mitigation::Codistill {
                        alpha: args.alpha.unwrap_or(DEFAULT_ALPHA),
                        temperature: args.temperature.unwrap_or(1.0),
                        k: args.codistill_k.unwrap_or(2),
                        burn_in: args.burn_in.unwrap_or(0),
                    },
                    // The anchor's hash is filled in once the anchor is loaded.
                    MitigationKind::Anchor => Mitigation::Anchor {
                        method: match args.anchor_method.unwrap_or(AnchorMethodArg::Distill) {
                            AnchorMethodArg::Distill => AnchorMethod::Distill,
                            AnchorMethodArg::Rcp => AnchorMethod::Rcp,
                        },
                        alpha: args.alpha.unwrap_or(DEFAULT_ALPHA),
                        temperature: args.temperature.unwrap_or(1.0),
                        anchor_sha256: String::new(),
                    },
                },
            },
            models: args.seeds,
            base_seed: args.base_seed,
            vary,
            threads: args.threads.unwrap_or_else(all_cores),
            execution: args.execution,
            device: args.device,
            refresh_fraction: args.refresh_fraction,
            tie_epsilon: args.tie_epsilon,
        })
    }

    /// sha256 of the configuration's JSON form (fields in declaration order).
    pub fn sha256(&self) -> String {
        sha256_json(self)
    }

    /// Model `index` of this configuration, with its seeds per `vary`.
    pub fn model_spec(&self, vary: &BTreeSet<Source>, index: usize, replica: usize) -> ModelSpec {
        ModelSpec {
            seeds: ModelSeeds::for_model(self.base_seed, vary, index as u64),
            refresh_fraction: vary
                .contains(&Source::DataRefresh)
                .then_some(self.refresh_fraction),
            threads: self.threads,
            device: self.device,
            deterministic_kernels: true,
            replica,
        }
    }

    /// The shared recipe with one model's spec.
    pub fn resolve(&self, spec: &ModelSpec) -> ResolvedModel {
        let recipe = Recipe {
            data: self.data.clone(),
            model: self.model.clone(),
            train: self.train.clone(),
        };
        ResolvedModel(recipe, spec.clone())
    }

    /// sha256 of the shared recipe and one model's spec: equal keys, same model.
    pub fn model_key(&self, spec: &ModelSpec) -> String {
        self.resolve(spec).key()
    }
}

/// An audit: the control configuration (nothing varies) and the settings its
/// groups vary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditConfig {
    pub control: RunConfig,
    /// Intra-op thread counts the threads group alternates between.
    pub thread_counts: Vec<usize>,
}

impl AuditConfig {
    pub fn from_args(args: &AuditArgs) -> Result<Self> {
        if args.checks.max_churn_vs_anchor.is_some() {
            return Err(Error::usage(
                "--max-churn-vs-anchor",
                "applies to run and gate: an audit reports no churn against an anchor",
            ));
        }
        if args.common.anchor.is_some() && args.common.mitigate != MitigationKind::Anchor {
            return Err(Error::usage(
                "--anchor",
                "in an audit it is used only with --mitigate anchor: an audit reports no churn against it (use run)",
            ));
        }
        let control = RunConfig::from_common(&args.common, BTreeSet::new())?;
        let mut thread_counts = args
            .thread_counts
            .clone()
            .unwrap_or_else(|| vec![1, all_cores()]);
        // Repeats add no comparison; first occurrence keeps the alternation order.
        let mut seen = BTreeSet::new();
        thread_counts.retain(|&count| seen.insert(count));
        Ok(AuditConfig {
            control,
            thread_counts,
        })
    }

    pub fn sha256(&self) -> String {
        sha256_json(self)
    }
}

fn sha256_json(value: &impl Serialize) -> String {
    let json = serde_json::to_vec(value).expect("configurations always serialise");
    hex(&Sha256::digest(json))
}

fn all_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
