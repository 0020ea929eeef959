use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use churn_audit::cli::{AuditArgs, Cli, Command, CommonArgs, RunArgs};
use churn_audit::config::{AuditConfig, RunConfig};
use churn_audit::report::table;
use churn_audit::report::ModelReport;
use churn_audit::{pipeline, Error};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            err.exit()
        }
        Err(err) => {
            // clap's first line names the flag and the problem; the rest is usage noise.
            let rendered = err.render().to_string();
            eprintln!(
                "{}",
                rendered
                    .lines()
                    .next()
                    .unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command {
        Command::Run(args) => run(&args),
        Command::Audit(args) => audit(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code() as u8)
        }
    }
}

fn run(args: &RunArgs) -> Result<(), Error> {
    check_outputs(&args.common)?;
    let config = RunConfig::from_args(args);
    let report = pipeline::run(config, &mut progress(&args.common))?;
    emit(&args.common, &report.to_json(), || table::render(&report))
}

fn audit(args: &AuditArgs) -> Result<(), Error> {
    check_outputs(&args.common)?;
    let config = AuditConfig::from_args(args);
    let report = pipeline::audit(config, &mut progress(&args.common))?;
    emit(&args.common, &report.to_json(), || report.render_table())
}

/// One stderr line per trained model, unless quiet.
fn progress(args: &CommonArgs) -> impl FnMut(&ModelReport) {
    let quiet = args.quiet;
    move |model: &ModelReport| {
        if !quiet {
            eprintln!(
                "model {} trained: accuracy {:.2}%, {:.2} s",
                model.index + 1,
                model.accuracy * 100.0,
                model.train_seconds
            );
        }
    }
}

fn json_to_stdout(args: &CommonArgs) -> bool {
    args.json.as_deref() == Some(Path::new("-"))
}

/// Refuses an output whose directory is missing before any training, so a
/// typo in a path never costs the run.
fn check_outputs(args: &CommonArgs) -> Result<(), Error> {
    let Some(path) = args.json.as_deref().filter(|_| !json_to_stdout(args)) else {
        return Ok(());
    };
    let directory = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if directory.is_dir() {
        Ok(())
    } else {
        Err(Error::usage(
            "--json",
            format!("directory {} does not exist", directory.display()),
        ))
    }
}

/// Writes the JSON where asked and the table to stdout unless JSON goes there.
fn emit(args: &CommonArgs, json: &str, table: impl FnOnce() -> String) -> Result<(), Error> {
    if let Some(path) = &args.json {
        write_json(json, path)?;
    }
    if !json_to_stdout(args) {
        print!("{}", table());
    }
    Ok(())
}

fn write_json(json: &str, path: &Path) -> Result<(), Error> {
    let json = format!("{json}\n");
    let failed = |source| Error::Output {
        path: path.to_owned(),
        source,
    };
    if path == Path::new("-") {
        std::io::stdout()
            .lock()
            .write_all(json.as_bytes())
            .map_err(failed)
    } else {
        std::fs::write(path, json).map_err(failed)
    }
}
