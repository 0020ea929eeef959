//! Progress on stderr when it is not a terminal (as here and in CI): one line
//! per finished model, none with --quiet, and never anything on stdout but
//! the report.

mod common;

use common::{churn_audit_command, stderr};

fn stderr_of(extra: &[&str]) -> String {
    let output = churn_audit_command()
        .args([
            "run",
            "--seeds",
            "3",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--format",
            "json",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(output.status.success());
    serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("stdout is only JSON");
    stderr(&output)
}

#[test]
fn one_line_per_model_when_stderr_is_a_log() {
    let stderr = stderr_of(&[]);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    for (k, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with(&format!("model {k}: accuracy "))
                && line.ends_with(&format!(" s ({}/3 trained)", k + 1)),
            "{line}"
        );
    }
    assert_eq!(stderr_of(&["--quiet"]), "");
}

#[test]
fn lines_count_finished_models_whatever_order_they_finish_in() {
    let stderr = stderr_of(&["--seeds", "6", "--threads", "3", "--epochs", "4"]);
    let mut indices: Vec<usize> = Vec::new();
    for (k, line) in stderr.lines().enumerate() {
        assert!(
            line.ends_with(&format!(" s ({}/6 trained)", k + 1)),
            "{stderr}"
        );
        let index = line["model ".len()..line.find(':').unwrap()]
            .parse()
            .unwrap();
        indices.push(index);
    }
    indices.sort();
    assert_eq!(indices, [0, 1, 2, 3, 4, 5], "{stderr}");
}
