//! Models, built inside a tch VarStore so their parameters can be listed by
//! name (for the canonical weight hash) and optimised.

use serde::{Deserialize, Serialize};
use tch::{nn, TchError, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Width of each hidden layer, input side first.
    pub hidden: Vec<usize>,
    /// Dropout probability after each hidden layer's ReLU (training only).
    pub dropout: f64,
}

/// Largest model accepted: beyond this a typo in `--hidden` would exhaust
/// memory (weights, gradients and optimiser state) instead of failing cleanly.
pub const MAX_PARAMETERS: usize = 50_000_000;

impl ModelConfig {
    /// Weights and biases of the MLP for this input and output size.
    pub fn parameter_count(&self, n_inputs: usize, n_classes: usize) -> usize {
        let widths: Vec<usize> = std::iter::once(n_inputs)
            .chain(self.hidden.iter().copied())
            .chain(std::iter::once(n_classes))
            .collect();
        widths
            .windows(2)
            .map(|pair| pair[0].saturating_mul(pair[1]).saturating_add(pair[1]))
            .fold(0usize, usize::saturating_add)
    }
}

/// Multi-layer perceptron: (linear → ReLU → dropout) per hidden layer, then a
/// linear layer to the class logits. Parameters are named `layer{i}.weight`
/// and `layer{i}.bias`.
pub struct Mlp {
    layers: Vec<nn::Linear>,
    dropout: f64,
}

impl Mlp {
    /// Draws the initial weights from libtorch's global generator, which the
    /// caller has just seeded from the model's init seed.
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

    /// Logits for a batch of rows; `train` switches dropout on.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let (last, hidden) = self
            .layers
            .split_last()
            .expect("an MLP has an output layer");
        let mut activation = xs.shallow_clone();
        for layer in hidden {
            activation = activation
                .f_linear(&layer.ws, layer.bs.as_ref())?
                .f_relu()?;
            if self.dropout > 0.0 {
                activation = activation.f_dropout(self.dropout, train)?;
            }
        }
        activation.f_linear(&last.ws, last.bs.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_count_by_hand() {
        let config = ModelConfig {
            hidden: vec![128],
            dropout: 0.2,
        };
        // 64·128 + 128 + 128·10 + 10
        assert_eq!(config.parameter_count(64, 10), 9_610);
        let huge = ModelConfig {
            hidden: vec![usize::MAX, usize::MAX],
            dropout: 0.0,
        };
        assert_eq!(huge.parameter_count(64, 10), usize::MAX);
    }
}
