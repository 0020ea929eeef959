//! Terminal rendering of a [`Report`].

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};

use super::Report;
use crate::metrics::Prediction;

/// How many flipped examples the terminal shows; the JSON has them all.
const FLIPS_SHOWN: usize = 15;

fn percent(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

fn label(prediction: Prediction) -> String {
    prediction.map_or_else(|| "NaN".to_owned(), |class| class.to_string())
}

fn table(header: Vec<&str>) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(header);
    table
}

pub fn render(report: &Report) -> String {
    let config = &report.config;
    let data = &report.dataset;
    let varied: Vec<&str> = config.vary.iter().map(|source| source.name()).collect();
    let varied = if varied.is_empty() {
        "none".to_owned()
    } else {
        varied.join(", ")
    };
    let mut out = format!(
        "churn-audit {}: {} models on {} ({} train / {} test), varied: {varied}, {} threads, config {}\n",
        report.tool.version,
        report.models.len(),
        data.name,
        data.n_train,
        data.n_test,
        report.execution.intra_op_threads,
        &report.config_sha256[..12],
    );

    let acc = &report.accuracy;
    let churn = &report.churn;
    let repro = &report.reproducibility;
    let mut summary = table(vec!["metric", "value"]);
    summary.add_row(vec![
        "test accuracy".to_owned(),
        format!(
            "{} ± {} (95% CI {} – {}; min {}, max {})",
            percent(acc.mean),
            percent(acc.std),
            percent(acc.ci95.low),
            percent(acc.ci95.high),
            percent(acc.min),
            percent(acc.max)
        ),
    ]);
    summary.add_row(vec![
        "pairwise churn".to_owned(),
        format!(
            "mean {} (95% CI {} – {}; min {}, max {})",
            percent(churn.mean),
            percent(churn.ci95.low),
            percent(churn.ci95.high),
            percent(churn.min),
            percent(churn.max)
        ),
    ]);
    summary.add_row(vec![
        "unstable examples".to_owned(),
        format!(
            "{} of {} ({})",
            report.unstable.count,
            data.n_test,
            percent(report.unstable.share)
        ),
    ]);
    summary.add_row(vec![
        "bitwise reproducible".to_owned(),
        if repro.bitwise_reproducible {
            "yes".to_owned()
        } else {
            format!(
                "no: {} distinct weight hashes, {} distinct prediction hashes",
                repro.distinct_weight_hashes, repro.distinct_prediction_hashes
            )
        },
    ]);
    let variation = &report.variation;
    summary.add_row(vec![
        "accuracy spread".to_owned(),
        format!(
            "std {} vs test-set sampling floor {}; churn / std = {}",
            percent(acc.std),
            percent(variation.accuracy_floor),
            variation
                .churn_to_accuracy_std
                .map_or_else(|| "n/a (std 0)".to_owned(), |ratio| format!("{ratio:.1}"))
        ),
    ]);
    summary.add_row(vec![
        "near-ties".to_owned(),
        format!(
            "{} test examples with a top-2 margin below {:e} in some model",
            variation.near_ties, variation.tie_epsilon
        ),
    ]);
    out += &format!("{summary}\n");

    let mut models = table(vec![
        "model",
        "init seed",
        "data-order seed",
        "dropout seed",
        "accuracy",
        "weights sha256",
        "predictions sha256",
        "seconds",
    ]);
    for model in &report.models {
        let accuracy = if model.unpredictable > 0 {
            format!(
                "{} ({} NaN rows)",
                percent(model.accuracy),
                model.unpredictable
            )
        } else {
            percent(model.accuracy)
        };
        models.add_row(vec![
            model.index.to_string(),
            format!("{:016x}", model.seeds.init),
            format!("{:016x}", model.seeds.data_order),
            format!("{:016x}", model.seeds.dropout),
            accuracy,
            model.weights_sha256[..16].to_owned(),
            model.predictions_sha256[..16].to_owned(),
            format!("{:.2}", model.train_seconds),
        ]);
    }
    out += &format!("{models}\n");

    let n = report.models.len();
    let mut matrix = Table::new();
    matrix
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(std::iter::once("churn".to_owned()).chain((0..n).map(|j| j.to_string())));
    for (i, row) in churn.matrix.iter().enumerate() {
        matrix.add_row(
            std::iter::once(Cell::new(i)).chain(row.iter().enumerate().map(|(j, &value)| {
                Cell::new(if i == j {
                    "-".to_owned()
                } else {
                    percent(value)
                })
                .set_alignment(CellAlignment::Right)
            })),
        );
    }
    out += &format!("{matrix}\n");

    if !report.flips.is_empty() {
        let mut flips = table(vec![
            "test #",
            "id",
            "label",
            "predictions (model 0..)",
            "distinct",
        ]);
        for flip in report.flips.iter().take(FLIPS_SHOWN) {
            flips.add_row(vec![
                flip.position.to_string(),
                flip.id.to_string(),
                flip.label.to_string(),
                flip.predicted
                    .iter()
                    .map(|&p| label(p))
                    .collect::<Vec<_>>()
                    .join(" "),
                flip.distinct_labels.to_string(),
            ]);
        }
        out += &format!("{flips}\n");
        if report.flips.len() > FLIPS_SHOWN {
            out += &format!(
                "... and {} more unstable examples (all of them are in the JSON report)\n",
                report.flips.len() - FLIPS_SHOWN
            );
        }
    }
    out
}
