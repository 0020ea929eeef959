//! Terminal rendering of a [`Report`].

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};

use super::{
    flip_rows, gate_line, headline, model_rows, percent, summary_rows, Report, FLIP_HEADER,
    MODEL_HEADER, VERDICT_HEADER,
};

fn table(header: impl IntoIterator<Item = impl Into<Cell>>) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(header);
    table
}

pub fn render(report: &Report) -> String {
    let mut out = headline(report) + "\n";

    if let Some(verdicts) = &report.gate {
        let mut checks = table(VERDICT_HEADER);
        for verdict in &verdicts.checks {
            checks.add_row([
                verdict.invocation(),
                verdict.outcome.name().to_owned(),
                verdict.message.clone(),
            ]);
        }
        out += &format!("{checks}\n{}\n", gate_line(verdicts));
    }

    let mut summary = table(["metric", "value"]);
    summary.add_rows(summary_rows(report));
    out += &format!("{summary}\n");

    let mut models = table(MODEL_HEADER);
    models.add_rows(model_rows(report));
    out += &format!("{models}\n");

    // Labelled by each model's index, which has gaps in a report combined
    // from a run directory that lacks some planned models.
    let labels: Vec<String> = report.models.iter().map(|m| m.index.to_string()).collect();
    let mut matrix = table(std::iter::once("churn".to_owned()).chain(labels.iter().cloned()));
    for (i, row) in report.analysis.churn.matrix.iter().enumerate() {
        matrix.add_row(
            std::iter::once(Cell::new(&labels[i])).chain(row.iter().enumerate().map(
                |(j, &value)| {
                    Cell::new(if i == j {
                        "-".to_owned()
                    } else {
                        percent(value)
                    })
                    .set_alignment(CellAlignment::Right)
                },
            )),
        );
    }
    out += &format!("{matrix}\n");

    let (flips, more) = flip_rows(report);
    if !flips.is_empty() {
        let mut table = table(FLIP_HEADER);
        table.add_rows(flips);
        out += &format!("{table}\n");
    }
    if let Some(more) = more {
        out += &format!("{more}\n");
    }
    out
}
