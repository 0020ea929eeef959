//! Command-line parsing only: flags, their defaults and per-flag checks. What
//! the flags mean together is resolved in `config`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use std::str::FromStr;

use clap::{Args, Parser, Subcommand};

use crate::data::source::DataSource;
use crate::model::ModelKind;

use crate::randomness::{parse_vary, Source};
use crate::train::OptimizerKind;

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success (every check passed)
  1  a check failed
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
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
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
    #[arg(long, value_name = "N", value_parser = at_least::<1>)]
    pub num_features: Option<usize>,

    /// Number of classes; a label at or above it is an error [default: largest label + 1].
    #[arg(long, value_name = "N", value_parser = at_least::<2>)]
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
    #[arg(long, value_name = "WIDTHS", value_delimiter = ',', default_value = "128", value_parser = at_least::<1>)]
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

    /// Write the JSON report to PATH ("-" for stdout, which then carries nothing else).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
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
            open_unit_interval("0").unwrap_err(),
            "must be between 0 and 1 (exclusive), got 0"
        );
    }
}
