//! Drives the binary on the embedded digits with few epochs.

mod common;

use churn_audit::randomness::{derive_seed, Stream};
use common::{
    assert_exit_code, churn_audit, model_strings, models, predictions, refused, stderr,
    stdout_json, test_labels,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

const FAST: &[&str] = &["run", "--epochs", "3", "--threads", "1", "--quiet"];

/// A fast `run` with `extra` arguments.
fn fast_run(extra: &[&str]) -> std::process::Output {
    churn_audit(&[FAST, extra].concat())
}

fn report(extra: &[&str]) -> Value {
    stdout_json(&[FAST, extra, &["--json", "-"]].concat(), 0)
}

#[test]
fn every_source_fixed_gives_identical_models_and_zero_churn() {
    let report = report(&["--seeds", "3", "--vary", "none"]);
    assert_eq!(report["churn"]["mean"], 0.0);
    assert_eq!(report["churn"]["max"], 0.0);
    assert_eq!(report["unstable"]["count"], 0);
    assert_eq!(report["reproducibility"]["bitwise_reproducible"], true);
    let weights = model_strings(&report, "weights_sha256");
    assert!(weights.iter().all(|w| w == &weights[0]), "{weights:?}");
    let predictions = model_strings(&report, "predictions_sha256");
    assert!(predictions.iter().all(|p| p == &predictions[0]));
}

#[test]
fn varying_only_init_gives_churn_and_keeps_other_seeds() {
    let report = report(&["--seeds", "3", "--vary", "init"]);
    assert!(report["churn"]["mean"].as_f64().unwrap() > 0.0);
    assert_eq!(report["reproducibility"]["distinct_weight_hashes"], 3);
    let models = report["models"].as_array().unwrap();
    for model in models {
        assert_eq!(
            model["seeds"]["data_order"],
            models[0]["seeds"]["data_order"]
        );
        assert_eq!(model["seeds"]["dropout"], models[0]["seeds"]["dropout"]);
        assert_eq!(model["data_order_sha256"], models[0]["data_order_sha256"]);
    }
    assert_ne!(models[1]["seeds"]["init"], models[0]["seeds"]["init"]);
}

#[test]
fn a_fixed_source_uses_model_zero_seed() {
    // Model 0 is the same model whether or not the others vary.
    let fixed = report(&["--seeds", "2", "--vary", "none"]);
    let varied = report(&["--seeds", "2", "--vary", "init,data-order,dropout"]);
    assert_eq!(
        fixed["models"][0]["weights_sha256"],
        varied["models"][0]["weights_sha256"]
    );
    assert_ne!(
        fixed["models"][1]["weights_sha256"],
        varied["models"][1]["weights_sha256"]
    );
}

/// The data order is the stream's own output: sha256 over every epoch's
/// permutation, recomputed here from the documented derivation.
fn expected_order_hash(base_seed: u64, model: u64, n_train: usize, epochs: usize) -> String {
    let mut stream = Stream::new(derive_seed(base_seed, "data-order", model));
    let mut hasher = Sha256::new();
    for _ in 0..epochs {
        for index in stream.permutation(n_train) {
            hasher.update(index.to_le_bytes());
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn hidden_width_does_not_move_the_data_order() {
    let narrow = report(&["--seeds", "2", "--hidden", "16"]);
    let deep = report(&["--seeds", "2", "--hidden", "64,32", "--dropout", "0.5"]);
    assert_eq!(
        model_strings(&narrow, "data_order_sha256"),
        model_strings(&deep, "data_order_sha256")
    );
    assert_ne!(
        model_strings(&narrow, "weights_sha256"),
        model_strings(&deep, "weights_sha256")
    );
    let n_train = narrow["dataset"]["n_train"].as_u64().unwrap() as usize;
    assert_eq!(n_train, 1438);
    let order = model_strings(&narrow, "data_order_sha256");
    assert_eq!(order[0], expected_order_hash(0, 0, n_train, 3));
    assert_eq!(order[1], expected_order_hash(0, 1, n_train, 3));
}

#[test]
fn json_churn_figures_recompute_from_its_own_predictions() {
    let report = report(&["--seeds", "4"]);
    let labels = test_labels(&report);
    let predicted: Vec<_> = models(&report).iter().map(predictions).collect();
    let n = labels.len() as f64;
    let matrix = report["churn"]["matrix"].as_array().unwrap();
    let mut pairs = Vec::new();
    for i in 0..4 {
        for j in 0..4 {
            let differing = (0..labels.len())
                .filter(|&e| predicted[i][e].is_none() || predicted[i][e] != predicted[j][e])
                .count();
            let expected = if i == j { 0.0 } else { differing as f64 / n };
            assert_eq!(matrix[i][j].as_f64().unwrap(), expected, "pair {i},{j}");
            if i < j {
                pairs.push(expected);
            }
        }
    }
    assert_eq!(
        report["churn"]["mean"].as_f64().unwrap(),
        pairs.iter().sum::<f64>() / pairs.len() as f64
    );
    for (k, model) in report["models"].as_array().unwrap().iter().enumerate() {
        let correct = (0..labels.len())
            .filter(|&e| predicted[k][e] == Some(labels[e]))
            .count();
        assert_eq!(model["accuracy"].as_f64().unwrap(), correct as f64 / n);
    }
    let unstable = (0..labels.len())
        .filter(|&e| (1..4).any(|k| predicted[k][e] != predicted[0][e]))
        .count();
    assert_eq!(
        report["unstable"]["count"].as_u64().unwrap() as usize,
        unstable
    );
    assert_eq!(report["flips"].as_array().unwrap().len(), unstable);
}

#[test]
fn report_records_schema_split_and_pinned_fingerprints() {
    let report = report(&["--seeds", "2"]);
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["config"]["threads"], 1);
    assert_eq!(report["execution"]["intra_op_threads"], 1);
    assert_eq!(report["config"]["data"]["split"]["test_fraction"], 0.2);
    assert_eq!(report["dataset"]["n_test"], 359);
    // The split and decoding are pure Rust, so these hold on every machine.
    assert_eq!(
        report["dataset"]["test_sha256"],
        "874fecfebd0b302ab0d17f769db2ea8892fdd24e840f906d266f69b2c325f692"
    );
    assert_eq!(
        report["dataset"]["train_sha256"],
        "3746663f976e189564a66265a0a6f2cb7f5e1786207785e258737f1fd0c32270"
    );
    // Classes named by their index "0".."9" (docs/data.md, label map).
    assert_eq!(
        report["dataset"]["label_map_sha256"],
        "95bbd6fc787968aaa2a96a53d680316199f6963ca2a43bc2bc4c475750076ab6"
    );
    assert_eq!(report["dataset"]["split"]["kind"], "stratified");
    assert_eq!(report["dataset"]["preprocessing"]["pixels_divided_by"], 16);
}

#[test]
fn reruns_are_bitwise_identical() {
    let first = report(&["--seeds", "2"]);
    let second = report(&["--seeds", "2"]);
    assert_eq!(
        model_strings(&first, "weights_sha256"),
        model_strings(&second, "weights_sha256")
    );
    assert_eq!(
        model_strings(&first, "predictions_sha256"),
        model_strings(&second, "predictions_sha256")
    );
    assert_eq!(first["config_sha256"], second["config_sha256"]);
}

#[test]
fn table_output_names_the_verdicts() {
    let output = fast_run(&["--seeds", "2", "--vary", "none"]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("│ bitwise reproducible ┆ yes"), "{stdout}");
    assert!(
        stdout.contains("mean 0.00% (95% CI 0.00% – 0.00%; min 0.00%, max 0.00%)"),
        "{stdout}"
    );
}

#[test]
fn bad_flags_are_one_line_errors_with_exit_code_2() {
    refused(
        &["run", "--seeds", "1"],
        "error: invalid value '1' for '--seeds <N>': must be at least 2, got 1",
    );
    refused(
        &["run", "--seeds", "-1"],
        "error: invalid value '-1' for '--seeds <N>': must be at least 2, got -1",
    );
    refused(
        &["run", "--seeds", "1000000000000000000"],
        "error: invalid value '1000000000000000000' for '--seeds <N>': must be at most 256, got 1000000000000000000",
    );
    refused(
        &["run", "--epochs", "0"],
        "error: invalid value '0' for '--epochs <N>': must be at least 1, got 0",
    );
    refused(
        &["run", "--vary", "init,weights"],
        "error: invalid value 'init,weights' for '--vary <SOURCES>': unknown source 'weights' (expected init, data-order, dropout, data-refresh, all or none)",
    );
    refused(
        &["run", "--bogus"],
        "error: unexpected argument '--bogus' found",
    );
    refused(
        &["run", "--seed", "5"],
        "error: unexpected argument '--seed' found (tip: a similar argument exists: '--seeds')",
    );
    refused(
        &["run", "--dropout", "1.5"],
        "error: invalid value '1.5' for '--dropout <P>': must be in [0, 1), got 1.5",
    );
    refused(
        &["run", "--dropout", "-0.2"],
        "error: invalid value '-0.2' for '--dropout <P>': must be in [0, 1), got -0.2",
    );
    refused(
        &["run", "--lr", "3e38"],
        "error: invalid value '3e38' for '--lr <RATE>': must be above 0 and at most 1e30, got 3e38",
    );
    refused(
        &["run", "--threads", "100000"],
        "error: invalid value '100000' for '--threads <N>': must be at most 256, got 100000",
    );
    refused(
        &["run", "--hidden", "60000,60000"],
        "error: --hidden: the model would have 3604560010 parameters; the limit is 50000000",
    );
    refused(
        &["run", "--device", "cuda:7"],
        "error: --device: cuda:7 is not available: this machine has 0 CUDA devices",
    );
    refused(
        &["run", "--json", "/nonexistent-dir/report.json"],
        "error: --json: directory /nonexistent-dir does not exist",
    );
    refused(&["run", "--json", "/"], "error: --json: / is a directory");
    refused(
        &[],
        "error: a subcommand is required (run, audit, gate, compare, plan, train or report); see 'churn-audit --help'",
    );
}

#[test]
fn entropy_weight_without_the_entropy_mitigation_is_refused() {
    refused(
        &["run", "--entropy-weight", "0.5"],
        "error: --entropy-weight: applies only with --mitigate entropy",
    );
}

#[test]
fn diverging_training_exits_3_naming_model_and_step() {
    let output = fast_run(&["--seeds", "2", "--lr", "1e30"]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        stderr(&output),
        "error: training model 0 failed at step 45: loss became NaN\n"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn a_failed_run_keeps_the_previous_report() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    std::fs::write(&path, "previous").unwrap();
    let output = fast_run(&[
        "--seeds",
        "2",
        "--lr",
        "1e30",
        "--json",
        path.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "previous");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file left behind"
    );
}

#[test]
fn data_refresh_gives_each_model_its_own_subsample() {
    let report = report(&["--seeds", "2", "--vary", "data-refresh"]);
    let models = report["models"].as_array().unwrap();
    assert_eq!(models[0]["refresh_fraction"], 0.9);
    // 1438 training rows, 90% kept: 1294 rows, 41 batches of 32 per epoch.
    assert_eq!(models[0]["steps"], 3 * 41);
    assert_eq!(models[0]["seeds"]["init"], models[1]["seeds"]["init"]);
    assert_ne!(
        models[0]["data_order_sha256"],
        models[1]["data_order_sha256"]
    );
    assert!(report["churn"]["mean"].as_f64().unwrap() > 0.0);
    let full = self::report(&["--seeds", "2"]);
    assert_eq!(full["models"][0]["refresh_fraction"], Value::Null);
    assert_eq!(full["models"][0]["steps"], 3 * 45);
}

#[test]
fn entropy_mitigation_changes_training_and_is_recorded() {
    let baseline = report(&["--seeds", "2"]);
    let zero = report(&[
        "--seeds",
        "2",
        "--mitigate",
        "entropy",
        "--entropy-weight",
        "0",
    ]);
    let entropy = report(&["--seeds", "2", "--mitigate", "entropy"]);
    // β = 0 adds exact zeros to the loss and its gradient.
    assert_eq!(
        model_strings(&zero, "weights_sha256"),
        model_strings(&baseline, "weights_sha256")
    );
    assert_ne!(
        model_strings(&entropy, "weights_sha256"),
        model_strings(&baseline, "weights_sha256")
    );
    assert_eq!(
        entropy["config"]["train"]["mitigation"],
        serde_json::json!({"kind": "entropy", "weight": 0.1})
    );
    assert_eq!(
        baseline["config"]["train"]["mitigation"],
        serde_json::json!({"kind": "none"})
    );
    assert_ne!(entropy["config_sha256"], baseline["config_sha256"]);
}

#[test]
fn json_through_a_symlink_writes_the_target_and_keeps_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.json");
    let link = dir.path().join("link.json");
    std::fs::write(&target, "old").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let output = fast_run(&["--seeds", "2", "--json", link.to_str().unwrap()]);
    assert!(output.status.success());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&target).unwrap()).unwrap();
    assert_eq!(report["schema_version"], 1);
}

#[test]
fn json_to_a_device_is_written_in_place() {
    let output = fast_run(&["--seeds", "2", "--json", "/dev/stdout"]);
    assert_exit_code(&output, 0);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("{\n  \"schema_version\": 1"), "{stdout}");
    assert!(std::fs::metadata("/dev/stdout").is_ok());
}

#[test]
fn refresh_fractions_that_keep_all_or_nothing_are_refused() {
    refused(
        &["run", "--vary", "data-refresh", "--refresh-fraction", "0.9999"],
        "error: --refresh-fraction: 0.9999 keeps 1438 of the 1438 training examples; it must keep some but not all",
    );
    refused(
        &["audit", "--refresh-fraction", "0.0001"],
        "error: --refresh-fraction: 0.0001 keeps 0 of the 1438 training examples; it must keep some but not all",
    );
    refused(
        &["run", "--json", "keep.json/"],
        "error: --json: keep.json/ is a directory",
    );
}

#[test]
fn csv_with_a_test_file_records_split_and_preprocessing() {
    let report = report(&[
        "--seeds",
        "2",
        "--data",
        "csv:fixtures/small.csv",
        "--test",
        "fixtures/small-test.csv",
        "--standardize",
        "--model",
        "linear",
    ]);
    let dataset = &report["dataset"];
    assert_eq!(dataset["name"], "csv:fixtures/small.csv");
    assert_eq!(dataset["n_train"], 10);
    assert_eq!(dataset["n_test"], 3);
    assert_eq!(dataset["split"]["kind"], "source-test-set");
    assert_eq!(dataset["preprocessing"]["standardize"], true);
    assert_eq!(dataset["preprocessing"]["pixels_divided_by"], Value::Null);
    assert_eq!(report["config"]["model"]["kind"], "linear");
    assert_eq!(report["config"]["model"]["hidden"], serde_json::json!([]));
    // The linear model is one layer: 3 inputs × 3 classes.
    assert_eq!(
        report["models"][0]["predicted"].as_array().unwrap().len(),
        3
    );
}

#[test]
fn cnn_trains_on_image_data_reproducibly() {
    let args = [
        "--seeds",
        "2",
        "--data",
        "idx:fixtures/idx",
        "--model",
        "cnn",
    ];
    let first = report(&args);
    assert_eq!(first["dataset"]["image_shape"], serde_json::json!([4, 4]));
    assert_eq!(first["dataset"]["preprocessing"]["pixels_divided_by"], 255);
    assert_eq!(first["dataset"]["split"]["kind"], "source-test-set");
    assert_eq!(first["reproducibility"]["distinct_weight_hashes"], 2);
    let second = report(&args);
    assert_eq!(
        model_strings(&first, "weights_sha256"),
        model_strings(&second, "weights_sha256")
    );
}
