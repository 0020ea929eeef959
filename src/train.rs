//! Training one model with its own seeds, and what comes out of it: test
//! logits plus the hashes that make bitwise reproducibility checkable.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Reduction, TchError, Tensor};

use crate::data::{hex, Split};
use crate::error::{Error, Result};
use crate::model::{Model, ModelConfig, Shape};
use crate::randomness::{ModelSeeds, Stream};

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
}

/// The split as tensors, built once and shared by every model of a run.
pub struct TrainData {
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    n_train: usize,
    shape: Shape,
}

impl TrainData {
    pub fn new(split: &Split) -> Result<Self> {
        let rows = |n: usize, features: &[f32]| -> Result<Tensor> {
            Ok(Tensor::f_from_slice(features)?
                .f_reshape([n as i64, split.train.n_features as i64])?)
        };
        let labels: Vec<i64> = split.train.labels.iter().map(|&l| i64::from(l)).collect();
        Ok(TrainData {
            train_x: rows(split.train.len(), &split.train.features)?,
            train_y: Tensor::f_from_slice(&labels)?,
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

pub struct TrainedModel {
    /// Row-major n_test × n_classes.
    pub test_logits: Vec<f32>,
    pub weights_sha256: String,
    /// sha256 of the test logits as f32 LE: equal only if outputs are bitwise equal.
    pub predictions_sha256: String,
    /// sha256 of every epoch's visiting order (u32 LE indices), to check the
    /// data-order stream directly.
    pub data_order_sha256: String,
    pub steps: u64,
    pub seconds: f64,
}

/// Trains model `index` with its own seeds. libtorch's global generator is
/// reseeded from the init seed right before the model is built and from the
/// dropout seed right before the loop; the data order comes from a separate
/// Rust stream, so nothing else can shift either libtorch draw.
pub fn train_model(
    index: usize,
    seeds: &ModelSeeds,
    data: &TrainData,
    model_config: &ModelConfig,
    config: &TrainConfig,
) -> Result<TrainedModel> {
    let started = Instant::now();
    tch::manual_seed(seeds.init as i64);
    let store = nn::VarStore::new(Device::Cpu);
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
        let order = order_stream.permutation(data.n_train);
        for position in &order {
            order_hash.update(position.to_le_bytes());
        }
        let mut last_loss = None;
        for batch in order.chunks(config.batch_size) {
            let rows: Vec<i64> = batch.iter().map(|&row| i64::from(row)).collect();
            let rows = Tensor::f_from_slice(&rows)?;
            let xs = data.train_x.f_index_select(0, &rows)?;
            let ys = data.train_y.f_index_select(0, &rows)?;
            let loss = model
                .forward(&xs, true)?
                .f_log_softmax(-1, Kind::Float)?
                .f_nll_loss::<Tensor>(&ys, None, Reduction::Mean, -100)?;
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
    }

    let logits = tch::no_grad(|| model.forward(&data.test_x, false))?;
    let test_logits = Vec::<f32>::try_from(logits.f_flatten(0, -1)?)?;
    Ok(TrainedModel {
        predictions_sha256: hex(&Sha256::digest(f32_bytes(&test_logits))),
        test_logits,
        weights_sha256: weights_sha256(&store)?,
        data_order_sha256: hex(&order_hash.finalize()),
        steps,
        seconds: started.elapsed().as_secs_f64(),
    })
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
