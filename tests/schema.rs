//! docs/report.schema.json against the reports the tool really writes. Every
//! object in the schema is closed, so a field added to the report without the
//! schema, or one the schema requires and the report lost, fails here.

mod common;

use common::{stdout_json, ROOT};
use serde_json::Value;

/// Two models, one epoch, one thread: a report with every part the schema
/// describes, quickly.
const FAST: &[&str] = &["--seeds", "2", "--epochs", "1", "--threads", "1", "--quiet"];

fn schema() -> Value {
    let text = std::fs::read_to_string(format!("{ROOT}/docs/report.schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn violations(report: &Value) -> Vec<String> {
    violations_of(&schema(), report)
}

fn violations_of(schema: &Value, report: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(schema).expect("the schema compiles");
    validator
        .iter_errors(report)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect()
}

#[test]
fn the_schema_is_a_valid_draft_2020_12_schema() {
    jsonschema::meta::validate(&schema()).unwrap();
}

/// Every object the schema describes lists all its properties as required
/// (except the report's gate, anchor and codistill sections and a flip's
/// pixels, all optional) and admits
/// no others.
#[test]
fn every_object_in_the_schema_is_closed() {
    fn walk(node: &Value, path: &str, objects: &mut usize) {
        match node {
            Value::Object(map) => {
                if let Some(Value::Object(properties)) = map.get("properties") {
                    *objects += 1;
                    assert_eq!(
                        map.get("additionalProperties"),
                        Some(&Value::Bool(false)),
                        "{path}"
                    );
                    let mut required: Vec<&str> = map["required"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r.as_str().unwrap())
                        .collect();
                    match path {
                        "" => required.extend(["gate", "anchor", "codistill", "incomplete"]),
                        "/properties/flips/items" => required.push("pixels"),
                        _ => {}
                    }
                    required.sort_unstable();
                    let mut names: Vec<&str> = properties.keys().map(String::as_str).collect();
                    names.sort_unstable();
                    assert_eq!(required, names, "{path}");
                }
                for (key, child) in map {
                    walk(child, &format!("{path}/{key}"), objects);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, path, objects)),
            _ => {}
        }
    }
    let mut objects = 0;
    walk(&schema(), "", &mut objects);
    // report, tool, config (+data, split, model, train), execution, dataset,
    // model (+seeds), accuracy, churn, unstable, reproducibility, flip, gate
    // (+check), interval: 19; the data source's five formats, the four
    // mitigations, the dataset's two kinds of split and its preprocessing,
    // pair, variation and its decomposition: 15 more; anchor (+its source,
    // model, mean share), codistill (+peer, peer seeds), incomplete: 8 more.
    assert_eq!(objects, 42);
}

#[test]
fn reports_written_by_run_and_gate_match_the_schema() {
    let run = stdout_json(
        &[
            &["run"],
            FAST,
            &[
                "--max-churn",
                "0.9",
                "--max-acc-std",
                "0.5",
                "--min-acc",
                "0.01",
                "--require-reproducible",
                "--inconclusive",
                "pass",
                "--json",
                "-",
            ],
        ]
        .concat(),
        1,
    );
    assert_eq!(run["gate"]["checks"].as_array().unwrap().len(), 4);
    assert_eq!(violations(&run), Vec::<String>::new());

    // Co-distilled, and measured against an anchor (a saved model of the first run).
    let saved = tempfile::tempdir().unwrap();
    let dir = saved.path().to_str().unwrap();
    stdout_json(
        &[&["run"], FAST, &["--save-models", dir, "--json", "-"]].concat(),
        0,
    );
    let anchor = format!("{dir}/model-0.json");
    let mitigated = stdout_json(
        &[
            &["run"],
            FAST,
            &[
                "--mitigate",
                "codistill",
                "--anchor",
                &anchor,
                "--max-churn-vs-anchor",
                "1",
                "--json",
                "-",
            ],
        ]
        .concat(),
        0,
    );
    assert_eq!(mitigated["codistill"]["peers"].as_array().unwrap().len(), 2);
    assert_eq!(mitigated["anchor"]["models"].as_array().unwrap().len(), 2);
    assert_eq!(violations(&mitigated), Vec::<String>::new());

    let gated = stdout_json(
        &[
            "gate",
            "fixtures/reports/current.json",
            "--baseline",
            "fixtures/reports/baseline.json",
            "--max-churn-increase",
            "0.02",
            "--format",
            "json",
        ],
        0,
    );
    assert_eq!(gated["gate"]["passed"], true);
    assert_eq!(violations(&gated), Vec::<String>::new());

    for fixture in ["current", "baseline", "other-test-set"] {
        let text =
            std::fs::read_to_string(format!("{ROOT}/fixtures/reports/{fixture}.json")).unwrap();
        let report: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(violations(&report), Vec::<String>::new(), "{fixture}");
    }
}

#[test]
fn reports_combined_from_artifacts_match_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    stdout_json(
        &[&["run"], FAST, &["--out", out, "--json", "-"]].concat(),
        0,
    );
    let report = stdout_json(&["report", out, "--json", "-"], 0);
    assert_eq!(report["execution"]["mode"], "artifacts");
    assert_eq!(violations(&report), Vec::<String>::new());
}

#[test]
fn an_unknown_or_missing_field_breaks_the_schema() {
    let text = std::fs::read_to_string(format!("{ROOT}/fixtures/reports/current.json")).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();

    let mut added = report.clone();
    added["models"][1]["learning_rate"] = 0.1.into();
    assert_eq!(
        violations(&added),
        ["Additional properties are not allowed ('learning_rate' was unexpected) at /models/1"]
    );

    let mut lost = report.clone();
    lost["churn"].as_object_mut().unwrap().remove("ci95");
    assert_eq!(
        violations(&lost),
        ["\"ci95\" is a required property at /churn"]
    );

    let mut newer = report;
    newer["schema_version"] = 2.into();
    assert_eq!(violations(&newer), ["1 was expected at /schema_version"]);
}

#[test]
fn audit_reports_match_their_schema() {
    let text = std::fs::read_to_string(format!("{ROOT}/docs/audit-report.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let audit = stdout_json(
        &[&["audit"], FAST, &["--require-reproducible", "--json", "-"]].concat(),
        0,
    );
    assert_eq!(violations_of(&schema, &audit), Vec::<String>::new());
    let mut extra = audit.clone();
    extra["groups"][0]["analysis"]["surprise"] = 1.into();
    assert_eq!(
        violations_of(&schema, &extra),
        ["Additional properties are not allowed ('surprise' was unexpected) at /groups/0/analysis"]
    );
}
