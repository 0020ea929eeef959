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

/// softmax(z / T) of logits `z`.
pub fn softmax_at(logits: &Tensor, temperature: f64) -> Result<Tensor, TchError> {
    logits.f_div_scalar(temperature)?.f_softmax(-1, Kind::Float)
}

/// Probabilities `p` moved to temperature T: softmax(log p / T), ∝ p^(1/T).
/// At T = 1 they are returned as they are.
pub fn at_temperature(probabilities: &Tensor, temperature: f64) -> Result<Tensor, TchError> {
    if temperature == 1.0 {
        return Ok(probabilities.shallow_clone());
    }
    softmax_at(
        &probabilities
            .f_clamp_min(f64::from(f32::MIN_POSITIVE))?
            .f_log()?,
        temperature,
    )
}

/// Cross-entropy of logits `[batch, classes]` against soft targets of the same shape.
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor, TchError> {
    targets
        .f_detach()?
        .f_mul(&logits.f_log_softmax(-1, Kind::Float)?)?
        .f_sum_dim_intlist(-1, false, Kind::Float)?
        .f_mean(Kind::Float)?
        .f_neg()
}

/// The RCP targets of Cormier et al. (2016) from anchor probabilities
/// `[n, classes]` and labels `[n]`: α·p + (1−α)·e_y on rows where the
/// anchor's top class is the label, e_y elsewhere.
pub fn rcp_targets(anchor: &Tensor, labels: &Tensor, alpha: f64) -> Result<Tensor, TchError> {
    let classes = anchor.size()[1];
    let one_hot = labels.f_one_hot(classes)?.f_to_kind(Kind::Float)?;
    let right = anchor
        .f_argmax(-1, false)?
        .f_eq_tensor(labels)?
        .f_unsqueeze(-1)?;
    let blended = anchor
        .f_mul_scalar(alpha)?
        .f_add(&one_hot.f_mul_scalar(1.0 - alpha)?)?;
    blended.f_where_self(&right, &one_hot)
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

    #[test]
    fn rcp_blends_only_where_the_anchor_is_right() {
        // Row 0: anchor says class 1 (right); row 1: anchor says class 0 (wrong).
        let anchor = Tensor::from_slice(&[0.25f32, 0.75, 0.8, 0.2]).reshape([2, 2]);
        let labels = Tensor::from_slice(&[1i64, 1]);
        let targets = rcp_targets(&anchor, &labels, 0.4).unwrap();
        let got = Vec::<f32>::try_from(targets.flatten(0, -1)).unwrap();
        // 0.4·(¼, ¾) + 0.6·(0, 1) = (0.1, 0.9); the wrong row keeps e_y.
        for (g, want) in got.iter().zip([0.1f32, 0.9, 0.0, 1.0]) {
            close(f64::from(*g), f64::from(want));
        }
        // Against one-hot targets, soft cross-entropy is cross-entropy.
        let (logits, labels) = batch();
        let one_hot = Tensor::from_slice(&[0.0f32, 1.0, 0.0, 1.0]).reshape([2, 2]);
        close(
            value(&soft_cross_entropy(&logits, &one_hot).unwrap()),
            value(&cross_entropy(&logits, &labels).unwrap()),
        );
    }

    #[test]
    fn temperature_flattens_probabilities() {
        let p = Tensor::from_slice(&[0.2f32, 0.8]).reshape([1, 2]);
        // T = 2: ∝ (√0.2, √0.8) = (1/3, 2/3).
        let flat = Vec::<f32>::try_from(at_temperature(&p, 2.0).unwrap().flatten(0, -1)).unwrap();
        close(f64::from(flat[0]), 1.0 / 3.0);
        close(f64::from(flat[1]), 2.0 / 3.0);
        assert!(at_temperature(&p, 1.0).unwrap().equal(&p));
        // softmax((0, ln 4) / 2) = (1/3, 2/3) too.
        let logits = Tensor::from_slice(&[0.0f32, 4f32.ln()]).reshape([1, 2]);
        let soft = Vec::<f32>::try_from(softmax_at(&logits, 2.0).unwrap().flatten(0, -1)).unwrap();
        close(f64::from(soft[1]), 2.0 / 3.0);
    }
}
