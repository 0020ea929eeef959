//! Where a finished report goes: stdout in the chosen format, and the files
//! named by --json, --markdown, --junit, --html and --github-summary. Destinations are
//! checked before any training, so a typo in a path never costs the run.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cli::{Format, OutputArgs};
use crate::data::idx;
use crate::data::source::{DataLocation, DataSource};
use crate::error::{Error, Result};
use crate::report::audit::AuditReport;
use crate::report::{html, json, junit, markdown, table, Report};
use crate::saved_model::SAVED_PREFIX;

#[derive(Debug)]
pub struct Outputs {
    stdout: Format,
    json: Option<PathBuf>,
    markdown: Option<PathBuf>,
    junit: Option<PathBuf>,
    html: Option<PathBuf>,
    github_summary: Option<PathBuf>,
}

impl Outputs {
    /// Checks every destination; `has_checks` says whether any check was asked
    /// for, `step_summary` is $GITHUB_STEP_SUMMARY.
    pub fn prepare(
        args: &OutputArgs,
        has_checks: bool,
        step_summary: Option<OsString>,
    ) -> Result<Self> {
        let mut stdout = args.format;
        let mut json = args.json.clone();
        if json.as_deref() == Some(Path::new("-")) && args.format != Format::Table {
            return Err(Error::usage(
                "--format",
                "stdout carries the JSON report (--json -); drop --format or write the JSON to a file",
            ));
        }
        if json.as_deref() == Some(Path::new("-")) {
            // `--json -` predates --format and keeps its promise that stdout
            // carries nothing but the JSON.
            stdout = Format::Json;
            json = None;
        }
        if args.junit.is_some() && !has_checks {
            return Err(Error::usage(
                "--junit",
                "JUnit XML holds one testcase per check, and no check was given",
            ));
        }
        let github_summary =
            if args.github_summary {
                match step_summary.filter(|path| !path.is_empty()) {
                    Some(path) => Some(PathBuf::from(path)),
                    None => return Err(Error::usage(
                        "--github-summary",
                        "GITHUB_STEP_SUMMARY is not set (GitHub Actions sets it in every job step)",
                    )),
                }
            } else {
                None
            };
        let mut seen: Vec<(&str, &PathBuf)> = Vec::new();
        for (flag, path) in [
            ("--json", &json),
            ("--markdown", &args.markdown),
            ("--junit", &args.junit),
            ("--html", &args.html),
            ("--github-summary", &github_summary),
        ] {
            if let Some(path) = path {
                if let Some((other, _)) = seen.iter().find(|(_, earlier)| *earlier == path) {
                    return Err(Error::usage(
                        flag,
                        format!(
                            "{} is also the {other} output; each output needs its own file",
                            path.display()
                        ),
                    ));
                }
                check_directory(flag, path)?;
                seen.push((flag, path));
            }
        }
        Ok(Outputs {
            stdout,
            json,
            markdown: args.markdown.clone(),
            junit: args.junit.clone(),
            html: args.html.clone(),
            github_summary,
        })
    }

    /// Refuses outputs that would land on a run directory's plan, or among
    /// its artifacts or locks, links followed as the writers follow them:
    /// such a report would destroy what it was made from.
    pub fn refuse_inside(&self, run_dir: &Path) -> Result<()> {
        // Its parts may be links themselves (models/ on shared storage).
        self.refuse_landing(run_dir, "part of the run directory", |dir, place| {
            place == resolve_links(&dir.join("plan.json"))
                || ["models", "locks"]
                    .iter()
                    .any(|part| place.starts_with(resolve_links(&dir.join(part))))
        })
    }

    /// Refuses outputs that would replace the data: its file, a file of its
    /// IDX directory, or the --test file.
    pub fn refuse_over_data(&self, source: &DataSource, test: Option<&Path>) -> Result<()> {
        match source.location() {
            Some(DataLocation::File(path)) => self.refuse_over_inputs(&[("--data", path)])?,
            Some(DataLocation::Directory(dir)) => {
                self.refuse_landing(dir, "a file of the data in", |dir, place| {
                    is_named_in(dir, place, idx::is_data_file)
                })?
            }
            None => {}
        }
        match test {
            Some(test) => self.refuse_over_inputs(&[("--test", test)]),
            None => Ok(()),
        }
    }

    /// Refuses outputs that would replace the --anchor: the file given, the
    /// other file of its model (sidecar or weights, of the same name), and
    /// any saved model beside it, links followed as loading follows them.
    pub fn refuse_over_anchor(&self, anchor: &Path) -> Result<()> {
        let real = resolve_links(anchor);
        let mut files = Vec::new();
        for path in [anchor, real.as_path()] {
            files.extend([
                path.to_owned(),
                path.with_extension("json"),
                path.with_extension("safetensors"),
            ]);
        }
        let named: Vec<(&str, &Path)> = files
            .iter()
            .map(|path| ("--anchor", path.as_path()))
            .collect();
        self.refuse_over_inputs(&named)?;
        let dir = real.parent().filter(|dir| !dir.as_os_str().is_empty());
        self.refuse_landing(
            dir.unwrap_or(Path::new(".")),
            "a saved model's file in",
            |dir, place| is_saved_model_file(dir, place) && place.exists(),
        )
    }

    /// Refuses outputs that would replace the files of a model this run
    /// saves (--save-models), which an `--anchor` may name later.
    pub fn refuse_among_saved_models(&self, save_dir: &Path) -> Result<()> {
        self.refuse_landing(save_dir, "a saved model's file in", is_saved_model_file)
    }

    /// Refuses outputs that would replace a file this command reads (its
    /// data, --config, --anchor, a report or --baseline), each given with the
    /// flag that named it: the report would destroy what it was made from.
    pub fn refuse_over_inputs(&self, inputs: &[(&str, &Path)]) -> Result<()> {
        self.refuse_over(inputs, |_| true)
    }

    /// As `refuse_over_inputs` for the report `gate` judges, which its
    /// `--json` may name: gate writes the same report back, in the same
    /// format, with the verdicts added (a config file that `run` and `gate`
    /// share names one JSON report for both).
    pub fn refuse_over_judged_report(&self, report: &Path) -> Result<()> {
        self.refuse_over(&[("report", report)], |flag| flag != "--json")
    }

    fn refuse_over(&self, inputs: &[(&str, &Path)], checked: impl Fn(&str) -> bool) -> Result<()> {
        for (input_flag, input) in inputs {
            let Ok(input) = fs::canonicalize(input) else {
                continue;
            };
            for (flag, path) in self.files() {
                let Some(path) = path.filter(|_| checked(flag)) else {
                    continue;
                };
                if landing_place(path).as_ref() == Some(&input) {
                    return Err(Error::usage(
                        flag,
                        format!(
                            "{} would replace the {input_flag} file this command reads; write reports elsewhere",
                            path.display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn refuse_landing(
        &self,
        dir: &Path,
        what: &str,
        owned: impl Fn(&Path, &Path) -> bool,
    ) -> Result<()> {
        let Ok(dir) = fs::canonicalize(dir) else {
            return Ok(());
        };
        for (flag, path) in self.files() {
            let Some(path) = path else { continue };
            if landing_place(path).is_some_and(|place| owned(&dir, &place)) {
                return Err(Error::usage(
                    flag,
                    format!(
                        "{} would replace {what} {}; write reports elsewhere",
                        path.display(),
                        dir.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn files(&self) -> [(&'static str, Option<&PathBuf>); 5] {
        [
            ("--json", self.json.as_ref()),
            ("--markdown", self.markdown.as_ref()),
            ("--junit", self.junit.as_ref()),
            ("--html", self.html.as_ref()),
            ("--github-summary", self.github_summary.as_ref()),
        ]
    }

    pub fn json_on_stdout(&self) -> bool {
        self.stdout == Format::Json
    }

    /// Writes every output asked for, each rendering the one report.
    pub fn write(&self, report: &impl Rendered) -> Result<()> {
        if let Some(path) = &self.json {
            write_file(path, &report.json())?;
        }
        if let Some(path) = &self.markdown {
            write_file(path, &report.markdown())?;
        }
        if let (Some(path), Some(xml)) = (&self.junit, report.junit()) {
            write_file(path, &xml)?;
        }
        if let Some((path, page)) = self.html.as_ref().zip(report.html()) {
            write_file(path, &page)?;
        }
        if let Some(path) = &self.github_summary {
            append_file(path, &report.markdown())?;
        }
        write_stdout(&match self.stdout {
            Format::Table => report.table(),
            Format::Json => report.json(),
            Format::Markdown => report.markdown(),
        })
    }
}

/// A report in every form an output can take.
pub trait Rendered {
    fn json(&self) -> String;
    fn markdown(&self) -> String;
    fn table(&self) -> String;
    /// None where there is nothing to draw.
    fn html(&self) -> Option<String>;
    /// None without checks.
    fn junit(&self) -> Option<String>;
}

impl Rendered for Report {
    fn json(&self) -> String {
        json::render(self)
    }
    fn markdown(&self) -> String {
        markdown::render(self)
    }
    fn table(&self) -> String {
        table::render(self)
    }
    fn html(&self) -> Option<String> {
        Some(html::render(self))
    }
    fn junit(&self) -> Option<String> {
        let verdicts = self.gate.as_ref()?;
        Some(junit::render(
            &self.config_sha256,
            &self.dataset,
            &self.tool,
            verdicts,
        ))
    }
}

impl Rendered for AuditReport {
    fn json(&self) -> String {
        self.to_json()
    }
    fn markdown(&self) -> String {
        markdown::render_audit(self)
    }
    fn table(&self) -> String {
        self.render_table()
    }
    fn html(&self) -> Option<String> {
        html::render_audit(self)
    }
    fn junit(&self) -> Option<String> {
        let verdicts = self.gate.as_ref()?;
        Some(junit::render(
            &self.config_sha256,
            &self.dataset,
            &self.tool,
            verdicts,
        ))
    }
}

/// A reader that closed the pipe (`| head`) has what it wanted: not an error.
pub fn write_stdout(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(source) if source.kind() != ErrorKind::BrokenPipe => Err(Error::Output {
            path: PathBuf::from("<stdout>"),
            source,
        }),
        _ => Ok(()),
    }
}

/// A regular file is replaced atomically (temp file, fsync, rename), so an
/// earlier report survives any failure; through a symlink, the file it points
/// to is replaced; a FIFO or device (/dev/stdout) is written in place.
pub(crate) fn write_file(path: &Path, text: &str) -> Result<()> {
    let failed = |source| Error::Output {
        path: path.to_owned(),
        source,
    };
    if is_special(path) {
        return fs::write(path, text).map_err(failed);
    }
    replace(&resolve_links(path), text.as_bytes()).map_err(failed)
}

/// Replaces `target` with `bytes` so that a reader, or a crash at any moment,
/// finds the old file or the new one whole: a temporary sibling is written and
/// fsynced, renamed over the target, and the directory fsynced so that the
/// rename itself survives a power cut.
pub fn replace(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = temporary_sibling(target);
    // create_new: never truncate a file another writer is still filling.
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .and_then(|()| {
            // Fault tests (tests/faults.rs) die here, as a kill -9 mid-write
            // would, when the target's name ends with the variable's value.
            if let Some(suffix) = std::env::var_os("CHURN_AUDIT_DIE_BEFORE_RENAME") {
                if target
                    .to_string_lossy()
                    .ends_with(&*suffix.to_string_lossy())
                {
                    std::process::exit(137);
                }
            }
            fs::rename(&temporary, target)
        })
        .and_then(|()| {
            let directory = target.parent().filter(|dir| !dir.as_os_str().is_empty());
            fs::File::open(directory.unwrap_or(Path::new("."))).and_then(|dir| dir.sync_all())
        });
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// An existing path that is not a regular file once links are followed.
fn is_special(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| !meta.is_file())
}

/// Whether `place` is, or would be, a file `--save-models` writes in `dir`.
fn is_saved_model_file(dir: &Path, place: &Path) -> bool {
    is_named_in(dir, place, |name| name.starts_with(SAVED_PREFIX))
}

/// Whether `place` sits directly in `dir` under a name `named` accepts.
fn is_named_in(dir: &Path, place: &Path, named: impl Fn(&str) -> bool) -> bool {
    place.parent() == Some(dir)
        && place
            .file_name()
            .is_some_and(|name| named(&name.to_string_lossy()))
}

/// The file a write to `path` changes: the path with every link followed
/// where it exists, else a new name in its (resolved) directory.
fn landing_place(path: &Path) -> Option<PathBuf> {
    if let Ok(place) = fs::canonicalize(path) {
        return Some(place);
    }
    let directory = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Some(fs::canonicalize(directory).ok()?.join(path.file_name()?))
}

fn resolve_links(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// `path` with a suffix no other writer picks: processes on machines sharing
/// the directory can have the same pid (every Kubernetes pod's may be 1), so
/// the clock's nanoseconds tell them apart.
pub(crate) fn temporary_sibling(path: &Path) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{nanos:09}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// The step summary collects every step's Markdown, so it is appended to.
fn append_file(path: &Path, text: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|source| Error::Output {
            path: path.to_owned(),
            source,
        })
}

/// Refuses, before any training, a destination that cannot be written.
fn check_directory(flag: &str, path: &Path) -> Result<()> {
    let refuse = |message: String| Err(Error::usage(flag, message));
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
        // Written in place; opening a FIFO now would block.
        return Ok(());
    }
    // The report is written next to its target and renamed over it, so that
    // directory must accept a new file.
    let target = resolve_links(path);
    let probe = temporary_sibling(&target);
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(err) => {
            let dir = target.parent().unwrap_or(Path::new("."));
            refuse(format!("cannot write in {}: {err}", dir.display()))
        }
    }
}
