//! The HTML report of a digits audit: self-contained, well-formed, and made of
//! the parts the report holds (heatmap cells, one dot per model, one card with
//! an 8×8 picture per flip, drawn from the pixels in the JSON).

mod common;

use std::collections::BTreeMap;

use common::{assert_exit_code, churn_audit, churn_audit_command};
use quick_xml::events::Event;
use quick_xml::{Reader, XmlVersion};
use serde_json::Value;

/// Elements counted by `class` (or by name when they have none), the text of
/// every <title>, and the fill of every picture pixel, from a strict parse.
struct Page {
    classes: BTreeMap<String, usize>,
    titles: Vec<String>,
    picture_fills: Vec<Vec<String>>,
}

fn parse(html: &str) -> Page {
    let mut reader = Reader::from_str(html);
    reader.config_mut().check_end_names = true;
    let mut page = Page {
        classes: BTreeMap::new(),
        titles: Vec::new(),
        picture_fills: Vec::new(),
    };
    let mut in_picture = false;
    let mut in_title = false;
    loop {
        let event = reader.read_event().unwrap();
        match &event {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                let class = e.try_get_attribute("class").unwrap().map(|a| {
                    a.normalized_value(XmlVersion::Explicit1_0)
                        .unwrap()
                        .into_owned()
                });
                *page
                    .classes
                    .entry(class.clone().unwrap_or(name.clone()))
                    .or_default() += 1;
                if class.as_deref() == Some("picture") {
                    in_picture = true;
                    page.picture_fills.push(Vec::new());
                } else if in_picture && name == "rect" {
                    let fill = e.try_get_attribute("fill").unwrap().unwrap();
                    page.picture_fills.last_mut().unwrap().push(
                        fill.normalized_value(XmlVersion::Explicit1_0)
                            .unwrap()
                            .into_owned(),
                    );
                }
                in_title = matches!(event, Event::Start(_)) && name == "title";
            }
            Event::Text(text) if in_title => {
                page.titles.push(text.decode().unwrap().into_owned());
            }
            Event::End(e) => {
                if e.name().as_ref() == b"svg" {
                    in_picture = false;
                }
                in_title = false;
            }
            _ => {}
        }
    }
    page
}

#[test]
fn digits_report_renders_heatmap_strip_plot_and_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let (json, html) = (dir.path().join("r.json"), dir.path().join("r.html"));
    let output = churn_audit_command()
        .args([
            "run",
            "--seeds",
            "3",
            "--epochs",
            "2",
            "--threads",
            "1",
            "--quiet",
            "--min-acc",
            "0.01",
        ])
        .args([
            "--json".as_ref(),
            json.as_os_str(),
            "--html".as_ref(),
            html.as_os_str(),
        ])
        .output()
        .unwrap();
    assert_exit_code(&output, 0);
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let html = std::fs::read_to_string(&html).unwrap();

    // Self-contained: nothing to fetch, nothing to run.
    assert!(!html.contains("http"), "a URL in the page");
    assert!(!html.contains("<script"));
    assert!(!html.contains(" src="));

    let page = parse(&html);
    let flips = report["flips"].as_array().unwrap();
    assert!(!flips.is_empty());
    assert_eq!(page.classes["cell"], 9, "3×3 heatmap");
    assert_eq!(page.classes["model"], 3, "one dot per model");
    assert_eq!(page.classes["flip"], flips.len().min(200));
    assert_eq!(page.classes["picture"], flips.len().min(200));
    assert_eq!(page.classes["gate pass"], 1);
    assert_eq!(page.classes["pass"], 1, "the min-acc verdict");

    let churn = report["churn"]["matrix"][0][1].as_f64().unwrap();
    assert!(
        page.titles
            .contains(&format!("models 0 and 1: {:.2}%", churn * 100.0)),
        "{:?}",
        page.titles
    );
    let accuracy = report["models"][2]["accuracy"].as_f64().unwrap();
    assert!(page
        .titles
        .contains(&format!("model 2: {:.2}%", accuracy * 100.0)));

    // Each picture is the flip's 8×8 pixels from the JSON, dark ink on white.
    for (flip, fills) in flips.iter().zip(&page.picture_fills) {
        let pixels: Vec<f64> = flip["pixels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        assert_eq!(pixels.len(), 64);
        let (low, high) = pixels
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &p| (l.min(p), h.max(p)));
        let expected: Vec<String> = pixels
            .iter()
            .map(|&p| {
                let grey = (255.0 * (1.0 - (p - low) / (high - low))).round();
                format!("rgb({grey},{grey},{grey})")
            })
            .collect();
        assert_eq!(fills, &expected, "flip {}", flip["position"]);
    }
}

#[test]
fn reports_without_pixels_list_flips_without_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("r.html");
    let output = churn_audit(&[
        "gate",
        "fixtures/reports/current.json",
        "--max-churn",
        "0.02",
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let page = parse(&std::fs::read_to_string(&html).unwrap());
    assert_eq!(page.classes.get("picture"), None);
    assert_eq!(page.classes["flip"], 71);
    assert_eq!(page.classes["gate fail"], 1);
    assert_eq!(page.classes["fail"], 1, "the max-churn verdict");
}
