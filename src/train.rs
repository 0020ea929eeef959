//! Training one model with its own seeds, and what comes out of it: test
//! logits plus the hashes that make bitwise reproducibility checkable.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, TchError, Tensor};

use crate::data::{hex, Split};
use crate::error::{Error, Result};
use crate::libtorch::{set_deterministic_kernels, Generator};
use crate::loss;
use crate::model::{Model, ModelConfig, Shape};
use crate::randomness::{ModelSeeds, Stream};

/// Where models train. Serialised as "cpu" or "cuda:N".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl From<DeviceChoice> for String {
    fn from(device: DeviceChoice) -> String {
        device.to_string()
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|ordinal| ordinal.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("'{text}' is not a device")),
        }
    }
}

impl DeviceChoice {
    /// The tch device, or a usage error when this machine has no such device.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(ordinal) => {
                // cuBLAS reads this once, when CUDA starts; without it libtorch's
                // deterministic mode refuses cuBLAS matrix products.
                if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
                    std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
                }
                let available = if tch::Cuda::is_available() {
                    tch::Cuda::device_count() as usize
                } else {
                    0
                };
                if ordinal < available {
                    Ok(Device::Cuda(ordinal))
                } else {
                    Err(Error::usage(
                        "--device",
                        format!(
                            "{self} is not available: this machine has {available} CUDA devices"
                        ),
                    ))
                }
            }
        }
    }
}

/// Everything that makes one model what it is, beyond the shared recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub seeds: ModelSeeds,
    /// Share of the training rows this model sees (`None`: all of them).
    pub refresh_fraction: Option<f64>,
    /// libtorch intra-op threads.
    pub threads: usize,
    pub device: DeviceChoice,
    /// Deterministic kernels (libtorch's deterministic algorithms and cuDNN).
    pub deterministic_kernels: bool,
    /// Tells apart deliberate retrains of an otherwise identical model (the
    /// control group), which must not be deduplicated.
    pub replica: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with (heavy-ball) momentum.
    Sgd,
    Adam,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub optimizer: OptimizerKind,
    pub learning_rate: f64,
    /// Used by SGD only.
    pub momentum: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub mitigation: Mitigation,
}

/// A change to the training loss meant to reduce churn (docs/mitigations.md).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Mitigation {
    None,
    /// Cross-entropy plus `weight` times the batch-mean prediction entropy.
    Entropy {
        weight: f64,
    },
}

/// The split as tensors on the training device, built once and shared by
/// every model of a run.
pub struct TrainData {
    device: Device,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    n_train: usize,
    pub shape: Shape,
}

impl TrainData {
    pub fn new(split: &Split, device: Device) -> Result<Self> {
        let rows = |n: usize, features: &[f32]| -> Result<Tensor> {
            Ok(Tensor::f_from_slice(features)?
                .f_reshape([n as i64, split.train.n_features as i64])?)
        };
        let labels: Vec<i64> = split.train.labels.iter().map(|&l| i64::from(l)).collect();
        Ok(TrainData {
            device,
            train_x: rows(split.train.len(), &split.train.features)?,
            train_y: Tensor::f_from_slice(&labels)?.f_to_device(device)?,
            test_x: rows(split.test.len(), &split.test.features)?,
            n_train: split.train.len(),
            shape: Shape {
                n_inputs: split.train.n_features,
                n_classes: split.train.n_classes,
                image: split.train.image_shape,
            },
        })
    }

    /// The rows `batch` names, as (features, labels) on the training device.
    pub fn batch(&self, rows: &[u32]) -> Result<(Tensor, Tensor), TchError> {
        let rows: Vec<i64> = rows.iter().map(|&row| i64::from(row)).collect();
        let rows = Tensor::f_from_slice(&rows)?.f_to_device(self.device)?;
        Ok((
            self.train_x.f_index_select(0, &rows)?,
            self.train_y.f_index_select(0, &rows)?,
        ))
    }

    pub fn n_train(&self) -> usize {
        self.n_train
    }

    /// New handles on the same tensors (train features, train labels, test
    /// features), no copy: a worker thread holds its own, since a tch
    /// `Tensor` may move between threads but not be shared.
    pub fn handles(&self) -> (Tensor, Tensor, Tensor) {
        (
            self.train_x.shallow_clone(),
            self.train_y.shallow_clone(),
            self.test_x.shallow_clone(),
        )
    }
}

pub struct TrainedModel {
    /// Row-major n_test × n_classes.
    pub test_logits: Vec<f32>,
    pub weights_sha256: String,
    /// sha256 of the test logits as f32 LE: equal only if outputs are bitwise equal.
    pub predictions_sha256: String,
    /// sha256 of the training rows in the order visited, every epoch (u32 LE):
    /// without data refresh, exactly the data-order stream's permutations.
    pub data_order_sha256: String,
    pub steps: u64,
    pub seconds: f64,
}

/// The order a model visits its training rows: a fresh permutation of them
/// every epoch from the data-order stream, hashed as it goes.
pub struct DataOrder {
    rows: Vec<u32>,
    stream: Stream,
    visited: Sha256,
}

impl DataOrder {
    pub fn new(spec: &ModelSpec, n_train: usize) -> Self {
        let seeds = &spec.seeds;
        DataOrder {
            rows: training_rows(n_train, spec.refresh_fraction, seeds.data_refresh),
            stream: Stream::new(seeds.data_order),
            visited: Sha256::new(),
        }
    }

    pub fn next_epoch(&mut self) -> Vec<u32> {
        let order: Vec<u32> = self
            .stream
            .permutation(self.rows.len())
            .into_iter()
            .map(|position| self.rows[position as usize])
            .collect();
        for row in &order {
            self.visited.update(row.to_le_bytes());
        }
        order
    }

    pub fn sha256(&self) -> String {
        hex(&self.visited.clone().finalize())
    }
}

/// One model in training: its parameters, optimiser and dropout generator.
/// The init seed reaches libtorch's global generator right before the model
/// is built (nothing else draws from it); dropout draws from the model's own
/// generator, so learners stepped side by side cannot shift each other's
/// masks. The data order is the caller's: learners may share batches.
pub struct Learner {
    index: usize,
    store: nn::VarStore,
    model: Model,
    optimizer: nn::Optimizer,
    dropout: Generator,
    steps: u64,
    started: Instant,
}

impl Learner {
    pub fn new(
        index: usize,
        spec: &ModelSpec,
        data: &TrainData,
        model_config: &ModelConfig,
        config: &TrainConfig,
    ) -> Result<Self> {
        let started = Instant::now();
        tch::set_num_threads(spec.threads as i32);
        set_deterministic_kernels(spec.deterministic_kernels)?;
        tch::manual_seed(spec.seeds.init as i64);
        let store = nn::VarStore::new(data.device);
        let model = Model::new(&store.root(), data.shape, model_config)?;
        let optimizer = match config.optimizer {
            OptimizerKind::Sgd => nn::Sgd {
                momentum: config.momentum,
                ..Default::default()
            }
            .build(&store, config.learning_rate)?,
            OptimizerKind::Adam => nn::Adam::default().build(&store, config.learning_rate)?,
        };
        Ok(Learner {
            index,
            store,
            model,
            optimizer,
            dropout: Generator::new(spec.seeds.dropout)?,
            steps: 0,
            started,
        })
    }

    /// Training-mode logits (dropout on) for a batch.
    pub fn forward(&mut self, xs: &Tensor) -> Result<Tensor, TchError> {
        self.model.forward(xs, Some(&mut self.dropout))
    }

    pub fn step(&mut self, loss: &Tensor) {
        self.optimizer.backward_step(loss);
        self.steps += 1;
    }

    /// Fails once a loss is non-finite. Called once an epoch rather than every
    /// step: a diverged model stays non-finite, and reading a scalar back
    /// every step would cost a sync.
    pub fn check_loss(&self, loss: &Tensor) -> Result<()> {
        let value = loss.f_double_value(&[])?;
        if !value.is_finite() {
            return Err(Error::Training {
                model: self.index,
                step: self.steps,
                message: format!("loss became {value}"),
            });
        }
        Ok(())
    }

    /// Evaluation-mode logits (no dropout, no gradient) for `xs`, row-major.
    pub fn logits(&self, xs: &Tensor) -> Result<Vec<f32>, TchError> {
        let logits = tch::no_grad(|| self.model.forward(xs, None))?;
        Vec::<f32>::try_from(logits.f_to_device(Device::Cpu)?.f_flatten(0, -1)?)
    }

    pub fn finish(self, data: &TrainData, order: &DataOrder) -> Result<TrainedModel> {
        let test_logits = self.logits(&data.test_x)?;
        Ok(TrainedModel {
            predictions_sha256: hex(&Sha256::digest(f32_bytes(&test_logits))),
            test_logits,
            weights_sha256: weights_sha256(&self.store)?,
            data_order_sha256: order.sha256(),
            steps: self.steps,
            seconds: self.started.elapsed().as_secs_f64(),
        })
    }
}

/// Trains model `index` alone, as `spec` says.
pub fn train_model(
    index: usize,
    spec: &ModelSpec,
    data: &TrainData,
    model_config: &ModelConfig,
    config: &TrainConfig,
    on_epoch: &mut dyn FnMut(),
) -> Result<TrainedModel> {
    let mut learner = Learner::new(index, spec, data, model_config, config)?;
    let mut order = DataOrder::new(spec, data.n_train);
    for _epoch in 0..config.epochs {
        let mut last_loss = None;
        for batch in order.next_epoch().chunks(config.batch_size) {
            let (xs, ys) = data.batch(batch)?;
            let logits = learner.forward(&xs)?;
            let loss = match config.mitigation {
                Mitigation::None => loss::cross_entropy(&logits, &ys)?,
                Mitigation::Entropy { weight } => loss::entropy_regularised(&logits, &ys, weight)?,
            };
            learner.step(&loss);
            last_loss = Some(loss);
        }
        if let Some(loss) = last_loss {
            learner.check_loss(&loss)?;
        }
        on_epoch();
    }
    learner.finish(data, &order)
}

/// How many of `n_train` rows a refreshed model keeps: round(fraction · n).
pub fn refresh_keep(n_train: usize, fraction: f64) -> usize {
    (n_train as f64 * fraction).round() as usize
}

/// The training rows a model sees: all of them, or (data refresh) the first
/// round(fraction · n) of a permutation drawn from the refresh seed, in
/// ascending order so that only the data-order stream decides visiting order.
pub fn training_rows(n_train: usize, refresh_fraction: Option<f64>, refresh_seed: u64) -> Vec<u32> {
    match refresh_fraction {
        None => (0..n_train as u32).collect(),
        Some(fraction) => {
            let keep = refresh_keep(n_train, fraction);
            let mut rows = Stream::new(refresh_seed).permutation(n_train);
            rows.truncate(keep);
            rows.sort_unstable();
            rows
        }
    }
}

/// Canonical weight hash: parameters in name order, each as its name's byte
/// length (u64 LE), the name (UTF-8), the number of dimensions (u64 LE), each
/// dimension (u64 LE), then its values as f32 LE in row-major order.
pub fn weights_sha256(store: &nn::VarStore) -> Result<String, TchError> {
    let mut named: Vec<(String, Tensor)> = store.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = Sha256::new();
    for (name, tensor) in named {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        let shape = tensor.size();
        hasher.update((shape.len() as u64).to_le_bytes());
        for dim in shape {
            hasher.update((dim as u64).to_le_bytes());
        }
        let values = Vec::<f32>::try_from(tensor.f_to_kind(Kind::Float)?.f_flatten(0, -1)?)?;
        hasher.update(f32_bytes(&values));
    }
    Ok(hex(&hasher.finalize()))
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_keeps_a_seeded_sorted_subsample() {
        assert_eq!(training_rows(4, None, 9), vec![0, 1, 2, 3]);
        let rows = training_rows(100, Some(0.9), 5);
        assert_eq!(rows.len(), 90);
        assert!(rows.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(rows, training_rows(100, Some(0.9), 5));
        assert_ne!(rows, training_rows(100, Some(0.9), 6));
        assert_eq!(refresh_keep(1438, 0.9), 1294);
    }

    #[test]
    fn device_names_round_trip() {
        for device in [DeviceChoice::Cpu, DeviceChoice::Cuda(2)] {
            assert_eq!(DeviceChoice::try_from(device.to_string()), Ok(device));
        }
    }
}
