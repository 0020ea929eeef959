//! The gate's verdicts as JUnit XML, the test-report format CI systems
//! (GitLab, Jenkins, GitHub test reporters) ingest: one testcase per check.

use super::Report;
use crate::gate::{InconclusivePolicy, Outcome, Verdicts};

/// Escapes text for XML content and attribute values alike. Characters XML
/// 1.0 forbids (most control characters) become U+FFFD, since no escape can
/// carry them; line breaks become character references so attributes keep them.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

pub fn render(report: &Report, verdicts: &Verdicts) -> String {
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
        ("config_sha256", &report.config_sha256),
        ("test_sha256", &report.dataset.test_sha256),
        ("tool_version", &report.tool.version),
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

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_markup_quotes_and_forbidden_characters() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>\n\u{1}é"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;&#10;\u{FFFD}é"
        );
    }
}
