//! Where a finished report goes: stdout in the chosen format, and the files
//! named by --json, --markdown, --junit, --html and --github-summary. Destinations are
//! checked before any training, so a typo in a path never costs the run.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::{Format, GateArgs, OutputArgs};
use crate::error::{Error, Result};
use crate::report::{html, json, junit, markdown, table, Report};

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
    /// Checks every destination; `step_summary` is $GITHUB_STEP_SUMMARY.
    pub fn prepare(
        args: &OutputArgs,
        checks: &GateArgs,
        step_summary: Option<OsString>,
    ) -> Result<Self> {
        let mut stdout = args.format;
        let mut json = args.json.clone();
        if json.as_deref() == Some(Path::new("-")) {
            // `--json -` predates --format and keeps its promise that stdout
            // carries nothing but the JSON.
            stdout = Format::Json;
            json = None;
        }
        if args.junit.is_some() && !checks.any() {
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
        for (flag, path) in [
            ("--json", &json),
            ("--markdown", &args.markdown),
            ("--junit", &args.junit),
            ("--html", &args.html),
            ("--github-summary", &github_summary),
        ] {
            if let Some(path) = path {
                check_directory(flag, path)?;
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

    pub fn json_on_stdout(&self) -> bool {
        self.stdout == Format::Json
    }

    pub fn write(&self, report: &Report) -> Result<()> {
        if let Some(path) = &self.json {
            write_file(path, &json::render(report))?;
        }
        if let Some(path) = &self.markdown {
            write_file(path, &markdown::render(report))?;
        }
        if let (Some(path), Some(verdicts)) = (&self.junit, &report.gate) {
            write_file(path, &junit::render(report, verdicts))?;
        }
        if let Some(path) = &self.html {
            write_file(path, &html::render(report))?;
        }
        if let Some(path) = &self.github_summary {
            append_file(path, &markdown::render(report))?;
        }
        let text = match self.stdout {
            Format::Table => table::render(report),
            Format::Json => json::render(report),
            Format::Markdown => markdown::render(report),
        };
        std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .map_err(|source| Error::Output {
                path: PathBuf::from("<stdout>"),
                source,
            })
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Output {
        path: path.to_owned(),
        source,
    })
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

fn check_directory(flag: &str, path: &Path) -> Result<()> {
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
