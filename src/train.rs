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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Mitigation {
    None,
    /// Cross-entropy plus `weight` times the batch-mean prediction entropy.
    Entropy {
        weight: f64,
    },
    /// Each run trains `k` models on the same batches; after `burn_in` steps
    /// each distils (weight `alpha`, temperature) toward the mean of the
    /// others' current probabilities.
    Codistill {
        alpha: f64,
        temperature: f64,
        k: usize,
        burn_in: usize,
    },
    /// Every model learns toward a previous model's probabilities.
    Anchor {
        method: AnchorMethod,
        alpha: f64,
        temperature: f64,
        /// sha256 of the anchor's training and test probabilities (f32 LE):
        /// what training depends on, wherever the anchor came from.
        anchor_sha256: String,
    },
}

impl std::fmt::Display for Mitigation {
    /// As the report's tables show it, e.g. "codistill (α 0.5, T 1, k 2, burn-in 0 steps)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mitigation::None => f.write_str("none"),
            Mitigation::Entropy { weight } => write!(f, "entropy (β {weight})"),
            Mitigation::Codistill {
                alpha,
                temperature,
                k,
                burn_in,
            } => write!(
                f,
                "codistill (α {alpha}, T {temperature}, k {k}, burn-in {burn_in} steps)"
            ),
            Mitigation::Anchor {
                method: AnchorMethod::Distill,
                alpha,
                temperature,
                ..
            } => write!(f, "anchor distill (α {alpha}, T {temperature})"),
            Mitigation::Anchor {
                method: AnchorMethod::Rcp,
                alpha,
                ..
            } => write!(f, "anchor rcp (α {alpha})"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnchorMethod {
    /// (1−α)·CE + α·T²·KL(p_anchor,T ‖ p_T).
    Distill,
    /// Cross-entropy toward α·p_anchor + (1−α)·e_y where the anchor is right,
    /// e_y elsewhere (Cormier et al., NeurIPS 2016).
    Rcp,
}

/// The anchor as training uses it: one row per training example, on the
/// training device.
pub struct AnchorTargets {
    /// Distill: the anchor's probabilities at the temperature. Rcp: the
    /// targets themselves.
    targets: Tensor,
}

impl AnchorTargets {
    /// From the anchor's probabilities on the training set (row-major
    /// n_train × n_classes), for `mitigation` (an anchor mitigation).
    pub fn new(probabilities: &[f32], data: &TrainData, mitigation: &Mitigation) -> Result<Self> {
        let Mitigation::Anchor {
            method,
            alpha,
            temperature,
            ..
        } = mitigation
        else {
            unreachable!("anchor targets are built for the anchor mitigation only")
        };
        let classes = data.shape.n_classes as i64;
        let p = Tensor::f_from_slice(probabilities)?
            .f_reshape([-1, classes])?
            .f_to_device(data.device)?;
        let targets = match method {
            AnchorMethod::Distill => loss::at_temperature(&p, *temperature)?,
            AnchorMethod::Rcp => loss::rcp_targets(&p, &data.train_y, *alpha)?,
        };
        Ok(AnchorTargets { targets })
    }
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

    /// The rows `rows` names, on the training device.
    pub fn batch(&self, rows: &[u32]) -> Result<Batch, TchError> {
        let rows: Vec<i64> = rows.iter().map(|&row| i64::from(row)).collect();
        let rows = Tensor::f_from_slice(&rows)?.f_to_device(self.device)?;
        Ok(Batch {
            xs: self.train_x.f_index_select(0, &rows)?,
            ys: self.train_y.f_index_select(0, &rows)?,
            rows,
        })
    }

    /// Every training row, in order (for a model's probabilities on them).
    pub fn train_features(&self) -> &Tensor {
        &self.train_x
    }

    pub fn test_features(&self) -> &Tensor {
        &self.test_x
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

/// One optimisation step's examples: features, labels and their row numbers.
pub struct Batch {
    pub xs: Tensor,
    pub ys: Tensor,
    pub rows: Tensor,
}

pub struct TrainedModel {
    pub result: Trained,
    /// The trained model itself, for --save-models (`None` where the
    /// trainer was told it would not be saved, to free it early).
    pub network: Option<Network>,
}

/// What training a model yields but the network: all a report is built
/// from, and all a run artifact keeps (docs/cluster.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trained {
    /// Row-major n_test × n_classes (in artifacts, the hex of the f32 LE
    /// bytes: every bit survives, NaN included).
    #[serde(with = "crate::artifacts::f32_hex")]
    pub test_logits: Vec<f32>,
    pub weights_sha256: String,
    /// sha256 of the test logits as f32 LE: equal only if outputs are bitwise equal.
    pub predictions_sha256: String,
    /// sha256 of the training rows in the order visited, every epoch (u32 LE):
    /// without data refresh, exactly the data-order stream's permutations.
    pub data_order_sha256: String,
    pub steps: u64,
    pub seconds: f64,
    /// How it was trained: "sequential" or "parallel" (docs/performance.md).
    pub execution: String,
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

/// A model and its parameters, trained or loaded.
pub struct Network {
    store: nn::VarStore,
    model: Model,
}

impl Network {
    /// A trained model from its store and the model built in it.
    pub fn from_parts(store: nn::VarStore, model: Model) -> Self {
        Network { store, model }
    }

    /// A fresh model whose initial weights come from `init_seed` alone: the
    /// seed reaches libtorch's global generator right before the model is
    /// built, and nothing else draws from it meanwhile.
    pub fn new(init_seed: u64, data: &TrainData, config: &ModelConfig) -> Result<Self> {
        tch::manual_seed(init_seed as i64);
        let store = nn::VarStore::new(data.device);
        let model = Model::new(&store.root(), data.shape, config)?;
        Ok(Network { store, model })
    }

    /// Evaluation-mode logits (no dropout, no gradient) for `xs`, row-major.
    pub fn logits(&self, xs: &Tensor) -> Result<Vec<f32>, TchError> {
        let logits = tch::no_grad(|| self.model.forward(xs, None))?;
        Vec::<f32>::try_from(logits.f_to_device(Device::Cpu)?.f_flatten(0, -1)?)
    }

    pub fn weights_sha256(&self) -> Result<String, TchError> {
        weights_sha256(&self.store)
    }

    /// Writes the parameters as safetensors (the path must end .safetensors).
    pub fn save(&self, path: &std::path::Path) -> Result<(), TchError> {
        self.store.save(path)
    }

    /// Replaces the parameters with those in a safetensors file, which must
    /// hold exactly this model's names and shapes.
    pub fn load(&mut self, path: &std::path::Path) -> Result<(), TchError> {
        self.store.load(path)
    }
}

/// One model in training: its network, optimiser and dropout generator.
/// Dropout draws from the model's own generator, so learners stepped side by
/// side cannot shift each other's masks. The data order is the caller's:
/// learners may share batches.
pub struct Learner {
    index: usize,
    network: Network,
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
        let network = Network::new(spec.seeds.init, data, model_config)?;
        let optimizer = match config.optimizer {
            OptimizerKind::Sgd => nn::Sgd {
                momentum: config.momentum,
                ..Default::default()
            }
            .build(&network.store, config.learning_rate)?,
            OptimizerKind::Adam => {
                nn::Adam::default().build(&network.store, config.learning_rate)?
            }
        };
        Ok(Learner {
            index,
            network,
            optimizer,
            dropout: Generator::new(spec.seeds.dropout)?,
            steps: 0,
            started,
        })
    }

    /// Training-mode logits (dropout on) for a batch.
    pub fn forward(&mut self, xs: &Tensor) -> Result<Tensor, TchError> {
        self.network.model.forward(xs, Some(&mut self.dropout))
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

    pub fn finish(self, data: &TrainData, order: &DataOrder) -> Result<TrainedModel> {
        let test_logits = self.network.logits(&data.test_x)?;
        Ok(TrainedModel {
            result: Trained {
                predictions_sha256: logits_sha256(&test_logits),
                test_logits,
                weights_sha256: self.network.weights_sha256()?,
                data_order_sha256: order.sha256(),
                steps: self.steps,
                seconds: self.started.elapsed().as_secs_f64(),
                execution: "sequential".into(),
            },
            network: Some(self.network),
        })
    }
}

/// The loss of one model's logits on `batch`, for every mitigation that
/// needs nothing from other models in training.
fn objective(
    mitigation: &Mitigation,
    logits: &Tensor,
    batch: &Batch,
    anchor: Option<&AnchorTargets>,
) -> Result<Tensor> {
    Ok(match (mitigation, anchor) {
        (Mitigation::None, _) | (Mitigation::Codistill { .. }, _) => {
            loss::cross_entropy(logits, &batch.ys)?
        }
        (Mitigation::Entropy { weight }, _) => {
            loss::entropy_regularised(logits, &batch.ys, *weight)?
        }
        (
            Mitigation::Anchor {
                method,
                alpha,
                temperature,
                ..
            },
            Some(anchor),
        ) => {
            let targets = anchor.targets.f_index_select(0, &batch.rows)?;
            match method {
                AnchorMethod::Distill => {
                    loss::distillation(logits, &batch.ys, &targets, *alpha, *temperature)?
                }
                AnchorMethod::Rcp => loss::soft_cross_entropy(logits, &targets)?,
            }
        }
        (Mitigation::Anchor { .. }, None) => {
            unreachable!("the pipeline loads the anchor before training with it")
        }
    })
}

/// Trains model `index` alone, as `spec` says.
pub fn train_model(
    index: usize,
    spec: &ModelSpec,
    data: &TrainData,
    model_config: &ModelConfig,
    config: &TrainConfig,
    anchor: Option<&AnchorTargets>,
    on_epoch: &mut dyn FnMut(),
) -> Result<TrainedModel> {
    let mut learner = Learner::new(index, spec, data, model_config, config)?;
    let mut order = DataOrder::new(spec, data.n_train);
    for _epoch in 0..config.epochs {
        let mut last_loss = None;
        for rows in order.next_epoch().chunks(config.batch_size) {
            let batch = data.batch(rows)?;
            let logits = learner.forward(&batch.xs)?;
            let loss = objective(&config.mitigation, &logits, &batch, anchor)?;
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

/// Co-distillation (Anil et al., 2018): the members of one run, one spec
/// each, step in lockstep on the batches of the first member's data order.
/// Once `burn_in` steps have passed, each member's loss is
/// `loss::distillation` toward the mean of the other members' current
/// probabilities at the temperature, taken from their training-mode logits
/// and detached. Every member keeps its own init and dropout streams, so with
/// α = 0 each trains bitwise as it would alone on those batches.
pub fn train_codistilled(
    first_index: usize,
    members: &[ModelSpec],
    data: &TrainData,
    model_config: &ModelConfig,
    config: &TrainConfig,
    on_epoch: &mut dyn FnMut(),
) -> Result<Vec<TrainedModel>> {
    let Mitigation::Codistill {
        alpha,
        temperature,
        burn_in,
        ..
    } = config.mitigation
    else {
        unreachable!("train_codistilled runs the codistill mitigation only")
    };
    let mut learners = members
        .iter()
        .enumerate()
        .map(|(j, spec)| Learner::new(first_index + j, spec, data, model_config, config))
        .collect::<Result<Vec<_>>>()?;
    let mut order = DataOrder::new(&members[0], data.n_train);
    let mut steps = 0usize;
    for _epoch in 0..config.epochs {
        let mut last_losses = Vec::new();
        for rows in order.next_epoch().chunks(config.batch_size) {
            let batch = data.batch(rows)?;
            let logits = learners
                .iter_mut()
                .map(|learner| learner.forward(&batch.xs))
                .collect::<Result<Vec<_>, _>>()?;
            let teachers = if steps >= burn_in {
                Some(peer_teachers(&logits, temperature)?)
            } else {
                None
            };
            last_losses.clear();
            for (j, learner) in learners.iter_mut().enumerate() {
                let loss = match &teachers {
                    Some(teachers) => {
                        loss::distillation(&logits[j], &batch.ys, &teachers[j], alpha, temperature)?
                    }
                    None => loss::cross_entropy(&logits[j], &batch.ys)?,
                };
                learner.step(&loss);
                last_losses.push(loss);
            }
            steps += 1;
        }
        for (learner, loss) in learners.iter().zip(&last_losses) {
            learner.check_loss(loss)?;
        }
        on_epoch();
    }
    learners
        .into_iter()
        .map(|learner| learner.finish(data, &order))
        .collect()
}

/// For each member, the mean over the other members of their detached
/// probabilities at `temperature`.
fn peer_teachers(logits: &[Tensor], temperature: f64) -> Result<Vec<Tensor>, TchError> {
    let probabilities = logits
        .iter()
        .map(|z| loss::softmax_at(&z.f_detach()?, temperature))
        .collect::<Result<Vec<_>, _>>()?;
    let peers = (probabilities.len() - 1) as f64;
    (0..probabilities.len())
        .map(|own| {
            let mut others = probabilities
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != own)
                .map(|(_, p)| p);
            let first = others.next().expect("codistill has at least two members");
            others
                .try_fold(first.shallow_clone(), |sum, p| sum.f_add(p))?
                .f_div_scalar(peers)
        })
        .collect()
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

/// The predictions hash: sha256 of the test logits as f32 LE, equal only
/// where outputs are bitwise equal.
pub fn logits_sha256(logits: &[f32]) -> String {
    hex(&Sha256::digest(f32_bytes(logits)))
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
