//! Command-line parsing only: flags, their defaults and per-flag checks. What
//! the flags mean together is resolved in `config`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::gate::InconclusivePolicy;
use crate::randomness::{parse_vary, Source};
use crate::train::OptimizerKind;

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success (every check passed)
  1  a check failed (or was inconclusive, under the default --inconclusive fail)
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
    #[command(after_help = EXIT_CODES, args_override_self = true)]
    Run(RunArgs),
    /// Judge an existing JSON report by the given checks (exit 1 when one fails).
    #[command(after_help = EXIT_CODES, args_override_self = true)]
    Gate(GateCommandArgs),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Gate(_) => "gate",
        }
    }

    /// The --config file, if one was given.
    pub fn config_file(&self) -> Option<&PathBuf> {
        match self {
            Command::Run(args) => args.config.as_ref(),
            Command::Gate(args) => args.config.as_ref(),
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
    /// Number of models to train (at least 2).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = at_least::<2>)]
    pub seeds: usize,

    /// Sources of randomness that differ between models: a comma-separated list
    /// of init, data-order, dropout; or all; or none (every model identical).
    #[arg(long, value_name = "SOURCES", default_value = "all", value_parser = parse_vary)]
    pub vary: BTreeSet<Source>,

    /// Base seed from which every model's per-source seeds are derived.
    #[arg(long, value_name = "SEED", default_value_t = 0)]
    pub base_seed: u64,

    /// Dataset: digits (UCI optdigits, embedded in the binary).
    #[arg(long, value_name = "NAME", default_value = "digits", value_parser = ["digits"])]
    pub data: String,

    /// Seed of the stratified train/test split, shared by every model.
    #[arg(long, value_name = "SEED", default_value_t = 0)]
    pub split_seed: u64,

    /// Share of each class held out as the test set.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.2, value_parser = open_unit_interval)]
    pub test_fraction: f64,

    /// Hidden layer widths, comma-separated (e.g. 256,128).
    // Set, not the default Append: a later --hidden (typed after --config's)
    // replaces the list rather than extending it.
    #[arg(long, value_name = "WIDTHS", value_delimiter = ',', default_value = "128", value_parser = at_least::<1>, action = clap::ArgAction::Set)]
    pub hidden: Vec<usize>,

    /// Dropout probability after each hidden layer, in [0, 1).
    #[arg(long, value_name = "P", default_value_t = 0.2, value_parser = probability)]
    pub dropout: f64,

    /// Optimiser.
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adam)]
    pub optimizer: OptimizerKind,

    /// Learning rate [default: 0.001 for adam, 0.05 for sgd].
    #[arg(long = "lr", value_name = "RATE", value_parser = positive_finite)]
    pub learning_rate: Option<f64>,

    /// SGD momentum, in [0, 1).
    #[arg(long, value_name = "M", default_value_t = 0.9, value_parser = probability)]
    pub momentum: f64,

    /// Passes over the training set.
    #[arg(long, value_name = "N", default_value_t = 40, value_parser = at_least::<1>)]
    pub epochs: usize,

    /// Examples per optimisation step.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = at_least::<1>)]
    pub batch_size: usize,

    /// libtorch intra-op threads [default: all cores]. Recorded in the report.
    #[arg(long, value_name = "N", value_parser = at_least::<1>)]
    pub threads: Option<usize>,

    /// No progress on stderr (otherwise a bar with ETA on a terminal, one line
    /// per finished model when stderr is a log or stdout carries JSON).
    #[arg(long, short)]
    pub quiet: bool,

    /// Options from a TOML file (keys are flag names: seeds = 5); flags on
    /// the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub checks: GateArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

fn at_least<const MIN: usize>(text: &str) -> Result<usize, String> {
    let value: usize = text
        .parse()
        .map_err(|_| format!("'{text}' is not a whole number"))?;
    if value < MIN {
        return Err(format!("must be at least {MIN}, got {value}"));
    }
    Ok(value)
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

fn positive_finite(text: &str) -> Result<f64, String> {
    let value = number(text)?;
    if value <= 0.0 {
        return Err(format!("must be above 0, got {value}"));
    }
    Ok(value)
}

fn probability(text: &str) -> Result<f64, String> {
    let value = number(text)?;
    if !(0.0..1.0).contains(&value) {
        return Err(format!("must be in [0, 1), got {value}"));
    }
    Ok(value)
}

fn unit_interval(text: &str) -> Result<f64, String> {
    let value = number(text)?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!(
            "must be a fraction in [0, 1] (0.02 means 2%), got {value}"
        ));
    }
    Ok(value)
}

fn open_unit_interval(text: &str) -> Result<f64, String> {
    let value = number(text)?;
    if value <= 0.0 || value >= 1.0 {
        return Err(format!("must be between 0 and 1 (exclusive), got {value}"));
    }
    Ok(value)
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
        assert_eq!(at_least::<2>("1").unwrap_err(), "must be at least 2, got 1");
        assert_eq!(at_least::<2>("x").unwrap_err(), "'x' is not a whole number");
        assert_eq!(probability("1").unwrap_err(), "must be in [0, 1), got 1");
        assert_eq!(
            positive_finite("inf").unwrap_err(),
            "must be finite, got inf"
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
