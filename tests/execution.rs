//! The correctness guard of the parallel execution mode (docs/performance.md):
//! on the embedded digits, every model trained in parallel agrees with the
//! same model trained sequentially on at least 99% of test predictions (the
//! documented tolerance; with one intra-op thread it is in fact bitwise the
//! same model), a rerun is bitwise identical, and no model depends on how
//! many others train beside it or on how many workers there are.

mod common;

use common::{churn_audit, churn_audit_command, model_strings, models, stderr, stdout_json};
use serde_json::Value;

fn report(args: &[&str]) -> Value {
    stdout_json(
        &[&["run", "--epochs", "3", "--quiet", "--json", "-"], args].concat(),
        0,
    )
}

/// Share of test examples on which two models predict the same class.
fn agreement(a: &Value, b: &Value) -> f64 {
    let (a, b) = (
        a["predicted"].as_array().unwrap(),
        b["predicted"].as_array().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

const SGD: &[&str] = &[
    "--optimizer",
    "sgd",
    "--momentum",
    "0.9",
    "--hidden",
    "96,48",
    "--dropout",
    "0.3",
];

const PLAIN: &[&str] = &["--optimizer", "sgd", "--momentum", "0", "--dropout", "0"];
const LINEAR: &[&str] = &["--model", "linear"];

#[test]
fn parallel_models_are_the_sequential_ones() {
    for recipe in [&[][..], SGD, PLAIN, LINEAR] {
        let seeds = ["--seeds", "3"];
        let sequential = report(
            &[
                &seeds[..],
                recipe,
                &["--threads", "1", "--execution", "sequential"],
            ]
            .concat(),
        );
        let parallel = report(
            &[
                &seeds[..],
                recipe,
                &["--threads", "2", "--execution", "parallel"],
            ]
            .concat(),
        );
        assert_eq!(sequential["execution"]["mode"], "sequential");
        assert_eq!(parallel["execution"]["mode"], "parallel");
        assert_eq!(parallel["execution"]["workers"], 2);
        assert_eq!(parallel["execution"]["intra_op_threads"], 1);
        for (s, p) in models(&sequential).iter().zip(models(&parallel)) {
            assert_eq!(p["execution"], "parallel");
            assert_eq!(p["threads"], 1);
            // The documented tolerance...
            let agree = agreement(s, p);
            assert!(agree >= 0.99, "{recipe:?}: agreement {agree}");
            // ...and what holds with one intra-op thread: the same model, bit for bit.
            for name in [
                "weights_sha256",
                "predictions_sha256",
                "data_order_sha256",
                "key",
            ] {
                assert_eq!(s[name], p[name], "{recipe:?}: {name}");
            }
            assert_eq!(s["steps"], p["steps"]);
        }
        // Models differ from each other (the seeds vary): nothing was shared by mistake.
        let weights = model_strings(&parallel, "weights_sha256");
        assert!(weights[0] != weights[1] && weights[1] != weights[2]);
    }
}

#[test]
fn parallel_runs_are_bitwise_reproducible_whatever_the_workers_and_group_size() {
    let first = report(&["--seeds", "4", "--threads", "2", "--execution", "parallel"]);
    let again = report(&["--seeds", "4", "--threads", "2", "--execution", "parallel"]);
    let one_worker = report(&["--seeds", "4", "--threads", "1", "--execution", "parallel"]);
    let fewer = report(&["--seeds", "2", "--threads", "2", "--execution", "parallel"]);
    for name in ["weights_sha256", "predictions_sha256"] {
        assert_eq!(
            model_strings(&first, name),
            model_strings(&again, name),
            "{name}"
        );
        assert_eq!(
            model_strings(&first, name),
            model_strings(&one_worker, name),
            "{name}"
        );
        assert_eq!(
            model_strings(&first, name)[..2],
            model_strings(&fewer, name)[..],
            "{name}"
        );
    }
    // Sequential with more than one intra-op thread may round differently,
    // but stays within the tolerance.
    let sequential = report(&[
        "--seeds",
        "4",
        "--threads",
        "2",
        "--execution",
        "sequential",
    ]);
    for (s, p) in models(&sequential).iter().zip(models(&first)) {
        let agree = agreement(s, p);
        assert!(agree >= 0.99, "agreement {agree}");
    }
}

#[test]
fn auto_is_parallel_where_the_group_allows_it() {
    let auto = report(&["--seeds", "2", "--threads", "1"]);
    assert_eq!(auto["config"]["execution"], "auto");
    assert_eq!(auto["execution"]["mode"], "parallel");
    let cnn = report(&[
        "--seeds",
        "2",
        "--threads",
        "1",
        "--model",
        "cnn",
        "--epochs",
        "1",
    ]);
    assert_eq!(cnn["execution"]["mode"], "sequential");
    assert_eq!(models(&cnn)[0]["execution"], "sequential");
    let refused = churn_audit(&[
        "run",
        "--seeds",
        "2",
        "--model",
        "cnn",
        "--execution",
        "parallel",
        "--quiet",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        "error: --execution: parallel: the cnn model trains sequentially only"
    );
}

/// The failure reported is the first in model order, as in sequential
/// mode, however the workers happen to interleave.
#[test]
fn parallel_loss_failure_is_the_sequential_one() {
    let failure = |execution: &str| {
        let output = churn_audit_command()
            .args([
                "run",
                "--seeds",
                "5",
                "--epochs",
                "3",
                "--threads",
                "2",
                "--quiet",
            ])
            .args([
                "--optimizer",
                "sgd",
                "--lr",
                "1e30",
                "--execution",
                execution,
            ])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(3));
        stderr(&output)
    };
    let sequential = failure("sequential");
    assert_eq!(
        sequential,
        "error: training model 0 failed at step 45: loss became NaN\n"
    );
    for _ in 0..3 {
        assert_eq!(failure("parallel"), sequential);
    }
}

/// Out of memory inside libtorch (unwrapped in tch) is one error line and
/// exit code 3 in both modes: no panic, no backtrace, no hang.
#[test]
fn out_of_memory_is_one_error_line() {
    for execution in ["parallel", "sequential"] {
        let binary = assert_cmd::cargo::cargo_bin("churn-audit");
        let script = format!(
            "ulimit -v 3000000; RUST_BACKTRACE=1 exec {} run --data csv:fixtures/small.csv \
             --hidden 65536,600 --seeds 4 --epochs 1 --threads 1 --quiet --execution {execution}",
            binary.display()
        );
        let output = std::process::Command::new("sh")
            .args(["-c", &script])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(3), "{execution}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: training failed: libtorch: ")
                && stderr.contains("can't allocate memory"),
            "{stderr}"
        );
    }
}

#[test]
fn side_by_side_models_finish_one_after_another_until_the_last_few() {
    use churn_audit::cli::{Cli, Command};
    use churn_audit::config::RunConfig;
    use churn_audit::parallel::{train_group, GroupEvent};
    use churn_audit::train::TrainData;
    use clap::Parser;

    let Command::Run(args) =
        Cli::parse_from(["churn-audit", "run", "--seeds", "4", "--epochs", "3"]).command
    else {
        unreachable!()
    };
    let config = RunConfig::from_args(&args).unwrap();
    let prepared = churn_audit::data::load(&config.data).unwrap();
    let tensors = TrainData::new(&prepared.split, tch::Device::Cpu).unwrap();
    let specs: Vec<_> = (0..4)
        .map(|i| (i, config.model_spec(&config.vary, i, i)))
        .collect();
    // One worker: each model finishes (and would be stored) before the next
    // starts, so a run killed midway keeps the finished ones.
    let mut heard = String::new();
    train_group(
        &specs,
        &tensors,
        &config.model,
        &config.train,
        1,
        false,
        &mut |progress| {
            heard.push(match progress {
                GroupEvent::EpochDone => 'e',
                GroupEvent::Finished(at, _) => char::from(b'0' + at as u8),
            });
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(heard, "eee0eee1eee2eee3");
}
