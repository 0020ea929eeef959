//! What churn-audit needs from libtorch beyond tch, through the C++ shim in
//! src/shim/libtorch_ext.cpp: the determinism switches, and dropout drawn from
//! a generator owned by one model.

use std::ffi::c_void;

use tch::{TchError, Tensor};

use crate::error::{Error, Result};

extern "C" {
    fn churn_audit_set_deterministic(enabled: i32) -> i32;
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
    fn generator_dropout_matches_libtorch_after_manual_seed() {
        let input = ones();
        tch::manual_seed(42);
        let libtorch = input.dropout(0.25, true);
        let ours = Generator::new(42).unwrap().dropout(&input, 0.25).unwrap();
        assert!(ours.equal(&libtorch));
        // Kept units scale to 1 / 0.75, dropped ones are 0.
        let kept = ours.ne(0.0).sum(tch::Kind::Int64).int64_value(&[]);
        assert!((1200..1970).contains(&kept), "{kept} of 2112 kept");
        assert!(ours.max().double_value(&[]) - 1.0 / 0.75 < 1e-6);
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
