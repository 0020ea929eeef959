//! The report of `churn-audit audit`: one group per source of randomness.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::Table;
use serde::{Deserialize, Serialize};

use super::{
    percent, with_interval, DatasetInfo, Execution, ModelReport, Report, ToolInfo, SCHEMA_VERSION,
};
use crate::config::AuditConfig;
use crate::gate::Verdicts;
use crate::metrics::analysis::Analysis;
use crate::randomness::Source;

/// Groups in which some seed is varied: identical models there mean the seed
/// did not reach the model.
pub const ATTRIBUTION_HEADER: [&str; 8] = [
    "source",
    "N",
    "churn mean [95% CI]",
    "churn range",
    "accuracy mean ± std",
    "unstable",
    "distinct weights",
    "bitwise reproducible",
];

/// What the red flags say when there are none.
pub const NO_RED_FLAGS: &str =
    "none (control group bitwise identical; every varied seed changed the models)";

const SEEDED_GROUPS: [&str; 5] = ["init", "data-order", "dropout", "data-refresh", "all"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub schema_version: u32,
    pub tool: ToolInfo,
    pub config: AuditConfig,
    pub config_sha256: String,
    pub execution: Execution,
    pub dataset: DatasetInfo,
    /// Every distinct model trained; groups refer to them by index.
    pub models: Vec<ModelReport>,
    pub groups: Vec<GroupReport>,
    /// Models a group asked for that another group had already trained.
    pub reused_models: usize,
    /// Findings that mean the audit itself, or the pipeline, needs a look.
    pub red_flags: Vec<String>,
    /// The checks asked for and their verdicts; absent when none were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Verdicts>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// control, init, data-order, dropout, data-refresh, threads, kernels or all.
    pub source: String,
    /// Why the group could not be measured here (null when it was).
    pub not_applicable: Option<String>,
    /// Indices into `models`, in group order.
    pub members: Vec<usize>,
    pub analysis: Option<Analysis>,
}

impl GroupReport {
    pub fn measured(source: &str, members: Vec<usize>, analysis: Analysis) -> Self {
        GroupReport {
            source: source.into(),
            not_applicable: None,
            members,
            analysis: Some(analysis),
        }
    }

    pub fn not_applicable(source: &str, reason: &str) -> Self {
        GroupReport {
            source: source.into(),
            not_applicable: Some(reason.into()),
            members: Vec::new(),
            analysis: None,
        }
    }
}

fn red_flags(groups: &[GroupReport]) -> Vec<String> {
    let mut flags = Vec::new();
    for group in groups {
        let Some(analysis) = &group.analysis else {
            continue;
        };
        let repro = &analysis.reproducibility;
        if group.source == "control" && !repro.bitwise_reproducible {
            flags.push(if repro.distinct_weight_hashes > 1 {
                format!(
                    "the pipeline is non-deterministic: the control group (nothing varied) has {} distinct weight hashes",
                    repro.distinct_weight_hashes
                )
            } else {
                format!(
                    "the pipeline is non-deterministic: the control group's weights are identical but its predictions are not ({} distinct prediction hashes)",
                    repro.distinct_prediction_hashes
                )
            });
        }
        if SEEDED_GROUPS.contains(&group.source.as_str()) && repro.bitwise_reproducible {
            flags.push(format!(
                "varying {} produced bitwise identical models: its seed is not reaching training",
                group.source
            ));
        }
    }
    flags
}

impl AuditReport {
    pub fn build(
        config: AuditConfig,
        execution: Execution,
        dataset: DatasetInfo,
        models: Vec<ModelReport>,
        groups: Vec<GroupReport>,
        reused_models: usize,
    ) -> Self {
        AuditReport {
            schema_version: SCHEMA_VERSION,
            tool: ToolInfo::current(),
            config_sha256: config.sha256(),
            config,
            execution,
            dataset,
            models,
            red_flags: red_flags(&groups),
            groups,
            reused_models,
            gate: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("an AuditReport always serialises")
    }

    /// One row per group: the attribution table, for every format.
    pub fn attribution_rows(&self) -> Vec<Vec<String>> {
        self.groups
            .iter()
            .map(|group| match (&group.analysis, &group.not_applicable) {
                (Some(a), _) => vec![
                    group.source.clone(),
                    group.members.len().to_string(),
                    with_interval(percent, a.churn.mean, a.churn.ci95),
                    format!("{} – {}", percent(a.churn.min), percent(a.churn.max)),
                    format!("{} ± {}", percent(a.accuracy.mean), percent(a.accuracy.std)),
                    percent(a.unstable.share),
                    a.reproducibility.distinct_weight_hashes.to_string(),
                    if a.reproducibility.bitwise_reproducible {
                        "yes"
                    } else {
                        "no"
                    }
                    .to_owned(),
                ],
                (None, reason) => vec![
                    group.source.clone(),
                    "-".into(),
                    format!(
                        "not applicable: {}",
                        reason.as_deref().unwrap_or("not measured")
                    ),
                ],
            })
            .collect()
    }

    /// The `all` group (every seed varied) as a run report, so every run
    /// format can show it; `None` if the group was not measured.
    pub fn all_group_report(&self) -> Option<Report> {
        let group = self.groups.iter().find(|group| group.source == "all")?;
        let analysis = group.analysis.clone()?;
        let mut config = self.config.control.clone();
        config.vary = Source::ALL.into_iter().collect();
        let models = group
            .members
            .iter()
            .map(|&i| self.models[i].clone())
            .collect();
        let mut report = Report::build(
            config,
            self.execution.clone(),
            self.dataset.clone(),
            models,
            analysis,
        );
        report.gate = self.gate.clone();
        Some(report)
    }

    /// One line naming the audit: group size, data, models trained and reused.
    pub fn headline(&self) -> String {
        format!(
            "churn-audit {} audit: {} models per group on {} ({} train / {} test), {} distinct models trained, {} reused, config {}",
            self.tool.version,
            self.config.control.models,
            self.dataset.name,
            self.dataset.n_train,
            self.dataset.n_test,
            self.models.len(),
            self.reused_models,
            super::short_hash(&self.config_sha256),
        )
    }

    /// The attribution table.
    pub fn render_table(&self) -> String {
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL_CONDENSED)
            .set_header(ATTRIBUTION_HEADER);
        for row in self.attribution_rows() {
            table.add_row(row);
        }
        let mut out = format!("{}\n{table}\n", self.headline());
        if let Some(verdicts) = &self.gate {
            out += &format!("{}\n", super::gate_line(verdicts));
            for check in &verdicts.checks {
                out += &format!(
                    "  {}: {}: {}\n",
                    check.outcome.name(),
                    check.invocation(),
                    check.message
                );
            }
        }
        if self.red_flags.is_empty() {
            out += &format!("red flags: {NO_RED_FLAGS}\n");
        } else {
            for flag in &self.red_flags {
                out += &format!("RED FLAG: {flag}\n");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::analysis::{analyze, ModelOutcome, TestSet};

    /// A group of two models with the given weight and prediction hashes.
    fn group(source: &str, weights: [&str; 2], predictions: [&str; 2]) -> GroupReport {
        let predicted = [Some(0), Some(1)];
        let logits = [1.0, 0.0, 0.0, 1.0];
        let outcome = |k: usize| ModelOutcome {
            predicted: &predicted,
            logits: &logits,
            accuracy: 1.0,
            weights_sha256: weights[k],
            predictions_sha256: predictions[k],
        };
        let test = TestSet {
            labels: &[0, 1],
            ids: &[0, 1],
            n_classes: 2,
        };
        GroupReport::measured(
            source,
            vec![0, 1],
            analyze(&[outcome(0), outcome(1)], &test, 1e-6, 0),
        )
    }

    #[test]
    fn red_flags_name_non_determinism_and_ignored_seeds() {
        assert!(red_flags(&[
            group("control", ["w", "w"], ["p", "p"]),
            group("init", ["a", "b"], ["p", "q"])
        ])
        .is_empty());
        assert_eq!(
            red_flags(&[group("control", ["w", "v"], ["p", "q"])]),
            ["the pipeline is non-deterministic: the control group (nothing varied) has 2 distinct weight hashes"]
        );
        assert_eq!(
            red_flags(&[group("control", ["w", "w"], ["p", "q"])]),
            ["the pipeline is non-deterministic: the control group's weights are identical but its predictions are not (2 distinct prediction hashes)"]
        );
        assert_eq!(
            red_flags(&[group("dropout", ["w", "w"], ["p", "p"])]),
            ["varying dropout produced bitwise identical models: its seed is not reaching training"]
        );
        // Identical models are a fine outcome when only threads differ.
        assert!(red_flags(&[group("threads", ["w", "w"], ["p", "p"])]).is_empty());
        assert!(red_flags(&[GroupReport::not_applicable("kernels", "no CUDA device")]).is_empty());
    }
}
