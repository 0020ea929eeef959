//! What churn-audit needs from libtorch beyond tch, through the C++ shim in
//! src/shim/libtorch_ext.cpp: the determinism switches, and dropout drawn from
//! a generator owned by one model.

use std::ffi::c_void;

use tch::{TchError, Tensor};

use crate::error::{Error, Result};

extern "C" {
    fn churn_audit_set_deterministic(enabled: i32) -> i32;
    fn churn_audit_set_fill_uninitialized(enabled: i32) -> i32;
    #[cfg(test)]
    fn churn_audit_deterministic_algorithms() -> i32;
    fn churn_audit_generator_new(seed: u64) -> *mut c_void;
    fn churn_audit_generator_free(generator: *mut c_void);
    fn churn_audit_dropout(
        input: *const torch_sys::C_tensor,
        p: f64,
        generator: *mut c_void,
        out: *mut *mut torch_sys::C_tensor,
    ) -> i32;
    fn churn_audit_sgd_step(
        param: *const torch_sys::C_tensor,
        grad: *const torch_sys::C_tensor,
        buf: *const torch_sys::C_tensor,
        lr: f64,
        momentum: f64,
        first: i32,
    ) -> i32;
    #[allow(clippy::too_many_arguments)]
    fn churn_audit_adam_step(
        param: *const torch_sys::C_tensor,
        grad: *const torch_sys::C_tensor,
        exp_avg: *const torch_sys::C_tensor,
        exp_avg_sq: *const torch_sys::C_tensor,
        step: i64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    ) -> i32;
}

/// Switches libtorch's deterministic algorithms and cuDNN determinism together.
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

/// Sets whether libtorch's deterministic mode fills each new tensor with NaN
/// before its kernel writes it (on by default; a guard against kernels that
/// read memory they did not write). Returns the previous setting. The
/// parallel engine turns it off while it runs: every tensor it allocates is
/// written in full, so results do not change, and the fill was a pass over
/// memory per allocation (each step's weight gradients among them).
pub fn set_fill_uninitialized(enabled: bool) -> bool {
    // SAFETY: a plain C function over libtorch's global context.
    unsafe { churn_audit_set_fill_uninitialized(i32::from(enabled)) != 0 }
}

/// Whether both switches are on (the tests' view of libtorch's global state).
#[cfg(test)]
fn deterministic_kernels() -> bool {
    // SAFETY: as above.
    unsafe { churn_audit_deterministic_algorithms() != 0 }
}

/// A libtorch CPU generator owned by one model, so models trained side by side
/// (co-distillation, ensembles, parallel workers) each keep their own dropout
/// stream. Seeded with s, it starts where `tch::manual_seed(s)` leaves the
/// global generator: a model alone draws exactly the masks it drew before
/// generators were per model.
pub struct Generator(*mut c_void);

// SAFETY: an at::Generator guards its state with its own mutex; the pointer
// is owned and freed once.
unsafe impl Send for Generator {}

impl Generator {
    pub fn new(seed: u64) -> Result<Self, TchError> {
        // SAFETY: returns an owned pointer, or null if libtorch threw.
        let raw = unsafe { churn_audit_generator_new(seed) };
        if raw.is_null() {
            return Err(TchError::Torch(
                "libtorch could not create a generator".into(),
            ));
        }
        Ok(Generator(raw))
    }

    /// Inverted dropout of `input` with probability `p` in (0, 1), as
    /// `Tensor::dropout` in training mode, differentiable through `input`.
    pub fn dropout(&mut self, input: &Tensor, p: f64) -> Result<Tensor, TchError> {
        let mut out: *mut torch_sys::C_tensor = std::ptr::null_mut();
        // SAFETY: `input` is a live tensor and the generator is ours; on
        // success `out` is a new at::Tensor that the returned Tensor owns.
        let failed = unsafe { churn_audit_dropout(input.as_ptr(), p, self.0, &mut out) } != 0;
        if failed || out.is_null() {
            return Err(TchError::Torch(format!(
                "libtorch dropout (p = {p}) failed"
            )));
        }
        // SAFETY: as above.
        Ok(unsafe { Tensor::from_ptr(out) })
    }
}

/// One SGD update of `param` in place, exactly as tch's `nn::Sgd` (libtorch's
/// `torch::optim::SGD`, no dampening, weight decay or Nesterov) applies it:
/// on the `first` step the momentum buffer `buf` takes the gradient, later
/// `buf = momentum·buf + grad`; then `param -= lr·buf` (no buffer when
/// `momentum` is 0). The same ATen calls with the same scalars.
pub fn sgd_step(
    param: &Tensor,
    grad: &Tensor,
    buf: &Tensor,
    lr: f64,
    momentum: f64,
    first: bool,
) -> Result<(), TchError> {
    // SAFETY: live tensors; the shim only calls in-place ATen methods on them.
    let failed = unsafe {
        churn_audit_sgd_step(
            param.as_ptr(),
            grad.as_ptr(),
            buf.as_ptr(),
            lr,
            momentum,
            i32::from(first),
        )
    } != 0;
    if failed {
        return Err(TchError::Torch("libtorch SGD step failed".into()));
    }
    Ok(())
}

/// One Adam update of `param` in place, exactly as tch's `nn::Adam`
/// (libtorch's `torch::optim::Adam`, no weight decay or AMSGrad) applies it;
/// `step` counts updates from 1.
#[allow(clippy::too_many_arguments)]
pub fn adam_step(
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    step: i64,
    lr: f64,
    (beta1, beta2, eps): (f64, f64, f64),
) -> Result<(), TchError> {
    // SAFETY: as in sgd_step.
    let failed = unsafe {
        churn_audit_adam_step(
            param.as_ptr(),
            grad.as_ptr(),
            exp_avg.as_ptr(),
            exp_avg_sq.as_ptr(),
            step,
            lr,
            beta1,
            beta2,
            eps,
        )
    } != 0;
    if failed {
        return Err(TchError::Torch("libtorch Adam step failed".into()));
    }
    Ok(())
}

impl Drop for Generator {
    fn drop(&mut self) {
        // SAFETY: created by churn_audit_generator_new and freed only here.
        unsafe { churn_audit_generator_free(self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn determinism_shim_switches_libtorch() {
        set_deterministic_kernels(true).unwrap();
        assert!(deterministic_kernels());
        set_deterministic_kernels(false).unwrap();
        assert!(!deterministic_kernels());
    }

    fn ones() -> Tensor {
        Tensor::ones([64, 33], (tch::Kind::Float, tch::Device::Cpu)).set_requires_grad(true)
    }

    #[test]
    fn each_generator_keeps_its_own_stream() {
        let input = ones();
        let (mut a, mut b) = (Generator::new(1).unwrap(), Generator::new(1).unwrap());
        let first = a.dropout(&input, 0.5).unwrap();
        // Draws from b and from the global generator do not move a's stream.
        let _ = b.dropout(&input, 0.5).unwrap();
        let _ = input.dropout(0.5, true);
        let second_a = a.dropout(&input, 0.5).unwrap();
        let second_b = b.dropout(&input, 0.5).unwrap();
        assert!(first.equal(&Generator::new(1).unwrap().dropout(&input, 0.5).unwrap()));
        assert!(second_a.equal(&second_b));
        assert!(!second_a.equal(&first));
    }

    #[test]
    fn dropout_passes_gradients_to_its_input() {
        let input = ones();
        let out = Generator::new(3).unwrap().dropout(&input, 0.5).unwrap();
        out.sum(tch::Kind::Float).backward();
        assert!(input.grad().equal(&out.detach()));
    }
}
