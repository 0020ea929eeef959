//! The gate commands of docs/ci.md, run as written: the job fails on a report
//! whose churn is above the threshold and passes on one below it.

use std::process::Command;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BINARY: &str = "target/release/churn-audit";

/// Every documented `subcommand` command line, from `target/release/churn-audit`
/// to the end of its line.
fn documented(subcommand: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(format!("{ROOT}/docs/ci.md")).unwrap();
    doc.lines()
        .filter_map(|line| {
            let start = line.find(&format!("{BINARY} {subcommand} "))?;
            Some(line[start..].to_owned())
        })
        .collect()
}

/// A directory where `target/release/churn-audit` is the binary under test.
fn job_directory() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_churn-audit"), dir.path().join(BINARY)).unwrap();
    dir
}

#[test]
fn documented_audits_write_the_report_the_gates_read() {
    let runs = documented("run");
    assert_eq!(runs.len(), 2, "{runs:?}");
    for run in &runs {
        let dir = job_directory();
        // One epoch instead of the default forty: the flags are what is checked.
        let output = Command::new("sh")
            .args(["-c", &format!("{run} --epochs 1")])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{run}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("churn-report.json")).unwrap())
                .unwrap();
        assert_eq!(report["models"].as_array().unwrap().len(), 5);
    }
}

/// The hand-made report with its mean churn set to `churn` ± 0.5 pp and an
/// accuracy clear of every documented minimum, so churn alone decides.
fn report_with_churn(churn: f64) -> String {
    let text = std::fs::read_to_string(format!("{ROOT}/fixtures/reports/current.json")).unwrap();
    let mut report: Value = serde_json::from_str(&text).unwrap();
    report["churn"]["mean"] = churn.into();
    report["churn"]["ci95"] = serde_json::json!({"low": churn - 0.005, "high": churn + 0.005});
    report["accuracy"]["mean"] = 0.97.into();
    report["accuracy"]["ci95"] = serde_json::json!({"low": 0.96, "high": 0.98});
    report.to_string()
}

#[test]
fn documented_gates_fail_above_the_threshold_and_pass_below() {
    let gates = documented("gate");
    assert_eq!(gates.len(), 2, "one GitHub and one GitLab gate: {gates:?}");
    for gate in &gates {
        assert!(gate.contains("--max-churn 0.02"), "{gate}");
        for (churn, code, verdict) in [(0.03, 1, "FAILED"), (0.01, 0, "PASSED")] {
            let dir = job_directory();
            std::fs::write(
                dir.path().join("churn-report.json"),
                report_with_churn(churn),
            )
            .unwrap();
            let summary = dir.path().join("step-summary.md");
            let output = Command::new("sh")
                .args(["-c", gate])
                .current_dir(dir.path())
                .env("GITHUB_STEP_SUMMARY", &summary)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(code),
                "{gate} at churn {churn}: {stderr}"
            );
            let junit = std::fs::read_to_string(dir.path().join("churn-gate.xml")).unwrap();
            assert!(
                junit.contains(&format!("tests=\"2\" failures=\"{code}\"")),
                "{junit}"
            );
            // The Markdown summary goes to the step summary (GitHub) or a file (GitLab).
            let markdown = if gate.contains("--github-summary") {
                std::fs::read_to_string(&summary).unwrap()
            } else {
                std::fs::read_to_string(dir.path().join("churn-summary.md")).unwrap()
            };
            assert!(
                markdown.contains(&format!("**gate: {verdict} ")),
                "{markdown}"
            );
        }
    }
}
