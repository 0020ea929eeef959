use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use churn_audit::artifacts::RunDir;
use churn_audit::cli::{
    AuditArgs, Cli, Command, CommonArgs, CompareArgs, GateArgs, GateCommandArgs, OutputArgs,
    ReportArgs, RunArgs, TrainArgs,
};
use churn_audit::config::{AuditConfig, RunConfig};
use churn_audit::gate::{self, Baseline, Judged, Verdicts};
use churn_audit::output::Outputs;
use churn_audit::pipeline::Event;
use churn_audit::progress::{self, Mode, Progress};
use churn_audit::report::{json, Report};
use churn_audit::{cluster, compare, config_file, output, pipeline, Error};

fn main() -> ExitCode {
    report_panics_as_errors();
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let outcome = match cli.command {
        Command::Run(args) => run(&args),
        Command::Audit(args) => audit(&args),
        Command::Gate(args) => gate(&args),
        Command::Compare(args) => compare(&args),
        Command::Plan(args) => plan(&args),
        Command::Train(args) => train(&args),
        Command::Report(args) => report(&args),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => fail(&err),
    }
}

/// A panic (libtorch out of memory inside tch, or a bug) ends the process
/// with one `error:` line and exit code 3, on whichever thread it happens,
/// instead of a backtrace; unwinding a backtrace that itself runs out of
/// memory could hang.
fn report_panics_as_errors() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        // A libtorch error unwrapped inside tch: its message alone, without
        // the C++ stack trace that follows it (escaped, in the Debug form).
        let message = match message.split_once("Torch(\"") {
            Some((_, torch)) => format!("libtorch: {torch}"),
            None => message,
        };
        let first = message
            .split(['\n'])
            .next()
            .and_then(|line| line.split("\\n").next())
            .filter(|line| !line.is_empty())
            .unwrap_or("unknown failure");
        let place = info.location().map_or_else(String::new, |at| {
            format!(" (at {}:{})", at.file(), at.line())
        });
        eprintln!("error: training failed: {first}{place}");
        std::process::exit(3);
    }));
}

fn fail(err: &Error) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(err.exit_code() as u8)
}

/// Parses the command line, then again with the --config file's flags placed
/// before the typed ones (see `config_file`).
fn parse() -> Result<Cli, ExitCode> {
    let typed: Vec<OsString> = std::env::args_os().collect();
    let cli = Cli::try_parse_from(&typed).map_err(|err| clap_failure(err, ""))?;
    let Some(path) = cli.command.config_file() else {
        return Ok(cli);
    };
    let flags = config_file::flags(path, cli.command.name()).map_err(|err| fail(&err))?;
    // Cli has no options of its own, so typed[1] is always the subcommand.
    let mut argv = typed[..2].to_vec();
    argv.extend(flags);
    argv.extend_from_slice(&typed[2..]);
    // The typed flags parsed alone, so a failure now comes from the file.
    let context = format!(" (in {})", path.display());
    Cli::try_parse_from(argv).map_err(|err| clap_failure(err, &context))
}

fn clap_failure(err: clap::Error, context: &str) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => err.exit(),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!(
                "error: a subcommand is required (run, audit, gate, compare, plan, train or report); see 'churn-audit --help'"
            );
            return ExitCode::from(2);
        }
        _ => {}
    }
    // clap's first paragraph names the flag and the problem, and a tip
    // suggests the flag a typo meant; the rest is usage noise.
    let rendered = err.render().to_string();
    let first: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let tips: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("tip: a similar"))
        .collect();
    let tips: String = tips.iter().map(|tip| format!(" ({tip})")).collect();
    eprintln!("{}{tips}{context}", first.join(" "));
    ExitCode::from(2)
}

/// Trains, reports and gates; `Ok(false)` when a check failed.
fn run(args: &RunArgs) -> Result<bool, Error> {
    let config = RunConfig::from_args(args)?;
    // Made before the outputs are checked, so that a report may go into it.
    let store = run_dir(&args.common)?;
    let outputs = prepare(&args.common.output, args.checks.any())?;
    let baseline = load_baseline(&args.checks)?;
    refuse_outputs_over_inputs(&outputs, &args.common, &args.checks, store.as_ref())?;
    let progress = progress(&args.common, &outputs, config.models, config.train.epochs);
    let files = model_files(&args.common);
    let report = pipeline::run(config, &files, store.as_ref(), &mut |event| {
        progress.observe(event)
    });
    progress.finish();
    finish(report?, &args.checks, baseline.as_ref(), &outputs)
}

fn model_files(args: &CommonArgs) -> pipeline::ModelFiles {
    pipeline::ModelFiles {
        anchor: args.anchor.clone(),
        save_models: args.save_models.clone(),
    }
}

/// Trains the audit's groups, reports and gates them; red flags alone do not
/// change the exit code.
fn audit(args: &AuditArgs) -> Result<bool, Error> {
    let config = AuditConfig::from_args(args)?;
    // Made before the outputs are checked, so that a report may go into it.
    let store = run_dir(&args.common)?;
    let outputs = prepare(&args.common.output, args.checks.any())?;
    let baseline = load_baseline(&args.checks)?;
    refuse_outputs_over_inputs(&outputs, &args.common, &args.checks, store.as_ref())?;
    let models = pipeline::distinct_audit_models(&config);
    let progress = progress(&args.common, &outputs, models, config.control.train.epochs);
    let files = model_files(&args.common);
    let report = pipeline::audit(config, &files, store.as_ref(), &mut |event| {
        progress.observe(event)
    });
    progress.finish();
    let mut report = report?;
    if let Some(judged) = Judged::audit(&report) {
        report.gate = gate::evaluate(judged, &args.checks, baseline.as_ref())?;
    }
    outputs.write(&report)?;
    Ok(verdict(report.gate.as_ref()))
}

/// Reports must not replace what the run reads or keeps: its data, config,
/// anchor and baseline, its run directory's plan, artifacts and locks, or the
/// models it saves.
fn refuse_outputs_over_inputs(
    outputs: &Outputs,
    args: &CommonArgs,
    checks: &GateArgs,
    store: Option<&RunDir>,
) -> Result<(), Error> {
    outputs.refuse_over_data(&args.data, args.test.as_deref())?;
    outputs.refuse_over_inputs(&named_files(&[
        ("--config", args.config.as_deref()),
        ("--baseline", checks.baseline.as_deref()),
    ]))?;
    if let Some(anchor) = &args.anchor {
        outputs.refuse_over_anchor(anchor)?;
    }
    if let Some(store) = store {
        outputs.refuse_inside(store.root())?;
    }
    if let Some(dir) = &args.save_models {
        outputs.refuse_among_saved_models(dir)?;
    }
    Ok(())
}

/// The files given, each with the flag that named it.
fn named_files<'a>(files: &[(&'static str, Option<&'a Path>)]) -> Vec<(&'static str, &'a Path)> {
    files
        .iter()
        .filter_map(|&(flag, path)| Some((flag, path?)))
        .collect()
}

/// The --out run directory, checked writable before any training.
fn run_dir(args: &CommonArgs) -> Result<Option<RunDir>, Error> {
    let Some(out) = &args.out else {
        return Ok(None);
    };
    if args.save_models.is_some() {
        return Err(Error::usage(
            "--save-models",
            "cannot be combined with --out: a model reused from its artifact has no network left to save",
        ));
    }
    let dir = RunDir::at(out);
    dir.prepare()?;
    Ok(Some(dir))
}

/// Writes DIR/plan.json; checks and report outputs belong to `report`.
fn plan(args: &RunArgs) -> Result<bool, Error> {
    let output = &args.common.output;
    if args.checks.any()
        || output.json.is_some()
        || output.markdown.is_some()
        || output.html.is_some()
        || output.junit.is_some()
        || output.github_summary
    {
        return Err(Error::usage(
            "plan",
            "plan writes only DIR/plan.json; give checks and report outputs to `churn-audit report DIR`",
        ));
    }
    if args.common.anchor.is_some() {
        return Err(Error::usage(
            "--anchor",
            "plan cannot fan out a run with an anchor yet; `run --out DIR` takes one, and resumes too",
        ));
    }
    let config = RunConfig::from_args(args)?;
    let Some(dir) = run_dir(&args.common)? else {
        return Err(Error::usage(
            "--out",
            "plan needs --out DIR, where plan.json and the artifacts go",
        ));
    };
    let plan = pipeline::plan(&config)?;
    if let Some(previous) = dir.write_plan(&plan)? {
        eprintln!("{}", progress::plan_replaced(&previous));
    }
    let out = dir.root().display();
    output::write_stdout(&format!(
        "{} models planned in {out}; train model K with `churn-audit train --out {out} --index K` (K from 0 to {}), then `churn-audit report {out}`\n",
        plan.models.len(),
        plan.models.len() - 1,
    ))?;
    Ok(true)
}

/// Trains one planned model (an array task's share of the run).
fn train(args: &TrainArgs) -> Result<bool, Error> {
    let dir = RunDir::at(&args.out);
    let plan = dir.read_plan()?;
    let index = cluster::task_index(
        args.index,
        |name| std::env::var(name).ok(),
        plan.models.len(),
    )?;
    let path = dir.artifact_path(&plan.models[index].key);
    let quiet = args.quiet;
    pipeline::train_planned(&dir, &plan, index, &mut |event| match event {
        Event::ModelDone(model) if !quiet => eprintln!(
            "model {index}: accuracy {:.2}%, {:.2} s; stored in {}",
            model.accuracy * 100.0,
            model.train_seconds,
            path.display()
        ),
        Event::ModelReused(_) if !quiet => {
            eprintln!(
                "model {index}: already trained ({}); nothing to do",
                path.display()
            )
        }
        _ => {}
    })?;
    Ok(true)
}

/// Reports on the artifacts of a run directory; exit 1 when any planned
/// model is not in the report.
fn report(args: &ReportArgs) -> Result<bool, Error> {
    // Whatever else is judged, or asked of JUnit, completeness is judged too
    // (so JUnit always has a testcase); an incomplete report always fails it.
    let judge_completeness = args.checks.any() || args.output.junit.is_some();
    let outputs = prepare(&args.output, judge_completeness)?;
    let baseline = load_baseline(&args.checks)?;
    outputs.refuse_over_inputs(&named_files(&[(
        "--baseline",
        args.checks.baseline.as_deref(),
    )]))?;
    if let Some(anchor) = &args.anchor {
        outputs.refuse_over_anchor(anchor)?;
    }
    outputs.refuse_inside(&args.dir)?;
    let dir = RunDir::at(&args.dir);
    let plan = dir.read_plan()?;
    outputs.refuse_over_data(&plan.config.data.source, plan.config.data.test.as_deref())?;
    let report = pipeline::collect(&dir, &plan, args.anchor.as_deref())?;
    // A missing model fails the `complete` check, which says which.
    let judged = gate::Judged {
        combined: judge_completeness,
        ..(&report).into()
    };
    let verdicts = gate::evaluate(judged, &args.checks, baseline.as_ref())?;
    publish(report, verdicts, &outputs)
}

fn progress(args: &CommonArgs, outputs: &Outputs, models: usize, epochs: usize) -> Progress {
    let mode = Mode::choose(
        args.quiet,
        std::io::stderr().is_terminal(),
        outputs.json_on_stdout(),
    );
    Progress::new(mode, models, epochs)
}

fn gate(args: &GateCommandArgs) -> Result<bool, Error> {
    if !args.checks.any() {
        return Err(Error::usage(
            "gate",
            "no check given (--max-churn, --max-acc-std, --min-acc, --require-reproducible, --max-churn-increase, --max-churn-vs-anchor)",
        ));
    }
    let outputs = prepare(&args.output, args.checks.any())?;
    outputs.refuse_over_judged_report(&args.report)?;
    outputs.refuse_over_inputs(&named_files(&[
        ("--config", args.config.as_deref()),
        ("--baseline", args.checks.baseline.as_deref()),
    ]))?;
    let report = json::load(&args.report)?;
    let baseline = load_baseline(&args.checks)?;
    finish(report, &args.checks, baseline.as_ref(), &outputs)
}

/// Informational: exits 0 whatever moved (gate a report to fail a build).
fn compare(args: &CompareArgs) -> Result<bool, Error> {
    let paths: Vec<&std::path::PathBuf> = std::iter::once(&args.baseline)
        .chain(&args.candidates)
        .collect();
    let reports = paths
        .iter()
        .map(|path| json::load(path))
        .collect::<Result<Vec<_>, _>>()?;
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let comparisons = (1..reports.len())
        .map(|i| compare::compare(&names[0], &reports[0], &names[i], &reports[i]))
        .collect::<Result<Vec<_>, _>>()?;
    output::write_stdout(&if args.json {
        compare::to_json(&comparisons)
    } else if args.markdown {
        let named: Vec<(&str, &Report)> = names.iter().map(String::as_str).zip(&reports).collect();
        compare::render_markdown(&named, &comparisons)
    } else {
        comparisons
            .iter()
            .map(|c| c.render_table())
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    Ok(true)
}

fn prepare(output: &OutputArgs, has_checks: bool) -> Result<Outputs, Error> {
    Outputs::prepare(output, has_checks, std::env::var_os("GITHUB_STEP_SUMMARY"))
}

fn load_baseline(checks: &GateArgs) -> Result<Option<Baseline>, Error> {
    checks
        .baseline
        .as_ref()
        .map(|path| {
            Ok(Baseline {
                path: path.clone(),
                report: json::load(path)?,
            })
        })
        .transpose()
}

/// Judges the report, writes every output, and names each check that did not
/// pass on stderr (stdout may be carrying JSON).
fn finish(
    report: Report,
    checks: &GateArgs,
    baseline: Option<&Baseline>,
    outputs: &Outputs,
) -> Result<bool, Error> {
    let verdicts = gate::evaluate((&report).into(), checks, baseline)?;
    publish(report, verdicts, outputs)
}

fn publish(
    mut report: Report,
    verdicts: Option<Verdicts>,
    outputs: &Outputs,
) -> Result<bool, Error> {
    report.gate = verdicts;
    outputs.write(&report)?;
    Ok(verdict(report.gate.as_ref()))
}

/// Names each check that did not pass on stderr; whether all passed.
fn verdict(verdicts: Option<&Verdicts>) -> bool {
    let Some(verdicts) = verdicts else {
        return true;
    };
    for line in verdicts.problems() {
        eprintln!("{line}");
    }
    verdicts.passed
}
