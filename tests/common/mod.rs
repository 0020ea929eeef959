//! Running the binary and reading its JSON reports, shared by the
//! integration tests (each declares `mod common;`).

// Every test binary compiles its own copy of this module and uses only part
// of it; the rest would be dead-code warnings in that binary.
#![allow(dead_code)]

use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The binary under test, run from the package root (where the tests'
/// relative fixture paths point, also when a test binary is run by hand).
/// $GITHUB_STEP_SUMMARY is the summary of the CI job running the tests: a
/// test that wants one sets its own file, and none writes into the job's.
pub fn churn_audit_command() -> Command {
    let mut command = Command::cargo_bin("churn-audit").unwrap();
    command.current_dir(ROOT).env_remove("GITHUB_STEP_SUMMARY");
    command
}

pub fn churn_audit(args: &[&str]) -> Output {
    churn_audit_command().args(args).output().unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Shows the binary's stderr when the exit code is not `code`.
pub fn assert_exit_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The JSON report `args` write to stdout, exiting with `code`.
pub fn stdout_json(args: &[&str], code: i32) -> Value {
    let output = churn_audit(args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout holds only the JSON report")
}

/// `args` are refused as an input error: exit code 2, `message` as the one
/// line on stderr, and nothing on stdout.
pub fn refused(args: &[&str], message: &str) {
    let output = churn_audit(args);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{args:?}: {}",
        stderr(&output)
    );
    assert_eq!(stderr(&output), format!("{message}\n"), "{args:?}");
    assert!(output.stdout.is_empty(), "{args:?}");
}

pub fn models(report: &Value) -> &[Value] {
    report["models"].as_array().unwrap()
}

/// The string `field` of every model in `report`, in model order.
pub fn model_strings(report: &Value, field: &str) -> Vec<String> {
    models(report)
        .iter()
        .map(|m| m[field].as_str().unwrap().to_owned())
        .collect()
}

/// A model's predicted class per test example (`None` where the report holds `null`).
pub fn predictions(model: &Value) -> Vec<Option<u64>> {
    model["predicted"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::as_u64)
        .collect()
}

pub fn test_labels(report: &Value) -> Vec<u64> {
    report["dataset"]["test_labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap())
        .collect()
}
