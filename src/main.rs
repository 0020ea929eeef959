use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use churn_audit::cli::{Cli, Command, RunArgs};
use churn_audit::config::RunConfig;
use churn_audit::report::{table, Report};
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
    let json_to_stdout = args.json.as_deref() == Some(Path::new("-"));
    if let Some(path) = args.json.as_deref().filter(|_| !json_to_stdout) {
        check_output_directory("--json", path)?;
    }
    let config = RunConfig::from_args(args);
    let total = config.models;
    let quiet = args.quiet;
    let report = pipeline::run(config, &mut |model| {
        if !quiet {
            eprintln!(
                "model {}/{total}: accuracy {:.2}%, {:.2} s",
                model.index + 1,
                model.accuracy * 100.0,
                model.train_seconds
            );
        }
    })?;
    if let Some(path) = &args.json {
        write_json(&report, path)?;
    }
    if !json_to_stdout {
        print!("{}", table::render(&report));
    }
    Ok(())
}

fn write_json(report: &Report, path: &Path) -> Result<(), Error> {
    let json = report.to_json() + "\n";
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

/// Refuses an output whose directory is missing before any training, so a
/// typo in a path never costs the run.
fn check_output_directory(flag: &str, path: &Path) -> Result<(), Error> {
    let directory = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if directory.is_dir() {
        Ok(())
    } else {
        Err(Error::usage(
            flag,
            format!("directory {} does not exist", directory.display()),
        ))
    }
}
