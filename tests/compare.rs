//! `compare` on the hand-made reports of fixtures/reports/ (churn 2% → 3%,
//! accuracy unchanged).

mod common;

use common::{churn_audit_command, stderr, ROOT};
use serde_json::Value;

fn compare(args: &[&str]) -> std::process::Output {
    churn_audit_command()
        .arg("compare")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn churn_up_by_a_point_is_a_regression_and_accuracy_did_not_move() {
    let output = compare(&[
        "fixtures/reports/baseline.json",
        "fixtures/reports/current.json",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let comparisons: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(comparisons.as_array().unwrap().len(), 1);
    let comparison = &comparisons[0];
    let churn = &comparison["metrics"][0];
    assert_eq!(churn["metric"], "mean pairwise churn");
    assert_eq!(churn["verdict"], "regressed");
    assert!((churn["change"].as_f64().unwrap() - 0.01).abs() < 1e-12);
    assert!((churn["relative_change"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    // MOVER: 0.01 ∓ hypot(0.005, 0.004).
    let half = 0.005f64.hypot(0.004);
    assert!((churn["change_ci95"]["low"].as_f64().unwrap() - (0.01 - half)).abs() < 1e-12);
    assert!((churn["change_ci95"]["high"].as_f64().unwrap() - (0.01 + half)).abs() < 1e-12);
    assert_eq!(comparison["metrics"][1]["verdict"], "no-detectable-change");
    assert_eq!(comparison["metrics"][2]["verdict"], "no-detectable-change");

    let table = compare(&[
        "fixtures/reports/baseline.json",
        "fixtures/reports/current.json",
    ]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("│ mean pairwise churn ┆ 2.00% [1.60% – 2.40%]    ┆ 3.00% [2.50% – 3.50%]    ┆ +1.00 pp [+0.36 pp – +1.64 pp] ┆ +50.0%   ┆ regressed "),
        "{table}"
    );
}

#[test]
fn reports_over_different_test_sets_are_refused() {
    let output = compare(&[
        "fixtures/reports/baseline.json",
        "fixtures/reports/other-test-set.json",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        "error: compare: fixtures/reports/baseline.json was measured on test set 874fecfebd0b302ab0d17f769db2ea8892fdd24e840f906d266f69b2c325f692, fixtures/reports/other-test-set.json on f99ed37a3d5603fedc847154f17ee5b80a45f6b5db6501f40f02660644a4287d; reports compare only on the same test set\n"
    );
}

#[test]
fn a_negative_spread_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut report: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/fixtures/reports/current.json")).unwrap(),
    )
    .unwrap();
    report["accuracy"]["std"] = (-0.01).into();
    let path = dir.path().join("negative.json");
    std::fs::write(&path, report.to_string()).unwrap();
    let output = compare(&["fixtures/reports/baseline.json", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        format!(
            "error: {}: inconsistent report: accuracy.std is -0.01, outside [0, 1]\n",
            path.display()
        )
    );
}

#[test]
fn a_short_fingerprint_is_shown_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for fixture in ["baseline", "current"] {
        let mut report: Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{ROOT}/fixtures/reports/{fixture}.json")).unwrap(),
        )
        .unwrap();
        report["dataset"]["test_sha256"] = "abc".into();
        let path = dir.path().join(format!("{fixture}.json"));
        std::fs::write(&path, report.to_string()).unwrap();
        paths.push(path.to_str().unwrap().to_owned());
    }
    let output = compare(&[&paths[0], &paths[1]]);
    assert_eq!(output.status.code(), Some(0));
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("(same test set abc)"), "{table}");
}

#[test]
fn an_incomplete_report_is_noted() {
    let dir = tempfile::tempdir().unwrap();
    let mut report: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/fixtures/reports/current.json")).unwrap(),
    )
    .unwrap();
    report["incomplete"] = serde_json::json!({
        "planned": 5,
        "missing": ["model 3: no artifact", "model 4: no artifact"],
    });
    let path = dir.path().join("partial.json");
    std::fs::write(&path, report.to_string()).unwrap();
    let output = compare(&[
        "fixtures/reports/baseline.json",
        path.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let comparisons: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        comparisons[0]["notes"],
        serde_json::json!([format!(
            "{} is incomplete: 2 of its 5 planned models are missing (see its `incomplete`)",
            path.display()
        )])
    );
}
