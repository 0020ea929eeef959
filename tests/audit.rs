//! Drives `churn-audit audit` on the embedded digits with few epochs.

mod common;

use std::sync::OnceLock;

use common::{assert_exit_code, churn_audit_command, stderr};
use serde_json::Value;

/// One audit (JSON report and table), shared by the tests: it trains 16 models.
fn audit() -> &'static (Value, String) {
    static AUDIT: OnceLock<(Value, String)> = OnceLock::new();
    AUDIT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.json");
        let output = churn_audit_command()
            .args([
                "audit",
                "--seeds",
                "3",
                "--epochs",
                "3",
                "--threads",
                "2",
                "--thread-counts",
                "1,2",
                "--quiet",
                "--json",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert_exit_code(&output, 0);
        let report = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        (report, String::from_utf8(output.stdout).unwrap())
    })
}

fn group<'a>(report: &'a Value, source: &str) -> &'a Value {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["source"] == source)
        .unwrap()
}

fn member_hashes(report: &Value, group: &Value) -> Vec<String> {
    group["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            report["models"][m.as_u64().unwrap() as usize]["weights_sha256"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn audit_attributes_churn_to_each_source() {
    let (report, table) = audit();
    let sources: Vec<&str> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        [
            "control",
            "init",
            "data-order",
            "dropout",
            "data-refresh",
            "threads",
            "kernels",
            "all"
        ]
    );

    let control = group(report, "control");
    assert_eq!(
        control["analysis"]["reproducibility"]["bitwise_reproducible"],
        true
    );
    assert_eq!(control["analysis"]["churn"]["mean"], 0.0);
    // Replicas are retrained, not reused: three distinct models with one hash.
    assert_eq!(control["members"], serde_json::json!([0, 1, 2]));

    for source in ["init", "data-order", "dropout", "data-refresh", "all"] {
        let analysis = &group(report, source)["analysis"];
        assert!(
            analysis["churn"]["mean"].as_f64().unwrap() > 0.0,
            "{source}"
        );
        assert_eq!(
            analysis["reproducibility"]["distinct_weight_hashes"], 3,
            "{source}"
        );
    }
    // Model 0 of a single-source group is the control's model 0, trained once.
    for source in ["init", "data-order", "dropout"] {
        assert_eq!(group(report, source)["members"][0], 0, "{source}");
    }

    let threads = group(report, "threads");
    let hashes = member_hashes(report, threads);
    let counts: Vec<u64> = threads["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            report["models"][m.as_u64().unwrap() as usize]["threads"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(counts, [1, 2, 1]);
    assert_eq!(
        hashes[0], hashes[2],
        "same thread count, same seeds: bitwise equal"
    );
    // Whether two threads round differently from one depends on the CPU and
    // its BLAS (bitwise equal on an Intel Sapphire Rapids, weights apart on an
    // AMD EPYC); what holds everywhere is the documented tolerance, and a churn
    // matrix that is the share of labels the members really disagree on.
    let predicted = |m: &Value| report["models"][m.as_u64().unwrap() as usize]["predicted"].clone();
    let members = threads["members"].as_array().unwrap();
    let (one, two) = (predicted(&members[0]), predicted(&members[1]));
    let (one, two) = (one.as_array().unwrap(), two.as_array().unwrap());
    let differ = one.iter().zip(two).filter(|(a, b)| a != b).count() as f64;
    let churn = &threads["analysis"]["churn"]["matrix"][0][1];
    assert_eq!(churn.as_f64().unwrap(), differ / one.len() as f64);
    assert!(
        differ / (one.len() as f64) <= 0.01,
        "{differ} of {} differ",
        one.len()
    );
    let distinct = hashes
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(
        threads["analysis"]["reproducibility"]["distinct_weight_hashes"],
        distinct
    );

    let kernels = group(report, "kernels");
    assert_eq!(kernels["not_applicable"], "no CUDA device");
    assert_eq!(kernels["analysis"], Value::Null);

    // control 3, init/data-order/dropout 2 new each, data-refresh 3, threads 1
    // new, all 2 new (its model 0 is data-refresh's model 0). The control
    // trains in parallel (one thread per model, bitwise the sequential model
    // with --threads 1), so the threads group's one-thread members are its
    // replicas 0 and 2; only the two-thread member is new.
    assert_eq!(report["models"].as_array().unwrap().len(), 15);
    assert_eq!(report["reused_models"], 6);
    assert_eq!(report["execution"]["mode"], "mixed");
    assert_eq!(hashes[0], member_hashes(report, control)[0]);
    assert_eq!(
        group(report, "all")["members"][0],
        group(report, "data-refresh")["members"][0]
    );
    assert_eq!(report["red_flags"], serde_json::json!([]));

    assert!(
        table.contains("│ kernels      ┆ - ┆ not applicable: no CUDA device"),
        "{table}"
    );
    assert!(table.contains("red flags: none"), "{table}");
}

#[test]
fn audit_statistics_are_consistent_with_the_models() {
    let (report, _) = audit();
    let analysis = &group(report, "init")["analysis"];
    let n_test = report["dataset"]["n_test"].as_f64().unwrap();
    for pair in analysis["pairs"].as_array().unwrap() {
        let churn = pair["churn"].as_f64().unwrap();
        let wilson = &pair["churn_wilson95"];
        assert!(
            wilson["low"].as_f64().unwrap() <= churn && churn <= wilson["high"].as_f64().unwrap()
        );
        assert!(pair["total_variation"].as_f64().unwrap() > 0.0);
        // churn is a whole number of examples out of n_test.
        assert!(((churn * n_test).round() - churn * n_test).abs() < 1e-9);
    }
    let variation = &analysis["variation"];
    assert_eq!(variation["against_first"].as_array().unwrap().len(), 2);
    for counts in variation["against_first"].as_array().unwrap() {
        let total: u64 = counts
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(total as f64, n_test);
    }
    let floor = variation["accuracy_floor"].as_f64().unwrap();
    assert!(floor > 0.0 && floor < 0.05, "{floor}");
    assert_eq!(variation["tie_epsilon"], 1e-6);
}

#[test]
fn audit_gates_the_all_group_and_the_control_group() {
    let run = |checks: &[&str]| {
        churn_audit_command()
            .args([
                "audit",
                "--seeds",
                "2",
                "--epochs",
                "1",
                "--threads",
                "1",
                "--quiet",
                "--json",
                "-",
            ])
            .args(checks)
            .output()
            .unwrap()
    };
    let passing = run(&["--require-reproducible", "--max-churn", "0.9"]);
    assert_exit_code(&passing, 0);
    let report: Value = serde_json::from_slice(&passing.stdout).unwrap();
    assert_eq!(report["gate"]["passed"], true);
    let checks = report["gate"]["checks"].as_array().unwrap();
    // --max-churn judged the `all` group's mean churn and its interval.
    let all = &group(&report, "all")["analysis"]["churn"];
    assert_eq!(checks[0]["measured"], all["mean"]);
    assert_eq!(checks[0]["ci95"], all["ci95"]);
    assert_eq!(
        checks[1]["message"],
        "all 2 models have bitwise identical weights and test logits"
    );

    let dir = tempfile::tempdir().unwrap();
    let markdown = dir.path().join("audit.md");
    let junit = dir.path().join("audit.xml");
    let failing = run(&[
        "--max-churn",
        "0.0001",
        "--markdown",
        markdown.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(failing.status.code(), Some(1));
    let stderr = stderr(&failing);
    assert!(
        stderr.starts_with("check failed: --max-churn 0.0001: mean pairwise churn "),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&failing.stdout).unwrap();
    let markdown = std::fs::read_to_string(markdown).unwrap();
    let lines: Vec<&str> = markdown.lines().collect();
    assert!(
        lines[0].starts_with(
            "## churn-audit 0.1.0 audit: 2 models per group on digits (1438 train / 359 test)"
        ),
        "{markdown}"
    );
    assert_eq!(
        lines[2],
        "**gate: FAILED (1 of 1 checks failed; inconclusive counts as fail)**"
    );
    assert!(lines.contains(&"| control | 2 | 0.00% [0.00% – 0.00%] | 0.00% – 0.00% | 73.82% ± 0.00% | 0.00% | 1 | yes |"), "{markdown}");
    assert!(
        lines.contains(&"| kernels | - | not applicable: no CUDA device |  |  |  |  |  |"),
        "{markdown}"
    );
    assert!(markdown.ends_with("### Red flags\n\nnone (control group bitwise identical; every varied seed changed the models)\n"), "{markdown}");
    let junit = std::fs::read_to_string(junit).unwrap();
    assert!(
        junit.contains(
            r#"<testsuite name="churn-audit gate" tests="1" failures="1" errors="0" skipped="0">"#
        ),
        "{junit}"
    );
    assert!(
        junit.contains(&format!(
            r#"<property name="config_sha256" value="{}"/>"#,
            report["config_sha256"].as_str().unwrap()
        )),
        "{junit}"
    );
    assert!(
        junit.contains(r#"<testcase classname="churn-audit.gate" name="--max-churn 0.0001">"#),
        "{junit}"
    );
}
