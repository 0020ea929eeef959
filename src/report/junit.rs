//! The gate's verdicts as JUnit XML, the test-report format CI systems
//! (GitLab, Jenkins, GitHub test reporters) ingest: one testcase per check.

use super::{xml_escape as escape, DatasetInfo, ToolInfo};
use crate::gate::{InconclusivePolicy, Outcome, Verdicts};

/// The verdicts on a run or audit report, whose config, test set and tool
/// version are the suite's properties.
pub fn render(
    config_sha256: &str,
    dataset: &DatasetInfo,
    tool: &ToolInfo,
    verdicts: &Verdicts,
) -> String {
    let tests = verdicts.checks.len();
    let failures = verdicts
        .checks
        .iter()
        .filter(|v| v.counts_as_failure(verdicts.inconclusive))
        .count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out += &format!(
        "<testsuites name=\"churn-audit\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\">\n"
    );
    out += &format!(
        "  <testsuite name=\"churn-audit gate\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\">\n"
    );
    out += "    <properties>\n";
    for (name, value) in [
        ("config_sha256", config_sha256),
        ("test_sha256", &dataset.test_sha256),
        ("tool_version", &tool.version),
    ] {
        out += &format!(
            "      <property name=\"{name}\" value=\"{}\"/>\n",
            escape(value)
        );
    }
    out += "    </properties>\n";
    for verdict in &verdicts.checks {
        let name = escape(&verdict.invocation());
        let message = escape(&verdict.message);
        out += &format!("    <testcase classname=\"churn-audit.gate\" name=\"{name}\"");
        let body = match (verdict.outcome, verdicts.inconclusive) {
            (Outcome::Pass, _) => None,
            (Outcome::Fail, _) => Some(format!(
                "<failure type=\"fail\" message=\"{message}\">{message}</failure>"
            )),
            (Outcome::Inconclusive, InconclusivePolicy::Fail) => Some(format!(
                "<failure type=\"inconclusive\" message=\"{message}\">inconclusive, counted as failed (--inconclusive fail): {message}</failure>"
            )),
            (Outcome::Inconclusive, InconclusivePolicy::Pass) => Some(format!(
                "<system-out>inconclusive, counted as passed (--inconclusive pass): {message}</system-out>"
            )),
        };
        match body {
            None => out += "/>\n",
            Some(body) => out += &format!(">\n      {body}\n    </testcase>\n"),
        }
    }
    out += "  </testsuite>\n</testsuites>\n";
    out
}
