//! `churn-audit compare BASELINE.json CANDIDATE.json...`: did a change (a
//! mitigation, a new recipe) move churn or accuracy, beyond what the intervals
//! allow? Pure over run reports, like the gate.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::Table;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::metrics::stats::{difference_interval, std_interval, Interval};
use crate::report::{percent, points, short_hash, with_interval, Report};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Improved,
    Regressed,
    /// The interval of the change straddles zero.
    NoDetectableChange,
}

impl Direction {
    pub fn words(self) -> &'static str {
        match self {
            Direction::Improved => "improved",
            Direction::Regressed => "regressed",
            Direction::NoDetectableChange => "no detectable change",
        }
    }
}

/// One metric in both reports and how it moved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricChange {
    pub metric: &'static str,
    pub baseline: f64,
    pub baseline_ci95: Interval,
    pub candidate: f64,
    pub candidate_ci95: Interval,
    /// candidate − baseline.
    pub change: f64,
    /// 95% interval of the change (MOVER over the two intervals).
    pub change_ci95: Interval,
    /// change / baseline, or null when the baseline is 0.
    pub relative_change: Option<f64>,
    pub verdict: Direction,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub baseline: String,
    pub candidate: String,
    pub test_sha256: String,
    pub metrics: Vec<MetricChange>,
    /// What could not be compared, and why.
    pub notes: Vec<String>,
}

/// Compares two run reports over the same test set.
pub fn compare(
    baseline_name: &str,
    baseline: &Report,
    candidate_name: &str,
    candidate: &Report,
) -> Result<Comparison> {
    let (then_sha, now_sha) = (
        &baseline.dataset.test_sha256,
        &candidate.dataset.test_sha256,
    );
    if then_sha != now_sha {
        return Err(Error::usage(
            "compare",
            format!("{baseline_name} was measured on test set {then_sha}, {candidate_name} on {now_sha}; reports compare only on the same test set"),
        ));
    }
    let (then, now) = (&baseline.analysis, &candidate.analysis);
    let mut metrics = vec![
        change(
            "mean pairwise churn",
            Better::Lower,
            (then.churn.mean, then.churn.ci95),
            (now.churn.mean, now.churn.ci95),
        ),
        change(
            "mean accuracy",
            Better::Higher,
            (then.accuracy.mean, then.accuracy.ci95),
            (now.accuracy.mean, now.accuracy.ci95),
        ),
        change(
            "accuracy std",
            Better::Lower,
            (
                then.accuracy.std,
                std_interval(then.accuracy.n, then.accuracy.std),
            ),
            (
                now.accuracy.std,
                std_interval(now.accuracy.n, now.accuracy.std),
            ),
        ),
    ];
    let mut notes = Vec::new();
    if let (Some(then_anchor), Some(now_anchor)) = (&baseline.anchor, &candidate.anchor) {
        let (then_sha, now_sha) = (&then_anchor.anchor.sha256, &now_anchor.anchor.sha256);
        if then_sha == now_sha {
            let (then, now) = (&then_anchor.analysis.churn, &now_anchor.analysis.churn);
            metrics.push(change(
                "mean churn vs anchor",
                Better::Lower,
                (then.mean, then.ci95),
                (now.mean, now.ci95),
            ));
        } else {
            // Churn against two different anchors measures two different things.
            notes.push(format!(
                "churn vs anchor not compared: {baseline_name} was measured against anchor {}…, {candidate_name} against {}…",
                short_hash(then_sha),
                short_hash(now_sha)
            ));
        }
    }
    // A report combined from a run directory may lack planned models: its
    // figures then describe fewer models than its config asked for.
    for (name, report) in [(baseline_name, baseline), (candidate_name, candidate)] {
        if let Some(incomplete) = &report.incomplete {
            notes.push(format!(
                "{name} is incomplete: {} of its {} planned models are missing (see its `incomplete`)",
                incomplete.missing.len(),
                incomplete.planned
            ));
        }
    }
    Ok(Comparison {
        baseline: baseline_name.to_owned(),
        candidate: candidate_name.to_owned(),
        test_sha256: now_sha.clone(),
        metrics,
        notes,
    })
}

enum Better {
    Lower,
    Higher,
}

fn change(
    metric: &'static str,
    better: Better,
    then: (f64, Interval),
    now: (f64, Interval),
) -> MetricChange {
    let change_ci95 = difference_interval(now.0, now.1, then.0, then.1);
    let verdict = match (change_ci95.low > 0.0, change_ci95.high < 0.0, better) {
        (true, _, Better::Higher) | (_, true, Better::Lower) => Direction::Improved,
        (true, _, Better::Lower) | (_, true, Better::Higher) => Direction::Regressed,
        _ => Direction::NoDetectableChange,
    };
    MetricChange {
        metric,
        baseline: then.0,
        baseline_ci95: then.1,
        candidate: now.0,
        candidate_ci95: now.1,
        change: now.0 - then.0,
        change_ci95,
        relative_change: (then.0 != 0.0).then(|| (now.0 - then.0) / then.0),
        verdict,
    }
}

impl Comparison {
    pub fn render_table(&self) -> String {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
            "metric",
            "baseline",
            "candidate",
            "change [95% CI]",
            "relative",
            "verdict",
        ]);
        for m in &self.metrics {
            table.add_row(vec![
                m.metric.to_owned(),
                with_interval(percent, m.baseline, m.baseline_ci95),
                with_interval(percent, m.candidate, m.candidate_ci95),
                with_interval(points, m.change, m.change_ci95),
                m.relative_change
                    .map_or_else(|| "-".to_owned(), |r| format!("{:+.1}%", r * 100.0)),
                m.verdict.words().to_owned(),
            ]);
        }
        let notes: String = self.notes.iter().map(|note| format!("{note}\n")).collect();
        format!(
            "baseline {} vs candidate {} (same test set {})\n{table}\n{notes}",
            self.baseline,
            self.candidate,
            short_hash(&self.test_sha256)
        )
    }
}

/// Every comparison as one JSON array, in candidate order.
pub fn to_json(comparisons: &[Comparison]) -> String {
    serde_json::to_string_pretty(comparisons).expect("a Comparison always serialises") + "\n"
}

/// One Markdown table over the baseline and every candidate: what each
/// trained, its churn, the change against the baseline, churn against the
/// anchor (where the reports have one), accuracy and training time; then any
/// notes (e.g. reports measured against different anchors).
pub fn render_markdown(reports: &[(&str, &Report)], comparisons: &[Comparison]) -> String {
    let mut out = String::from(
        "| report | mitigation | mean churn [95% CI] | change vs baseline [95% CI] | churn vs anchor [95% CI] | accuracy mean ± std | training time |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let changes = std::iter::once(None).chain(comparisons.iter().map(Some));
    for (&(name, report), comparison) in reports.iter().zip(changes) {
        let analysis = &report.analysis;
        let change = comparison.map_or_else(String::new, |c| {
            let churn = &c.metrics[0];
            format!(
                "{}: {}",
                with_interval(points, churn.change, churn.change_ci95),
                churn.verdict.words()
            )
        });
        let anchor = report.anchor.as_ref().map_or_else(String::new, |a| {
            with_interval(percent, a.analysis.churn.mean, a.analysis.churn.ci95)
        });
        let seconds: f64 = report.models.iter().map(|m| m.train_seconds).sum();
        out += &format!(
            "| {name} | {} | {} | {change} | {anchor} | {} ± {} | {seconds:.1} s |\n",
            report.config.train.mitigation,
            with_interval(percent, analysis.churn.mean, analysis.churn.ci95),
            percent(analysis.accuracy.mean),
            percent(analysis.accuracy.std),
        );
    }
    for note in comparisons.iter().flat_map(|c| &c.notes) {
        out += &format!("\n{note}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ci(low: f64, high: f64) -> Interval {
        Interval { low, high }
    }

    #[test]
    fn verdicts_follow_the_interval_of_the_change() {
        // Churn up by 1 pp with an interval clear of zero: regressed.
        let up = change(
            "churn",
            Better::Lower,
            (0.02, ci(0.016, 0.024)),
            (0.03, ci(0.025, 0.035)),
        );
        assert_eq!(up.verdict, Direction::Regressed);
        assert!((up.relative_change.unwrap() - 0.5).abs() < 1e-12);
        // The same move for accuracy is an improvement.
        assert_eq!(
            change(
                "acc",
                Better::Higher,
                (0.02, ci(0.016, 0.024)),
                (0.03, ci(0.025, 0.035))
            )
            .verdict,
            Direction::Improved
        );
        // Overlapping wide intervals: nothing detectable.
        let flat = change(
            "churn",
            Better::Lower,
            (0.02, ci(0.0, 0.05)),
            (0.019, ci(0.0, 0.05)),
        );
        assert_eq!(flat.verdict, Direction::NoDetectableChange);
        assert_eq!(
            change(
                "churn",
                Better::Lower,
                (0.0, ci(0.0, 0.0)),
                (0.0, ci(0.0, 0.0))
            )
            .relative_change,
            None
        );
    }
}
