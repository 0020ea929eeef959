//! Command-line parsing only: flags, their defaults and per-flag checks. What
//! the flags mean together is resolved in `config`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use std::str::FromStr;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::data::source::DataSource;
use crate::model::ModelKind;

use crate::gate::InconclusivePolicy;
use crate::randomness::{parse_vary, Source};
use crate::train::DeviceChoice;
use crate::train::OptimizerKind;

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success (every check passed)
  1  a check failed (or was inconclusive, under the default --inconclusive fail);
     for report DIR, also: a planned model is missing from the report
  2  usage or input error
  3  training failed";

#[derive(Debug, Parser)]
#[command(name = "churn-audit", version, about = "Reproducibility and prediction-churn auditing of neural classifiers", after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train N models that differ only in the chosen sources of randomness and report their churn.
    #[command(after_help = EXIT_CODES, allow_negative_numbers = true, args_override_self = true)]
    Run(RunArgs),
    /// Attribute churn to its sources: a control group where nothing varies, one
    /// group per source varied alone (init, data-order, dropout, data-refresh,
    /// threads, kernels), and one group where every seed varies.
    #[command(after_help = EXIT_CODES, allow_negative_numbers = true, args_override_self = true)]
    Audit(AuditArgs),
    /// Judge an existing JSON report by the given checks (exit 1 when one fails).
    #[command(after_help = EXIT_CODES, allow_negative_numbers = true, args_override_self = true)]
    Gate(GateCommandArgs),
    /// Compare run reports over the same test set with a baseline: churn,
    /// accuracy and its spread, each change with a 95% interval and a verdict.
    #[command(after_help = EXIT_CODES)]
    Compare(CompareArgs),
    /// Write the models of a run (same flags as run) to --out DIR/plan.json,
    /// for `train` to fan out over a cluster's job array (docs/cluster.md).
    #[command(after_help = EXIT_CODES, allow_negative_numbers = true, args_override_self = true)]
    Plan(RunArgs),
    /// Train one model of the plan in --out DIR and store its artifact.
    #[command(after_help = EXIT_CODES)]
    Train(TrainArgs),
    /// Report on the artifacts in a run directory, as `run` would; exits 1
    /// when a planned model is missing or does not match the plan.
    #[command(after_help = EXIT_CODES, allow_negative_numbers = true)]
    Report(ReportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Run directory holding plan.json (written by `churn-audit plan`).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Which model of the plan, from 0 [default: $SLURM_ARRAY_TASK_ID, else
    /// $JOB_COMPLETION_INDEX].
    #[arg(long, value_name = "K", value_parser = whole::<0, MAX_MODELS>)]
    pub index: Option<usize>,

    /// No line on stderr about the model.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Run directory written by `plan` and `train`, or by `run --out`.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Measure the models against this anchor, as `run --anchor` does (for
    /// a run that distilled toward an anchor, it must be that one).
    #[arg(long, value_name = "PATH")]
    pub anchor: Option<PathBuf>,

    #[command(flatten)]
    pub checks: GateArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// The report before the change (e.g. without a mitigation).
    #[arg(value_name = "BASELINE.json")]
    pub baseline: PathBuf,

    /// The reports after the change, each compared with the baseline.
    #[arg(value_name = "CANDIDATE.json", required = true)]
    pub candidates: Vec<PathBuf>,

    /// Print the comparisons as a JSON array instead of tables.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,

    /// Print one Markdown table over every report (as in docs/mitigations.md).
    #[arg(long)]
    pub markdown: bool,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Audit(_) => "audit",
            Command::Gate(_) => "gate",
            Command::Compare(_) => "compare",
            Command::Plan(_) => "plan",
            Command::Train(_) => "train",
            Command::Report(_) => "report",
        }
    }

    /// The --config file, if one was given.
    pub fn config_file(&self) -> Option<&PathBuf> {
        match self {
            Command::Run(args) | Command::Plan(args) => args.common.config.as_ref(),
            Command::Audit(args) => args.common.config.as_ref(),
            Command::Gate(args) => args.config.as_ref(),
            Command::Compare(_) | Command::Train(_) | Command::Report(_) => None,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct GateCommandArgs {
    /// A JSON report written by `churn-audit run --json`.
    #[arg(value_name = "REPORT.json")]
    pub report: PathBuf,

    /// Options from a TOML file (keys are flag names: max-churn = 0.02);
    /// flags on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub checks: GateArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// Checks shared by `run` and `gate`. Thresholds are fractions: 0.02 is 2%.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Checks (thresholds are fractions: 0.02 means 2%)")]
pub struct GateArgs {
    /// Fail when mean pairwise churn is above X (judged on its 95% interval, as every check).
    #[arg(long, value_name = "X", value_parser = unit_interval)]
    pub max_churn: Option<f64>,

    /// Fail when the standard deviation of test accuracy over models is above Y.
    #[arg(long, value_name = "Y", value_parser = unit_interval)]
    pub max_acc_std: Option<f64>,

    /// Fail when mean test accuracy is below Z.
    #[arg(long, value_name = "Z", value_parser = unit_interval)]
    pub min_acc: Option<f64>,

    /// Fail unless every model's weights and test logits are bitwise identical
    /// (meant for --vary none).
    #[arg(long)]
    pub require_reproducible: bool,

    /// An earlier JSON report on the same test set, for --max-churn-increase.
    #[arg(long, value_name = "OLD.json", requires = "max_churn_increase")]
    pub baseline: Option<PathBuf>,

    /// Fail when mean churn is above the baseline's by more than D.
    #[arg(long, value_name = "D", value_parser = unit_interval, requires = "baseline")]
    pub max_churn_increase: Option<f64>,

    /// Fail when the models' mean churn against the --anchor model is above A
    /// (a run with --anchor, or a report of one).
    #[arg(long, value_name = "A", value_parser = unit_interval)]
    pub max_churn_vs_anchor: Option<f64>,

    /// What a check whose 95% interval straddles its threshold counts as.
    #[arg(long, value_enum, value_name = "VERDICT", default_value_t = InconclusivePolicy::Fail)]
    pub inconclusive: InconclusivePolicy,
}

impl GateArgs {
    pub fn any(&self) -> bool {
        self.max_churn.is_some()
            || self.max_acc_std.is_some()
            || self.min_acc.is_some()
            || self.require_reproducible
            || self.max_churn_increase.is_some()
            || self.max_churn_vs_anchor.is_some()
    }
}

/// How stdout shows the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

/// Where the report goes, shared by `run` and `gate`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Form of the report on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Write the JSON report to PATH ("-" for stdout, which then carries
    /// nothing else, whatever --format says).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Write the report as Markdown to PATH.
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,

    /// Write the report as one self-contained HTML page to PATH: heatmap of
    /// pairwise churn, accuracy per model, and the flipped examples' pictures.
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,

    /// Write the checks as JUnit XML to PATH, one testcase per check.
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,

    /// Append the Markdown report to the file named by $GITHUB_STEP_SUMMARY.
    #[arg(long)]
    pub github_summary: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Sources of randomness that differ between models: a comma-separated list
    /// of init, data-order, dropout, data-refresh; or all; or none (every model
    /// identical). data-refresh trains each model on its own random subsample.
    #[arg(long, value_name = "SOURCES", default_value = "init,data-order,dropout", value_parser = parse_vary)]
    pub vary: BTreeSet<Source>,

    #[command(flatten)]
    pub checks: GateArgs,
}

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Intra-op thread counts the threads group alternates between
    /// [default: 1 and all cores].
    #[arg(long, value_name = "N,N", value_delimiter = ',', value_parser = whole::<1, MAX_THREADS>)]
    pub thread_counts: Option<Vec<usize>>,

    /// On an audit, --require-reproducible judges the control group and the
    /// other checks the `all` group.
    #[command(flatten)]
    pub checks: GateArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MitigationKind {
    None,
    Entropy,
    Codistill,
    Anchor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AnchorMethodArg {
    Distill,
    Rcp,
}

/// `--execution`: how the models of a group are trained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionChoice {
    #[default]
    Auto,
    Sequential,
    Parallel,
}

/// Flags shared by `run` and `audit`: the data, the recipe and the outputs.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Number of models to train (per group, for audit; at least 2).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = whole::<2, MAX_MODELS>)]
    pub seeds: usize,

    /// Base seed from which every model's per-source seeds are derived.
    #[arg(long, value_name = "SEED", default_value_t = 0)]
    pub base_seed: u64,

    /// Dataset: digits (UCI optdigits, embedded), fashion-mnist[:DIR] (IDX
    /// files, default /usr/share/datasets/fashion-mnist), mnist:DIR or idx:DIR,
    /// csv:PATH, libsvm:PATH. See docs/data.md.
    #[arg(long, value_name = "SOURCE", default_value = "digits", value_parser = DataSource::from_str)]
    pub data: DataSource,

    /// Test set file for csv or libsvm data, used instead of the split.
    #[arg(long, value_name = "PATH")]
    pub test: Option<PathBuf>,

    /// CSV label column: a header name or a 0-based index [default: the last].
    #[arg(long, value_name = "COLUMN")]
    pub label_column: Option<String>,

    /// LibSVM feature count; a larger index is an error [default: the largest index present].
    #[arg(long, value_name = "N", value_parser = whole::<1, MAX_FEATURES>)]
    pub num_features: Option<usize>,

    /// Number of classes; a label at or above it is an error [default: largest label + 1].
    #[arg(long, value_name = "N", value_parser = whole::<2, MAX_CLASSES>)]
    pub num_classes: Option<usize>,

    /// Standardise every feature with the training split's mean and standard deviation.
    #[arg(long)]
    pub standardize: bool,

    /// Model architecture.
    #[arg(long, value_enum, default_value_t = ModelKind::Mlp)]
    pub model: ModelKind,

    /// Seed of the stratified train/test split, shared by every model (data
    /// with its own test set, IDX or --test, is not split).
    #[arg(long, value_name = "SEED", default_value_t = 0)]
    pub split_seed: u64,

    /// Share of each class held out as the test set.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.2, value_parser = open_unit_interval)]
    pub test_fraction: f64,

    /// Hidden layer widths, comma-separated (e.g. 256,128).
    // Set, not the default Append: a later --hidden (typed after --config's)
    // replaces the list rather than extending it.
    #[arg(long, value_name = "WIDTHS", value_delimiter = ',', default_value = "128", value_parser = whole::<1, MAX_WIDTH>, action = clap::ArgAction::Set)]
    pub hidden: Vec<usize>,

    /// Dropout probability after each hidden layer, in [0, 1).
    #[arg(long, value_name = "P", default_value_t = 0.2, value_parser = probability)]
    pub dropout: f64,

    /// Optimiser.
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adam)]
    pub optimizer: OptimizerKind,

    /// Learning rate [default: 0.001 for adam, 0.05 for sgd].
    #[arg(long = "lr", value_name = "RATE", value_parser = learning_rate)]
    pub learning_rate: Option<f64>,

    /// SGD momentum, in [0, 1).
    #[arg(long, value_name = "M", default_value_t = 0.9, value_parser = probability)]
    pub momentum: f64,

    /// Passes over the training set.
    #[arg(long, value_name = "N", default_value_t = 40, value_parser = whole::<1, MAX_EPOCHS>)]
    pub epochs: usize,

    /// Examples per optimisation step.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = whole::<1, MAX_BATCH>)]
    pub batch_size: usize,

    /// Churn mitigation: none; entropy (adds --entropy-weight × the mean
    /// prediction entropy to the loss); codistill (each run trains
    /// --codistill-k models that distil from each other); anchor (distil
    /// toward the --anchor model). See docs/mitigations.md.
    #[arg(long, value_enum, default_value_t = MitigationKind::None)]
    pub mitigate: MitigationKind,

    /// Distillation weight α for codistill and anchor, in [0, 1] [default: 0.5].
    #[arg(long, value_name = "ALPHA", value_parser = mixing_weight)]
    pub alpha: Option<f64>,

    /// Distillation temperature T for codistill and anchor distill, in
    /// [0.01, 1000] [default: 1].
    #[arg(long, value_name = "T", value_parser = temperature)]
    pub temperature: Option<f64>,

    /// Models trained jointly per run by codistill [default: 2].
    #[arg(long, value_name = "K", value_parser = whole::<2, MAX_CODISTILL>)]
    pub codistill_k: Option<usize>,

    /// Optimisation steps of plain training before codistill switches
    /// distillation on [default: 0].
    #[arg(long, value_name = "STEPS", value_parser = whole::<0, { usize::MAX }>)]
    pub burn_in: Option<usize>,

    /// A previous model (its .safetensors or .json from --save-models) or a
    /// predictions file: every report then measures churn against it, and
    /// --mitigate anchor distils toward it.
    #[arg(long, value_name = "PATH")]
    pub anchor: Option<PathBuf>,

    /// How --mitigate anchor uses the anchor: distill (toward its
    /// probabilities) or rcp (Cormier et al. 2016: toward α·p_anchor + (1−α)·e_y
    /// where the anchor is right, the label elsewhere) [default: distill].
    #[arg(long, value_enum, value_name = "METHOD")]
    pub anchor_method: Option<AnchorMethodArg>,

    /// Save every trained model to DIR: model-K.safetensors, its sidecar
    /// model-K.json (config, data fingerprints, weights sha256) and
    /// model-K.predictions.json (probabilities on the training and test sets).
    #[arg(long, value_name = "DIR", value_parser = directory_not_stdout)]
    pub save_models: Option<PathBuf>,

    /// β for --mitigate entropy: positive penalises uncertain predictions;
    /// negative penalises confident ones (the "confidence penalty") [default: 0.1].
    #[arg(long, value_name = "BETA", value_parser = entropy_weight)]
    pub entropy_weight: Option<f64>,

    /// libtorch intra-op threads [default: all cores]. Recorded in the report.
    /// Under --execution parallel: the number of worker threads.
    #[arg(long, value_name = "N", value_parser = whole::<1, MAX_THREADS>)]
    pub threads: Option<usize>,

    /// How a group's models train: sequential (one after another, each on
    /// --threads intra-op threads), parallel (side by side on --threads
    /// workers, one thread each; bitwise the models of sequential with
    /// --threads 1), or auto (parallel where the group allows it: MLP or
    /// linear on the CPU, no mitigation, models that differ only in seeds).
    /// See docs/performance.md.
    #[arg(long, value_enum, default_value_t = ExecutionChoice::Auto)]
    pub execution: ExecutionChoice,

    /// Device to train on: cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceChoice,

    /// Share of the training set each model sees when data-refresh varies.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.9, value_parser = open_unit_interval)]
    pub refresh_fraction: f64,

    /// Top-2 logit margin below which a test example counts as a near-tie.
    #[arg(long, value_name = "EPS", default_value_t = 1e-6, value_parser = non_negative)]
    pub tie_epsilon: f64,

    /// No progress on stderr (otherwise a bar with ETA on a terminal, one line
    /// per finished model when stderr is a log or stdout carries JSON).
    #[arg(long, short)]
    pub quiet: bool,

    /// Options from a TOML file (keys are flag names: seeds = 5); flags on
    /// the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Run directory: each model is stored there as it finishes, and a rerun
    /// reuses every intact one (docs/cluster.md).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    #[command(flatten)]
    pub output: OutputArgs,
}

// Upper bounds keep a typo from allocating without limit or spawning
// thousands of threads; each is far above any sensible audit.
const MAX_MODELS: usize = 256;
const MAX_CODISTILL: usize = 16;
// Below this softmax(z / T) overflows to NaN on ordinary logits.
const MIN_TEMPERATURE: f64 = 0.01;
const MAX_TEMPERATURE: f64 = 1e3;
const MAX_ENTROPY_WEIGHT: f64 = 1e3;
const MAX_THREADS: usize = 256;
const MAX_WIDTH: usize = 65_536;
const MAX_EPOCHS: usize = 100_000;
const MAX_BATCH: usize = 1_000_000;
const MAX_LEARNING_RATE: f64 = 1e30;
const MAX_FEATURES: usize = 10_000_000;
// Labels are stored as u16.
const MAX_CLASSES: usize = u16::MAX as usize;

fn whole<const MIN: usize, const MAX: usize>(text: &str) -> Result<usize, String> {
    let value: i128 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a whole number"))?;
    if value < MIN as i128 {
        return Err(format!("must be at least {MIN}, got {value}"));
    }
    if value > MAX as i128 {
        return Err(format!("must be at most {MAX}, got {value}"));
    }
    Ok(value as usize)
}

fn number(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number"))?;
    if !value.is_finite() {
        return Err(format!("must be finite, got {text}"));
    }
    Ok(value)
}

fn learning_rate(text: &str) -> Result<f64, String> {
    let value = number(text)?;
    if value <= 0.0 || value > MAX_LEARNING_RATE {
        return Err(format!(
            "must be above 0 and at most {MAX_LEARNING_RATE:e}, got {text}"
        ));
    }
    Ok(value)
}

fn temperature(text: &str) -> Result<f64, String> {
    let value = number(text)?;
    if !(MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&value) {
        return Err(format!(
            "must be in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], got {text}"
        ));
    }
    Ok(value)
}

fn entropy_weight(text: &str) -> Result<f64, String> {
    let value = number(text)?;
    if value.abs() > MAX_ENTROPY_WEIGHT {
        return Err(format!(
            "must be in [-{MAX_ENTROPY_WEIGHT}, {MAX_ENTROPY_WEIGHT}], got {text}"
        ));
    }
    Ok(value)
}

fn non_negative(text: &str) -> Result<f64, String> {
    let value = number(text)?;
    if value < 0.0 {
        return Err(format!("must be at least 0, got {text}"));
    }
    Ok(value)
}

fn parse_device(text: &str) -> Result<DeviceChoice, String> {
    match text {
        "cpu" => Ok(DeviceChoice::Cpu),
        "cuda" => Ok(DeviceChoice::Cuda(0)),
        _ => text
            .strip_prefix("cuda:")
            .and_then(|ordinal| ordinal.parse().ok())
            .map(DeviceChoice::Cuda)
            .ok_or_else(|| format!("'{text}' is not a device (expected cpu, cuda or cuda:N)")),
    }
}

fn probability(text: &str) -> Result<f64, String> {
    let value = number(text)?;
    if !(0.0..1.0).contains(&value) {
        return Err(format!("must be in [0, 1), got {text}"));
    }
    Ok(value)
}

/// A directory; "-" means stdout for the report flags, so it is refused here
/// rather than taken as a directory named "-".
fn directory_not_stdout(text: &str) -> Result<PathBuf, String> {
    if text == "-" {
        return Err("models are saved as files in a directory, not to stdout".into());
    }
    Ok(PathBuf::from(text))
}

/// A threshold given as a fraction of examples.
fn unit_interval(text: &str) -> Result<f64, String> {
    within_unit_interval(text, "a fraction in [0, 1] (0.02 means 2%)")
}

/// The weight of the distillation term in a mixed loss.
fn mixing_weight(text: &str) -> Result<f64, String> {
    within_unit_interval(text, "in [0, 1]")
}

fn within_unit_interval(text: &str, what: &str) -> Result<f64, String> {
    let value = number(text)?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("must be {what}, got {value}"));
    }
    Ok(value)
}

fn open_unit_interval(text: &str) -> Result<f64, String> {
    let value = number(text)?;
    if value <= 0.0 || value >= 1.0 {
        return Err(format!("must be between 0 and 1 (exclusive), got {text}"));
    }
    Ok(value)
}

/// Why a model's spec read from a file (a saved model's sidecar) holds a
/// thread count the command line would refuse, as "threads: why".
pub(crate) fn check_spec(spec: &crate::train::ModelSpec) -> Result<(), String> {
    whole::<1, MAX_THREADS>(&spec.threads.to_string())
        .map(drop)
        .map_err(|why| format!("threads: {why}"))
}

/// The first value of `config` the command line would refuse, as "FIELD:
/// why" with FIELD its path in the JSON form (a plan's `config`), so that a
/// hand-edited plan cannot train what no command could ask for.
pub(crate) fn check_config(config: &crate::config::RunConfig) -> Result<(), String> {
    use crate::train::Mitigation;
    let whole_value = |value: usize| value.to_string();
    let real = |value: f64| value.to_string();
    let mut checks: Vec<(&str, Result<(), String>)> = vec![
        (
            "data.num_features",
            config.data.num_features.map_or(Ok(()), |n| {
                whole::<1, MAX_FEATURES>(&whole_value(n)).map(drop)
            }),
        ),
        (
            "data.num_classes",
            config.data.num_classes.map_or(Ok(()), |n| {
                whole::<2, MAX_CLASSES>(&whole_value(n)).map(drop)
            }),
        ),
        (
            "data.split.test_fraction",
            open_unit_interval(&real(config.data.split.test_fraction)).map(drop),
        ),
        (
            "model.dropout",
            probability(&real(config.model.dropout)).map(drop),
        ),
        (
            "train.learning_rate",
            learning_rate(&real(config.train.learning_rate)).map(drop),
        ),
        (
            "train.momentum",
            probability(&real(config.train.momentum)).map(drop),
        ),
        (
            "train.epochs",
            whole::<1, MAX_EPOCHS>(&whole_value(config.train.epochs)).map(drop),
        ),
        (
            "train.batch_size",
            whole::<1, MAX_BATCH>(&whole_value(config.train.batch_size)).map(drop),
        ),
        (
            "models",
            whole::<2, MAX_MODELS>(&whole_value(config.models)).map(drop),
        ),
        (
            "threads",
            whole::<1, MAX_THREADS>(&whole_value(config.threads)).map(drop),
        ),
        (
            "refresh_fraction",
            open_unit_interval(&real(config.refresh_fraction)).map(drop),
        ),
        (
            "tie_epsilon",
            non_negative(&real(config.tie_epsilon)).map(drop),
        ),
    ];
    for width in &config.model.hidden {
        checks.push((
            "model.hidden",
            whole::<1, MAX_WIDTH>(&whole_value(*width)).map(drop),
        ));
    }
    let distillation = |alpha: f64, t: f64| {
        [
            (
                "train.mitigation.alpha",
                mixing_weight(&real(alpha)).map(drop),
            ),
            (
                "train.mitigation.temperature",
                temperature(&real(t)).map(drop),
            ),
        ]
    };
    match &config.train.mitigation {
        Mitigation::None => {}
        Mitigation::Entropy { weight } => checks.push((
            "train.mitigation.weight",
            entropy_weight(&real(*weight)).map(drop),
        )),
        Mitigation::Codistill {
            alpha,
            temperature: t,
            k,
            ..
        } => {
            checks.extend(distillation(*alpha, *t));
            checks.push((
                "train.mitigation.k",
                whole::<2, MAX_CODISTILL>(&whole_value(*k)).map(drop),
            ));
        }
        Mitigation::Anchor {
            alpha,
            temperature: t,
            ..
        } => checks.extend(distillation(*alpha, *t)),
    }
    match checks.into_iter().find(|(_, check)| check.is_err()) {
        Some((field, Err(why))) => Err(format!("{field}: {why}")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn number_checks() {
        assert_eq!(whole::<2, 9>("1").unwrap_err(), "must be at least 2, got 1");
        assert_eq!(
            whole::<2, 9>("-1").unwrap_err(),
            "must be at least 2, got -1"
        );
        assert_eq!(
            whole::<2, 9>("18446744073709551616").unwrap_err(),
            "must be at most 9, got 18446744073709551616"
        );
        assert_eq!(whole::<2, 9>("x").unwrap_err(), "'x' is not a whole number");
        assert_eq!(whole::<2, 9>("9"), Ok(9));
        assert_eq!(parse_device("cuda:1"), Ok(DeviceChoice::Cuda(1)));
        assert_eq!(
            parse_device("gpu").unwrap_err(),
            "'gpu' is not a device (expected cpu, cuda or cuda:N)"
        );
        assert_eq!(probability("1").unwrap_err(), "must be in [0, 1), got 1");
        assert_eq!(learning_rate("inf").unwrap_err(), "must be finite, got inf");
        assert_eq!(
            learning_rate("0").unwrap_err(),
            "must be above 0 and at most 1e30, got 0"
        );
        assert_eq!(
            unit_interval("2").unwrap_err(),
            "must be a fraction in [0, 1] (0.02 means 2%), got 2"
        );
        assert_eq!(unit_interval("0.02"), Ok(0.02));
        assert_eq!(
            open_unit_interval("0").unwrap_err(),
            "must be between 0 and 1 (exclusive), got 0"
        );
    }
}
