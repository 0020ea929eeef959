//! The report as one self-contained HTML page: inline CSS and SVG, no scripts,
//! nothing fetched, so it opens from a CI artifact or an e-mail as it is. It
//! shows the verdicts, the summary, pairwise churn as a heatmap, accuracy per
//! model as a strip plot, and the flips as a gallery in which image datasets
//! show each example's picture with every model's label. The page is also
//! well-formed XML, so tests parse it strictly.

use std::fmt::Write;

use super::audit::{AuditReport, ATTRIBUTION_HEADER};
use super::{
    flip_rows, gate_line, headline, label, model_rows, percent, summary_rows, xml_escape as escape,
    Report, FLIP_HEADER, MODEL_HEADER, VERDICT_HEADER,
};
use crate::metrics::churn::Flip;

/// Cards in the gallery; the JSON report has every flip.
const GALLERY_SHOWN: usize = 200;

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
.pass { color: #1a7f37; } .fail { color: #cf222e; } .inconclusive { color: #9a6700; }
.gate { font-weight: bold; }
svg text { font: 11px system-ui, sans-serif; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.6em; }
.flip { border: 1px solid #ccc; padding: 0.4em; margin: 0; width: 9.5em; }
.flip figcaption { font-size: 12px; }
.wrong { color: #cf222e; font-weight: bold; }
";

pub fn render(report: &Report) -> String {
    page(report, None)
}

/// An audit's page: its attribution table, then its `all` group (every seed
/// varied) shown as a run; `None` when that group was not measured.
pub fn render_audit(audit: &AuditReport) -> Option<String> {
    let mut table =
        "<h2>Where the churn comes from</h2>\n".to_owned() + &table_head(&ATTRIBUTION_HEADER);
    for row in audit.attribution_rows() {
        let _ = write!(table, "<tr class=\"attribution\">");
        for cell in row {
            let _ = write!(table, "<td>{}</td>", escape(&cell));
        }
        table += "</tr>\n";
    }
    table += "</table>\n";
    if audit.red_flags.is_empty() {
        table += "<p class=\"pass\">Red flags: none (control group bitwise identical; every varied seed changed the models).</p>\n";
    }
    for flag in &audit.red_flags {
        let _ = writeln!(table, "<p class=\"fail\">Red flag: {}</p>", escape(flag));
    }
    table += "<h2>All seeds varied</h2>\n";
    Some(page(&audit.all_group_report()?, Some(&table)))
}

fn page(report: &Report, attribution: Option<&str>) -> String {
    let title = escape(&headline(report));
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    );
    if let Some(verdicts) = &report.gate {
        let _ = writeln!(
            out,
            "<p class=\"gate {}\">{}</p>",
            if verdicts.passed { "pass" } else { "fail" },
            escape(&gate_line(verdicts))
        );
        out += &table_head(&VERDICT_HEADER);
        for verdict in &verdicts.checks {
            let outcome = verdict.outcome.name();
            let _ = writeln!(
                out,
                "<tr><td><code>{}</code></td><td class=\"{outcome}\">{outcome}</td><td>{}</td></tr>",
                escape(&verdict.invocation()),
                escape(&verdict.message)
            );
        }
        out += "</table>\n";
    }
    out += attribution.unwrap_or_default();
    out += &table_head(&["metric", "value"]);
    for row in summary_rows(report) {
        out += &table_row(&row);
    }
    out += "</table>\n";

    out += "<h2>Pairwise churn</h2>\n";
    out += &heatmap(report);
    out += "<h2>Test accuracy per model</h2>\n";
    out += &strip_plot(report);
    out += "<h2>Models</h2>\n";
    out += &table_head(&MODEL_HEADER);
    for row in model_rows(report) {
        out += &table_row(&row);
    }
    out += "</table>\n";
    out += &gallery(report);
    out += "</body>\n</html>\n";
    out
}

fn table_head(header: &[&str]) -> String {
    let cells: String = header
        .iter()
        .map(|name| format!("<th>{}</th>", escape(name)))
        .collect();
    format!("<table>\n<tr>{cells}</tr>\n")
}

fn table_row(row: &[String]) -> String {
    let cells: String = row
        .iter()
        .map(|cell| format!("<td>{}</td>", escape(cell)))
        .collect();
    format!("<tr>{cells}</tr>\n")
}

/// White for no churn to dark red for the largest pair, so the pairs that
/// disagree most stand out whatever the overall level.
fn heatmap(report: &Report) -> String {
    const CELL: usize = 44;
    const MARGIN: usize = 24;
    let matrix = &report.analysis.churn.matrix;
    let n = matrix.len();
    let size = MARGIN + n * CELL;
    let max = report.analysis.churn.max.max(f64::MIN_POSITIVE);
    let mut svg = format!(
        "<svg class=\"heatmap\" width=\"{size}\" height=\"{size}\" viewBox=\"0 0 {size} {size}\" role=\"img\" aria-label=\"pairwise churn heatmap\">\n"
    );
    for k in 0..n {
        let centre = MARGIN + k * CELL + CELL / 2;
        let _ = writeln!(
            svg,
            "<text x=\"{centre}\" y=\"16\" text-anchor=\"middle\">{k}</text><text x=\"12\" y=\"{}\" text-anchor=\"middle\">{k}</text>",
            centre + 4
        );
    }
    for (i, row) in matrix.iter().enumerate() {
        for (j, &value) in row.iter().enumerate() {
            let (x, y) = (MARGIN + j * CELL, MARGIN + i * CELL);
            let strength = if i == j { 0.0 } else { value / max };
            let fill = format!(
                "rgb({},{},{})",
                255,
                (255.0 - 231.0 * strength).round() as u8,
                (255.0 - 212.0 * strength).round() as u8
            );
            let text = if i == j {
                "-".to_owned()
            } else {
                short_percent(value)
            };
            let ink = if strength > 0.6 { "#fff" } else { "#222" };
            let _ = writeln!(
                svg,
                "<g><title>models {i} and {j}: {}</title><rect class=\"cell\" x=\"{x}\" y=\"{y}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{fill}\" stroke=\"#fff\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{ink}\">{text}</text></g>",
                percent(value),
                x + CELL / 2,
                y + CELL / 2 + 4
            );
        }
    }
    svg + "</svg>\n"
}

fn short_percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// One dot per model on an accuracy axis, over the mean and its 95% interval.
fn strip_plot(report: &Report) -> String {
    const WIDTH: f64 = 640.0;
    const PAD: f64 = 40.0;
    let acc = &report.analysis.accuracy;
    let low = acc.min.min(acc.ci95.low);
    let high = acc.max.max(acc.ci95.high);
    let span = (high - low).max(1e-4);
    let (low, high) = (low - span * 0.05, high + span * 0.05);
    let x = |value: f64| PAD + (value - low) / (high - low) * (WIDTH - 2.0 * PAD);
    let mut svg = format!(
        "<svg class=\"strip\" width=\"{WIDTH}\" height=\"110\" viewBox=\"0 0 {WIDTH} 110\" role=\"img\" aria-label=\"test accuracy per model\">\n"
    );
    let _ = writeln!(
        svg,
        "<rect class=\"ci\" x=\"{:.1}\" y=\"30\" width=\"{:.1}\" height=\"40\" fill=\"#dbe9f6\"><title>95% CI {} – {}</title></rect>",
        x(acc.ci95.low),
        (x(acc.ci95.high) - x(acc.ci95.low)).max(1.0),
        percent(acc.ci95.low),
        percent(acc.ci95.high)
    );
    let _ = writeln!(
        svg,
        "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"25\" y2=\"75\" stroke=\"#1f5fa8\" stroke-width=\"2\"/><text x=\"{0:.1}\" y=\"20\" text-anchor=\"middle\">mean {1}</text>",
        x(acc.mean),
        percent(acc.mean)
    );
    for model in &report.models {
        // Models often tie on accuracy: a fixed vertical offset per model
        // keeps every dot visible.
        let _ = writeln!(
            svg,
            "<circle class=\"model\" cx=\"{:.1}\" cy=\"{}\" r=\"6\" fill=\"#d1495b\" fill-opacity=\"0.7\"><title>model {}: {}</title></circle>",
            x(model.accuracy),
            38 + (model.index % 5) * 6,
            model.index,
            percent(model.accuracy)
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{PAD}\" x2=\"{}\" y1=\"85\" y2=\"85\" stroke=\"#888\"/><text x=\"{PAD}\" y=\"100\" text-anchor=\"middle\">{}</text><text x=\"{}\" y=\"100\" text-anchor=\"middle\">{}</text>",
        WIDTH - PAD,
        percent(low),
        WIDTH - PAD,
        percent(high)
    );
    svg + "</svg>\n"
}

fn gallery(report: &Report) -> String {
    if report.analysis.flips.is_empty() {
        return "<h2>Unstable examples</h2>\n<p>None: every model predicts the same label on every test example.</p>\n".to_owned();
    }
    let shown = report.analysis.flips.len().min(GALLERY_SHOWN);
    let mut out = format!(
        "<h2>Unstable examples ({shown} of {})</h2>\n<div class=\"gallery\">\n",
        report.analysis.flips.len()
    );
    for flip in report.analysis.flips.iter().take(GALLERY_SHOWN) {
        out += &card(flip, report.dataset.image_shape);
    }
    out += "</div>\n";
    // Without pictures the table says the same more compactly.
    if report.dataset.image_shape.is_none() {
        let (rows, _) = flip_rows(report);
        out += &table_head(&FLIP_HEADER);
        for row in rows {
            out += &table_row(&row);
        }
        out += "</table>\n";
    }
    out
}

fn card(flip: &Flip, shape: Option<(usize, usize)>) -> String {
    let picture = match (shape, &flip.pixels) {
        (Some((height, width)), Some(pixels)) if pixels.len() == height * width => {
            picture(pixels, height, width)
        }
        _ => String::new(),
    };
    let predictions: Vec<String> = flip
        .predicted
        .iter()
        .enumerate()
        .map(|(model, &prediction)| {
            let class = if prediction == Some(flip.label) {
                ""
            } else {
                " class=\"wrong\""
            };
            format!("<span{class}>m{model}: {}</span>", label(prediction))
        })
        .collect();
    format!(
        "<figure class=\"flip\">{picture}<figcaption>test #{} (id {}), label <b>{}</b><br/>{}</figcaption></figure>\n",
        flip.position,
        flip.id,
        flip.label,
        predictions.join(" ")
    )
}

/// Ink on paper: each pixel's grey level scaled by the picture's own range,
/// so standardised features draw as well as raw intensities.
fn picture(pixels: &[f32], height: usize, width: usize) -> String {
    const SCALE: usize = 8;
    let (low, high) = pixels
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let range = (high - low).max(f32::MIN_POSITIVE);
    let mut svg = format!(
        "<svg class=\"picture\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {width} {height}\" shape-rendering=\"crispEdges\">",
        width * SCALE,
        height * SCALE
    );
    for (index, &value) in pixels.iter().enumerate() {
        let grey = pixel_grey(value, low, range);
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"1\" height=\"1\" fill=\"rgb({grey},{grey},{grey})\"/>",
            index % width,
            index / width
        );
    }
    svg + "</svg>"
}

fn pixel_grey(value: f32, low: f32, range: f32) -> u8 {
    (255.0 * (1.0 - (value - low) / range)).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_are_dark_ink_on_white() {
        assert_eq!(pixel_grey(0.0, 0.0, 1.0), 255);
        assert_eq!(pixel_grey(1.0, 0.0, 1.0), 0);
        assert_eq!(pixel_grey(0.5, 0.0, 1.0), 128);
        // A blank picture stays white rather than dividing by zero.
        let blank = picture(&[0.0; 4], 2, 2);
        assert_eq!(blank.matches("rgb(255,255,255)").count(), 4);
    }
}
