//! Trained models on disk (`--save-models`) and anchors read back
//! (`--anchor`): a previous model that new models are measured against and,
//! with `--mitigate anchor`, distilled toward.
//!
//! A saved model is three files: `model-K.safetensors` (the parameters),
//! `model-K.json` (the sidecar: resolved config, spec, data fingerprints,
//! weights sha256) and `model-K.predictions.json` (its probabilities on the
//! training and test sets). A predictions file alone is also an anchor, so a
//! model trained elsewhere (a production model, a PyTorch script) can anchor
//! a run: docs/mitigations.md gives its format.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::RunConfig;
use crate::data::hex;
use crate::error::{torch_message, Error, Result};
use crate::output::write_file;
use crate::regular_file::read_regular_text;
use crate::report::{short_hash, DatasetInfo, ToolInfo};
use crate::train::{ModelSpec, Network, TrainData, TrainedModel};

const SIDECAR_FORMAT: &str = "churn-audit-model";
const PREDICTIONS_FORMAT: &str = "churn-audit-predictions";
const FORMAT_VERSION: u32 = 1;
/// Every file of a saved model is named model-K...; none may be replaced.
pub const SAVED_PREFIX: &str = "model-";

/// What must match for a model's probabilities to mean anything on a run's data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataFingerprints {
    pub name: String,
    pub n_train: usize,
    pub n_test: usize,
    pub n_classes: usize,
    pub train_sha256: String,
    pub test_sha256: String,
    pub label_map_sha256: String,
}

impl DataFingerprints {
    pub fn of(dataset: &DatasetInfo) -> Self {
        DataFingerprints {
            name: dataset.name.clone(),
            n_train: dataset.n_train,
            n_test: dataset.n_test,
            n_classes: dataset.n_classes,
            train_sha256: dataset.train_sha256.clone(),
            test_sha256: dataset.test_sha256.clone(),
            label_map_sha256: dataset.label_map_sha256.clone(),
        }
    }

    /// The first difference from `run`'s, as a sentence.
    fn mismatch(&self, run: &DataFingerprints) -> Option<String> {
        let fields = [
            ("training set", &self.train_sha256, &run.train_sha256),
            ("test set", &self.test_sha256, &run.test_sha256),
            ("label map", &self.label_map_sha256, &run.label_map_sha256),
        ];
        fields.iter().find(|(_, a, b)| a != b).map(|(what, a, b)| {
            format!(
                "its {what} (sha256 {}…, {}) differs from this run's ({}…, {}); an anchor must come from the same data",
                short_hash(a),
                self.name,
                short_hash(b),
                run.name
            )
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    format: String,
    format_version: u32,
    tool: ToolInfo,
    config: RunConfig,
    config_sha256: String,
    index: usize,
    key: String,
    spec: ModelSpec,
    data: DataFingerprints,
    weights_sha256: String,
    /// File names, next to the sidecar.
    weights_file: String,
    predictions_file: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct PredictionsFile {
    format: String,
    format_version: u32,
    data: DataFingerprints,
    /// One row per training example, in the dataset's training order.
    train_probabilities: Vec<Vec<f32>>,
    /// One row per test example, in test order.
    test_probabilities: Vec<Vec<f32>>,
}

/// Which model of a run is being saved.
pub struct ModelId<'a> {
    pub index: usize,
    pub key: &'a str,
    pub spec: &'a ModelSpec,
}

/// Saves a trained model into `dir` as the three files.
pub fn save(
    dir: &Path,
    config: &RunConfig,
    id: ModelId,
    trained: &TrainedModel,
    data: &TrainData,
    dataset: &DatasetInfo,
) -> Result<()> {
    let ModelId { index, key, spec } = id;
    let network = trained
        .network
        .as_ref()
        .expect("models trained to be saved keep their network");
    let stem = format!("{SAVED_PREFIX}{index}");
    let weights_file = format!("{stem}.safetensors");
    let predictions_file = format!("{stem}.predictions.json");
    let classes = dataset.n_classes;
    let probabilities =
        |logits: Vec<f32>| -> Vec<Vec<f32>> { logits.chunks(classes).map(softmax).collect() };
    let predictions = PredictionsFile {
        format: PREDICTIONS_FORMAT.into(),
        format_version: FORMAT_VERSION,
        data: DataFingerprints::of(dataset),
        train_probabilities: probabilities(network.logits(data.train_features())?),
        test_probabilities: probabilities(trained.result.test_logits.clone()),
    };
    write_json(&dir.join(&predictions_file), &predictions)?;
    save_weights(network, &dir.join(&weights_file))?;
    let sidecar = Sidecar {
        format: SIDECAR_FORMAT.into(),
        format_version: FORMAT_VERSION,
        tool: ToolInfo::current(),
        config: config.clone(),
        config_sha256: config.sha256(),
        index,
        key: key.into(),
        spec: spec.clone(),
        data: DataFingerprints::of(dataset),
        weights_sha256: trained.result.weights_sha256.clone(),
        weights_file,
        predictions_file,
    };
    // Last: a sidecar names files that are complete.
    write_json(&dir.join(format!("{stem}.json")), &sidecar)
}

/// A --save-models directory, held (flock on the directory itself) for the
/// whole run, so two runs started at once cannot mix their models in it.
pub struct SaveDir {
    path: PathBuf,
    _held: std::fs::File,
}

impl SaveDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Claims a --save-models directory before any training, refusing one that
/// cannot be written, that another run is saving into, or that already holds
/// saved models: replacing them would silently change what an `--anchor`
/// naming one of them means.
pub fn check_directory(dir: &Path) -> Result<SaveDir> {
    let refuse = |message: String| Err(Error::usage("--save-models", message));
    if dir.exists() && !dir.is_dir() {
        return refuse(format!("{} is not a directory", dir.display()));
    }
    if let Err(err) = std::fs::create_dir_all(dir) {
        return refuse(format!("cannot create {}: {err}", dir.display()));
    }
    let held = match std::fs::File::open(dir) {
        Ok(held) => held,
        Err(err) => return refuse(format!("cannot open {}: {err}", dir.display())),
    };
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    if unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return refuse(format!(
            "another churn-audit run is saving models into {}; save into a new directory",
            dir.display()
        ));
    }
    // Looked at only once the directory is ours: a run that held it before
    // has finished, and its models are here to be seen.
    let mut saved: Vec<String> = std::fs::read_dir(dir)
        .map_err(|err| {
            Error::usage(
                "--save-models",
                format!("cannot read {}: {err}", dir.display()),
            )
        })?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(SAVED_PREFIX))
        .collect();
    saved.sort();
    if let Some(first) = saved.first() {
        let others = match saved.len() - 1 {
            0 => String::new(),
            more => format!(" and {more} more"),
        };
        return refuse(format!(
            "{} already holds files named like saved models ({first}{others}); save into a new directory",
            dir.display(),
        ));
    }
    let probe = dir.join(format!(".churn-audit-probe.{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(SaveDir {
                path: dir.to_owned(),
                _held: held,
            })
        }
        Err(err) => refuse(format!("cannot write in {}: {err}", dir.display())),
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string(value).expect("saved-model files always serialise");
    write_file(path, &(text + "\n"))
}

/// libtorch writes safetensors in place, so it writes a temporary name that
/// is renamed over the target once complete.
fn save_weights(network: &Network, path: &Path) -> Result<()> {
    let temporary = path.with_extension(format!("{}.tmp.safetensors", std::process::id()));
    let saved = network
        .save(&temporary)
        .map_err(|err| std::io::Error::other(err.to_string()))
        .and_then(|()| std::fs::rename(&temporary, path));
    saved.map_err(|source| {
        let _ = std::fs::remove_file(&temporary);
        Error::Output {
            path: path.to_owned(),
            source,
        }
    })
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = row.iter().map(|&z| f64::from(z - max).exp()).collect();
    let total: f64 = exp.iter().sum();
    exp.iter().map(|e| (e / total) as f32).collect()
}

/// An anchor, read and checked against the run's data.
pub struct Anchor {
    pub info: AnchorInfo,
    /// Row-major n_train × n_classes.
    pub train_probabilities: Vec<f32>,
    /// Row-major n_test × n_classes.
    pub test_probabilities: Vec<f32>,
}

/// Where an anchor came from, as the report records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnchorInfo {
    pub path: PathBuf,
    /// "model" (weights and sidecar) or "predictions" (a predictions file).
    pub kind: String,
    /// sha256 of its training then test probabilities as f32 LE.
    pub sha256: String,
    /// The anchor model's weights sha256 (models only).
    pub weights_sha256: Option<String>,
}

/// Reads the anchor at `path`: a model's .safetensors or sidecar .json, or a
/// predictions file. Refused when its data fingerprints differ from the run's.
pub fn load_anchor(path: &Path, data: &TrainData, dataset: &DatasetInfo) -> Result<Anchor> {
    let refuse =
        |message: String| Error::usage("--anchor", format!("{}: {message}", path.display()));
    let run = DataFingerprints::of(dataset);
    let weights_given = path.extension().is_some_and(|e| e == "safetensors");
    let sidecar_path = if weights_given {
        path.with_extension("json")
    } else {
        path.to_owned()
    };
    // Far more than a predictions file of this data needs (64 bytes a
    // value: indented float64 from another tool fits), so a huge file is
    // refused before it is read.
    let limit = (run.n_train + run.n_test) as u64 * (run.n_classes as u64 * 64 + 64) + (1 << 20);
    // Named on its own only where it is not the file given.
    let sidecar_named = if weights_given {
        format!("its sidecar {} ", sidecar_path.display())
    } else {
        String::new()
    };
    let text = read_regular_text(&sidecar_path, limit).map_err(|why| match weights_given {
        true => refuse(format!("its sidecar {}: {why}", sidecar_path.display())),
        false => refuse(why),
    })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|err| refuse(format!("{sidecar_named}is not valid JSON: {err}")))?;
    let format = value
        .get("format")
        .and_then(|f| f.as_str())
        .unwrap_or_default();
    let malformed = |err: serde_json::Error| refuse(format!("malformed {format} file: {err}"));
    let (kind, weights_sha256, train, test) = match format {
        SIDECAR_FORMAT => {
            let sidecar: Sidecar = serde_json::from_str(&text).map_err(malformed)?;
            check_version(sidecar.format_version).map_err(&refuse)?;
            check_sidecar(&sidecar).map_err(&refuse)?;
            if let Some(problem) = sidecar.data.mismatch(&run) {
                return Err(refuse(problem));
            }
            if let Some(problem) = sidecar.config.model.problem(data.shape) {
                return Err(refuse(format!("its model cannot be built: {problem}")));
            }
            let weights = if weights_given {
                path.to_owned()
            } else {
                weights_beside(&sidecar_path, &sidecar.weights_file).map_err(&refuse)?
            };
            if let Err(err) = std::fs::metadata(&weights) {
                return Err(refuse(format!("cannot read {}: {err}", weights.display())));
            }
            let mut network = Network::new(0, data, &sidecar.config.model)?;
            network.load(&weights).map_err(|err| {
                refuse(format!(
                    "cannot load {} as the sidecar's model: {}",
                    weights.display(),
                    torch_message(&err)
                ))
            })?;
            let loaded = network.weights_sha256()?;
            if loaded != sidecar.weights_sha256 {
                return Err(refuse(format!(
                    "{} holds weights with sha256 {loaded}, but the sidecar says {}: the file changed since it was saved",
                    weights.display(),
                    sidecar.weights_sha256
                )));
            }
            // Matrix products can round differently with another thread
            // count: the model's own makes its probabilities bitwise those of
            // its predictions file, so either names the same anchor.
            tch::set_num_threads(sidecar.spec.threads as i32);
            let probabilities = |logits: Vec<f32>| -> Vec<f32> {
                logits.chunks(dataset.n_classes).flat_map(softmax).collect()
            };
            (
                "model",
                Some(loaded),
                probabilities(network.logits(data.train_features())?),
                probabilities(network.logits(data.test_features())?),
            )
        }
        PREDICTIONS_FORMAT => {
            let file: PredictionsFile = serde_json::from_str(&text).map_err(malformed)?;
            check_version(file.format_version).map_err(&refuse)?;
            if let Some(problem) = file.data.mismatch(&run) {
                return Err(refuse(problem));
            }
            let rows = |field, rows: &[Vec<f32>], n| {
                flatten_probabilities(field, rows, n, run.n_classes).map_err(&refuse)
            };
            let train = rows("train_probabilities", &file.train_probabilities, run.n_train)?;
            let test = rows("test_probabilities", &file.test_probabilities, run.n_test)?;
            ("predictions", None, train, test)
        }
        _ => {
            return Err(refuse(format!(
                "not a saved model or predictions file (its \"format\" is not \"{SIDECAR_FORMAT}\" or \"{PREDICTIONS_FORMAT}\")"
            )))
        }
    };
    let mut hasher = Sha256::new();
    for value in train.iter().chain(&test) {
        hasher.update(value.to_le_bytes());
    }
    Ok(Anchor {
        info: AnchorInfo {
            path: path.to_owned(),
            kind: kind.into(),
            sha256: hex(&hasher.finalize()),
            weights_sha256,
        },
        train_probabilities: train,
        test_probabilities: test,
    })
}

/// The weights a sidecar names: a bare file name in the sidecar's own
/// directory (links followed), or, for a renamed copy, the .safetensors of
/// the sidecar's own name.
fn weights_beside(sidecar: &Path, named: &str) -> std::result::Result<PathBuf, String> {
    if Path::new(named).file_name() != Some(std::ffi::OsStr::new(named)) {
        return Err(format!(
            "its weights_file \"{named}\" must be a file name beside the sidecar"
        ));
    }
    let real = std::fs::canonicalize(sidecar).unwrap_or_else(|_| sidecar.to_owned());
    let named = real.with_file_name(named);
    let renamed = sidecar.with_extension("safetensors");
    Ok(if !named.exists() && renamed.exists() {
        renamed
    } else {
        named
    })
}

/// A sidecar whose config or spec no command could have written, or whose
/// key is not its spec's, was edited or damaged: training under it, or at its
/// thread count, could fail in ways that would not name the file.
fn check_sidecar(sidecar: &Sidecar) -> std::result::Result<(), String> {
    let damaged = |why: String| format!("edited or damaged: {why}");
    crate::cli::check_config(&sidecar.config).map_err(|why| damaged(format!("config.{why}")))?;
    crate::cli::check_spec(&sidecar.spec).map_err(|why| damaged(format!("spec.{why}")))?;
    let key = sidecar.config.model_key(&sidecar.spec);
    if sidecar.key != key {
        return Err(damaged(format!(
            "its key is {}, but its config and spec make {key}",
            sidecar.key
        )));
    }
    Ok(())
}

fn check_version(version: u32) -> std::result::Result<(), String> {
    if version != FORMAT_VERSION {
        return Err(format!(
            "format_version {version} is not supported (this churn-audit reads {FORMAT_VERSION})"
        ));
    }
    Ok(())
}

/// Rows of probabilities, checked (count, width, each a distribution) and
/// flattened row-major.
fn flatten_probabilities(
    field: &str,
    rows: &[Vec<f32>],
    n_rows: usize,
    n_classes: usize,
) -> std::result::Result<Vec<f32>, String> {
    if rows.len() != n_rows {
        return Err(format!(
            "{field} has {} rows; the data has {n_rows}",
            rows.len()
        ));
    }
    for (i, row) in rows.iter().enumerate() {
        if row.len() != n_classes {
            return Err(format!(
                "{field}[{i}] has {} values; the data has {n_classes} classes",
                row.len()
            ));
        }
        let total: f64 = row.iter().map(|&p| f64::from(p)).sum();
        if row.iter().any(|p| !(0.0..=1.0).contains(p)) || (total - 1.0).abs() > 1e-3 {
            return Err(format!(
                "{field}[{i}] is not a probability distribution (values in [0, 1] summing to 1)"
            ));
        }
    }
    Ok(rows.concat())
}
