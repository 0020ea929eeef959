//! The CI gate: checks over a finished [`Report`], each ending in a verdict of
//! pass, fail or inconclusive. Pure: it reads only reports, so every rule is
//! tested on hand-made values. main.rs maps the verdicts to the exit code.
//!
//! A check is judged on the 95% interval of its figure, not on the point
//! estimate alone: five models measure churn loosely, and a gate that flips on
//! noise is worse than none. When the interval straddles the threshold the
//! check is inconclusive and `--inconclusive` decides whether that fails.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cli::GateArgs;
use crate::error::{Error, Result};
use crate::metrics::analysis::Reproducibility;
use crate::metrics::anchor::MeanShare;
use crate::metrics::churn::ChurnSummary;
use crate::metrics::stats::{difference_interval, std_interval, Interval, Summary};
use crate::report::audit::AuditReport;
use crate::report::{percent, points, Incomplete, Report};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Inconclusive,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Inconclusive => "inconclusive",
        }
    }
}

/// What an inconclusive check counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InconclusivePolicy {
    Pass,
    Fail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    MaxChurn,
    MaxAccStd,
    MinAcc,
    RequireReproducible,
    MaxChurnIncrease,
    MaxChurnVsAnchor,
    /// Not asked for: every report combined from a run directory must hold
    /// all its planned models.
    Complete,
}

impl Check {
    /// The flag that asks for this check.
    pub fn flag(self) -> &'static str {
        match self {
            Check::MaxChurn => "--max-churn",
            Check::MaxAccStd => "--max-acc-std",
            Check::MinAcc => "--min-acc",
            Check::RequireReproducible => "--require-reproducible",
            Check::MaxChurnIncrease => "--max-churn-increase",
            Check::MaxChurnVsAnchor => "--max-churn-vs-anchor",
            Check::Complete => "complete",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub check: Check,
    /// The threshold as given, a fraction (null for require-reproducible).
    pub threshold: Option<f64>,
    /// The figure judged, a fraction (null for require-reproducible).
    pub measured: Option<f64>,
    pub ci95: Option<Interval>,
    pub outcome: Outcome,
    /// One sentence for people: the figure, its interval, the threshold and,
    /// on failure, by how much it was missed.
    pub message: String,
}

impl Verdict {
    /// The check as typed on the command line, e.g. `--max-churn 0.02`.
    pub fn invocation(&self) -> String {
        match self.threshold {
            Some(threshold) => format!("{} {threshold}", self.check.flag()),
            None => self.check.flag().to_owned(),
        }
    }

    pub fn counts_as_failure(&self, policy: InconclusivePolicy) -> bool {
        match self.outcome {
            Outcome::Pass => false,
            Outcome::Fail => true,
            Outcome::Inconclusive => policy == InconclusivePolicy::Fail,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdicts {
    pub inconclusive: InconclusivePolicy,
    /// No check counts as failed under the inconclusive policy.
    pub passed: bool,
    pub checks: Vec<Verdict>,
}

impl Verdicts {
    /// One line per check that did not pass, for stderr.
    pub fn problems(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|v| v.outcome != Outcome::Pass)
            .map(|v| {
                let verdict = match (v.outcome, v.counts_as_failure(self.inconclusive)) {
                    (Outcome::Fail, _) => "failed",
                    (_, true) => "inconclusive, counted as failed",
                    (_, false) => "inconclusive, counted as passed",
                };
                format!("check {verdict}: {}: {}", v.invocation(), v.message)
            })
            .collect()
    }
}

/// A report to compare against, with the file it came from (for messages).
pub struct Baseline {
    pub path: PathBuf,
    pub report: Report,
}

/// The figures the checks judge, wherever they come from.
pub struct Judged<'a> {
    pub accuracy: &'a Summary,
    pub churn: &'a ChurnSummary,
    /// Whether nothing-varied models were bitwise identical, and over how many.
    pub reproducibility: &'a Reproducibility,
    pub reproducibility_models: usize,
    pub test_sha256: &'a str,
    /// Mean churn of the models against the --anchor, when there was one.
    pub churn_vs_anchor: Option<&'a MeanShare>,
    /// Planned models missing from a report combined from a run directory.
    pub incomplete: Option<&'a Incomplete>,
    /// Whether the report was combined from a run directory and completeness
    /// is to be judged even when nothing is missing.
    pub combined: bool,
}

impl<'a> From<&'a Report> for Judged<'a> {
    fn from(report: &'a Report) -> Self {
        Judged {
            accuracy: &report.analysis.accuracy,
            churn: &report.analysis.churn,
            reproducibility: &report.analysis.reproducibility,
            reproducibility_models: report.models.len(),
            test_sha256: &report.dataset.test_sha256,
            churn_vs_anchor: report.anchor.as_ref().map(|anchor| &anchor.analysis.churn),
            incomplete: report.incomplete.as_ref(),
            combined: false,
        }
    }
}

impl<'a> Judged<'a> {
    /// An audit is judged on the churn users see, its `all` group, and on the
    /// reproducibility of its control group; `None` if either is missing.
    pub fn audit(report: &'a AuditReport) -> Option<Self> {
        let analysis = |source: &str| {
            let group = report.groups.iter().find(|group| group.source == source)?;
            Some((group.analysis.as_ref()?, group.members.len()))
        };
        let (all, _) = analysis("all")?;
        let (control, control_models) = analysis("control")?;
        Some(Judged {
            accuracy: &all.accuracy,
            churn: &all.churn,
            reproducibility: &control.reproducibility,
            reproducibility_models: control_models,
            test_sha256: &report.dataset.test_sha256,
            churn_vs_anchor: None,
            incomplete: None,
            combined: false,
        })
    }
}

/// Judges `report` by every check in `args`; `None` when none was asked for.
/// Fails only when the baseline was measured on another test set, since churn
/// on different examples does not compare.
pub fn evaluate(
    report: Judged,
    args: &GateArgs,
    baseline: Option<&Baseline>,
) -> Result<Option<Verdicts>> {
    let mut checks = Vec::new();
    if let Some(limit) = args.max_churn {
        let churn = &report.churn;
        checks.push(judge(
            Check::MaxChurn,
            Bound::Upper,
            limit,
            churn.mean,
            churn.ci95,
            "mean pairwise churn",
            percent,
        ));
    }
    if let Some(limit) = args.max_acc_std {
        let accuracy = &report.accuracy;
        checks.push(judge(
            Check::MaxAccStd,
            Bound::Upper,
            limit,
            accuracy.std,
            std_interval(accuracy.n, accuracy.std),
            "accuracy std",
            percent,
        ));
    }
    if let Some(limit) = args.min_acc {
        let accuracy = &report.accuracy;
        checks.push(judge(
            Check::MinAcc,
            Bound::Lower,
            limit,
            accuracy.mean,
            accuracy.ci95,
            "mean accuracy",
            percent,
        ));
    }
    if args.require_reproducible {
        checks.push(reproducibility(&report));
    }
    if let (Some(limit), Some(baseline)) = (args.max_churn_increase, baseline) {
        checks.push(churn_increase(&report, baseline, limit)?);
    }
    if let Some(limit) = args.max_churn_vs_anchor {
        let Some(churn) = report.churn_vs_anchor else {
            return Err(Error::usage(
                "--max-churn-vs-anchor",
                "the report has no churn against an anchor: it was made without --anchor PATH",
            ));
        };
        checks.push(judge(
            Check::MaxChurnVsAnchor,
            Bound::Upper,
            limit,
            churn.mean,
            churn.ci95,
            "mean churn against the anchor",
            percent,
        ));
    }
    let completeness = match report.incomplete {
        Some(incomplete) => Some((
            Outcome::Fail,
            format!(
                "only {} of the {} planned models are in this report ({})",
                incomplete.planned - incomplete.missing.len(),
                incomplete.planned,
                incomplete.missing.join("; ")
            ),
        )),
        None if report.combined => Some((
            Outcome::Pass,
            format!(
                "all {} planned models are in this report",
                report.reproducibility_models
            ),
        )),
        None => None,
    };
    if let Some((outcome, message)) = completeness {
        checks.push(Verdict {
            check: Check::Complete,
            threshold: None,
            measured: None,
            ci95: None,
            outcome,
            message,
        });
    }
    if checks.is_empty() {
        return Ok(None);
    }
    Ok(Some(Verdicts {
        inconclusive: args.inconclusive,
        passed: !checks
            .iter()
            .any(|v| v.counts_as_failure(args.inconclusive)),
        checks,
    }))
}

#[derive(Clone, Copy)]
enum Bound {
    /// The figure must not exceed the threshold.
    Upper,
    /// The figure must not fall below the threshold.
    Lower,
}

fn judge(
    check: Check,
    bound: Bound,
    threshold: f64,
    measured: f64,
    ci95: Interval,
    what: &str,
    show: fn(f64) -> String,
) -> Verdict {
    // NaN compares false both ways and so lands on inconclusive, never pass.
    let outcome = match bound {
        Bound::Upper if ci95.high <= threshold => Outcome::Pass,
        Bound::Upper if ci95.low > threshold => Outcome::Fail,
        Bound::Lower if ci95.low >= threshold => Outcome::Pass,
        Bound::Lower if ci95.high < threshold => Outcome::Fail,
        _ => Outcome::Inconclusive,
    };
    let (limit, within, relation, missed) = match bound {
        Bound::Upper => ("limit", "is within", "exceeds", measured - threshold),
        Bound::Lower => ("minimum", "meets", "is below", threshold - measured),
    };
    let figure = format!(
        "{what} {} (95% CI {} – {})",
        show(measured),
        show(ci95.low),
        show(ci95.high)
    );
    let message = match outcome {
        Outcome::Pass => format!("{figure} {within} the {limit} {}", show(threshold)),
        Outcome::Fail => format!(
            "{figure} {relation} the {limit} {} by {:.2} percentage points",
            show(threshold),
            missed * 100.0
        ),
        Outcome::Inconclusive => format!(
            "{figure} straddles the {limit} {}; more models would narrow the interval",
            show(threshold)
        ),
    };
    Verdict {
        check,
        threshold: Some(threshold),
        measured: Some(measured),
        ci95: Some(ci95),
        outcome,
        message,
    }
}

fn reproducibility(report: &Judged) -> Verdict {
    let repro = report.reproducibility;
    let (outcome, message) = if repro.bitwise_reproducible {
        (
            Outcome::Pass,
            format!(
                "all {} models have bitwise identical weights and test logits",
                report.reproducibility_models
            ),
        )
    } else {
        (
            Outcome::Fail,
            format!(
                "not bitwise reproducible: {} distinct weight hashes and {} distinct prediction hashes over {} models",
                repro.distinct_weight_hashes,
                repro.distinct_prediction_hashes,
                report.reproducibility_models
            ),
        )
    };
    Verdict {
        check: Check::RequireReproducible,
        threshold: None,
        measured: None,
        ci95: None,
        outcome,
        message,
    }
}

/// Mean churn now minus mean churn of the baseline. The interval combines the
/// two bootstrap intervals by MOVER (Zou & Donner 2008), which treats the runs
/// as independent; runs sharing seeds are positively correlated, for which it
/// is conservative (too wide, so inconclusive rather than wrongly decided).
fn churn_increase(report: &Judged, baseline: &Baseline, limit: f64) -> Result<Verdict> {
    let (now, then) = (report.churn, &baseline.report.analysis.churn);
    let (now_sha, then_sha) = (report.test_sha256, &baseline.report.dataset.test_sha256);
    if now_sha != then_sha {
        return Err(Error::usage(
            "--baseline",
            format!(
                "{} was measured on test set {then_sha}, this report on {now_sha}; churn compares only on the same test set",
                baseline.path.display()
            ),
        ));
    }
    let increase = now.mean - then.mean;
    let ci95 = difference_interval(now.mean, now.ci95, then.mean, then.ci95);
    let what = format!(
        "churn increase over {} ({} → {})",
        baseline.path.display(),
        percent(then.mean),
        percent(now.mean)
    );
    Ok(judge(
        Check::MaxChurnIncrease,
        Bound::Upper,
        limit,
        increase,
        ci95,
        &what,
        points,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(low: f64, high: f64) -> Interval {
        Interval { low, high }
    }

    fn churn_verdict(limit: f64, low: f64, high: f64) -> Verdict {
        judge(
            Check::MaxChurn,
            Bound::Upper,
            limit,
            (low + high) / 2.0,
            interval(low, high),
            "mean pairwise churn",
            percent,
        )
    }

    #[test]
    fn upper_bound_judged_on_the_interval() {
        assert_eq!(churn_verdict(0.02, 0.01, 0.015).outcome, Outcome::Pass);
        // Touching the limit from below still passes.
        assert_eq!(churn_verdict(0.02, 0.01, 0.02).outcome, Outcome::Pass);
        assert_eq!(churn_verdict(0.02, 0.025, 0.035).outcome, Outcome::Fail);
        assert_eq!(
            churn_verdict(0.02, 0.015, 0.025).outcome,
            Outcome::Inconclusive
        );
        assert_eq!(
            churn_verdict(0.02, f64::NAN, f64::NAN).outcome,
            Outcome::Inconclusive
        );
    }

    #[test]
    fn failure_names_figure_interval_threshold_and_miss() {
        assert_eq!(
            churn_verdict(0.02, 0.025, 0.035).message,
            "mean pairwise churn 3.00% (95% CI 2.50% – 3.50%) exceeds the limit 2.00% by 1.00 percentage points"
        );
        let below = judge(
            Check::MinAcc,
            Bound::Lower,
            0.95,
            0.9,
            interval(0.89, 0.91),
            "mean accuracy",
            percent,
        );
        assert_eq!(below.outcome, Outcome::Fail);
        assert_eq!(
            below.message,
            "mean accuracy 90.00% (95% CI 89.00% – 91.00%) is below the minimum 95.00% by 5.00 percentage points"
        );
        assert_eq!(below.invocation(), "--min-acc 0.95");
    }

    #[test]
    fn lower_bound_judged_on_the_interval() {
        let min_acc = |low, high| {
            judge(
                Check::MinAcc,
                Bound::Lower,
                0.9,
                0.0,
                interval(low, high),
                "",
                percent,
            )
            .outcome
        };
        assert_eq!(min_acc(0.9, 0.95), Outcome::Pass);
        assert_eq!(min_acc(0.85, 0.89), Outcome::Fail);
        assert_eq!(min_acc(0.88, 0.92), Outcome::Inconclusive);
    }

    #[test]
    fn inconclusive_counts_by_policy() {
        let verdict = churn_verdict(0.02, 0.015, 0.025);
        assert!(verdict.counts_as_failure(InconclusivePolicy::Fail));
        assert!(!verdict.counts_as_failure(InconclusivePolicy::Pass));
        assert!(churn_verdict(0.02, 0.03, 0.04).counts_as_failure(InconclusivePolicy::Pass));
    }

    #[test]
    fn points_carry_their_sign() {
        assert_eq!(points(0.0123), "+1.23 pp");
        assert_eq!(points(-0.005), "-0.50 pp");
    }
}
