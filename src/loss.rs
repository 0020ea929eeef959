//! Training losses: plain cross-entropy and the churn mitigations built on it.
//!
//! With p = softmax(z) for the student's logits z, one-hot e_y, teacher
//! probabilities p^t, weight α and temperature T:
//!
//! - distillation: (1−α)·CE(e_y, p) + α·T²·KL(p^t_T ‖ p_T), p_T = softmax(z/T);
//! - entropy regularisation: CE(e_y, p) + β·H(p), H(p) = −Σ p_i log p_i,
//!   averaged over the batch (β < 0 is the "confidence penalty").

use tch::{Kind, Reduction, TchError, Tensor};

/// Mean cross-entropy of logits `[batch, classes]` against integer labels `[batch]`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor, TchError> {
    logits
        .f_log_softmax(-1, Kind::Float)?
        .f_nll_loss::<Tensor>(labels, None, Reduction::Mean, -100)
}

/// Cross-entropy plus β times the batch-mean entropy of the predictions.
pub fn entropy_regularised(
    logits: &Tensor,
    labels: &Tensor,
    beta: f64,
) -> Result<Tensor, TchError> {
    let log_p = logits.f_log_softmax(-1, Kind::Float)?;
    let entropy = log_p
        .f_exp()?
        .f_mul(&log_p)?
        .f_sum_dim_intlist(-1, false, Kind::Float)?
        .f_neg()?
        .f_mean(Kind::Float)?;
    cross_entropy(logits, labels)?.f_add(&entropy.f_mul_scalar(beta)?)
}

/// Distillation toward `teacher_probs` (`[batch, classes]`, already at
/// temperature T). The teacher is detached here, so no gradient can reach it
/// whatever the caller passes.
pub fn distillation(
    logits: &Tensor,
    labels: &Tensor,
    teacher_probs: &Tensor,
    alpha: f64,
    temperature: f64,
) -> Result<Tensor, TchError> {
    let teacher = teacher_probs.f_detach()?;
    let log_p_t = logits
        .f_div_scalar(temperature)?
        .f_log_softmax(-1, Kind::Float)?;
    // Σ p^t log p^t with 0·log 0 = 0: clamping only touches exact zeros' logs.
    let teacher_log = teacher.f_clamp_min(f64::from(f32::MIN_POSITIVE))?.f_log()?;
    let kl = teacher
        .f_mul(&teacher_log.f_sub(&log_p_t)?)?
        .f_sum_dim_intlist(-1, false, Kind::Float)?
        .f_mean(Kind::Float)?;
    cross_entropy(logits, labels)?
        .f_mul_scalar(1.0 - alpha)?
        .f_add(&kl.f_mul_scalar(alpha * temperature * temperature)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    /// Logits (0, ln 3) give p = (¼, ¾); (ln 4, 0) give p = (⅘, ⅕).
    fn batch() -> (Tensor, Tensor) {
        let logits = Tensor::from_slice(&[0.0f32, 3f32.ln(), 4f32.ln(), 0.0]).reshape([2, 2]);
        (logits, Tensor::from_slice(&[1i64, 1]))
    }

    #[test]
    fn cross_entropy_by_hand() {
        let (logits, labels) = batch();
        // (−ln ¾ − ln ⅕) / 2
        close(
            value(&cross_entropy(&logits, &labels).unwrap()),
            (-(0.75f64).ln() - (0.2f64).ln()) / 2.0,
        );
    }

    #[test]
    fn alpha_zero_is_cross_entropy() {
        let (logits, labels) = batch();
        let teacher = Tensor::from_slice(&[0.5f32, 0.5, 0.9, 0.1]).reshape([2, 2]);
        let ce = value(&cross_entropy(&logits, &labels).unwrap());
        close(
            value(&distillation(&logits, &labels, &teacher, 0.0, 1.0).unwrap()),
            ce,
        );
    }

    #[test]
    fn one_hot_teacher_at_alpha_one_is_cross_entropy() {
        let (logits, labels) = batch();
        let one_hot = Tensor::from_slice(&[0.0f32, 1.0, 0.0, 1.0]).reshape([2, 2]);
        let ce = value(&cross_entropy(&logits, &labels).unwrap());
        close(
            value(&distillation(&logits, &labels, &one_hot, 1.0, 1.0).unwrap()),
            ce,
        );
    }

    #[test]
    fn entropy_of_uniform_rows_is_log_classes() {
        let logits = Tensor::zeros([3, 4], (Kind::Float, tch::Device::Cpu));
        let labels = Tensor::from_slice(&[0i64, 1, 2]);
        let ce = value(&cross_entropy(&logits, &labels).unwrap());
        close(ce, 4f64.ln());
        // CE + β·H = ln 4 + 0.5·ln 4
        close(
            value(&entropy_regularised(&logits, &labels, 0.5).unwrap()),
            1.5 * 4f64.ln(),
        );
    }

    #[test]
    fn no_gradient_reaches_the_teacher() {
        let (logits, labels) = batch();
        let logits = logits.set_requires_grad(true);
        let teacher = Tensor::from_slice(&[0.3f32, 0.7, 0.6, 0.4])
            .reshape([2, 2])
            .set_requires_grad(true);
        distillation(&logits, &labels, &teacher, 0.5, 2.0)
            .unwrap()
            .backward();
        assert!(logits.grad().defined());
        assert!(!teacher.grad().defined());
    }
}
