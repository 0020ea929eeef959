//! The report as GitHub-flavoured Markdown, for pull-request comments and
//! CI job summaries: the verdicts first, then the same figures as the table.

use super::audit::{AuditReport, ATTRIBUTION_HEADER};
use super::{
    flip_rows, gate_line, headline, model_rows, summary_rows, Report, FLIP_HEADER, MODEL_HEADER,
    VERDICT_HEADER,
};
use crate::gate::{Outcome, Verdicts};

/// A table cell: a `|` would end the cell and a newline the row.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn table<const N: usize>(header: [&str; N], rows: impl IntoIterator<Item = [String; N]>) -> String {
    let mut out = format!("| {} |\n|{}\n", header.join(" | "), " --- |".repeat(N));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|text| cell(text)).collect();
        out += &format!("| {} |\n", cells.join(" | "));
    }
    out
}

/// The gate's bottom line and one row per check.
fn verdicts_section(verdicts: &Verdicts) -> String {
    let mut out = format!("**{}**\n\n", gate_line(verdicts));
    out += &table(
        VERDICT_HEADER,
        verdicts.checks.iter().map(|verdict| {
            let mark = match verdict.outcome {
                Outcome::Pass => "✅",
                Outcome::Fail => "❌",
                Outcome::Inconclusive => "❔",
            };
            [
                format!("`{}`", verdict.invocation()),
                format!("{mark} {}", verdict.outcome.name()),
                verdict.message.clone(),
            ]
        }),
    );
    out + "\n"
}

pub fn render(report: &Report) -> String {
    let mut out = format!("## {}\n\n", headline(report));

    if let Some(verdicts) = &report.gate {
        out += &verdicts_section(verdicts);
    }

    out += &table(["metric", "value"], summary_rows(report));
    out += "\n### Models\n\n";
    out += &table(MODEL_HEADER, model_rows(report));

    let (flips, more) = flip_rows(report);
    if !flips.is_empty() {
        out += "\n### Unstable examples\n\n";
        out += &table(FLIP_HEADER, flips);
    }
    if let Some(more) = more {
        out += &format!("\n{more}\n");
    }
    out
}

/// The audit: its verdicts, the attribution table and the red flags.
pub fn render_audit(report: &AuditReport) -> String {
    let mut out = format!("## {}\n\n", report.headline());
    if let Some(verdicts) = &report.gate {
        out += &verdicts_section(verdicts);
    }
    let rows = report.attribution_rows().into_iter().map(|row| {
        // A group not measured here has a reason in place of its figures.
        let mut cells: [String; ATTRIBUTION_HEADER.len()] = Default::default();
        for (cell, text) in cells.iter_mut().zip(row) {
            *cell = text;
        }
        cells
    });
    out += &table(ATTRIBUTION_HEADER, rows);
    out += "\n### Red flags\n\n";
    if report.red_flags.is_empty() {
        out += &format!("{}\n", super::audit::NO_RED_FLAGS);
    }
    for flag in &report.red_flags {
        out += &format!("- {}\n", cell(flag));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cannot_break_the_table() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        assert_eq!(
            table(["x", "y"], [["1".to_owned(), "|".to_owned()]]),
            "| x | y |\n| --- | --- |\n| 1 | \\| |\n"
        );
    }
}
