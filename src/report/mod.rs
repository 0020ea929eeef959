//! The reports: typed structs, serialised by serde, that every output format
//! renders. They carry enough (test labels, every model's predictions) for a
//! dashboard to recompute every churn figure from the JSON alone.

pub mod audit;
pub mod html;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod table;

use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::data::preprocess::Preprocessing;
use crate::data::Dataset;
use crate::data::{Prepared, SplitUsed};
use crate::gate::Verdicts;
use crate::metrics::analysis::{Analysis, ModelOutcome, TestSet};
use crate::metrics::anchor::AnchorAnalysis;
use crate::metrics::churn::Flip;
use crate::metrics::stats::{Interval, Summary};
use crate::metrics::{accuracy, count_unpredictable, predict, Prediction};
use crate::randomness::ModelSeeds;
use crate::saved_model::AnchorInfo;
use crate::train::{Mitigation, ModelSpec, Trained};

/// Bumped whenever a field changes meaning or disappears (adding one is not a break).
pub const SCHEMA_VERSION: u32 = 1;

/// The report of `churn-audit run`: one group of models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool: ToolInfo,
    pub config: RunConfig,
    pub config_sha256: String,
    pub execution: Execution,
    pub dataset: DatasetInfo,
    pub models: Vec<ModelReport>,
    /// Every figure over the models; flattened, so the JSON keeps `accuracy`,
    /// `churn`, `pairs`, `unstable`, `reproducibility`, `variation` and `flips`
    /// at the top level.
    #[serde(flatten)]
    pub analysis: Analysis,
    /// The checks asked for and their verdicts; absent when none were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Verdicts>,
    /// The models against the --anchor; absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<AnchorReport>,
    /// Churn within co-distilled runs; absent unless --mitigate codistill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codistill: Option<CodistillReport>,
    /// Planned models missing from a report combined from a run directory
    /// (`churn-audit report DIR`); absent when every planned model is in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incomplete {
    pub planned: usize,
    /// One line per planned model left out, and why.
    pub missing: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnchorReport {
    pub anchor: AnchorInfo,
    #[serde(flatten)]
    pub analysis: AnchorAnalysis,
}

/// With co-distillation the report's models are each run's first member, so
/// the report's churn is between runs; the other members are here, with the
/// churn among the members of each run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodistillReport {
    pub k: usize,
    /// Mean pairwise churn among a run's members, over the runs (t interval
    /// over the runs, clipped to [0, 1]).
    pub within_run_churn: Summary,
    /// That churn per run, in run order.
    pub per_run: Vec<f64>,
    pub peers: Vec<CodistillPeer>,
}

/// A co-distilled model other than its run's first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodistillPeer {
    /// Index (in `models`) of its run's first member.
    pub run: usize,
    pub member: usize,
    pub seeds: ModelSeeds,
    pub accuracy: f64,
    pub weights_sha256: String,
    pub predictions_sha256: String,
    /// Predicted class per test example (null where unpredictable).
    pub predicted: Vec<Prediction>,
}

impl CodistillPeer {
    pub fn new(
        run: usize,
        member: usize,
        seeds: ModelSeeds,
        trained: &Trained,
        test: &DatasetInfo,
    ) -> Self {
        let predicted = predict(&trained.test_logits, test.n_classes);
        CodistillPeer {
            run,
            member,
            seeds,
            accuracy: accuracy(&predicted, &test.test_labels),
            weights_sha256: trained.weights_sha256.clone(),
            predictions_sha256: trained.predictions_sha256.clone(),
            predicted,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
    pub libtorch: String,
}

impl ToolInfo {
    pub fn current() -> Self {
        ToolInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            libtorch: option_env!("CHURN_AUDIT_LIBTORCH_VERSION")
                .unwrap_or("unknown")
                .into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub device: String,
    /// The run's intra-op thread count (each model's own is in `models[]`).
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    /// How models were trained: "sequential" (one after another),
    /// "parallel" (side by side on worker threads), or "mixed" (an audit
    /// whose groups used both; each model says which in `models[]`).
    pub mode: String,
    /// Worker threads of parallel groups (1 when every group was sequential).
    #[serde(default = "one")]
    pub workers: usize,
    /// Wall-clock seconds of all training (models of a parallel group
    /// overlap, so this is less than the sum of their `train_seconds`).
    #[serde(default)]
    pub train_seconds: f64,
}

impl Execution {
    /// How the models ran, for headers: "2 threads" (sequential), "parallel
    /// on 2 threads", or both for a mixed audit.
    pub fn threads_phrase(&self) -> String {
        let threads = |n: usize| format!("{n} thread{}", if n == 1 { "" } else { "s" });
        match self.mode.as_str() {
            "parallel" => format!("parallel on {}", threads(self.workers)),
            "mixed" => format!(
                "{}, parallel on {}",
                threads(self.intra_op_threads),
                self.workers
            ),
            _ => threads(self.intra_op_threads),
        }
    }
}

fn one() -> usize {
    1
}

fn sequential() -> String {
    "sequential".into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub name: String,
    pub n_train: usize,
    pub n_test: usize,
    pub n_features: usize,
    pub n_classes: usize,
    pub image_shape: Option<(usize, usize)>,
    /// A name per class, where the source defines them.
    pub class_names: Option<Vec<String>>,
    /// Where the test set came from: a stratified split, or the source's own.
    pub split: SplitUsed,
    pub preprocessing: Preprocessing,
    pub train_sha256: String,
    pub test_sha256: String,
    pub label_map_sha256: String,
    /// Source row of each test example, in test order.
    pub test_ids: Vec<usize>,
    pub test_labels: Vec<u16>,
}

impl DatasetInfo {
    pub fn describe(prepared: &Prepared) -> Self {
        let (train, test) = (&prepared.split.train, &prepared.split.test);
        DatasetInfo {
            name: test.name.clone(),
            n_train: train.len(),
            n_test: test.len(),
            n_features: test.n_features,
            n_classes: test.n_classes,
            image_shape: test.image_shape,
            class_names: test.class_names.clone(),
            split: prepared.split_used.clone(),
            preprocessing: prepared.preprocessing.clone(),
            train_sha256: train.fingerprint(),
            test_sha256: test.fingerprint(),
            label_map_sha256: test.label_map_fingerprint(),
            test_ids: test.ids.clone(),
            test_labels: test.labels.clone(),
        }
    }

    pub fn test_set(&self) -> TestSet<'_> {
        TestSet {
            labels: &self.test_labels,
            ids: &self.test_ids,
            n_classes: self.n_classes,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    pub index: usize,
    /// sha256 of the recipe and this model's spec: models with equal keys are
    /// the same model, trained once.
    pub key: String,
    pub seeds: ModelSeeds,
    pub threads: usize,
    /// Share of the training set this model saw (null: all of it).
    pub refresh_fraction: Option<f64>,
    pub deterministic_kernels: bool,
    pub accuracy: f64,
    /// Test rows whose logits held a NaN (no prediction; counted as wrong).
    pub unpredictable: usize,
    pub weights_sha256: String,
    pub predictions_sha256: String,
    pub data_order_sha256: String,
    pub steps: u64,
    /// Seconds spent on this model (init, its steps and evaluation).
    pub train_seconds: f64,
    /// "sequential" or "parallel" (see `execution.mode`).
    #[serde(default = "sequential")]
    pub execution: String,
    /// Predicted class per test example (null where unpredictable).
    pub predicted: Vec<Prediction>,
}

impl ModelReport {
    pub fn new(
        index: usize,
        key: String,
        spec: &ModelSpec,
        trained: &Trained,
        test: &DatasetInfo,
    ) -> Self {
        let predicted = predict(&trained.test_logits, test.n_classes);
        ModelReport {
            index,
            key,
            seeds: spec.seeds,
            threads: spec.threads,
            refresh_fraction: spec.refresh_fraction,
            deterministic_kernels: spec.deterministic_kernels,
            accuracy: accuracy(&predicted, &test.test_labels),
            unpredictable: count_unpredictable(&predicted),
            weights_sha256: trained.weights_sha256.clone(),
            predictions_sha256: trained.predictions_sha256.clone(),
            data_order_sha256: trained.data_order_sha256.clone(),
            steps: trained.steps,
            train_seconds: trained.seconds,
            execution: trained.execution.clone(),
            predicted,
        }
    }

    pub fn outcome<'a>(&'a self, logits: &'a [f32]) -> ModelOutcome<'a> {
        ModelOutcome {
            predicted: &self.predicted,
            logits,
            accuracy: self.accuracy,
            weights_sha256: &self.weights_sha256,
            predictions_sha256: &self.predictions_sha256,
        }
    }
}

impl Report {
    pub fn build(
        config: RunConfig,
        execution: Execution,
        dataset: DatasetInfo,
        models: Vec<ModelReport>,
        analysis: Analysis,
    ) -> Self {
        Report {
            schema_version: SCHEMA_VERSION,
            tool: ToolInfo::current(),
            config_sha256: config.sha256(),
            config,
            execution,
            dataset,
            models,
            analysis,
            gate: None,
            anchor: None,
            codistill: None,
            incomplete: None,
        }
    }

    /// Gives each flipped example its picture when `test` is an image dataset.
    /// Only flips carry pixels: they are what people look at, and the whole
    /// test set would dwarf the rest of the report.
    pub fn attach_pixels(&mut self, test: &Dataset) {
        attach_pixels(&mut self.analysis.flips, test);
    }
}

/// Gives each flip its example's picture when `test` is an image dataset.
pub fn attach_pixels(flips: &mut [Flip], test: &Dataset) {
    if test.image_shape.is_none() {
        return;
    }
    let width = test.n_features;
    for flip in flips {
        let start = flip.position * width;
        flip.pixels = test.features.get(start..start + width).map(<[f32]>::to_vec);
    }
}

// What the human-readable formats (table, Markdown) share: the same words
// and figures, laid out differently by each writer.

/// How many flipped examples the human-readable formats show; the JSON has them all.
const FLIPS_SHOWN: usize = 15;

/// The first 12 characters of a hash, as tables show it (all of it when
/// shorter: a hand-edited report may hold anything).
pub(crate) fn short_hash(hash: &str) -> &str {
    hash.char_indices()
        .nth(12)
        .map_or(hash, |(end, _)| &hash[..end])
}

/// A share as a percentage with two decimals, as every format shows it.
pub(crate) fn percent(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

/// A difference of two shares, in percentage points with its sign.
pub(crate) fn points(difference: f64) -> String {
    format!("{:+.2} pp", difference * 100.0)
}

/// "2.00% (95% CI 1.60% – 2.40%)", as the summary tables show a mean.
fn mean_with_ci(mean: f64, ci95: Interval) -> String {
    format!(
        "{} (95% CI {} – {})",
        percent(mean),
        percent(ci95.low),
        percent(ci95.high)
    )
}

/// "value [low – high]", each shown by `show`.
pub(crate) fn with_interval(show: fn(f64) -> String, value: f64, ci95: Interval) -> String {
    format!("{} [{} – {}]", show(value), show(ci95.low), show(ci95.high))
}

fn label(prediction: Prediction) -> String {
    prediction.map_or_else(|| "NaN".to_owned(), |class| class.to_string())
}

/// One line naming the run: what was trained, on what, with what varied.
fn headline(report: &Report) -> String {
    let data = &report.dataset;
    let varied: Vec<&str> = report.config.vary.iter().map(|s| s.name()).collect();
    let varied = if varied.is_empty() {
        "none".to_owned()
    } else {
        varied.join(", ")
    };
    format!(
        "churn-audit {}: {} models on {} ({} train / {} test), varied: {varied}, {}, config {}",
        report.tool.version,
        report.models.len(),
        data.name,
        data.n_train,
        data.n_test,
        report.execution.threads_phrase(),
        short_hash(&report.config_sha256),
    )
}

fn summary_rows(report: &Report) -> Vec<[String; 2]> {
    let (acc, churn, repro) = (
        &report.analysis.accuracy,
        &report.analysis.churn,
        &report.analysis.reproducibility,
    );
    let mut rows = vec![
        [
            "test accuracy".to_owned(),
            format!(
                "{} ± {} (95% CI {} – {}; min {}, max {})",
                percent(acc.mean),
                percent(acc.std),
                percent(acc.ci95.low),
                percent(acc.ci95.high),
                percent(acc.min),
                percent(acc.max)
            ),
        ],
        [
            "pairwise churn".to_owned(),
            format!(
                "mean {} (95% CI {} – {}; min {}, max {})",
                percent(churn.mean),
                percent(churn.ci95.low),
                percent(churn.ci95.high),
                percent(churn.min),
                percent(churn.max)
            ),
        ],
        [
            "unstable examples".to_owned(),
            format!(
                "{} of {} ({})",
                report.analysis.unstable.count,
                report.dataset.n_test,
                percent(report.analysis.unstable.share)
            ),
        ],
        [
            "bitwise reproducible".to_owned(),
            if repro.bitwise_reproducible {
                "yes".to_owned()
            } else {
                format!(
                    "no: {} distinct weight hashes, {} distinct prediction hashes",
                    repro.distinct_weight_hashes, repro.distinct_prediction_hashes
                )
            },
        ],
        [
            "accuracy spread".to_owned(),
            format!(
                "std {} vs test-set sampling floor {}; churn / std = {}",
                percent(acc.std),
                percent(report.analysis.variation.accuracy_floor),
                report
                    .analysis
                    .variation
                    .churn_to_accuracy_std
                    .map_or_else(|| "n/a (std 0)".to_owned(), |ratio| format!("{ratio:.1}"))
            ),
        ],
        [
            "near-ties".to_owned(),
            format!(
                "{} test examples with a top-2 margin below {:e} in some model",
                report.analysis.variation.near_ties, report.analysis.variation.tie_epsilon
            ),
        ],
    ];
    let mitigation = &report.config.train.mitigation;
    if *mitigation != Mitigation::None {
        rows.push(["mitigation".to_owned(), mitigation.to_string()]);
    }
    if let Some(codistill) = &report.codistill {
        let within = &codistill.within_run_churn;
        rows.push([
            "churn within runs".to_owned(),
            format!(
                "mean {} among the {} co-distilled models of each run; the churn above is between runs",
                mean_with_ci(within.mean, within.ci95),
                codistill.k
            ),
        ]);
    }
    if let Some(anchor) = &report.anchor {
        let a = &anchor.analysis;
        rows.push([
            "churn vs anchor".to_owned(),
            format!(
                "mean {}: good {} (anchor wrong, model right), bad {} (anchor right, model wrong); anchor accuracy {} ({})",
                mean_with_ci(a.churn.mean, a.churn.ci95),
                percent(a.good_churn.mean),
                percent(a.bad_churn.mean),
                percent(a.anchor_accuracy),
                anchor.anchor.path.display()
            ),
        ]);
    }
    rows
}

const MODEL_HEADER: [&str; 8] = [
    "model",
    "init seed",
    "data-order seed",
    "dropout seed",
    "accuracy",
    "weights sha256",
    "predictions sha256",
    "seconds",
];

fn model_rows(report: &Report) -> Vec<[String; 8]> {
    let short = |hash: &String| hash.get(..16).unwrap_or(hash).to_owned();
    report
        .models
        .iter()
        .map(|model| {
            let accuracy = if model.unpredictable > 0 {
                format!(
                    "{} ({} NaN rows)",
                    percent(model.accuracy),
                    model.unpredictable
                )
            } else {
                percent(model.accuracy)
            };
            [
                model.index.to_string(),
                format!("{:016x}", model.seeds.init),
                format!("{:016x}", model.seeds.data_order),
                format!("{:016x}", model.seeds.dropout),
                accuracy,
                short(&model.weights_sha256),
                short(&model.predictions_sha256),
                format!("{:.2}", model.train_seconds),
            ]
        })
        .collect()
}

const FLIP_HEADER: [&str; 5] = [
    "test #",
    "id",
    "label",
    "predictions (model 0..)",
    "distinct",
];

/// The first [`FLIPS_SHOWN`] flips, and a note on the rest if any.
fn flip_rows(report: &Report) -> (Vec<[String; 5]>, Option<String>) {
    let rows = report
        .analysis
        .flips
        .iter()
        .take(FLIPS_SHOWN)
        .map(|flip| {
            [
                flip.position.to_string(),
                flip.id.to_string(),
                flip.label.to_string(),
                flip.predicted
                    .iter()
                    .map(|&p| label(p))
                    .collect::<Vec<_>>()
                    .join(" "),
                flip.distinct_labels.to_string(),
            ]
        })
        .collect();
    let more = (report.analysis.flips.len() > FLIPS_SHOWN).then(|| {
        format!(
            "... and {} more unstable examples (all of them are in the JSON report)",
            report.analysis.flips.len() - FLIPS_SHOWN
        )
    });
    (rows, more)
}

const VERDICT_HEADER: [&str; 3] = ["check", "verdict", "detail"];

/// The gate's bottom line, e.g. "gate: FAILED (1 of 3 checks failed; inconclusive counts as fail)".
fn gate_line(verdicts: &Verdicts) -> String {
    let failing = verdicts
        .checks
        .iter()
        .filter(|v| v.counts_as_failure(verdicts.inconclusive))
        .count();
    let policy = match verdicts.inconclusive {
        crate::gate::InconclusivePolicy::Pass => "pass",
        crate::gate::InconclusivePolicy::Fail => "fail",
    };
    format!(
        "gate: {} ({failing} of {} checks failed; inconclusive counts as {policy})",
        if verdicts.passed { "PASSED" } else { "FAILED" },
        verdicts.checks.len()
    )
}

/// Escapes text for XML (JUnit) and HTML content and attribute values alike. Characters XML
/// 1.0 forbids (most control characters) become U+FFFD, since no escape can
/// carry them; line breaks become character references so attributes keep them.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::xml_escape;

    #[test]
    fn escapes_markup_quotes_and_forbidden_characters() {
        assert_eq!(
            xml_escape("a<b & \"c\" 'd'>\n\u{1}é"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;&#10;\u{FFFD}é"
        );
    }
}
