//! Training one model with its own seeds, and what comes out of it: test
//! logits plus the hashes that make bitwise reproducibility checkable.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, TchError, Tensor};

use crate::data::{hex, Split};
use crate::error::{Error, Result};
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

extern "C" {
    fn churn_audit_set_deterministic(enabled: i32) -> i32;
    fn churn_audit_deterministic_algorithms() -> i32;
}

/// Switches libtorch's deterministic algorithms and cuDNN determinism together
/// (through src/shim/determinism.cpp; tch exposes neither).
pub fn set_deterministic_kernels(enabled: bool) -> Result<()> {
    // SAFETY: plain C functions over libtorch's global context; no pointers cross.
    let refused = unsafe { churn_audit_set_deterministic(i32::from(enabled)) } != 0;
    if refused {
        return Err(Error::Torch(TchError::Torch(format!(
            "libtorch refused to set deterministic kernels to {enabled}"
        ))));
    }
    Ok(())
}

pub fn deterministic_kernels() -> bool {
    // SAFETY: as above.
    unsafe { churn_audit_deterministic_algorithms() != 0 }
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
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TrainedModel {
    /// Row-major n_test × n_classes (in artifacts: the f32 LE bytes in hex, so
    /// every bit, NaN included, survives).
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
}

/// Trains model `index` as `spec` says. libtorch's global generator is
/// reseeded from the init seed right before the model is built and from the
/// dropout seed right before the loop; the data order and the refresh
/// subsample come from separate Rust streams, so nothing else can shift either
/// libtorch draw.
pub fn train_model(
    index: usize,
    spec: &ModelSpec,
    data: &TrainData,
    model_config: &ModelConfig,
    config: &TrainConfig,
    on_epoch: &mut dyn FnMut(),
) -> Result<TrainedModel> {
    let started = Instant::now();
    tch::set_num_threads(spec.threads as i32);
    set_deterministic_kernels(spec.deterministic_kernels)?;
    let seeds = &spec.seeds;
    let rows = training_rows(data.n_train, spec.refresh_fraction, seeds.data_refresh);

    tch::manual_seed(seeds.init as i64);
    let store = nn::VarStore::new(data.device);
    let model = Model::new(&store.root(), data.shape, model_config)?;
    let mut optimizer = match config.optimizer {
        OptimizerKind::Sgd => nn::Sgd {
            momentum: config.momentum,
            ..Default::default()
        }
        .build(&store, config.learning_rate)?,
        OptimizerKind::Adam => nn::Adam::default().build(&store, config.learning_rate)?,
    };

    tch::manual_seed(seeds.dropout as i64);
    let mut order_stream = Stream::new(seeds.data_order);
    let mut order_hash = Sha256::new();
    let mut steps = 0u64;
    for _epoch in 0..config.epochs {
        let order: Vec<u32> = order_stream
            .permutation(rows.len())
            .into_iter()
            .map(|position| rows[position as usize])
            .collect();
        for row in &order {
            order_hash.update(row.to_le_bytes());
        }
        let mut last_loss = None;
        for batch in order.chunks(config.batch_size) {
            let batch: Vec<i64> = batch.iter().map(|&row| i64::from(row)).collect();
            let batch = Tensor::f_from_slice(&batch)?.f_to_device(data.device)?;
            let xs = data.train_x.f_index_select(0, &batch)?;
            let ys = data.train_y.f_index_select(0, &batch)?;
            let logits = model.forward(&xs, true)?;
            let loss = match config.mitigation {
                Mitigation::None => loss::cross_entropy(&logits, &ys)?,
                Mitigation::Entropy { weight } => loss::entropy_regularised(&logits, &ys, weight)?,
            };
            optimizer.backward_step(&loss);
            steps += 1;
            last_loss = Some(loss);
        }
        // Checked once an epoch rather than every step: a diverged model stays
        // non-finite, and reading a scalar back every step would cost a sync.
        if let Some(loss) = last_loss {
            let value = loss.f_double_value(&[])?;
            if !value.is_finite() {
                return Err(Error::Training {
                    model: index,
                    step: steps,
                    message: format!("loss became {value}"),
                });
            }
        }
        on_epoch();
    }

    let logits = tch::no_grad(|| model.forward(&data.test_x, false))?;
    let test_logits = Vec::<f32>::try_from(logits.f_to_device(Device::Cpu)?.f_flatten(0, -1)?)?;
    Ok(TrainedModel {
        predictions_sha256: hex(&Sha256::digest(f32_bytes(&test_logits))),
        test_logits,
        weights_sha256: weights_sha256(&store)?,
        data_order_sha256: hex(&order_hash.finalize()),
        steps,
        seconds: started.elapsed().as_secs_f64(),
    })
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

    #[test]
    fn determinism_shim_switches_libtorch() {
        set_deterministic_kernels(true).unwrap();
        assert!(deterministic_kernels());
        set_deterministic_kernels(false).unwrap();
        assert!(!deterministic_kernels());
    }
}
