//! Summary statistics across models.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal, StudentsT};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1 in the denominator).
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// 95% Student-t interval for the mean: mean ± t(0.975, n-1) · std / √n.
    pub ci95: Interval,
}

/// Summary of at least two shares (each in [0, 1]), its interval clipped to
/// [0, 1]: with few values the t interval can reach past either end.
pub fn summarize_shares(values: &[f64]) -> Summary {
    let mut summary = summarize(values);
    summary.ci95 = Interval {
        low: summary.ci95.low.max(0.0),
        high: summary.ci95.high.min(1.0),
    };
    summary
}

/// Summary of at least two values.
pub fn summarize(values: &[f64]) -> Summary {
    let n = values.len();
    assert!(n >= 2, "summarize needs at least two values");
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Identical values: exactly that value and no spread, not a rounding residue.
    if min == max {
        return Summary {
            n,
            mean: min,
            std: 0.0,
            min,
            max,
            ci95: Interval {
                low: min,
                high: max,
            },
        };
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = variance.sqrt();
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .expect("n - 1 >= 1 degrees of freedom is a valid Student-t")
        .inverse_cdf(0.975);
    let half_width = t * std / (n as f64).sqrt();
    Summary {
        n,
        mean,
        std,
        min,
        max,
        ci95: Interval {
            low: mean - half_width,
            high: mean + half_width,
        },
    }
}

/// Interval for `now − then` from the two figures' own 95% intervals by MOVER
/// (Zou & Donner 2008). It treats them as independent; runs sharing seeds are
/// positively correlated, for which it is conservative (too wide).
pub fn difference_interval(now: f64, now_ci: Interval, then: f64, then_ci: Interval) -> Interval {
    let change = now - then;
    Interval {
        low: change - (now - now_ci.low).hypot(then_ci.high - then),
        high: change + (now_ci.high - now).hypot(then - then_ci.low),
    }
}

/// 95% interval for the standard deviation `std` of `n` values drawn from a
/// normal distribution: std · √((n-1) / χ²(q, n-1)) for q = 0.975 and 0.025.
/// It is wide for few models, which is the point: a gate on the spread of
/// five accuracies should rarely be confident.
pub fn std_interval(n: usize, std: f64) -> Interval {
    let df = n.saturating_sub(1).max(1) as f64;
    let scale = |q: f64| std * (df / chi_square_quantile(df, q)).sqrt();
    Interval {
        low: scale(0.975),
        high: scale(0.025),
    }
}

fn chi_square_quantile(df: f64, q: f64) -> f64 {
    if df == 1.0 {
        // statrs returns NaN here (two models, the smallest audit); with one
        // degree of freedom χ² is a squared standard normal.
        let z = Normal::standard().inverse_cdf((1.0 + q) / 2.0);
        return z * z;
    }
    ChiSquared::new(df)
        .expect("at least one degree of freedom is a valid chi-square")
        .inverse_cdf(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn hand_computed_summary() {
        // mean 0.96, deviations ±0.01, 0: variance (1e-4 + 0 + 1e-4) / 2 = 1e-4, std 0.01.
        let s = summarize(&[0.95, 0.96, 0.97]);
        assert!(close(s.mean, 0.96));
        assert!(close(s.std, 0.01));
        assert_eq!((s.min, s.max), (0.95, 0.97));
        // t(0.975, 2) = 4.302652729911275; half width 4.3027 · 0.01 / √3.
        let half = 4.302652729911275 * 0.01 / 3f64.sqrt();
        assert!((s.ci95.low - (0.96 - half)).abs() < 1e-7, "{:?}", s.ci95);
        assert!((s.ci95.high - (0.96 + half)).abs() < 1e-7);
    }

    #[test]
    fn mover_difference_by_hand() {
        // 0.03 [0.025, 0.035] − 0.02 [0.016, 0.024]: 0.01 ∓ hypot(0.005, 0.004).
        let interval = difference_interval(
            0.03,
            Interval {
                low: 0.025,
                high: 0.035,
            },
            0.02,
            Interval {
                low: 0.016,
                high: 0.024,
            },
        );
        let half = 0.005f64.hypot(0.004);
        assert!(
            (interval.low - (0.01 - half)).abs() < 1e-12
                && (interval.high - (0.01 + half)).abs() < 1e-12
        );
    }

    #[test]
    fn identical_values_have_zero_width() {
        let s = summarize(&[0.5, 0.5, 0.5, 0.5]);
        assert_eq!((s.std, s.ci95.low, s.ci95.high), (0.0, 0.5, 0.5));
        // 0.1 summed 64 times is not 6.4 in floating point; the spread is still 0.
        let s = summarize(&[0.1; 64]);
        assert_eq!((s.mean, s.std), (0.1, 0.0));
    }

    #[test]
    fn std_interval_from_chi_square_quantiles() {
        // χ²(0.975, 2) = 7.377758908227871, χ²(0.025, 2) = 0.050635615968579795.
        let interval = std_interval(3, 0.01);
        assert!((interval.low - 0.01 * (2.0f64 / 7.377758908227871).sqrt()).abs() < 1e-9);
        assert!((interval.high - 0.01 * (2.0f64 / 0.050635615968579795).sqrt()).abs() < 1e-9);
        // One degree of freedom: χ²(0.975, 1) = 5.023886187314888, χ²(0.025, 1) = 0.000982069117215.
        let two = std_interval(2, 0.01);
        assert!((two.low - 0.01 * (1.0f64 / 5.023886187314888).sqrt()).abs() < 1e-9);
        assert!((two.high - 0.01 * (1.0f64 / 0.000982069117215).sqrt()).abs() < 1e-6);
        assert_eq!(
            std_interval(5, 0.0),
            Interval {
                low: 0.0,
                high: 0.0
            }
        );
    }
}
