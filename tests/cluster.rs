//! Run directories under faults: killed runs resumed, damaged artifacts
//! retrained, concurrent array tasks, read-only and full disks; and the
//! plan → train → report fan-out against one process's report.

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const FAST: &[&str] = &["--epochs", "3", "--threads", "1", "--quiet"];

fn churn_audit() -> Process {
    Process::cargo_bin("churn-audit").unwrap()
}

fn output(args: &[&str]) -> Output {
    churn_audit().args(args).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn succeeds(args: &[&str]) -> Output {
    let output = output(args);
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    output
}

/// The JSON report of `run` (with `args` after the fast flags), without what
/// may differ between two runs of the same models: training times and how
/// the models were combined.
fn comparable(output: &Output) -> Value {
    let mut report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    let execution = report["execution"].as_object_mut().unwrap();
    execution.remove("mode").unwrap();
    execution.remove("train_seconds").unwrap();
    for model in report["models"].as_array_mut().unwrap() {
        let model = model.as_object_mut().unwrap();
        model.remove("train_seconds");
        // Sequential with one thread or parallel: the same model, bitwise.
        model.remove("execution");
    }
    report
}

/// A JSON report without this invocation's training time (a
/// resumed audit counts only what it trained).
fn resumable(output: &Output) -> Value {
    let mut report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    report["execution"]
        .as_object_mut()
        .unwrap()
        .remove("train_seconds")
        .unwrap();
    report
}

fn run(args: &[&str]) -> Value {
    comparable(&succeeds(
        &[&["run"], FAST, args, &["--json", "-"]].concat(),
    ))
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|entry| entry.unwrap().path()).collect())
        .unwrap_or_default();
    found.retain(|path| path.to_string_lossy().ends_with(suffix));
    found.sort();
    found
}

fn artifacts(dir: &Path) -> Vec<PathBuf> {
    files(&dir.join("models"), ".artifact")
}

/// The artifact path of planned model `index`.
fn planned(dir: &Path, index: usize) -> PathBuf {
    let plan: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap();
    let key = plan["models"][index]["key"].as_str().unwrap();
    dir.join("models").join(format!("{key}.artifact"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether an artifact's header matches its payload (docs/cluster.md).
fn intact(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    let newline = bytes.iter().position(|&b| b == b'\n').unwrap();
    let header = std::str::from_utf8(&bytes[..newline]).unwrap();
    header
        == format!(
            "churn-audit artifact v1 sha256:{}",
            hex(&Sha256::digest(&bytes[newline + 1..]))
        )
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn killed_mid_training_a_run_resumes_to_the_uninterrupted_report() {
    // Models side by side are stored as each finishes too, not at the group's end.
    for (execution, threads) in [("sequential", "1"), ("parallel", "1"), ("parallel", "2")] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        // Slow enough that the kill lands while a later model trains.
        let args = [
            "--seeds",
            "5",
            "--epochs",
            "60",
            "--execution",
            execution,
            "--threads",
            threads,
            "--out",
            path_arg(&out),
        ];
        let mut child = churn_audit()
            .args(["run", "--quiet"])
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while artifacts(&out).is_empty() {
            assert!(Instant::now() < deadline, "no artifact after 120 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let kept = artifacts(&out);
        assert!(!kept.is_empty() && kept.len() < 5, "{execution}: {kept:?}");
        assert!(kept.iter().all(|path| intact(path)));

        let resumed = run(&args);
        assert_eq!(artifacts(&out).len(), 5);
        let uninterrupted = run(&args[..8]);
        assert_eq!(resumed, uninterrupted, "{execution} on {threads} threads");
    }
}

#[test]
fn killed_between_writing_and_renaming_an_artifact_a_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = [&["run"], FAST, &["--seeds", "2", "--out", path_arg(&out)]].concat();
    let crashed = churn_audit()
        .args(&args)
        .env("CHURN_AUDIT_DIE_BEFORE_RENAME", ".artifact")
        .output()
        .unwrap();
    assert_eq!(crashed.status.code(), Some(137));
    assert_eq!(artifacts(&out), Vec::<PathBuf>::new());
    // The written, fsynced, never renamed file a crash leaves behind.
    assert_eq!(files(&out.join("models"), ".tmp").len(), 1);

    // Ignored, and left in case another writer still fills it (see
    // a_temporary_file_another_writer_may_still_fill_is_left_alone).
    let leftover = files(&out.join("models"), ".tmp");
    let resumed = comparable(&succeeds(&[&args[..], &["--json", "-"]].concat()));
    assert_eq!(files(&out.join("models"), ".tmp"), leftover);
    assert_eq!(resumed, run(&["--seeds", "2"]));
}

#[test]
fn a_truncated_or_corrupt_artifact_is_detected_and_retrained() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = [&["run"], FAST, &["--seeds", "4", "--out", path_arg(&out)]].concat();
    let first = comparable(&succeeds(&[&args[..], &["--json", "-"]].concat()));
    let (truncated, corrupt) = (planned(&out, 0), planned(&out, 2));
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let mut bytes = std::fs::read(&corrupt).unwrap();
    let near_the_end = bytes.len() - 200;
    bytes[near_the_end] ^= 1;
    std::fs::write(&corrupt, &bytes).unwrap();

    // `report` names both and leaves them out.
    let reported = output(&["report", path_arg(&out), "--json", "-"]);
    assert_eq!(reported.status.code(), Some(1));
    let said = stderr(&reported);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.starts_with(&format!(
        "check failed: complete: only 2 of the 4 planned models are in this report (model 0: {}: truncated or corrupt: its contents hash to ",
        truncated.display()
    )), "{said}");
    assert!(said.contains(&format!(
        "; model 2: {}: truncated or corrupt",
        corrupt.display()
    )));
    // The written report says so too, with the plan's numbering kept.
    let report: Value = serde_json::from_slice(&reported.stdout).unwrap();
    assert_eq!(report["incomplete"]["planned"], 4);
    assert_eq!(report["incomplete"]["missing"].as_array().unwrap().len(), 2);
    let indices: Vec<u64> = report["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [1, 3]);
    assert_eq!(report["gate"]["passed"], false);

    // A rerun retrains both, says so, and reports as before.
    let rerun = succeeds(&[&args[..], &["--json", "-"]].concat());
    let said = stderr(&rerun);
    for path in [&truncated, &corrupt] {
        assert!(
            said.contains(&format!(
                "{}: truncated or corrupt: its contents hash to ",
                path.display()
            )),
            "{said}"
        );
    }
    assert_eq!(said.matches("; training that model again").count(), 2);
    assert_eq!(comparable(&rerun), first);
    assert!(artifacts(&out).iter().all(|path| intact(path)));
}

/// Rewrites an artifact's payload with `edit` and gives it a matching header,
/// as a file from another machine would have.
fn rewrite(path: &Path, edit: impl FnOnce(&mut Value)) {
    let text = std::fs::read_to_string(path).unwrap();
    let (_, payload) = text.split_once('\n').unwrap();
    let mut artifact: Value = serde_json::from_str(payload).unwrap();
    edit(&mut artifact);
    let payload = serde_json::to_string(&artifact).unwrap();
    let header = hex(&Sha256::digest(payload.as_bytes()));
    std::fs::write(
        path,
        format!("churn-audit artifact v1 sha256:{header}\n{payload}"),
    )
    .unwrap();
}

#[test]
fn artifacts_from_another_libtorch_or_data_are_listed_not_combined() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = [&["run"], FAST, &["--seeds", "4", "--out", path_arg(&out)]].concat();
    succeeds(&args);
    let (other_torch, other_data) = (planned(&out, 1), planned(&out, 2));
    let expected_torch = {
        let plan = std::fs::read_to_string(out.join("plan.json")).unwrap();
        let plan: Value = serde_json::from_str(&plan).unwrap();
        plan["origin"]["libtorch"].as_str().unwrap().to_owned()
    };
    rewrite(&other_torch, |a| a["origin"]["libtorch"] = "2.0.0".into());
    rewrite(&other_data, |a| a["origin"]["test_sha256"] = "ab12".into());

    let reported = output(&["report", path_arg(&out), "--json", "-"]);
    assert_eq!(reported.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&reported.stdout).unwrap();
    assert_eq!(report["models"].as_array().unwrap().len(), 2);
    let test_sha = report["dataset"]["test_sha256"].as_str().unwrap();
    assert_eq!(
        stderr(&reported),
        format!(
            "check failed: complete: only 2 of the 4 planned models are in this report (\
             model 1: {}: not combined, it differs from the plan: libtorch 2.0.0 (expected {expected_torch}); \
             model 2: {}: not combined, it differs from the plan: test_sha256 ab12 (expected {test_sha}))\n",
            other_torch.display(),
            other_data.display()
        )
    );
    // `run --out` trains them again with this machine's libtorch and data.
    let rerun = succeeds(&args);
    assert_eq!(
        stderr(&rerun)
            .matches("; training that model again")
            .count(),
        2
    );
    succeeds(&["report", path_arg(&out), "--json", "-"]);
}

#[test]
fn plan_then_array_tasks_then_report_equals_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fanned");
    let planned = succeeds(&[&["plan"], FAST, &["--seeds", "3", "--out", path_arg(&out)]].concat());
    assert_eq!(
        String::from_utf8(planned.stdout).unwrap(),
        format!(
            "3 models planned in {0}; train model K with `churn-audit train --out {0} --index K` (K from 0 to 2), then `churn-audit report {0}`\n",
            out.display()
        )
    );
    let train = |index_from: (&str, &str)| {
        let mut command = churn_audit();
        command.args(["train", "--out", path_arg(&out)]);
        for name in ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"] {
            command.env_remove(name);
        }
        match index_from {
            ("--index", k) => command.args(["--index", k]),
            (variable, k) => command.env(variable, k),
        };
        command.output().unwrap()
    };
    let first = train(("SLURM_ARRAY_TASK_ID", "0"));
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stderr(&first).starts_with("model 0: accuracy "));
    assert!(stderr(&first).ends_with(&format!("; stored in {}\n", planned_path(&out, 0))));
    assert!(train(("JOB_COMPLETION_INDEX", "1")).status.success());
    assert!(train(("--index", "2")).status.success());
    let again = train(("--index", "2"));
    assert_eq!(
        stderr(&again),
        format!(
            "model 2: already trained ({}); nothing to do\n",
            planned_path(&out, 2)
        )
    );

    let reported = succeeds(&["report", path_arg(&out), "--json", "-"]);
    let report: Value = serde_json::from_slice(&reported.stdout).unwrap();
    assert_eq!(report["execution"]["mode"], "artifacts");
    assert_eq!(comparable(&reported), run(&["--seeds", "3"]));
}

fn planned_path(dir: &Path, index: usize) -> String {
    planned(dir, index).display().to_string()
}

#[test]
fn train_names_a_missing_or_out_of_range_index_and_a_missing_plan() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let fails = |extra: &[&str], env: Option<(&str, &str)>, message: String| {
        let mut command = churn_audit();
        command.args(["train", "--out", path_arg(&out)]).args(extra);
        for name in ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"] {
            command.env_remove(name);
        }
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(2));
        assert_eq!(stderr(&output), format!("error: {message}\n"));
    };
    fails(
        &["--index", "0"],
        None,
        format!(
            "{}: no plan here; write one with `churn-audit plan ... --out {}`",
            out.join("plan.json").display(),
            out.display()
        ),
    );
    succeeds(&[&["plan"], FAST, &["--seeds", "2", "--out", path_arg(&out)]].concat());
    fails(
        &[],
        None,
        "--index: not given, and neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX holds a value"
            .into(),
    );
    fails(
        &[],
        Some(("SLURM_ARRAY_TASK_ID", "2")),
        "SLURM_ARRAY_TASK_ID: model 2 is out of range: the plan has 2 models (0 to 1)".into(),
    );
    std::fs::write(out.join("plan.json"), "{\"version\": 1").unwrap();
    fails(
        &["--index", "0"],
        None,
        format!(
            "{}: not a churn-audit plan: EOF while parsing an object at line 1 column 13",
            out.join("plan.json").display()
        ),
    );
}

#[test]
fn two_trains_of_one_model_at_once_leave_one_intact_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let plan = ["--seeds", "2", "--epochs", "30", "--threads", "1"];
    succeeds(&[&["plan"], &plan[..], &["--out", path_arg(&out)]].concat());
    let spawn = || {
        churn_audit()
            .args(["train", "--index", "0", "--out", path_arg(&out)])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let said: Vec<String> = [a, b]
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "{}", stderr(&output));
            stderr(&output)
        })
        .collect();
    // One trained it; the other waited for it (or came after) and found it.
    let trained = said.iter().filter(|s| s.contains("; stored in ")).count();
    let reused = said.iter().filter(|s| s.contains("nothing to do")).count();
    assert_eq!((trained, reused), (1, 1), "{said:?}");
    assert_eq!(artifacts(&out), vec![planned(&out, 0)]);
    assert!(intact(&planned(&out, 0)));
    assert_eq!(files(&out.join("models"), ".tmp"), Vec::<PathBuf>::new());
}

#[test]
fn an_audit_resumes_from_its_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit");
    let audit = [
        "audit",
        "--seeds",
        "2",
        "--thread-counts",
        "1",
        "--json",
        "-",
    ];
    let args = [&audit[..], FAST, &["--out", path_arg(&out)]].concat();
    let first = succeeds(&args);
    assert!(artifacts(&out).len() >= 6);
    // Equal down to every model's training time: nothing was trained again.
    assert_eq!(resumable(&succeeds(&args)), resumable(&first));
    // An audit's directory has no plan, and `report` says what it is.
    let reported = output(&["report", path_arg(&out)]);
    assert_eq!(reported.status.code(), Some(2));
    assert_eq!(
        stderr(&reported),
        format!(
            "error: {}: no plan here, only artifacts: an `audit --out` directory has none \
             (an audit resumes by running it again with the same --out); \
             for a run, write one with `churn-audit plan ... --out {}`\n",
            out.join("plan.json").display(),
            out.display()
        )
    );
}

/// Makes a directory unwritable, even for root (`chattr +i`), until dropped.
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Option<Self> {
        let done = Process::new("chattr").arg("+i").arg(dir).status();
        done.is_ok_and(|status| status.success())
            .then(|| Immutable(dir.to_owned()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Process::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_run_directory_is_refused_before_training_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    succeeds(&[&["run"], FAST, &["--seeds", "2", "--out", path_arg(&out)]].concat());
    let before: Vec<Vec<u8>> = artifacts(&out)
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect();
    let models = out.join("models");
    let Some(_guard) = Immutable::set(&models) else {
        eprintln!("skipped: chattr +i is not available here");
        return;
    };
    let refused = output(&[&["run"], FAST, &["--seeds", "3", "--out", path_arg(&out)]].concat());
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        stderr(&refused),
        format!(
            "error: --out: cannot write in {}: Operation not permitted (os error 1)\n",
            models.display()
        )
    );
    let after: Vec<Vec<u8>> = artifacts(&out)
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect();
    assert_eq!(after, before);
}

/// A small tmpfs, so the disk fills up; unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        let done = Process::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status();
        done.is_ok_and(|status| status.success())
            .then(|| SmallDisk(dir.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_gives_a_clear_error_and_keeps_earlier_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    // Room for the plan and one digits artifact (about 30 KB), not two.
    let Some(disk) = SmallDisk::mount(dir.path(), "48k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let out = disk.0.join("run");
    let full = output(&[&["run"], FAST, &["--seeds", "3", "--out", path_arg(&out)]].concat());
    assert_eq!(full.status.code(), Some(2));
    let kept = artifacts(&out);
    assert_eq!(kept, vec![planned(&out, 0)]);
    assert!(intact(&kept[0]));
    assert_eq!(
        stderr(&full),
        format!(
            "error: cannot write {}: No space left on device (os error 28)\n",
            planned_path(&out, 1)
        )
    );
    assert_eq!(files(&out.join("models"), ".tmp"), Vec::<PathBuf>::new());
}

/// The Slurm script and Kubernetes manifest docs/cluster.md shows are the
/// files scripts/slurm-check runs and users copy.
#[test]
fn docs_show_the_job_files_verbatim() {
    let read = |name: &str| std::fs::read_to_string(format!("{ROOT}/docs/{name}")).unwrap();
    let guide = read("cluster.md");
    for file in ["churn-audit.sbatch", "churn-audit-job.yaml"] {
        assert!(
            guide.contains(&read(file)),
            "docs/cluster.md lacks docs/{file}"
        );
    }
}

#[test]
fn train_and_report_refuse_data_changed_since_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (dir.path().join("small.csv"), dir.path().join("run"));
    std::fs::copy(format!("{ROOT}/fixtures/small.csv"), &data).unwrap();
    let source = format!("csv:{}", data.display());
    let plan = [
        "plan",
        "--data",
        &source,
        "--seeds",
        "2",
        "--test-fraction",
        "0.3",
    ];
    succeeds(&[&plan[..], FAST, &["--out", path_arg(&out)]].concat());
    succeeds(&["train", "--out", path_arg(&out), "--index", "0"]);
    let original = std::fs::read_to_string(&data).unwrap();
    std::fs::write(&data, original.replacen("5.1,", "5.2,", 1)).unwrap();

    let refused = output(&["train", "--out", path_arg(&out), "--index", "1"]);
    assert_eq!(refused.status.code(), Some(2));
    let said = stderr(&refused);
    let prefix = format!(
        "error: {}: this machine's libtorch or data differs from the plan: test_sha256 ",
        out.display()
    );
    assert!(said.starts_with(&prefix), "{said}");
    let reported = output(&["report", path_arg(&out)]);
    assert_eq!(reported.status.code(), Some(2));
    let prefix = format!(
        "error: {}: the data here differs from the plan: test_sha256 ",
        out.display()
    );
    assert!(
        stderr(&reported).starts_with(&prefix),
        "{}",
        stderr(&reported)
    );
}

#[test]
fn a_co_distilled_run_fans_out_with_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let (fanned, resumed) = (dir.path().join("fanned"), dir.path().join("resumed"));
    let recipe = [&["--seeds", "2", "--mitigate", "codistill"], FAST].concat();
    succeeds(&[&["plan"], &recipe[..], &["--out", path_arg(&fanned)]].concat());
    for index in ["0", "1"] {
        succeeds(&["train", "-q", "--out", path_arg(&fanned), "--index", index]);
    }
    let reported = comparable(&succeeds(&["report", path_arg(&fanned), "--json", "-"]));
    assert_eq!(reported["codistill"]["peers"].as_array().unwrap().len(), 2);
    let one_process = [&["run"], &recipe[..], &["--json", "-"]].concat();
    assert_eq!(reported, comparable(&succeeds(&one_process)));
    let with_out = [&one_process[..], &["--out", path_arg(&resumed)]].concat();
    let first = succeeds(&with_out);
    assert_eq!(resumable(&succeeds(&with_out)), resumable(&first));
}

#[test]
fn what_cannot_go_through_artifacts_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    for (args, message) in [
        (
            vec!["run", "--out", path_arg(&out), "--save-models", path_arg(dir.path())],
            "error: --save-models: cannot be combined with --out: a model reused from its artifact has no network left to save\n",
        ),
        (
            vec!["plan", "--out", path_arg(&out), "--anchor", "anchor.json"],
            "error: --anchor: plan cannot fan out a run with an anchor yet; `run --out DIR` takes one, and resumes too\n",
        ),
        (
            vec!["plan", "--out", path_arg(&out), "--max-churn", "0.1"],
            "error: plan: plan writes only DIR/plan.json; give checks and report outputs to `churn-audit report DIR`\n",
        ),
        (
            vec!["plan", "--seeds", "2"],
            "error: --out: plan needs --out DIR, where plan.json and the artifacts go\n",
        ),
    ] {
        let refused = output(&args);
        assert_eq!(refused.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr(&refused), message);
    }
    assert!(!out.exists());
}

#[test]
fn report_measures_against_the_runs_anchor_and_never_writes_into_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (saved, out) = (dir.path().join("saved"), dir.path().join("run"));
    let base = [&["run"], FAST, &["--seeds", "2"]].concat();
    succeeds(
        &[
            &base[..],
            &["--base-seed", "7", "--save-models", path_arg(&saved)],
        ]
        .concat(),
    );
    let (anchor, other) = (saved.join("model-0.json"), saved.join("model-1.json"));
    let mitigated = [
        &base[..],
        &[
            "--mitigate",
            "anchor",
            "--anchor",
            path_arg(&anchor),
            "--out",
            path_arg(&out),
        ],
    ]
    .concat();
    let ran: Value =
        serde_json::from_slice(&succeeds(&[&mitigated[..], &["--json", "-"]].concat()).stdout)
            .unwrap();
    let reported = succeeds(&[
        "report",
        path_arg(&out),
        "--anchor",
        path_arg(&anchor),
        "--json",
        "-",
    ]);
    let reported: Value = serde_json::from_slice(&reported.stdout).unwrap();
    assert_eq!(reported["anchor"]["models"], ran["anchor"]["models"]);

    let wrong = output(&["report", path_arg(&out), "--anchor", path_arg(&other)]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(stderr(&wrong).starts_with(&format!(
        "error: --anchor: {}: not the anchor this run distilled toward (its sha256 ",
        other.display()
    )));

    let plan = out.join("plan.json");
    let before = std::fs::read(&plan).unwrap();
    let over = output(&["report", path_arg(&out), "--json", path_arg(&plan)]);
    assert_eq!(over.status.code(), Some(2));
    assert_eq!(
        stderr(&over),
        format!(
            "error: --json: {} would replace part of the run directory {}; write reports elsewhere\n",
            plan.display(),
            std::fs::canonicalize(&out).unwrap().display()
        )
    );
    assert_eq!(std::fs::read(&plan).unwrap(), before);

    // A task has no --anchor to distil toward, even for a model not yet stored.
    for artifact in artifacts(&out) {
        std::fs::remove_file(artifact).unwrap();
    }
    let task = output(&["train", "--out", path_arg(&out), "--index", "0"]);
    assert_eq!(task.status.code(), Some(2));
    assert_eq!(
        stderr(&task),
        format!(
            "error: {}: its models distil toward an anchor, which `train` does not load; resume it with the `churn-audit run ... --anchor PATH --out DIR` that wrote it\n",
            plan.display()
        )
    );
    assert!(artifacts(&out).is_empty());
}

/// `output` of a command that must finish within a minute: a regression
/// that hangs (opening a FIFO) fails the test instead of stalling it.
fn output_soon(args: &[&str]) -> Output {
    let child = churn_audit()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output().unwrap()));
    finished
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            let _ = Process::new("kill").args(["-9", &pid]).status();
            panic!("{args:?} still running after 60 s");
        })
}

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let made = Process::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success());
}

#[test]
fn a_temporary_file_another_writer_may_still_fill_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    succeeds(&[&["plan"], FAST, &["--seeds", "2", "--out", path_arg(&out)]].concat());
    let artifact = planned(&out, 0);
    // Another machine's write in flight (no working flock on its mount), and
    // a killed writer's leftover from an hour ago.
    let name = artifact.file_name().unwrap().to_string_lossy().into_owned();
    let in_flight = out
        .join("models")
        .join(format!("{name}.4242.000000001.tmp"));
    let stale = out
        .join("models")
        .join(format!("{name}.4243.000000002.tmp"));
    for path in [&in_flight, &stale] {
        std::fs::write(path, b"churn-audit artifact v1 sha256:").unwrap();
    }
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let file = std::fs::File::options().write(true).open(&stale).unwrap();
    file.set_modified(an_hour_ago).unwrap();
    drop(file);

    succeeds(&["train", "-q", "--out", path_arg(&out), "--index", "0"]);
    assert!(intact(&artifact));
    assert!(
        in_flight.exists(),
        "another writer's temporary file was deleted"
    );
    assert!(!stale.exists(), "a stale temporary file was kept");
}

/// Rewrites plan.json with `edit`.
fn edit_plan(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("plan.json");
    let mut plan: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut plan);
    std::fs::write(&path, serde_json::to_string_pretty(&plan).unwrap()).unwrap();
}

#[test]
fn an_edited_plan_is_refused_naming_plan_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    succeeds(&[&["plan"], FAST, &["--seeds", "3", "--out", path_arg(&out)]].concat());
    let original = std::fs::read_to_string(out.join("plan.json")).unwrap();
    let plan: Value = serde_json::from_str(&original).unwrap();
    let config_sha = plan["config_sha256"].as_str().unwrap().to_owned();
    let key = |index: usize| plan["models"][index]["key"].as_str().unwrap().to_owned();
    let refused = |edit: &dyn Fn(&mut Value), message: String| {
        std::fs::write(out.join("plan.json"), &original).unwrap();
        edit_plan(&out, edit);
        for command in [
            vec!["train", "--out", path_arg(&out), "--index", "0"],
            vec!["report", path_arg(&out)],
        ] {
            let output = output(&command);
            assert_eq!(output.status.code(), Some(2), "{command:?}");
            let said = stderr(&output);
            let expected = format!(
                "error: {}: edited or damaged: {message}",
                out.join("plan.json").display()
            );
            // One line; `message` may leave off its end.
            assert!(said.starts_with(&expected), "{command:?}: {said}");
            assert_eq!(said.lines().count(), 1, "{command:?}: {said}");
        }
    };
    refused(
        &|plan| {
            let first = plan["models"][0].clone();
            plan["models"].as_array_mut().unwrap().push(first);
        },
        "it lists 4 models, its config 3".into(),
    );
    refused(
        &|plan| plan["models"][1] = plan["models"][0].clone(),
        "models[1] has index 0 (the models must be numbered 0 to 2 in order)".into(),
    );
    refused(
        &|plan| plan["models"] = Value::Array(Vec::new()),
        "it lists 0 models, its config 3".into(),
    );
    refused(
        &|plan| plan["config"]["train"]["epochs"] = 5.into(),
        format!("config_sha256 is {config_sha}, but its config hashes to "),
    );
    refused(
        &|plan| plan["config"]["train"]["batch_size"] = 0.into(),
        "config.train.batch_size: must be at least 1, got 0".into(),
    );
    refused(
        &|plan| plan["models"][1]["spec"]["seeds"]["init"] = 12345.into(),
        "models[1].spec is not model 1 of its config".into(),
    );
    refused(
        &|plan| plan["models"][2]["key"] = key(0).into(),
        format!(
            "models[2].key is {}, but its spec's key is {}",
            key(0),
            key(2)
        ),
    );
}

#[test]
fn fifos_devices_and_directories_in_a_run_directory_neither_hang_nor_stick() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = [&["run"], FAST, &["--seeds", "3", "--out", path_arg(&out)]].concat();
    let first = comparable(&succeeds(&[&args[..], &["--json", "-"]].concat()));
    let (fifo, zeros, directory) = (planned(&out, 0), planned(&out, 1), planned(&out, 2));
    mkfifo(&fifo);
    std::fs::remove_file(&zeros).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &zeros).unwrap();
    std::fs::remove_file(&directory).unwrap();
    std::fs::create_dir(&directory).unwrap();
    std::fs::write(directory.join("notes.txt"), "someone's").unwrap();

    // `report` lists all three, reading none of them.
    let reported = output_soon(&["report", path_arg(&out)]);
    assert_eq!(reported.status.code(), Some(2));
    assert_eq!(
        stderr(&reported),
        format!(
            "model 0: {}: not a regular file (a FIFO)\n\
             model 1: {}: not a regular file (a character device)\n\
             model 2: {}: not a regular file (a directory)\n\
             error: {}: only 0 of the 3 planned models have a usable artifact; a report needs at least 2\n",
            fifo.display(),
            zeros.display(),
            directory.display(),
            out.display()
        )
    );
    // A directory cannot be replaced: refused before any training, kept.
    let refused = output_soon(&args);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        stderr(&refused),
        format!(
            "error: {}: a directory where an artifact goes; it cannot be replaced, so move or remove it\n",
            directory.display()
        )
    );
    assert!(directory.join("notes.txt").exists());
    std::fs::remove_dir_all(&directory).unwrap();
    // The FIFO and the link are retrained over.
    let rerun = output_soon(&[&args[..], &["--json", "-"]].concat());
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    let said = stderr(&rerun);
    for (path, kind) in [(&fifo, "a FIFO"), (&zeros, "a character device")] {
        let line = format!(
            "{}: not a regular file ({kind}); training that model again",
            path.display()
        );
        assert!(said.contains(&line), "{said}");
    }
    assert_eq!(comparable(&rerun), first);
    assert!(artifacts(&out).iter().all(|path| intact(path)));

    // A lock file or a plan that is a FIFO is an error naming it.
    let lock = out.join("locks").join(format!(
        "{}.lock",
        fifo.file_stem().unwrap().to_string_lossy()
    ));
    std::fs::remove_file(&fifo).unwrap();
    mkfifo(&lock);
    let locked = output_soon(&["train", "--out", path_arg(&out), "--index", "0"]);
    assert_eq!(locked.status.code(), Some(2));
    assert_eq!(
        stderr(&locked),
        format!(
            "error: {}: not a regular file (a FIFO); move or remove it\n",
            lock.display()
        )
    );
    let plan = out.join("plan.json");
    mkfifo(&plan);
    for command in [
        vec!["report", path_arg(&out)],
        vec!["train", "--out", path_arg(&out), "--index", "0"],
    ] {
        let refused = output_soon(&command);
        assert_eq!(refused.status.code(), Some(2));
        assert_eq!(
            stderr(&refused),
            format!("error: {}: not a regular file (a FIFO)\n", plan.display())
        );
    }
}

#[test]
fn an_artifact_with_a_valid_hash_but_the_wrong_logits_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = [&["run"], FAST, &["--seeds", "3", "--out", path_arg(&out)]].concat();
    let first = comparable(&succeeds(&[&args[..], &["--json", "-"]].concat()));
    let short = planned(&out, 1);
    let mut logits = 0;
    rewrite(&short, |a| {
        let hex = a["trained"]["test_logits"].as_str().unwrap().to_owned();
        logits = hex.len() / 8;
        a["trained"]["test_logits"] = hex[..hex.len() - 8].into();
    });
    let reported = output(&["report", path_arg(&out), "--json", "-"]);
    assert_eq!(reported.status.code(), Some(1));
    assert_eq!(
        stderr(&reported),
        format!(
            "check failed: complete: only 2 of the 3 planned models are in this report (\
             model 1: {}: it holds {} test logits, expected {logits} (a test example × class each))\n",
            short.display(),
            logits - 1
        )
    );
    let rerun = succeeds(&[&args[..], &["--json", "-"]].concat());
    assert_eq!(
        stderr(&rerun)
            .matches("; training that model again")
            .count(),
        1
    );
    assert_eq!(comparable(&rerun), first);

    // With co-distillation, a peer short or missing is damage too.
    let distilled = dir.path().join("distilled");
    let recipe = [
        &["run"],
        FAST,
        &["--seeds", "2", "--mitigate", "codistill"],
        &["--out", path_arg(&distilled)],
    ]
    .concat();
    succeeds(&recipe);
    let (no_peer, short_peer) = (planned(&distilled, 0), planned(&distilled, 1));
    rewrite(&no_peer, |a| a["peers"] = Value::Array(Vec::new()));
    rewrite(&short_peer, |a| {
        let hex = a["peers"][0]["test_logits"].as_str().unwrap().to_owned();
        a["peers"][0]["test_logits"] = hex[8..].into();
    });
    let reported = output(&["report", path_arg(&distilled)]);
    assert_eq!(reported.status.code(), Some(2));
    let said = stderr(&reported);
    assert!(
        said.starts_with(&format!(
            "model 0: {}: it holds 0 co-distilled peers, expected 1\n\
             model 1: {}: its peer 1 holds {} test logits, expected {logits}\n",
            no_peer.display(),
            short_peer.display(),
            logits - 1
        )),
        "{said}"
    );
}

#[test]
fn out_naming_a_file_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("afile");
    std::fs::write(&file, "mine").unwrap();
    let refused = output(&[&["run"], FAST, &["--seeds", "2", "--out", path_arg(&file)]].concat());
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        stderr(&refused),
        format!("error: --out: {} is not a directory\n", file.display())
    );
    for command in [
        vec!["report", path_arg(&file)],
        vec!["train", "--out", path_arg(&file), "--index", "0"],
    ] {
        let refused = output(&command);
        assert_eq!(refused.status.code(), Some(2));
        assert_eq!(
            stderr(&refused),
            format!("error: {}: not a directory\n", file.display())
        );
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
}

#[test]
fn outputs_landing_in_the_run_directory_are_refused_through_links_and_for_run_too() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = [&["run"], FAST, &["--seeds", "2", "--out", path_arg(&out)]].concat();
    succeeds(&args);
    let plan = out.join("plan.json");
    let artifact = planned(&out, 0);
    let kept = (
        std::fs::read(&plan).unwrap(),
        std::fs::read(&artifact).unwrap(),
    );
    let resolved = std::fs::canonicalize(&out).unwrap();
    let refusal = |flag: &str, named: &Path| {
        format!(
            "error: {flag}: {} would replace part of the run directory {}; write reports elsewhere\n",
            named.display(),
            resolved.display()
        )
    };
    let (to_plan, to_artifact) = (dir.path().join("to-plan"), dir.path().join("to-artifact"));
    std::os::unix::fs::symlink(&plan, &to_plan).unwrap();
    std::os::unix::fs::symlink(&artifact, &to_artifact).unwrap();
    for (flag, link) in [("--json", &to_plan), ("--markdown", &to_artifact)] {
        let refused = output(&["report", path_arg(&out), flag, path_arg(link)]);
        assert_eq!(refused.status.code(), Some(2));
        assert_eq!(stderr(&refused), refusal(flag, link));
    }
    let refused = output(&[&args[..], &["--json", path_arg(&artifact)]].concat());
    assert_eq!(stderr(&refused), refusal("--json", &artifact));
    let audit = [&["audit"], FAST, &["--seeds", "2", "--out", path_arg(&out)]].concat();
    let refused = output(&[&audit[..], &["--html", path_arg(&to_plan)]].concat());
    assert_eq!(stderr(&refused), refusal("--html", &to_plan));
    let summary = churn_audit()
        .args(&args)
        .arg("--github-summary")
        .env("GITHUB_STEP_SUMMARY", &plan)
        .output()
        .unwrap();
    assert_eq!(summary.status.code(), Some(2));
    assert_eq!(stderr(&summary), refusal("--github-summary", &plan));
    assert_eq!(
        (
            std::fs::read(&plan).unwrap(),
            std::fs::read(&artifact).unwrap()
        ),
        kept
    );

    // A report may go into, or beside, a run directory this run creates.
    let fresh = dir.path().join("runs/fresh");
    succeeds(
        &[
            &["run"],
            FAST,
            &[
                "--seeds",
                "2",
                "--out",
                path_arg(&fresh),
                "--json",
                path_arg(&fresh.join("report.json")),
            ],
        ]
        .concat(),
    );
    assert!(fresh.join("report.json").is_file());
}

#[test]
fn report_keeps_the_plans_data_and_a_linked_models_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (data, test) = (dir.path().join("rows.csv"), dir.path().join("held-out.csv"));
    std::fs::copy(Path::new(ROOT).join("fixtures/small.csv"), &data).unwrap();
    std::fs::copy(Path::new(ROOT).join("fixtures/small-test.csv"), &test).unwrap();
    let (out, store) = (dir.path().join("run"), dir.path().join("store"));
    let source = format!("csv:{}", data.display());
    succeeds(
        &[
            &["run"],
            FAST,
            &[
                "--seeds",
                "2",
                "--data",
                &source,
                "--test",
                path_arg(&test),
                "--out",
                path_arg(&out),
            ],
        ]
        .concat(),
    );
    // The models on other storage, linked in.
    std::fs::rename(out.join("models"), &store).unwrap();
    std::os::unix::fs::symlink(&store, out.join("models")).unwrap();
    let artifact = files(&store, ".artifact")[0].clone();
    let kept: Vec<Vec<u8>> = [&data, &test, &artifact]
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect();
    let resolved = std::fs::canonicalize(&out).unwrap();
    for (target, message) in [
        (&data, "the --data file this command reads".to_owned()),
        (&test, "the --test file this command reads".to_owned()),
        (
            &artifact,
            format!("part of the run directory {}", resolved.display()),
        ),
    ] {
        let refused = output(&["report", path_arg(&out), "--json", path_arg(target)]);
        assert_eq!(refused.status.code(), Some(2));
        assert_eq!(
            stderr(&refused),
            format!(
                "error: --json: {} would replace {message}; write reports elsewhere\n",
                target.display()
            )
        );
    }
    let after: Vec<Vec<u8>> = [&data, &test, &artifact]
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect();
    assert_eq!(after, kept);
    succeeds(&["report", path_arg(&out)]);
}

#[test]
fn outputs_never_replace_a_file_of_an_idx_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("idx");
    std::fs::create_dir(&idx).unwrap();
    for entry in std::fs::read_dir(Path::new(ROOT).join("fixtures/idx")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), idx.join(entry.file_name())).unwrap();
    }
    let images = idx.join("t10k-images-idx3-ubyte");
    let before = std::fs::read(&images).unwrap();
    let source = format!("idx:{}", idx.display());
    let refused = output(
        &[
            &["run"],
            FAST,
            &["--data", &source, "--json", path_arg(&images)],
        ]
        .concat(),
    );
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        stderr(&refused),
        format!(
            "error: --json: {} would replace a file of the data in {}; write reports elsewhere\n",
            images.display(),
            std::fs::canonicalize(&idx).unwrap().display()
        )
    );
    assert_eq!(std::fs::read(&images).unwrap(), before);
    // A report beside the data is fine.
    let report = idx.join("report.json");
    succeeds(
        &[
            &["run"],
            FAST,
            &["--data", &source, "--json", path_arg(&report)],
        ]
        .concat(),
    );
    assert!(report.is_file());
}

#[test]
fn an_incomplete_directory_fails_the_complete_check_in_junit_without_other_checks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    succeeds(&[&["plan"], FAST, &["--seeds", "3", "--out", path_arg(&out)]].concat());
    for index in ["0", "1"] {
        succeeds(&["train", "-q", "--out", path_arg(&out), "--index", index]);
    }
    let junit = dir.path().join("gate.xml");
    let reported = output(&["report", path_arg(&out), "--junit", path_arg(&junit)]);
    assert_eq!(reported.status.code(), Some(1), "{}", stderr(&reported));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"1\" failures=\"1\""), "{xml}");
    assert!(
        xml.contains("<testcase classname=\"churn-audit.gate\" name=\"complete\">"),
        "{xml}"
    );

    succeeds(&["train", "-q", "--out", path_arg(&out), "--index", "2"]);
    succeeds(&["report", path_arg(&out), "--junit", path_arg(&junit)]);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"1\" failures=\"0\""), "{xml}");
    // Without checks or JUnit, a complete directory's report has no gate,
    // as one process's run has none.
    let plain: Value =
        serde_json::from_slice(&succeeds(&["report", path_arg(&out), "--json", "-"]).stdout)
            .unwrap();
    assert_eq!(plain.get("gate"), None);
}

#[test]
fn logits_that_do_not_hash_to_the_recorded_predictions_are_damage() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    succeeds(&[&["run"], FAST, &["--seeds", "2", "--out", path_arg(&out)]].concat());
    let edited = planned(&out, 1);
    let mut recorded = String::new();
    rewrite(&edited, |a| {
        let hex = a["trained"]["test_logits"].as_str().unwrap().to_owned();
        // Another first logit, of the same length.
        a["trained"]["test_logits"] = format!("0000803f{}", &hex[8..]).into();
        recorded = a["trained"]["predictions_sha256"].as_str().unwrap()[..12].to_owned();
    });
    let reported = output(&["report", path_arg(&out)]);
    assert_eq!(reported.status.code(), Some(2));
    let said = stderr(&reported);
    let expected = format!("model 1: {}: its test logits hash to ", edited.display());
    assert!(said.starts_with(&expected), "{said}");
    assert!(
        said.contains(&format!(
            ", not to the predictions_sha256 it records ({recorded})\n"
        )),
        "{said}"
    );
}

#[test]
fn a_path_too_long_for_an_artifact_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    // Short enough for the run directory and its models/ (PATH_MAX is 4096),
    // too long once an artifact's name is added.
    let mut deep = dir.path().to_owned();
    while deep.as_os_str().len() < 4010 {
        let room = 4010 - deep.as_os_str().len();
        deep.push("d".repeat(room.clamp(1, 200)));
    }
    std::fs::create_dir_all(&deep).unwrap();
    let out = deep.join("r");
    let started = Instant::now();
    let refused = output(
        &[
            &["run"],
            FAST,
            &["--seeds", "2", "--epochs", "200", "--out", path_arg(&out)],
        ]
        .concat(),
    );
    assert_eq!(refused.status.code(), Some(2));
    let said = stderr(&refused);
    assert!(
        said.starts_with(&format!("error: --out: cannot write in {}", out.display()))
            && said.ends_with("File name too long (os error 36)\n"),
        "{said}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it trained first"
    );
}

#[test]
fn a_requeued_task_of_a_stored_model_succeeds_in_a_read_only_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    succeeds(&[&["plan"], FAST, &["--seeds", "2", "--out", path_arg(&out)]].concat());
    succeeds(&["train", "-q", "--out", path_arg(&out), "--index", "0"]);
    let models = out.join("models");
    let Some(_guard) = Immutable::set(&models) else {
        eprintln!("skipped: chattr +i is not available here");
        return;
    };
    let again = output(&["train", "--out", path_arg(&out), "--index", "0"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(
        stderr(&again),
        format!(
            "model 0: already trained ({}); nothing to do\n",
            planned_path(&out, 0)
        )
    );
    let new = output(&["train", "-q", "--out", path_arg(&out), "--index", "1"]);
    assert_eq!(new.status.code(), Some(2));
    assert_eq!(
        stderr(&new),
        format!(
            "error: --out: cannot write in {}: Operation not permitted (os error 1)\n",
            models.display()
        )
    );
}

#[test]
fn replacing_the_plan_of_another_config_is_said_even_when_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shared");
    let plan = |seeds: &str| {
        let output = succeeds(
            &[
                &["plan"],
                FAST,
                &["--seeds", seeds, "--out", path_arg(&out)],
            ]
            .concat(),
        );
        stderr(&output)
    };
    assert_eq!(plan("2"), "");
    assert_eq!(plan("2"), "", "the same plan again replaces nothing");
    let first: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
    let note = format!(
        "note: the run directory's plan.json was another config's (config_sha256 {}); it is now this command's: array tasks still working from the old plan will train this plan's models, and `report` counts only this plan's\n",
        &first["config_sha256"].as_str().unwrap()[..12]
    );
    assert_eq!(plan("3"), note);
    let second: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
    let rerun = succeeds(&[&["run"], FAST, &["--seeds", "2", "--out", path_arg(&out)]].concat());
    assert_eq!(
        stderr(&rerun),
        note.replace(
            &first["config_sha256"].as_str().unwrap()[..12],
            &second["config_sha256"].as_str().unwrap()[..12]
        )
    );

    // On two threads `plan` trains each model alone on both, a parallel
    // `run` each on one: the same config, other models.
    let two_threads = [
        "--epochs",
        "3",
        "--threads",
        "2",
        "--seeds",
        "2",
        "-q",
        "--out",
    ];
    succeeds(&[&["plan"], &two_threads[..], &[path_arg(&out)]].concat());
    let replaced = succeeds(&[&["run"], &two_threads[..], &[path_arg(&out)]].concat());
    assert_eq!(
        stderr(&replaced),
        "note: the run directory's plan.json was this config's models trained another way (`plan` trains each alone on --threads threads, a parallel `run` each on one thread), under other keys; it is now this command's: array tasks still working from the old plan will train this plan's models, and `report` counts only this plan's\n"
    );
}

#[test]
fn a_directory_in_one_models_place_fails_only_that_models_task() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("array");
    succeeds(&[&["plan"], FAST, &["--seeds", "3", "--out", path_arg(&out)]].concat());
    let blocked = planned_path(&out, 1);
    std::fs::create_dir_all(&blocked).unwrap();
    let task = |index: &str| {
        output(&[
            "train",
            "--out",
            path_arg(&out),
            "--index",
            index,
            "--quiet",
        ])
    };
    assert!(task("0").status.success());
    let refused = task("1");
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        stderr(&refused),
        format!("error: {blocked}: a directory where an artifact goes; it cannot be replaced, so move or remove it\n")
    );
    assert!(task("2").status.success());
    assert!(intact(Path::new(&planned_path(&out, 2))));
}
