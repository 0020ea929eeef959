use std::fs::{self, OpenOptions};
use std::io::{ErrorKind as IoErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use churn_audit::cli::{AuditArgs, Cli, Command, CommonArgs, RunArgs};
use churn_audit::config::{AuditConfig, RunConfig};
use churn_audit::report::{table, ModelReport};
use churn_audit::{pipeline, Error};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            err.exit()
        }
        Err(err) if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("error: a subcommand is required (run or audit); see 'churn-audit --help'");
            return ExitCode::from(2);
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
                model.index,
                model.accuracy * 100.0,
                model.train_seconds
            );
        }
    }
}

fn json_to_stdout(args: &CommonArgs) -> bool {
    args.json.as_deref() == Some(Path::new("-"))
}

/// Refuses an output that cannot be written before any training, so a typo
/// in a path never costs the run.
fn check_outputs(args: &CommonArgs) -> Result<(), Error> {
    let Some(path) = args.json.as_deref().filter(|_| !json_to_stdout(args)) else {
        return Ok(());
    };
    let refuse = |message: String| Err(Error::usage("--json", message));
    let directory = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !directory.is_dir() {
        return refuse(format!("directory {} does not exist", directory.display()));
    }
    if path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/') {
        return refuse(format!("{} is a directory", path.display()));
    }
    if is_special(path) {
        // A FIFO or a device (/dev/stdout): written in place, so there is
        // nothing to probe, and opening a FIFO early would block.
        return Ok(());
    }
    // The report is written next to the target and renamed over it, so the
    // directory must accept a new file.
    let probe = temporary_sibling(&resolve_links(path));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(err) => refuse(format!("cannot write in {}: {err}", directory.display())),
    }
}

/// An existing path that is not a regular file once links are followed.
fn is_special(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| !meta.is_file())
}

/// The file a symlink points to, so the rename replaces the file, not the link.
fn resolve_links(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

fn temporary_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Writes the JSON where asked and the table to stdout unless JSON goes there.
fn emit(args: &CommonArgs, json: &str, table: impl FnOnce() -> String) -> Result<(), Error> {
    let json = format!("{json}\n");
    match args.json.as_deref() {
        Some(path) if path == Path::new("-") => return write_stdout(&json),
        Some(path) if is_special(path) => {
            fs::write(path, &json).map_err(|source| Error::Output {
                path: path.to_owned(),
                source,
            })?
        }
        Some(path) => write_atomically(&resolve_links(path), &json)?,
        None => {}
    }
    write_stdout(&table())
}

/// A reader that closed the pipe (`| head`) has what it wanted: not an error.
fn write_stdout(text: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != IoErrorKind::BrokenPipe => Err(Error::Output {
            path: "stdout".into(),
            source: err,
        }),
        _ => Ok(()),
    }
}

/// Temp file, fsync, rename: an earlier report at `path` survives any failure.
fn write_atomically(path: &Path, contents: &str) -> Result<(), Error> {
    let failed = |source| Error::Output {
        path: path.to_owned(),
        source,
    };
    let temporary = temporary_sibling(path);
    let written = fs::File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(contents.as_bytes())
                .and_then(|()| file.sync_all())
        })
        .and_then(|()| fs::rename(&temporary, path));
    if let Err(err) = written {
        let _ = fs::remove_file(&temporary);
        return Err(failed(err));
    }
    Ok(())
}
