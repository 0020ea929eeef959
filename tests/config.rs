//! `--config FILE`: the example in docs/ runs, flags typed on the command line
//! override the file, and a bad file is an input error naming it.

mod common;

use common::{churn_audit_command, model_strings, stdout_json};
use serde_json::Value;

const EXAMPLE: &str = "docs/audit.toml";

fn churn_audit(args: &[&str]) -> (Option<i32>, String, String) {
    let output = churn_audit_command().args(args).output().unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn report(args: &[&str]) -> Value {
    stdout_json(args, 0)
}

#[test]
fn the_example_config_is_the_same_run_as_its_flags() {
    let from_file = report(&["run", "--config", EXAMPLE, "--quiet", "--json", "-"]);
    let typed = report(&[
        "run",
        "--seeds",
        "3",
        "--vary",
        "all",
        "--hidden",
        "64",
        "--epochs",
        "5",
        "--threads",
        "1",
        "--max-churn",
        "0.2",
        "--min-acc",
        "0.5",
        "--quiet",
        "--json",
        "-",
    ]);
    assert_eq!(from_file["config"]["models"], 3);
    assert_eq!(
        from_file["config"]["model"]["hidden"],
        serde_json::json!([64])
    );
    assert_eq!(from_file["config"]["train"]["epochs"], 5);
    assert_eq!(from_file["config_sha256"], typed["config_sha256"]);
    assert_eq!(
        model_strings(&from_file, "weights_sha256"),
        model_strings(&typed, "weights_sha256")
    );
    assert_eq!(from_file["gate"], typed["gate"]);
    let thresholds: Vec<&Value> = from_file["gate"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["threshold"])
        .collect();
    assert_eq!(thresholds, [0.2, 0.5]);
}

#[test]
fn command_line_flags_override_the_file() {
    let report = report(&[
        "run",
        "--config",
        EXAMPLE,
        "--seeds",
        "2",
        "--hidden",
        "32,16",
        "--max-churn",
        "0.9",
        "--inconclusive",
        "pass",
        "--quiet",
        "--json",
        "-",
    ]);
    assert_eq!(report["config"]["models"], 2);
    // Replaced, not appended to the file's [64].
    assert_eq!(
        report["config"]["model"]["hidden"],
        serde_json::json!([32, 16])
    );
    assert_eq!(report["config"]["train"]["epochs"], 5);
    assert_eq!(report["gate"]["checks"][0]["threshold"], 0.9);
}

#[test]
fn gate_takes_the_checks_and_skips_the_training_options() {
    let (code, stdout, stderr) = churn_audit(&[
        "gate",
        "fixtures/reports/current.json",
        "--config",
        EXAMPLE,
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let checks: Vec<&Value> = report["gate"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["check"])
        .collect();
    assert_eq!(checks, ["max-churn", "min-acc"]);
}

#[test]
fn a_bad_file_is_an_input_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "sedes = 3\n",
            "sedes: not an option of any churn-audit command",
        ),
        (
            "seeds = [\"three\", {}]\n",
            "seeds: list items must be numbers or strings",
        ),
        (
            "[seeds]\nn = 3\n",
            "seeds: expected a number, string or list",
        ),
        ("quiet = 1\n", "quiet: expected true or false"),
        ("seeds = true\n", "seeds: expected a number, string or list"),
        (
            "epochs = 3\nseeds =\n",
            "2:8: string values must be quoted, expected literal string",
        ),
    ];
    for (index, (text, message)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{index}.toml"));
        std::fs::write(&path, text).unwrap();
        let (code, stdout, stderr) = churn_audit(&["run", "--config", path.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{text}");
        assert_eq!(stderr, format!("error: {}:{message}\n", path.display()));
        assert_eq!(stdout, "");
    }
    // A value clap refuses names the file it came from.
    let path = dir.path().join("one-seed.toml");
    std::fs::write(&path, "seeds = 1\n").unwrap();
    let (code, _, stderr) = churn_audit(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        format!(
            "error: invalid value '1' for '--seeds <N>': must be at least 2, got 1 (in {})\n",
            path.display()
        )
    );
    let (code, _, stderr) = churn_audit(&["run", "--config", "missing.toml"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        "error: --config: missing.toml: cannot read it: No such file or directory (os error 2)\n"
    );
}
