//! The gate on hand-made reports (fixtures/reports/: real runs whose churn and
//! accuracy figures were set to round values), and the outputs it writes.

mod common;

use std::path::Path;

use common::{churn_audit_command, refused, ROOT};
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use serde_json::Value;

const CURRENT: &str = "fixtures/reports/current.json";
const BASELINE: &str = "fixtures/reports/baseline.json";

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn churn_audit(args: &[&str]) -> Outcome {
    churn_audit_with(args, None)
}

fn churn_audit_with(args: &[&str], step_summary: Option<&Path>) -> Outcome {
    let mut command = churn_audit_command();
    command.args(args);
    if let Some(path) = step_summary {
        command.env("GITHUB_STEP_SUMMARY", path);
    }
    let output = command.output().unwrap();
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn gate(checks: &[&str]) -> Outcome {
    let mut args = vec!["gate", CURRENT, "--format", "json"];
    args.extend_from_slice(checks);
    churn_audit(&args)
}

/// Exit code and stderr of a gate on the current fixture, and the JSON verdicts.
fn judged(checks: &[&str], code: i32, stderr: &str) -> Value {
    let outcome = gate(checks);
    assert_eq!(outcome.code, Some(code), "{checks:?}: {}", outcome.stderr);
    assert_eq!(outcome.stderr, stderr, "{checks:?}");
    let report: Value = serde_json::from_str(&outcome.stdout).unwrap();
    report["gate"].clone()
}

const CHURN_FIGURE: &str = "mean pairwise churn 3.00% (95% CI 2.50% – 3.50%)";

#[test]
fn churn_below_the_limit_passes() {
    let gate = judged(&["--max-churn", "0.04"], 0, "");
    assert_eq!(gate["passed"], true);
    assert_eq!(gate["checks"][0]["check"], "max-churn");
    assert_eq!(gate["checks"][0]["outcome"], "pass");
    assert_eq!(gate["checks"][0]["threshold"], 0.04);
    assert_eq!(gate["checks"][0]["measured"], 0.03);
    assert_eq!(
        gate["checks"][0]["message"],
        format!("{CHURN_FIGURE} is within the limit 4.00%")
    );
}

#[test]
fn churn_above_the_limit_fails_with_the_miss() {
    let gate = judged(
        &["--max-churn", "0.02"],
        1,
        &format!("check failed: --max-churn 0.02: {CHURN_FIGURE} exceeds the limit 2.00% by 1.00 percentage points\n"),
    );
    assert_eq!(gate["passed"], false);
    assert_eq!(gate["checks"][0]["outcome"], "fail");
}

#[test]
fn straddling_interval_is_inconclusive_and_the_policy_decides() {
    let straddles =
        format!("{CHURN_FIGURE} straddles the limit 3.00%; more models would narrow the interval");
    let failed = judged(
        &["--max-churn", "0.03"],
        1,
        &format!("check inconclusive, counted as failed: --max-churn 0.03: {straddles}\n"),
    );
    assert_eq!(failed["inconclusive"], "fail");
    assert_eq!(failed["passed"], false);
    assert_eq!(failed["checks"][0]["outcome"], "inconclusive");
    let passed = judged(
        &["--max-churn", "0.03", "--inconclusive", "pass"],
        0,
        &format!("check inconclusive, counted as passed: --max-churn 0.03: {straddles}\n"),
    );
    assert_eq!(passed["inconclusive"], "pass");
    assert_eq!(passed["passed"], true);
    // A plain failure is not excused by --inconclusive pass.
    assert_eq!(
        gate(&["--max-churn", "0.02", "--inconclusive", "pass"]).code,
        Some(1)
    );
}

#[test]
fn accuracy_checks() {
    judged(&["--min-acc", "0.85"], 0, "");
    judged(
        &["--min-acc", "0.95"],
        1,
        "check failed: --min-acc 0.95: mean accuracy 90.00% (95% CI 87.50% – 92.50%) is below the minimum 95.00% by 5.00 percentage points\n",
    );
    // std 1% over 3 models: χ² interval 0.52% – 6.28%.
    judged(&["--max-acc-std", "0.07"], 0, "");
    let gate = judged(
        &["--max-acc-std", "0.004"],
        1,
        "check failed: --max-acc-std 0.004: accuracy std 1.00% (95% CI 0.52% – 6.28%) exceeds the limit 0.40% by 0.60 percentage points\n",
    );
    let ci95 = &gate["checks"][0]["ci95"];
    assert!((ci95["low"].as_f64().unwrap() - 0.005206582666988174).abs() < 1e-12);
    assert!((ci95["high"].as_f64().unwrap() - 0.06284734696485385).abs() < 1e-12);
}

#[test]
fn churn_increase_over_a_baseline() {
    // 2% → 3%: +1 pp; MOVER half widths √(0.5² + 0.4²) = 0.64 pp each side.
    let increase = |limit: &str| {
        judged(
            &["--baseline", BASELINE, "--max-churn-increase", limit],
            if limit == "0.02" { 0 } else { 1 },
            &match limit {
                "0.02" => String::new(),
                "0.002" => "check failed: --max-churn-increase 0.002: churn increase over fixtures/reports/baseline.json (2.00% → 3.00%) +1.00 pp (95% CI +0.36 pp – +1.64 pp) exceeds the limit +0.20 pp by 0.80 percentage points\n".to_owned(),
                _ => "check inconclusive, counted as failed: --max-churn-increase 0.01: churn increase over fixtures/reports/baseline.json (2.00% → 3.00%) +1.00 pp (95% CI +0.36 pp – +1.64 pp) straddles the limit +1.00 pp; more models would narrow the interval\n".to_owned(),
            },
        )["checks"][0]["outcome"]
            .clone()
    };
    assert_eq!(increase("0.02"), "pass");
    assert_eq!(increase("0.002"), "fail");
    assert_eq!(increase("0.01"), "inconclusive");
}

#[test]
fn unusable_inputs_exit_2_naming_the_file() {
    refused(
        &["gate", CURRENT, "--baseline", "fixtures/reports/other-test-set.json", "--max-churn-increase", "0.01"],
        "error: --baseline: fixtures/reports/other-test-set.json was measured on test set f99ed37a3d5603fedc847154f17ee5b80a45f6b5db6501f40f02660644a4287d, this report on 874fecfebd0b302ab0d17f769db2ea8892fdd24e840f906d266f69b2c325f692; churn compares only on the same test set",
    );
    refused(
        &["gate", "fixtures/reports/truncated.json", "--max-churn", "0.02"],
        "error: fixtures/reports/truncated.json: not a churn-audit JSON report: EOF while parsing an object at line 13 column 0",
    );
    refused(
        &["gate", "fixtures/reports/array.json", "--max-churn", "0.02"],
        "error: fixtures/reports/array.json: not a churn-audit JSON report: a report is a JSON object",
    );
    refused(
        &["gate", "fixtures/reports/schema-v2.json", "--max-churn", "0.02"],
        "error: fixtures/reports/schema-v2.json: schema_version 2 is not supported (this churn-audit reads version 1)",
    );
    refused(
        &[
            "gate",
            "fixtures/reports/missing.json",
            "--max-churn",
            "0.02",
        ],
        "error: fixtures/reports/missing.json: cannot read it: No such file or directory (os error 2)",
    );
    refused(
        &["gate", "fixtures/digits.csv.gz", "--max-churn", "0.02"],
        "error: fixtures/digits.csv.gz: cannot read it: stream did not contain valid UTF-8",
    );
    refused(
        &["gate", CURRENT],
        "error: gate: no check given (--max-churn, --max-acc-std, --min-acc, --require-reproducible, --max-churn-increase, --max-churn-vs-anchor)",
    );
    refused(
        &["gate", CURRENT, "--max-churn", "2"],
        "error: invalid value '2' for '--max-churn <X>': must be a fraction in [0, 1] (0.02 means 2%), got 2",
    );
    refused(
        &["gate", CURRENT, "--baseline", BASELINE],
        "error: the following required arguments were not provided: --max-churn-increase <D>",
    );
    refused(
        &["gate", CURRENT, "--max-churn", "0.02", "--github-summary"],
        "error: --github-summary: GITHUB_STEP_SUMMARY is not set (GitHub Actions sets it in every job step)",
    );
    refused(
        &["run", "--junit", "gate.xml"],
        "error: --junit: JUnit XML holds one testcase per check, and no check was given",
    );
    refused(
        &[
            "gate",
            CURRENT,
            "--max-churn",
            "0.02",
            "--markdown",
            "/nonexistent-dir/r.md",
        ],
        "error: --markdown: directory /nonexistent-dir does not exist",
    );
}

const FAST: &[&str] = &["run", "--epochs", "1", "--threads", "1", "--quiet"];

#[test]
fn checks_on_run_set_its_exit_code() {
    let reproducible = churn_audit(
        &[
            FAST,
            &["--seeds", "2", "--vary", "none", "--require-reproducible"],
        ]
        .concat(),
    );
    assert_eq!(reproducible.code, Some(0), "{}", reproducible.stderr);
    assert!(
        reproducible
            .stdout
            .contains("│ --require-reproducible ┆ pass    ┆ all 2 models have bitwise identical weights and test logits │"),
        "{}",
        reproducible.stdout
    );
    let varied = churn_audit(&[FAST, &["--seeds", "2", "--require-reproducible"]].concat());
    assert_eq!(varied.code, Some(1));
    assert_eq!(
        varied.stderr,
        "check failed: --require-reproducible: not bitwise reproducible: 2 distinct weight hashes and 2 distinct prediction hashes over 2 models\n"
    );
    let diverged = churn_audit(
        &[
            FAST,
            &["--seeds", "2", "--lr", "1e30", "--max-churn", "0.5"],
        ]
        .concat(),
    );
    assert_eq!(diverged.code, Some(3));
    assert_eq!(
        diverged.stderr,
        "error: training model 0 failed at step 45: loss became NaN\n"
    );
}

fn snapshot(name: &str, actual: &str) {
    let path = Path::new(ROOT).join("tests/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    assert_eq!(actual, expected, "{name} (UPDATE_SNAPSHOTS=1 rewrites it)");
}

const SNAPSHOT_CHECKS: &[&str] = &[
    "--max-churn",
    "0.02",
    "--min-acc",
    "0.85",
    "--max-acc-std",
    "0.05",
    "--require-reproducible",
    "--baseline",
    BASELINE,
    "--max-churn-increase",
    "0.02",
];

#[test]
fn markdown_snapshot_on_stdout_in_a_file_and_in_the_step_summary() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.md");
    let summary = dir.path().join("summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    let mut args = vec!["gate", CURRENT, "--format", "markdown"];
    args.extend_from_slice(SNAPSHOT_CHECKS);
    args.extend(["--markdown", file.to_str().unwrap(), "--github-summary"]);
    let outcome = churn_audit_with(&args, Some(&summary));
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    snapshot("gate.md", &outcome.stdout);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), outcome.stdout);
    assert_eq!(
        std::fs::read_to_string(&summary).unwrap(),
        format!("earlier step\n{}", outcome.stdout)
    );
}

/// A testcase as a CI system reads it: name, and the failure's type and message.
#[derive(Debug, PartialEq)]
struct Case {
    name: String,
    failure: Option<(String, String)>,
    system_out: bool,
}

fn attribute(element: &BytesStart, name: &str) -> String {
    element
        .try_get_attribute(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no {name} attribute"))
        .normalized_value(XmlVersion::Explicit1_0)
        .unwrap()
        .into_owned()
}

/// Parses strictly (end tags must match) and returns the suite's
/// tests/failures counts and its testcases.
fn parse_junit(xml: &str) -> ((String, String), Vec<Case>) {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut counts = None;
    let mut cases: Vec<Case> = Vec::new();
    loop {
        match reader.read_event().unwrap() {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                b"testsuite" => counts = Some((attribute(&e, "tests"), attribute(&e, "failures"))),
                b"testcase" => cases.push(Case {
                    name: attribute(&e, "name"),
                    failure: None,
                    system_out: false,
                }),
                b"failure" => {
                    cases.last_mut().unwrap().failure =
                        Some((attribute(&e, "type"), attribute(&e, "message")))
                }
                b"system-out" => cases.last_mut().unwrap().system_out = true,
                _ => {}
            },
            _ => {}
        }
    }
    (counts.unwrap(), cases)
}

#[test]
fn junit_snapshot_parses_back_to_one_testcase_per_check() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gate.xml");
    let mut args = vec![
        "gate",
        CURRENT,
        "--inconclusive",
        "pass",
        "--junit",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(SNAPSHOT_CHECKS);
    let outcome = churn_audit(&args);
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    let xml = std::fs::read_to_string(&file).unwrap();
    snapshot("gate.junit.xml", &xml);
    let (counts, cases) = parse_junit(&xml);
    assert_eq!(counts, ("5".to_owned(), "2".to_owned()));
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "--max-churn 0.02",
            "--max-acc-std 0.05",
            "--min-acc 0.85",
            "--require-reproducible",
            "--max-churn-increase 0.02"
        ]
    );
    assert_eq!(
        cases[0].failure,
        Some((
            "fail".to_owned(),
            format!("{CHURN_FIGURE} exceeds the limit 2.00% by 1.00 percentage points")
        ))
    );
    // Inconclusive under --inconclusive pass: a passing testcase that says so.
    assert_eq!(cases[1].failure, None);
    assert!(cases[1].system_out);
    assert_eq!(cases[2].failure, None);
    assert!(!cases[2].system_out);
    assert_eq!(
        cases[3].failure.as_ref().map(|f| f.0.as_str()),
        Some("fail")
    );
    assert_eq!(cases[4].failure, None);
}

#[test]
fn junit_messages_survive_markup_in_paths() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("main & <old> \"'.json");
    std::fs::copy(Path::new(ROOT).join(BASELINE), &baseline).unwrap();
    let file = dir.path().join("gate.xml");
    let outcome = churn_audit(&[
        "gate",
        CURRENT,
        "--baseline",
        baseline.to_str().unwrap(),
        "--max-churn-increase",
        "0.002",
        "--junit",
        file.to_str().unwrap(),
    ]);
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    let (counts, cases) = parse_junit(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(counts, ("1".to_owned(), "1".to_owned()));
    assert_eq!(
        cases[0].failure,
        Some((
            "fail".to_owned(),
            format!(
                "churn increase over {} (2.00% → 3.00%) +1.00 pp (95% CI +0.36 pp – +1.64 pp) exceeds the limit +0.20 pp by 0.80 percentage points",
                baseline.display()
            )
        ))
    );
}

#[test]
fn reports_that_contradict_themselves_or_are_audits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let edited = |name: &str, edit: &dyn Fn(&mut Value)| {
        let mut report: Value =
            serde_json::from_str(&std::fs::read_to_string(Path::new(ROOT).join(CURRENT)).unwrap())
                .unwrap();
        edit(&mut report);
        let path = dir.path().join(name);
        std::fs::write(&path, report.to_string()).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let churn = edited("churn.json", &|r| r["churn"]["mean"] = 5.0.into());
    refused(
        &["gate", &churn, "--max-churn", "0.5"],
        &format!("error: {churn}: inconsistent report: churn.mean is 5, outside [0, 1]"),
    );
    let inverted = edited("inverted.json", &|r| {
        r["churn"]["ci95"] = serde_json::json!({"low": 0.2, "high": 0.01})
    });
    refused(
        &["gate", &inverted, "--max-churn", "0.5"],
        &format!("error: {inverted}: inconsistent report: churn.ci95 [0.2, 0.01] does not contain its mean 0.03"),
    );
    let empty = edited("empty.json", &|r| r["models"] = serde_json::json!([]));
    refused(&["gate", &empty, "--min-acc", "0.5"], &format!("error: {empty}: inconsistent report: 0 models, but accuracy is over 3; a report needs at least 2"));
    let audit = edited("audit.json", &|r| r["groups"] = serde_json::json!([]));
    refused(
        &["gate", &audit, "--max-churn", "0.5"],
        &format!("error: {audit}: is an audit report; gate, --baseline and compare read run reports (an audit takes the gate's checks itself)"),
    );
}

#[test]
fn outputs_need_their_own_files_and_stdout_one_format() {
    refused(
        &[
            "gate",
            CURRENT,
            "--max-churn",
            "0.5",
            "--json",
            "same.out",
            "--markdown",
            "same.out",
        ],
        "error: --markdown: same.out is also the --json output; each output needs its own file",
    );
    refused(
        &["gate", CURRENT, "--max-churn", "0.5", "--json", "-", "--format", "markdown"],
        "error: --format: stdout carries the JSON report (--json -); drop --format or write the JSON to a file",
    );
    refused(
        &["gate", CURRENT, "--max-churn", "-0.1"],
        "error: invalid value '-0.1' for '--max-churn <X>': must be a fraction in [0, 1] (0.02 means 2%), got -0.1",
    );
}

#[test]
fn outputs_never_replace_the_reports_they_read() {
    let dir = tempfile::tempdir().unwrap();
    let (report, baseline) = (dir.path().join("now.json"), dir.path().join("before.json"));
    std::fs::copy(Path::new(ROOT).join(CURRENT), &report).unwrap();
    std::fs::copy(Path::new(ROOT).join(BASELINE), &baseline).unwrap();
    let (report_arg, baseline_arg) = (report.to_str().unwrap(), baseline.to_str().unwrap());
    let link = dir.path().join("link.xml");
    std::os::unix::fs::symlink(&baseline, &link).unwrap();
    refused(
        &["gate", report_arg, "--max-churn", "0.5", "--junit", report_arg],
        &format!("error: --junit: {report_arg} would replace the report file this command reads; write reports elsewhere"),
    );
    refused(
        &[
            "gate", report_arg, "--baseline", baseline_arg, "--max-churn-increase", "0.01",
            "--html", link.to_str().unwrap(),
        ],
        &format!(
            "error: --html: {} would replace the --baseline file this command reads; write reports elsewhere",
            link.display()
        ),
    );
    assert_eq!(
        std::fs::read(&report).unwrap(),
        std::fs::read(Path::new(ROOT).join(CURRENT)).unwrap()
    );
    assert_eq!(
        std::fs::read(&baseline).unwrap(),
        std::fs::read(Path::new(ROOT).join(BASELINE)).unwrap()
    );
    // Its --json may name the report: the same report comes back, judged.
    let judged = churn_audit(&[
        "gate",
        report_arg,
        "--max-churn",
        "0.5",
        "--json",
        report_arg,
    ]);
    assert_eq!(judged.code, Some(0), "{}", judged.stderr);
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let original: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(ROOT).join(CURRENT)).unwrap())
            .unwrap();
    assert_eq!(written["gate"]["passed"], true);
    assert_eq!(written["models"], original["models"]);
}

#[test]
fn a_device_or_fifo_is_refused_as_a_report_or_config_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let fifo = fifo.to_str().unwrap();
    refused(
        &["gate", "/dev/zero", "--max-churn", "0.5"],
        "error: /dev/zero: not a regular file (a character device)",
    );
    refused(
        &["compare", CURRENT, fifo],
        &format!("error: {fifo}: not a regular file (a FIFO)"),
    );
    refused(
        &["run", "--config", "/dev/zero"],
        "error: --config: /dev/zero: not a regular file (a character device)",
    );
}
