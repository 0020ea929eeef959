//! Co-distillation, saved models and anchors, on the embedded digits with few
//! epochs and one thread.

mod common;

use clap::Parser;
use serde_json::Value;

use churn_audit::cli::{Cli, Command as Sub};
use churn_audit::config::RunConfig;
use churn_audit::data;
use churn_audit::train::{train_codistilled, train_model, TrainData};
use common::{
    assert_exit_code, churn_audit, model_strings, predictions, stderr, stdout_json, test_labels,
};

const FAST: &[&str] = &["run", "--epochs", "3", "--threads", "1", "--quiet"];

/// A fast run's JSON report; it must succeed.
fn report(extra: &[&str]) -> Value {
    stdout_json(&[FAST, extra, &["--json", "-"]].concat(), 0)
}

fn churn(a: &[Option<u64>], b: &[Option<u64>]) -> f64 {
    let differing = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.is_none() || x != y)
        .count();
    differing as f64 / a.len() as f64
}

fn config(args: &[&str]) -> RunConfig {
    let argv = [&["churn-audit", "run"][..], args].concat();
    let Sub::Run(args) = Cli::parse_from(argv).command else {
        unreachable!()
    };
    RunConfig::from_args(&args).unwrap()
}

#[test]
fn codistill_at_alpha_zero_trains_each_member_as_if_alone() {
    let config = config(&[
        "--epochs",
        "2",
        "--threads",
        "1",
        "--mitigate",
        "codistill",
        "--alpha",
        "0",
        "--codistill-k",
        "3",
    ]);
    let prepared = data::load(&config.data).unwrap();
    let tensors = TrainData::new(&prepared.split, tch::Device::Cpu).unwrap();
    let first = config.model_spec(&config.vary, 1, 1);
    let members: Vec<_> = (0..3)
        .map(|j| churn_audit::train::ModelSpec {
            seeds: first.seeds.codistill_member(j),
            ..first.clone()
        })
        .collect();
    let together = train_codistilled(
        0,
        &members,
        &tensors,
        &config.model,
        &config.train,
        &mut || {},
    )
    .unwrap();
    let alone: Vec<String> = members
        .iter()
        .map(|spec| {
            train_model(
                0,
                spec,
                &tensors,
                &config.model,
                &config.train,
                None,
                &mut || {},
            )
            .unwrap()
            .result
            .weights_sha256
        })
        .collect();
    let together: Vec<String> = together
        .into_iter()
        .map(|m| m.result.weights_sha256)
        .collect();
    assert_eq!(together, alone);
    // Three different models, not one trained thrice.
    assert_ne!(alone[0], alone[1]);
    assert_ne!(alone[1], alone[2]);
}

#[test]
fn codistill_reports_churn_between_and_within_runs() {
    let baseline = report(&["--seeds", "3"]);
    let zero = report(&["--seeds", "3", "--mitigate", "codistill", "--alpha", "0"]);
    // Each run's first member is the model the baseline trains.
    assert_eq!(
        model_strings(&zero, "weights_sha256"),
        model_strings(&baseline, "weights_sha256")
    );
    let mixed = report(&["--seeds", "3", "--mitigate", "codistill", "--alpha", "0.5"]);
    assert_ne!(
        model_strings(&mixed, "weights_sha256"),
        model_strings(&baseline, "weights_sha256")
    );
    let codistill = &mixed["codistill"];
    assert_eq!(codistill["k"], 2);
    let peers = codistill["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 3);
    for (run, peer) in peers.iter().enumerate() {
        assert_eq!(peer["run"], run);
        assert_eq!(peer["member"], 1);
        let first = predictions(&mixed["models"][run]);
        let within = churn(&first, &predictions(peer));
        assert_eq!(codistill["per_run"][run].as_f64().unwrap(), within);
    }
    let mean: f64 = (0..3)
        .map(|r| codistill["per_run"][r].as_f64().unwrap())
        .sum::<f64>()
        / 3.0;
    assert!((codistill["within_run_churn"]["mean"].as_f64().unwrap() - mean).abs() < 1e-15);
    assert!(baseline.get("codistill").is_none());
}

/// Saves two models into a temporary directory and returns it with the report.
fn saved_models() -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let saved = report(&[
        "--seeds",
        "2",
        "--base-seed",
        "9",
        "--save-models",
        dir.path().to_str().unwrap(),
    ]);
    (dir, saved)
}

#[test]
fn saved_models_and_their_predictions_anchor_alike() {
    let (dir, saved) = saved_models();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let sidecar: Value =
        serde_json::from_str(&std::fs::read_to_string(path("model-0.json")).unwrap()).unwrap();
    assert_eq!(sidecar["format"], "churn-audit-model");
    assert_eq!(
        sidecar["weights_sha256"],
        saved["models"][0]["weights_sha256"]
    );
    assert_eq!(
        sidecar["data"]["test_sha256"],
        saved["dataset"]["test_sha256"]
    );

    let by_weights = report(&["--seeds", "2", "--anchor", &path("model-0.safetensors")]);
    let by_predictions = report(&[
        "--seeds",
        "2",
        "--anchor",
        &path("model-0.predictions.json"),
    ]);
    let (a, b) = (&by_weights["anchor"], &by_predictions["anchor"]);
    assert_eq!(a["anchor"]["kind"], "model");
    assert_eq!(b["anchor"]["kind"], "predictions");
    assert_eq!(a["anchor"]["sha256"], b["anchor"]["sha256"]);
    assert_eq!(a["models"], b["models"]);
    assert_eq!(
        a["anchor"]["weights_sha256"],
        saved["models"][0]["weights_sha256"]
    );
    assert_eq!(a["anchor_accuracy"], saved["models"][0]["accuracy"]);

    // Good and bad churn, by hand from the predictions in the two reports.
    let labels = test_labels(&saved);
    let anchor = predictions(&saved["models"][0]);
    for (i, versus) in a["models"].as_array().unwrap().iter().enumerate() {
        let model = predictions(&by_weights["models"][i]);
        let n = labels.len() as f64;
        let count = |f: &dyn Fn(bool, bool) -> bool| {
            (0..labels.len())
                .filter(|&k| f(anchor[k] == Some(labels[k]), model[k] == Some(labels[k])))
                .count() as f64
                / n
        };
        assert_eq!(versus["churn"].as_f64().unwrap(), churn(&anchor, &model));
        assert_eq!(
            versus["good_churn"].as_f64().unwrap(),
            count(&|a, m| !a && m)
        );
        assert_eq!(
            versus["bad_churn"].as_f64().unwrap(),
            count(&|a, m| a && !m)
        );
    }
}

#[test]
fn anchor_distillation_moves_models_toward_the_anchor() {
    let (dir, _) = saved_models();
    let anchor = dir.path().join("model-0.json");
    let anchor = anchor.to_str().unwrap();
    let baseline = report(&["--seeds", "2", "--anchor", anchor]);
    // α = 0 leaves the loss, and so every model, as the baseline's.
    let zero = report(&[
        "--seeds",
        "2",
        "--anchor",
        anchor,
        "--mitigate",
        "anchor",
        "--alpha",
        "0",
    ]);
    assert_eq!(
        model_strings(&zero, "weights_sha256"),
        model_strings(&baseline, "weights_sha256")
    );
    for method in ["distill", "rcp"] {
        let pulled = report(&[
            "--seeds",
            "2",
            "--anchor",
            anchor,
            "--mitigate",
            "anchor",
            "--anchor-method",
            method,
            "--alpha",
            "0.9",
        ]);
        let mitigation = &pulled["config"]["train"]["mitigation"];
        assert_eq!(mitigation["method"], method);
        assert_eq!(
            mitigation["anchor_sha256"],
            baseline["anchor"]["anchor"]["sha256"]
        );
        let churn_vs_anchor = |r: &Value| r["anchor"]["churn"]["mean"].as_f64().unwrap();
        assert!(
            churn_vs_anchor(&pulled) < churn_vs_anchor(&baseline),
            "{method}: {} vs {}",
            churn_vs_anchor(&pulled),
            churn_vs_anchor(&baseline)
        );
    }
}

#[test]
fn an_anchor_from_other_data_or_with_changed_weights_is_refused() {
    let (dir, saved) = saved_models();
    let sidecar = dir.path().join("model-1.json");
    let output = churn_audit(
        &[
            FAST,
            &["--split-seed", "4", "--anchor", sidecar.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(output.status.code(), Some(2));
    let train = saved["dataset"]["train_sha256"].as_str().unwrap();
    let other = report(&["--split-seed", "4", "--seeds", "2", "--epochs", "1"]);
    let other_train = other["dataset"]["train_sha256"].as_str().unwrap();
    assert_eq!(
        stderr(&output),
        format!(
            "error: --anchor: {}: its training set (sha256 {}…, digits) differs from this run's ({}…, digits); an anchor must come from the same data\n",
            sidecar.display(),
            &train[..12],
            &other_train[..12]
        )
    );

    let weights = dir.path().join("model-1.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&weights, bytes).unwrap();
    let output = churn_audit(&[FAST, &["--anchor", weights.to_str().unwrap()]].concat());
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!(
            "error: --anchor: {}: {} holds weights with sha256 ",
            weights.display(),
            weights.display()
        )) && message.ends_with(&format!(
            ", but the sidecar says {}: the file changed since it was saved\n",
            saved["models"][1]["weights_sha256"].as_str().unwrap()
        )),
        "{message}"
    );
}

#[test]
fn mitigation_flags_without_their_mitigation_are_refused() {
    for (args, message) in [
        (&["--alpha", "0.5"][..], "error: --alpha: applies only with --mitigate codistill or anchor\n"),
        (&["--codistill-k", "3", "--mitigate", "anchor", "--anchor", "x"][..], "error: --codistill-k: applies only with --mitigate codistill\n"),
        (&["--mitigate", "anchor"][..], "error: --mitigate: anchor needs --anchor PATH (a model saved with --save-models, or a predictions file)\n"),
        (&["--mitigate", "anchor", "--anchor", "x", "--anchor-method", "rcp", "--temperature", "2"][..], "error: --temperature: applies only to --anchor-method distill\n"),
    ] {
        let output = churn_audit(&[FAST, args].concat());
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr(&output), message);
    }
}

#[test]
fn the_gate_judges_churn_against_the_anchor() {
    let (dir, _) = saved_models();
    let anchor = dir.path().join("model-0.json");
    let gated = |extra: &[&str], limit: &str| {
        let args = [
            FAST,
            &["--seeds", "2", "--max-churn-vs-anchor", limit],
            extra,
        ]
        .concat();
        churn_audit(&args)
    };
    let with_anchor = ["--anchor", anchor.to_str().unwrap()];
    let passing = gated(&with_anchor, "0.9");
    assert_exit_code(&passing, 0);
    let failing = gated(&with_anchor, "0");
    assert_eq!(failing.status.code(), Some(1));
    assert!(stderr(&failing)
        .contains("check failed: --max-churn-vs-anchor 0: mean churn against the anchor "));
    let started = std::time::Instant::now();
    let missing = gated(&[], "0.5");
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        stderr(&missing),
        "error: --max-churn-vs-anchor: needs --anchor PATH: the churn it judges is measured against that model\n"
    );
    // Refused before training, not after it.
    assert!(started.elapsed().as_secs_f64() < 5.0);
    let report = dir.path().join("report.json");
    let plain =
        churn_audit(&[FAST, &["--seeds", "2", "--json", report.to_str().unwrap()]].concat());
    assert!(plain.status.success());
    let output = churn_audit(&[
        "gate",
        report.to_str().unwrap(),
        "--max-churn-vs-anchor",
        "0.5",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        "error: --max-churn-vs-anchor: the report has no churn against an anchor: it was made without --anchor PATH\n"
    );
}

#[test]
fn saving_never_replaces_saved_models() {
    let (dir, _) = saved_models();
    let before = std::fs::read(dir.path().join("model-0.safetensors")).unwrap();
    let anchor = dir.path().join("model-0.json");
    let output = churn_audit(
        &[
            FAST,
            &[
                "--anchor",
                anchor.to_str().unwrap(),
                "--mitigate",
                "anchor",
                "--save-models",
                dir.path().to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        format!(
            "error: --save-models: {} already holds files named like saved models (model-0.json and 5 more); save into a new directory\n",
            dir.path().display()
        )
    );
    assert_eq!(
        std::fs::read(dir.path().join("model-0.safetensors")).unwrap(),
        before
    );

    let notes = tempfile::tempdir().unwrap();
    std::fs::write(notes.path().join("model-notes.txt"), "kept").unwrap();
    let output = churn_audit(&[FAST, &["--save-models", notes.path().to_str().unwrap()]].concat());
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        format!(
            "error: --save-models: {} already holds files named like saved models (model-notes.txt); save into a new directory\n",
            notes.path().display()
        )
    );
}

#[test]
fn reports_cannot_replace_the_anchor_its_saved_model_or_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    std::fs::create_dir(&release).unwrap();
    let (sidecar, weights) = (
        release.join("model-0.json"),
        release.join("model-0.safetensors"),
    );
    let (production, data) = (
        dir.path().join("production.json"),
        dir.path().join("rows.csv"),
    );
    for (path, text) in [
        (&sidecar, "{}"),
        (&weights, "w"),
        (&production, "{}"),
        (&data, "a,b\n"),
    ] {
        std::fs::write(path, text).unwrap();
    }
    fn arg(path: &std::path::Path) -> &str {
        path.to_str().unwrap()
    }
    let data_source = format!("csv:{}", arg(&data));
    let sibling = release.join("model-1.json");
    std::fs::write(&sibling, "{}").unwrap();
    let refusals = [
        (
            vec!["--anchor", arg(&production), "--json", arg(&production)],
            format!(
                "--json: {} would replace the --anchor file this command reads",
                production.display()
            ),
        ),
        (
            vec!["--anchor", arg(&sidecar), "--html", arg(&weights)],
            format!(
                "--html: {} would replace the --anchor file this command reads",
                weights.display()
            ),
        ),
        (
            vec!["--anchor", arg(&sidecar), "--json", arg(&sibling)],
            format!(
                "--json: {} would replace a saved model's file in {}",
                sibling.display(),
                release.canonicalize().unwrap().display()
            ),
        ),
        (
            vec!["--data", &data_source, "--markdown", arg(&data)],
            format!(
                "--markdown: {} would replace the --data file this command reads",
                data.display()
            ),
        ),
    ];
    // A renamed copy of a model, reached through a link: its weights are
    // loaded from where the link leads.
    let (copy, link) = (dir.path().join("copy"), dir.path().join("link"));
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::create_dir_all(&link).unwrap();
    std::fs::copy(&sidecar, copy.join("production.json")).unwrap();
    std::fs::copy(&weights, copy.join("production.safetensors")).unwrap();
    std::os::unix::fs::symlink(copy.join("production.json"), link.join("anchor.json")).unwrap();
    let (linked, copied_weights) = (
        link.join("anchor.json"),
        copy.join("production.safetensors"),
    );
    let refusals = refusals.into_iter().chain([(
        vec!["--anchor", arg(&linked), "--json", arg(&copied_weights)],
        format!(
            "--json: {} would replace the --anchor file this command reads",
            copied_weights.display()
        ),
    )]);
    for (flags, message) in refusals {
        let output = churn_audit(&[FAST, &flags[..]].concat());
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
        assert_eq!(
            stderr(&output),
            format!("error: {message}; write reports elsewhere\n")
        );
    }
    // A new file named like a saved model beside the anchor replaces nothing:
    // this run gets as far as reading the (hand-made, invalid) anchor.
    let beside = release.join("model-report.json");
    let output =
        churn_audit(&[FAST, &["--anchor", arg(&sidecar), "--json", arg(&beside)]].concat());
    assert_eq!(output.status.code(), Some(2));
    assert!(
        !stderr(&output).contains("would replace"),
        "{}",
        stderr(&output)
    );
    assert!(!beside.exists());
    assert_eq!(std::fs::read_to_string(&production).unwrap(), "{}");
    assert_eq!(std::fs::read_to_string(&weights).unwrap(), "w");
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "a,b\n");
}

#[test]
fn reports_and_a_second_run_cannot_replace_models_being_saved() {
    let dir = tempfile::tempdir().unwrap();
    let saving = dir.path().join("release");
    std::fs::create_dir(&saving).unwrap();
    let saving_arg = saving.to_str().unwrap();
    let onto_sidecar = saving.join("model-0.json");
    let output = churn_audit(
        &[
            FAST,
            &[
                "--save-models",
                saving_arg,
                "--json",
                onto_sidecar.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        format!(
            "error: --json: {} would replace a saved model's file in {}; write reports elsewhere\n",
            onto_sidecar.display(),
            saving.canonicalize().unwrap().display()
        )
    );
    assert_eq!(std::fs::read_dir(&saving).unwrap().count(), 0);
    // Another run holding the directory (as a run saving into it does).
    let mut holder = std::process::Command::new("flock")
        .args([saving_arg, "sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let output = churn_audit(&[FAST, &["--save-models", saving_arg]].concat());
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        format!(
            "error: --save-models: another churn-audit run is saving models into {saving_arg}; save into a new directory\n"
        )
    );
    assert_eq!(std::fs::read_dir(&saving).unwrap().count(), 0);
}

#[test]
fn an_edited_sidecar_or_a_missing_weights_file_is_refused_naming_it() {
    let (dir, _) = saved_models();
    let sidecar: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("model-0.json")).unwrap())
            .unwrap();
    let edited = tempfile::tempdir().unwrap();
    let write = |name: &str, value: &Value| {
        let path = edited.path().join(name);
        std::fs::write(&path, value.to_string()).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let mut many_threads = sidecar.clone();
    many_threads["spec"]["threads"] = 100_000.into();
    let mut other_key = sidecar.clone();
    other_key["key"] = "0".repeat(64).into();
    let mut no_weights = sidecar.clone();
    no_weights["weights_file"] = "gone.safetensors".into();
    let cases = [
        (
            write("threads.json", &many_threads),
            "edited or damaged: spec.threads: must be at most 256, got 100000".to_owned(),
        ),
        (
            write("key.json", &other_key),
            format!(
                "edited or damaged: its key is {}, but its config and spec make {}",
                "0".repeat(64),
                sidecar["key"].as_str().unwrap()
            ),
        ),
        (
            write("no-weights.json", &no_weights),
            format!(
                "cannot read {}: No such file or directory (os error 2)",
                edited
                    .path()
                    .canonicalize()
                    .unwrap()
                    .join("gone.safetensors")
                    .display()
            ),
        ),
    ];
    for (path, problem) in cases {
        let output = churn_audit(&[FAST, &["--anchor", &path]].concat());
        assert_eq!(output.status.code(), Some(2), "{path}");
        assert_eq!(
            stderr(&output),
            format!("error: --anchor: {path}: {problem}\n")
        );
    }
}

#[test]
fn a_model_and_its_predictions_file_are_the_same_anchor_at_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().to_str().unwrap();
    let two_threads = [
        "run",
        "--epochs",
        "3",
        "--threads",
        "2",
        "--quiet",
        "--seeds",
        "2",
    ];
    let output = churn_audit(&[&two_threads[..], &["--save-models", saved]].concat());
    assert_exit_code(&output, 0);
    let sha = |file: &str| {
        let anchor = format!("{saved}/{file}");
        report(&["--seeds", "2", "--anchor", &anchor])["anchor"]["anchor"]["sha256"].clone()
    };
    assert_eq!(sha("model-1.safetensors"), sha("model-1.predictions.json"));
}

#[test]
fn bad_anchor_files_and_mitigation_values_are_refused_before_training() {
    let (dir, saved) = saved_models();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let mut predictions: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("model-0.predictions.json")).unwrap(),
    )
    .unwrap();
    predictions["data"]["train_sha256"] = "aéééééééééééééé".into();
    let accented = write("accented.json", &predictions.to_string());
    let truncated = write(
        "truncated.json",
        "{\"format\": \"churn-audit-predictions\",",
    );
    let other = write("other.json", "{\"format\": \"onnx\"}");
    let train = saved["dataset"]["train_sha256"].as_str().unwrap();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--anchor", &accented],
            format!("error: --anchor: {accented}: its training set (sha256 aééééééééééé…, digits) differs from this run's ({}…, digits); an anchor must come from the same data\n", &train[..12]),
        ),
        (
            vec!["--anchor", &truncated],
            format!("error: --anchor: {truncated}: is not valid JSON: EOF while parsing a value at line 1 column 37\n"),
        ),
        (
            vec!["--anchor", &other],
            format!("error: --anchor: {other}: not a saved model or predictions file (its \"format\" is not \"churn-audit-model\" or \"churn-audit-predictions\")\n"),
        ),
        (
            vec!["--anchor", "/dev/null"],
            "error: --anchor: /dev/null: not a regular file (a character device)\n".to_owned(),
        ),
        (
            vec!["--mitigate", "codistill", "--burn-in", "135"],
            "error: --burn-in: 135 steps is at least the whole training (123 steps): distillation would never start\n".to_owned(),
        ),
        (
            vec!["--save-models", "-"],
            "error: invalid value '-' for '--save-models <DIR>': models are saved as files in a directory, not to stdout".to_owned(),
        ),
        (
            vec!["--mitigate", "codistill", "--alpha", "2"],
            "error: invalid value '2' for '--alpha <ALPHA>': must be in [0, 1], got 2".to_owned(),
        ),
        (
            vec!["--mitigate", "codistill", "--temperature", "1e-38"],
            "error: invalid value '1e-38' for '--temperature <T>': must be in [0.01, 1000], got 1e-38".to_owned(),
        ),
    ];
    for (args, message) in cases {
        let output = churn_audit(&[FAST, &args].concat());
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr(&output).starts_with(&message), "{}", stderr(&output));
    }
    let audit = churn_audit(&[
        "audit",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--quiet",
        "--anchor",
        "x.json",
    ]);
    assert_eq!(audit.status.code(), Some(2));
    assert_eq!(
        stderr(&audit),
        "error: --anchor: in an audit it is used only with --mitigate anchor: an audit reports no churn against it (use run)\n"
    );
}
