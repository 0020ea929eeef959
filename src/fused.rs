//! One MLP trained without autograd: the forward pass, the backward pass and
//! the optimiser step written out as the very ATen calls that libtorch's
//! autograd and `torch::optim` make for the sequential path, on tensors that
//! do not require gradients. No graph is built or freed, no gradient is
//! accumulated or zeroed, and dropout masks come from a Rust replica of the
//! model's libtorch generator ([`Mt19937`]) instead of a serial libtorch
//! kernel. Run on one intra-op thread, a model comes out bitwise identical to
//! the sequential path with `--threads 1` (checked by tests/execution.rs).
//!
//! The backward pass, layer `i` from the top, with `g` the gradient of the
//! mean cross-entropy with respect to that layer's output:
//! `dW = gᵀ·a` (a: the layer's input), `db = Σ_rows g`, and for a hidden
//! layer below, `g ← threshold_backward(g·W ⊙ mask, relu output, 0)`: the
//! `mm_mat1_backward`, `mm_mat2_backward`, `sum_to`, `mul` and `relu`
//! derivatives of libtorch's derivatives.yaml. The loss gradient is
//! `nll_loss_backward` then `_log_softmax_backward_data`.

use std::collections::HashMap;

use tch::nn;
use tch::{Device, Kind, Reduction, TchError, Tensor};

use crate::error::{Error, Result};
use crate::libtorch::{adam_step, set_deterministic_kernels, sgd_step, Generator};
use crate::model::{Model, ModelConfig, ModelKind, Shape};
use crate::train::{weights_sha256, ModelSpec, Network, OptimizerKind, TrainConfig};

/// libtorch's CPU generator (`at::CPUGeneratorImpl`: MT19937 seeded with the
/// seed's low 32 bits) and its scalar Bernoulli draw, in Rust. Seeded alike,
/// its dropout masks are bitwise the masks `libtorch::Generator::dropout`
/// (and `tch::manual_seed` then `Tensor::dropout`) draw. It tempers a whole
/// block of 624 outputs at a time, and turns them into noise in a loop the
/// compiler vectorises (with AVX2 where the CPU has it): about 10× faster
/// than libtorch's serial kernel, which the sequential path still uses.
pub struct Mt19937 {
    state: [u32; N],
    /// Tempered outputs of the current state; `next` is the first unused.
    block: [u32; N],
    next: usize,
}

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;

impl Mt19937 {
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for j in 1..N {
            let previous = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(previous ^ (previous >> 30))
                .wrapping_add(j as u32);
        }
        Mt19937 {
            state,
            block: [0; N],
            next: N,
        }
    }

    fn refill(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            unsafe { refill_avx2(&mut self.state, &mut self.block) };
            self.next = 0;
            return;
        }
        refill(&mut self.state, &mut self.block);
        self.next = 0;
    }

    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        if self.next == N {
            self.refill();
        }
        self.next += 1;
        self.block[self.next - 1]
    }

    /// `CPUGeneratorImpl::random64`: two draws, the first the high word.
    #[inline]
    pub fn random64(&mut self) -> u64 {
        let high = u64::from(self.next_u32());
        (high << 32) | u64::from(self.next_u32())
    }

    /// Inverted-dropout noise, as the shim's dropout builds it: each value
    /// is `bernoulli(1 − p)` divided by 1 − p in f32. libtorch's draw is a
    /// double uniform u = (random64 & (2⁵³ − 1))·2⁻⁵³, kept when u < 1 − p;
    /// as u·2⁵³ is an integer and scaling by 2⁵³ is exact, that is the
    /// integer test (random64 & (2⁵³ − 1)) < ⌈(1 − p)·2⁵³⌉.
    pub fn fill_dropout_noise(&mut self, noise: &mut [f32], p: f64) {
        let keep = 1.0 - p;
        let scale = 1.0f32 / keep as f32;
        let threshold = (keep * (1u64 << 53) as f64).ceil() as u64;
        let mut filled = 0;
        while filled < noise.len() {
            if N - self.next < 2 {
                // An odd leftover (never, as every draw takes two): one by one.
                let value = self.random64() & ((1 << 53) - 1);
                noise[filled] = if value < threshold { scale } else { 0.0 };
                filled += 1;
                continue;
            }
            let pairs = ((N - self.next) / 2).min(noise.len() - filled);
            let words = &self.block[self.next..self.next + 2 * pairs];
            let out = &mut noise[filled..filled + pairs];
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                unsafe { noise_avx2(words, out, threshold, scale) };
            } else {
                noise_from(words, out, threshold, scale);
            }
            #[cfg(not(target_arch = "x86_64"))]
            noise_from(words, out, threshold, scale);
            self.next += 2 * pairs;
            filled += pairs;
        }
    }
}

#[inline(always)]
fn refill(state: &mut [u32; N], block: &mut [u32; N]) {
    let mix = |u: u32, v: u32| {
        let y = (u & 0x8000_0000) | (v & 0x7fff_ffff);
        (y >> 1) ^ (0u32.wrapping_sub(v & 1) & MATRIX_A)
    };
    for i in 0..N - M {
        state[i] = state[i + M] ^ mix(state[i], state[i + 1]);
    }
    for i in N - M..N - 1 {
        state[i] = state[i + M - N] ^ mix(state[i], state[i + 1]);
    }
    state[N - 1] = state[M - 1] ^ mix(state[N - 1], state[0]);
    for (out, &word) in block.iter_mut().zip(state.iter()) {
        let mut y = word;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        *out = y ^ (y >> 18);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn refill_avx2(state: &mut [u32; N], block: &mut [u32; N]) {
    refill(state, block)
}

/// Noise from pairs of words (high, low): kept when the 53-bit value they
/// form is below `threshold`.
#[inline(always)]
fn noise_from(words: &[u32], out: &mut [f32], threshold: u64, scale: f32) {
    let scale = scale.to_bits();
    for (pair, value) in words.chunks_exact(2).zip(out.iter_mut()) {
        let drawn = (u64::from(pair[0] & 0x1f_ffff) << 32) | u64::from(pair[1]);
        let kept = 0u32.wrapping_sub(u32::from(drawn < threshold));
        *value = f32::from_bits(kept & scale);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn noise_avx2(words: &[u32], out: &mut [f32], threshold: u64, scale: f32) {
    noise_from(words, out, threshold, scale)
}

/// Per-parameter optimiser state.
enum Slots {
    /// SGD momentum buffer (absent without momentum).
    Sgd(Option<Tensor>),
    Adam {
        exp_avg: Tensor,
        exp_avg_sq: Tensor,
    },
}

/// Whether the fused engine can train this model: an MLP (or linear model)
/// on the CPU. Anything else trains on the sequential path.
pub fn supports(kind: ModelKind) -> bool {
    matches!(kind, ModelKind::Mlp | ModelKind::Linear)
}

/// One model's parameters, optimiser state and dropout stream.
pub struct FusedMlp {
    store: nn::VarStore,
    /// The model the store's variables belong to, for `into_network`.
    model: Model,
    /// `[out, in]` weights and `[out]` biases, input side first: detached
    /// handles on the store's variables, updated in place.
    weights: Vec<Tensor>,
    biases: Vec<Tensor>,
    slots: Vec<(Slots, Slots)>,
    learning_rate: f64,
    momentum: f64,
    updates: i64,
    dropout: f64,
    generator: Mt19937,
    one: Tensor,
    total_weight: HashMap<i64, Tensor>,
}

/// What one step leaves behind for the caller.
pub struct StepLoss(pub Option<f64>);

impl FusedMlp {
    /// Builds the model exactly as `Learner::new` does: the init seed into
    /// libtorch's global generator right before the layers are built, so the
    /// initial weights are bitwise the sequential path's. Call it on one
    /// thread at a time (the global generator is shared).
    pub fn new(
        spec: &ModelSpec,
        shape: Shape,
        model_config: &ModelConfig,
        config: &TrainConfig,
    ) -> Result<Self> {
        set_deterministic_kernels(spec.deterministic_kernels)?;
        tch::manual_seed(spec.seeds.init as i64);
        let store = nn::VarStore::new(Device::Cpu);
        let model = Model::new(&store.root(), shape, model_config)?;
        let variables = store.variables();
        let layers = model_config.hidden.len() + 1;
        let mut weights = Vec::with_capacity(layers);
        let mut biases = Vec::with_capacity(layers);
        for i in 0..layers {
            let get = |name: String| {
                variables
                    .get(&name)
                    .map(Tensor::detach)
                    .ok_or_else(|| Error::Torch(TchError::Torch(format!("no variable {name}"))))
            };
            weights.push(get(format!("layer{i}.weight"))?);
            biases.push(get(format!("layer{i}.bias"))?);
        }
        let slot = |param: &Tensor| -> Result<Slots, TchError> {
            Ok(match config.optimizer {
                OptimizerKind::Sgd => Slots::Sgd(if config.momentum != 0.0 {
                    Some(param.f_zeros_like()?)
                } else {
                    None
                }),
                OptimizerKind::Adam => Slots::Adam {
                    exp_avg: param.f_zeros_like()?,
                    exp_avg_sq: param.f_zeros_like()?,
                },
            })
        };
        let slots = weights
            .iter()
            .zip(&biases)
            .map(|(w, b)| Ok((slot(w)?, slot(b)?)))
            .collect::<Result<Vec<_>, TchError>>()?;
        Ok(FusedMlp {
            store,
            model,
            weights,
            biases,
            slots,
            learning_rate: config.learning_rate,
            momentum: config.momentum,
            updates: 0,
            dropout: model_config.dropout,
            generator: Mt19937::new(spec.seeds.dropout),
            one: Tensor::f_from_slice(&[1.0f32])?.f_reshape([0i64; 0])?,
            total_weight: HashMap::new(),
        })
    }

    /// One training step on a batch (`xs`: rows × features, `ys`: labels):
    /// forward with dropout, backward, optimiser update. With `want_loss`,
    /// also returns the batch's mean cross-entropy (a read-back: once an epoch).
    pub fn step(&mut self, xs: &Tensor, ys: &Tensor, want_loss: bool) -> Result<StepLoss> {
        let rows = xs.size()[0];
        let hidden = self.weights.len() - 1;
        // Forward: inputs of each layer, relu outputs and dropout noise of the hidden ones.
        let mut inputs = Vec::with_capacity(hidden + 1);
        let mut relus = Vec::with_capacity(hidden);
        let mut noises = Vec::with_capacity(hidden);
        let mut activation = xs.shallow_clone();
        for layer in 0..hidden {
            let mut z = self.biases[layer].f_addmm(&activation, &self.weights[layer].f_tr()?)?;
            let relu = z.f_relu_()?;
            let next = if self.dropout > 0.0 {
                let width = relu.size()[1];
                let noise = Tensor::f_empty([rows, width], (Kind::Float, Device::Cpu))?;
                // SAFETY: a fresh contiguous f32 CPU tensor of rows·width values, owned here.
                let values = unsafe {
                    std::slice::from_raw_parts_mut(
                        noise.data_ptr() as *mut f32,
                        (rows * width) as usize,
                    )
                };
                self.generator.fill_dropout_noise(values, self.dropout);
                let dropped = relu.f_mul(&noise)?;
                noises.push(Some(noise));
                dropped
            } else {
                noises.push(None);
                relu.shallow_clone()
            };
            relus.push(relu);
            inputs.push(std::mem::replace(&mut activation, next));
        }
        let logits = self.biases[hidden].f_addmm(&activation, &self.weights[hidden].f_tr()?)?;
        inputs.push(activation);
        let log_probs = logits.f_log_softmax(-1, Kind::Float)?;
        let loss = if want_loss {
            Some(
                log_probs
                    .f_nll_loss::<Tensor>(ys, None, Reduction::Mean, -100)?
                    .f_double_value(&[])?,
            )
        } else {
            None
        };
        let total_weight = match self.total_weight.get(&rows) {
            Some(t) => t.shallow_clone(),
            None => {
                let t = Tensor::f_from_slice(&[rows as f32])?.f_reshape([0i64; 0])?;
                self.total_weight.insert(rows, t.shallow_clone());
                t
            }
        };
        let nll_grad = log_probs.f_nll_loss_backward::<Tensor>(
            &self.one,
            ys,
            None,
            Reduction::Mean,
            -100,
            &total_weight,
        )?;
        let mut grad =
            Tensor::f_internal_log_softmax_backward_data(&nll_grad, &log_probs, -1, Kind::Float)?;
        // Backward, top layer first; every gradient before any update.
        let mut grads = Vec::with_capacity(hidden + 1);
        for layer in (0..=hidden).rev() {
            let weight_grad = grad.f_tr()?.f_mm(&inputs[layer])?;
            let bias_grad = grad.f_sum_dim_intlist([0i64].as_slice(), false, None::<Kind>)?;
            if layer > 0 {
                let below = grad.f_mm(&self.weights[layer])?;
                let below = match &noises[layer - 1] {
                    Some(noise) => below.f_mul(noise)?,
                    None => below,
                };
                grad = relus[layer - 1].f_threshold_backward(&below, 0.0)?;
            }
            grads.push((layer, weight_grad, bias_grad));
        }
        self.updates += 1;
        for (layer, weight_grad, bias_grad) in grads {
            let (weight_slot, bias_slot) = &self.slots[layer];
            self.update(&self.weights[layer], &weight_grad, weight_slot)?;
            self.update(&self.biases[layer], &bias_grad, bias_slot)?;
        }
        Ok(StepLoss(loss))
    }

    fn update(&self, param: &Tensor, grad: &Tensor, slot: &Slots) -> Result<(), TchError> {
        match slot {
            Slots::Sgd(buf) => sgd_step(
                param,
                grad,
                buf.as_ref().unwrap_or(grad),
                self.learning_rate,
                self.momentum,
                self.updates == 1,
            ),
            Slots::Adam {
                exp_avg,
                exp_avg_sq,
            } => adam_step(
                param,
                grad,
                exp_avg,
                exp_avg_sq,
                self.updates,
                self.learning_rate,
                // tch's nn::Adam defaults, which the sequential path builds.
                (0.9, 0.999, 1e-8),
            ),
        }
    }

    /// Evaluation logits (no dropout) for `xs`, row-major.
    pub fn logits(&self, xs: &Tensor) -> Result<Vec<f32>, TchError> {
        let hidden = self.weights.len() - 1;
        let mut activation = xs.shallow_clone();
        for layer in 0..hidden {
            activation = self.biases[layer]
                .f_addmm(&activation, &self.weights[layer].f_tr()?)?
                .f_relu()?;
        }
        let logits = self.biases[hidden].f_addmm(&activation, &self.weights[hidden].f_tr()?)?;
        Vec::<f32>::try_from(logits.f_flatten(0, -1)?)
    }

    /// The trained model as a `Network` (its store was updated in place).
    pub fn into_network(self) -> Network {
        Network::from_parts(self.store, self.model)
    }

    /// The canonical weight hash, as for a sequentially trained model.
    pub fn weights_sha256(&self) -> Result<String, TchError> {
        weights_sha256(&self.store)
    }
}

/// Whether this libtorch, on this CPU, draws dropout masks bitwise as
/// [`Mt19937::fill_dropout_noise`] does. libtorch has drawn Bernoulli noise
/// with other generators in some builds (MKL's, on Intel CPUs, in older
/// releases), and a parallel model must be the sequential one, so this is
/// checked once per process on a few masks before the parallel mode is used
/// with dropout.
pub fn replicates_libtorch_dropout() -> bool {
    static CHECKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CHECKED.get_or_init(|| {
        [
            (7u64, 0.2, [(128usize, 256usize), (128, 256), (96, 256)]),
            (0xdead_beef_1234, 0.5, [(3, 5), (1, 1), (7, 700)]),
        ]
        .into_iter()
        .all(|(seed, p, shapes)| same_dropout_noise(seed, p, &shapes).unwrap_or(false))
    })
}

/// Draws masks of `shapes` one after another from a libtorch generator and
/// from [`Mt19937`], both seeded with `seed`, and compares them bit for bit.
fn same_dropout_noise(seed: u64, p: f64, shapes: &[(usize, usize)]) -> Result<bool, TchError> {
    let mut ours = Mt19937::new(seed);
    let mut theirs = Generator::new(seed)?;
    for &(rows, cols) in shapes {
        let ones = Tensor::ones([rows as i64, cols as i64], (Kind::Float, Device::Cpu));
        let expected = Vec::<f32>::try_from(theirs.dropout(&ones, p)?.flatten(0, -1))?;
        let mut noise = vec![0f32; rows * cols];
        ours.fill_dropout_noise(&mut noise, p);
        let same = noise
            .iter()
            .zip(&expected)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        if !same {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // std::mt19937 with the default seed 5489: its 10000th output is 4123659995.
        let mut mt = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = mt.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn dropout_noise_is_bitwise_libtorchs() {
        assert!(same_dropout_noise(7, 0.2, &[(128, 256), (128, 256), (96, 256)]).unwrap());
        assert!(same_dropout_noise(
            0xdead_beef_1234,
            0.5,
            &[(3, 5), (1, 1), (32, 128), (7, 700)]
        )
        .unwrap());
        assert!(replicates_libtorch_dropout());
    }
}
