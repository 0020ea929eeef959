//! Models, built inside a tch VarStore so their parameters can be listed by
//! name (for the canonical weight hash) and optimised. Every initial weight is
//! drawn from libtorch's global generator, which the caller has just seeded
//! from the model's init seed; dropout masks come from the model's own
//! generator, passed to `forward` in training.

use serde::{Deserialize, Serialize};
use tch::{nn, TchError, Tensor};

use crate::error::{Error, Result};
use crate::libtorch::Generator;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Softmax regression: one linear layer.
    Linear,
    /// Multi-layer perceptron with the --hidden layers.
    Mlp,
    /// LeNet-style convolutions, then the --hidden layers (image data only).
    Cnn,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// Width of each hidden (fully connected) layer, input side first.
    pub hidden: Vec<usize>,
    /// Dropout probability after each hidden layer's ReLU (training only).
    pub dropout: f64,
}

/// What a model needs to know about its data.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub n_inputs: usize,
    pub n_classes: usize,
    pub image: Option<(usize, usize)>,
}

pub enum Model {
    Mlp(Mlp),
    /// Boxed: its convolution configs make it ten times the size of an MLP.
    Cnn(Box<Cnn>),
}

impl Model {
    pub fn new(root: &nn::Path, shape: Shape, config: &ModelConfig) -> Result<Self> {
        match config.kind {
            ModelKind::Linear | ModelKind::Mlp => Ok(Model::Mlp(Mlp::new(
                root,
                shape.n_inputs,
                shape.n_classes,
                config,
            ))),
            ModelKind::Cnn => Ok(Model::Cnn(Box::new(Cnn::new(root, shape, config)?))),
        }
    }

    /// Logits for a batch of rows (n × n_inputs). Training passes the
    /// generator dropout draws from; evaluation passes `None` (no dropout).
    pub fn forward(
        &self,
        xs: &Tensor,
        dropout: Option<&mut Generator>,
    ) -> Result<Tensor, TchError> {
        match self {
            Model::Mlp(mlp) => mlp.forward(xs, dropout),
            Model::Cnn(cnn) => cnn.forward(xs, dropout),
        }
    }
}

/// Largest model accepted (weights, gradients and optimiser state must fit).
const MAX_PARAMETERS: usize = 50_000_000;

impl ModelConfig {
    /// Why this model cannot be built for data of `shape`, if it cannot: a
    /// zero width, a dropout outside [0, 1), or more than MAX_PARAMETERS
    /// (beyond which a typo would exhaust memory instead of failing cleanly).
    pub fn problem(&self, shape: Shape) -> Option<String> {
        if self.hidden.contains(&0) {
            return Some("a hidden layer has width 0".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Some(format!("dropout {} is outside [0, 1)", self.dropout));
        }
        let parameters = self.parameter_count(shape);
        (parameters > MAX_PARAMETERS).then(|| {
            format!("the model would have {parameters} parameters; the limit is {MAX_PARAMETERS}")
        })
    }

    /// Weights and biases of this model for data of `shape`, saturating
    /// rather than overflowing on absurd widths.
    pub fn parameter_count(&self, shape: Shape) -> usize {
        let (head_inputs, convolutions) = match (self.kind, shape.image) {
            (ModelKind::Cnn, Some((height, width))) => {
                let [first, second] = CONV_CHANNELS.map(|c| c as usize);
                let area = (KERNEL * KERNEL) as usize;
                (
                    second * (height / SHRINK) * (width / SHRINK),
                    first * area + first + first * second * area + second,
                )
            }
            _ => (shape.n_inputs, 0),
        };
        let widths: Vec<usize> = std::iter::once(head_inputs)
            .chain(self.hidden.iter().copied())
            .chain(std::iter::once(shape.n_classes))
            .collect();
        widths
            .windows(2)
            .map(|pair| pair[0].saturating_mul(pair[1]).saturating_add(pair[1]))
            .fold(convolutions, usize::saturating_add)
    }
}

/// Multi-layer perceptron: (linear → ReLU → dropout) per hidden layer, then a
/// linear layer to the class logits. Parameters are named `layer{i}.weight`
/// and `layer{i}.bias`. With no hidden layers it is the linear model.
pub struct Mlp {
    layers: Vec<nn::Linear>,
    dropout: f64,
}

impl Mlp {
    pub fn new(root: &nn::Path, n_inputs: usize, n_classes: usize, config: &ModelConfig) -> Self {
        let widths: Vec<i64> = std::iter::once(n_inputs)
            .chain(config.hidden.iter().copied())
            .chain(std::iter::once(n_classes))
            .map(|width| width as i64)
            .collect();
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, pair)| {
                nn::linear(
                    root / format!("layer{i}"),
                    pair[0],
                    pair[1],
                    Default::default(),
                )
            })
            .collect();
        Mlp {
            layers,
            dropout: config.dropout,
        }
    }

    pub fn forward(
        &self,
        xs: &Tensor,
        mut dropout: Option<&mut Generator>,
    ) -> Result<Tensor, TchError> {
        let (last, hidden) = self
            .layers
            .split_last()
            .expect("an MLP has an output layer");
        let mut activation = xs.shallow_clone();
        for layer in hidden {
            activation = activation
                .f_linear(&layer.ws, layer.bs.as_ref())?
                .f_relu()?;
            if let (Some(generator), true) = (dropout.as_deref_mut(), self.dropout > 0.0) {
                activation = generator.dropout(&activation, self.dropout)?;
            }
        }
        activation.f_linear(&last.ws, last.bs.as_ref())
    }
}

/// Channels of the two convolutions, as in LeNet-5.
const CONV_CHANNELS: [i64; 2] = [6, 16];
const KERNEL: i64 = 5;
/// Each convolution is followed by a 2×2 max-pool, so a side shrinks by 4.
const SHRINK: usize = 4;

/// LeNet-style: two (5×5 convolution, padded to keep the size → ReLU → 2×2
/// max-pool) stages, then the MLP head on the flattened maps. Parameters:
/// `conv1.*`, `conv2.*`, `head.layer{i}.*`.
pub struct Cnn {
    convs: [nn::Conv2D; 2],
    head: Mlp,
    image: (i64, i64),
}

impl Cnn {
    fn new(root: &nn::Path, shape: Shape, config: &ModelConfig) -> Result<Self> {
        let Some((height, width)) = shape.image else {
            return Err(Error::usage(
                "--model",
                "cnn needs image data (digits, fashion-mnist, mnist:DIR, idx:DIR); this dataset has no image shape",
            ));
        };
        if height < SHRINK || width < SHRINK {
            return Err(Error::usage(
                "--model",
                format!("cnn needs images of at least {SHRINK}×{SHRINK}, got {height}×{width}"),
            ));
        }
        let padded = nn::ConvConfig {
            padding: KERNEL / 2,
            ..Default::default()
        };
        let convs = [
            nn::conv2d(root / "conv1", 1, CONV_CHANNELS[0], KERNEL, padded),
            nn::conv2d(
                root / "conv2",
                CONV_CHANNELS[0],
                CONV_CHANNELS[1],
                KERNEL,
                padded,
            ),
        ];
        let flat = CONV_CHANNELS[1] as usize * (height / SHRINK) * (width / SHRINK);
        Ok(Cnn {
            convs,
            head: Mlp::new(&(root / "head"), flat, shape.n_classes, config),
            image: (height as i64, width as i64),
        })
    }

    fn forward(&self, xs: &Tensor, dropout: Option<&mut Generator>) -> Result<Tensor, TchError> {
        let mut maps = xs.f_view([-1, 1, self.image.0, self.image.1])?;
        for conv in &self.convs {
            maps = maps
                .f_conv2d(
                    &conv.ws,
                    conv.bs.as_ref(),
                    [1, 1],
                    [KERNEL / 2, KERNEL / 2],
                    [1, 1],
                    1,
                )?
                .f_relu()?
                .f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)?;
        }
        self.head.forward(&maps.f_flatten(1, -1)?, dropout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_count_by_hand() {
        let shape = Shape {
            n_inputs: 64,
            n_classes: 10,
            image: Some((8, 8)),
        };
        let mlp = ModelConfig {
            kind: ModelKind::Mlp,
            hidden: vec![128],
            dropout: 0.2,
        };
        // 64·128 + 128 + 128·10 + 10
        assert_eq!(mlp.parameter_count(shape), 9_610);
        // Convolutions 1·6·25 + 6 + 6·16·25 + 16 = 2572; head input 16·2·2 = 64.
        let cnn = ModelConfig {
            kind: ModelKind::Cnn,
            ..mlp.clone()
        };
        assert_eq!(cnn.parameter_count(shape), 2_572 + 9_610);
        let huge = ModelConfig {
            hidden: vec![usize::MAX, usize::MAX],
            ..mlp
        };
        assert_eq!(huge.parameter_count(shape), usize::MAX);
    }
}
