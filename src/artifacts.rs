//! Run directories: the plan of a run and one artifact per trained model,
//! so that a run can be resumed, or fanned out over a cluster's job array,
//! without losing or double-counting a model (docs/cluster.md).
//!
//! ```text
//! DIR/plan.json              the resolved config and every model's key and spec
//! DIR/models/KEY.artifact    one trained model, KEY = sha256 of its resolved config
//! DIR/locks/KEY.lock         held (flock) while a process trains that model
//! ```
//!
//! An artifact is a header line `churn-audit artifact v1 sha256:HEX` followed by
//! a JSON payload whose sha256 is HEX, so a truncated or damaged file is told
//! apart from a good one. Files are replaced atomically and durably
//! (`output::replace`): a crash leaves the old file or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{ResolvedModel, RunConfig};
use crate::data::hex;
use crate::error::{Error, Result};
use crate::output::{replace, temporary_sibling};
use crate::regular_file::{describe, read_regular, ReadError};
use crate::report::{short_hash, DatasetInfo, ToolInfo};
use crate::train::{logits_sha256, Mitigation, ModelSpec, Trained};

const HEADER: &str = "churn-audit artifact v1 sha256:";
const PLAN_VERSION: u32 = 1;
const PLAN_FILE: &str = "plan.json";
const MODELS: &str = "models";
const LOCKS: &str = "locks";
/// A plan holds a config and at most a few hundred specs: kilobytes.
const MAX_PLAN_BYTES: u64 = 64 << 20;
/// Room in an artifact beyond its logits (config, hashes, formatting).
const ARTIFACT_SLACK_BYTES: u64 = 64 << 20;
/// A temporary file younger than this may be another writer's, still being
/// written (on a file system without working locks two can write one model):
/// left alone. Writing an artifact takes seconds at most.
const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

/// What must match for models to be combined in one report: the libtorch
/// they were trained with and the data, by fingerprint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    pub libtorch: String,
    pub train_sha256: String,
    pub test_sha256: String,
    pub label_map_sha256: String,
}

impl Origin {
    /// This build's libtorch and `dataset`'s fingerprints.
    pub fn here(dataset: &DatasetInfo) -> Self {
        Origin {
            libtorch: ToolInfo::current().libtorch,
            train_sha256: dataset.train_sha256.clone(),
            test_sha256: dataset.test_sha256.clone(),
            label_map_sha256: dataset.label_map_sha256.clone(),
        }
    }

    /// Each field that differs from `expected`, as "field VALUE (expected VALUE)".
    pub fn differences(&self, expected: &Origin) -> Vec<String> {
        [
            ("libtorch", &self.libtorch, &expected.libtorch),
            ("train_sha256", &self.train_sha256, &expected.train_sha256),
            ("test_sha256", &self.test_sha256, &expected.test_sha256),
            (
                "label_map_sha256",
                &self.label_map_sha256,
                &expected.label_map_sha256,
            ),
        ]
        .into_iter()
        .filter(|(_, found, wanted)| found != wanted)
        .map(|(field, found, wanted)| format!("{field} {found} (expected {wanted})"))
        .collect()
    }
}

/// One trained model, enough to rebuild its entry in any report bit for bit.
#[derive(Debug, Serialize, Deserialize)]
pub struct Artifact {
    /// sha256 of `model`, and the file's name.
    pub key: String,
    /// The model's resolved configuration: the shared recipe and its spec.
    pub model: ResolvedModel,
    pub origin: Origin,
    /// Test accuracy, for whoever reads the file (reports recompute it from the logits).
    pub accuracy: f64,
    /// Test logits, weights and data-order hashes, steps and training time.
    pub trained: Trained,
    /// With co-distillation, the other members of the model's run (member 1 on).
    pub peers: Vec<Trained>,
}

/// Why an artifact cannot be used.
#[derive(Debug, PartialEq)]
pub enum Unusable {
    Missing,
    /// Truncated, corrupted, or not an artifact of this model.
    Damaged(String),
    /// Intact, but trained on other data or with another libtorch.
    Mismatch(String),
}

/// The models to train and what they were planned against.
#[derive(Debug, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub config: RunConfig,
    pub config_sha256: String,
    pub origin: Origin,
    pub models: Vec<PlannedModel>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PlannedModel {
    pub index: usize,
    pub key: String,
    pub spec: ModelSpec,
}

/// What a run directory's plan held before `write_plan` replaced it.
#[derive(Debug, PartialEq)]
pub enum ReplacedPlan {
    /// Another config's models; the old plan's config_sha256.
    OtherConfig(String),
    /// The same config's models trained another way, so under other keys
    /// (`plan` trains each alone on --threads threads, a parallel `run` each
    /// on one thread).
    OtherModels,
}

impl ReplacedPlan {
    fn between(old: &serde_json::Value, new: &Plan) -> Option<Self> {
        let config = old.get("config_sha256")?.as_str()?;
        if config != new.config_sha256 {
            return Some(ReplacedPlan::OtherConfig(config.to_owned()));
        }
        let old_keys: Vec<&str> = old
            .get("models")?
            .as_array()?
            .iter()
            .filter_map(|model| model.get("key")?.as_str())
            .collect();
        let new_keys: Vec<&str> = new.models.iter().map(|model| model.key.as_str()).collect();
        (old_keys != new_keys).then_some(ReplacedPlan::OtherModels)
    }
}

impl Plan {
    pub fn new(config: RunConfig, origin: Origin, specs: Vec<ModelSpec>) -> Self {
        let models = specs
            .into_iter()
            .enumerate()
            .map(|(index, spec)| PlannedModel {
                index,
                key: config.model_key(&spec),
                spec,
            })
            .collect();
        Plan {
            version: PLAN_VERSION,
            config_sha256: config.sha256(),
            config,
            origin,
            models,
        }
    }
}

impl Plan {
    /// Why this plan cannot be what `plan` or `run --out` wrote: an edited or
    /// damaged field, which would mislabel models or train under another key.
    fn check(&self) -> std::result::Result<(), String> {
        if self.version != PLAN_VERSION {
            return Err(format!(
                "plan version {} (this churn-audit reads version {PLAN_VERSION})",
                self.version
            ));
        }
        let config = &self.config;
        crate::cli::check_config(config)
            .map_err(|why| format!("edited or damaged: config.{why}"))?;
        let actual = config.sha256();
        if self.config_sha256 != actual {
            return Err(format!(
                "edited or damaged: config_sha256 is {}, but its config hashes to {actual}",
                self.config_sha256
            ));
        }
        let n = self.models.len();
        if n != config.models {
            return Err(format!(
                "edited or damaged: it lists {n} models, its config {}",
                config.models
            ));
        }
        for (position, planned) in self.models.iter().enumerate() {
            if planned.index != position {
                return Err(format!(
                    "edited or damaged: models[{position}] has index {} (the models must be numbered 0 to {} in order)",
                    planned.index,
                    n - 1
                ));
            }
            // As `plan` lists it, or as the parallel mode trains it (one thread).
            let expected = config.model_spec(&config.vary, position, position);
            let one_thread = ModelSpec {
                threads: 1,
                ..expected.clone()
            };
            if planned.spec != expected && planned.spec != one_thread {
                return Err(format!(
                    "edited or damaged: models[{position}].spec is not model {position} of its config"
                ));
            }
            let key = config.model_key(&planned.spec);
            if planned.key != key {
                return Err(format!(
                    "edited or damaged: models[{position}].key is {}, but its spec's key is {key}",
                    planned.key
                ));
            }
        }
        Ok(())
    }

    /// Refuses `found`, the origin of what is here in `dir` (`what`), unless
    /// it is the plan's.
    pub fn require(&self, found: &Origin, dir: &Path, what: &str) -> Result<()> {
        let differences = found.differences(&self.origin);
        if differences.is_empty() {
            return Ok(());
        }
        Err(Error::RunDir {
            path: dir.to_owned(),
            message: format!("{what} differs from the plan: {}", differences.join(", ")),
        })
    }
}

/// An exclusive flock on one model's lock file, released when dropped or
/// when the process dies (kill -9 included), so it can never go stale.
pub struct Lock {
    _held: File,
}

pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn at(root: &Path) -> Self {
        RunDir {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directory and checks that every part of it takes new files,
    /// so a read-only or missing destination fails before any training; so
    /// does a directory standing where an artifact goes, which no write can
    /// replace (and which may hold someone's files).
    pub fn prepare(&self) -> Result<()> {
        self.prepare_slots(|_| true)
    }

    /// As `prepare`, for an array task that writes model `key` alone: a
    /// directory in another model's place is that model's task's problem.
    pub fn prepare_slot(&self, key: &str) -> Result<()> {
        let slot = format!("{key}.artifact");
        self.prepare_slots(|name| name == slot)
    }

    fn prepare_slots(&self, written: impl Fn(&str) -> bool) -> Result<()> {
        for dir in [
            self.root.clone(),
            self.root.join(MODELS),
            self.root.join(LOCKS),
        ] {
            if fs::metadata(&dir).is_ok_and(|meta| !meta.is_dir()) {
                return Err(Error::usage(
                    "--out",
                    format!("{} is not a directory", dir.display()),
                ));
            }
            // As long a name as an artifact's temporary file, so that a path
            // too long for one fails here, before any training.
            let probe = temporary_sibling(&dir.join(format!("{:.<64}.artifact", ".probe")));
            let writable = fs::create_dir_all(&dir).and_then(|()| {
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&probe)
                    .map(drop)
            });
            if let Err(err) = writable {
                return Err(Error::usage(
                    "--out",
                    format!("cannot write in {}: {err}", dir.display()),
                ));
            }
            let _ = fs::remove_file(&probe);
        }
        let models = fs::read_dir(self.root.join(MODELS)).map_err(|source| Error::Output {
            path: self.root.join(MODELS),
            source,
        })?;
        for entry in models.flatten() {
            let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_dir && name.ends_with(".artifact") && written(&name) {
                return Err(Error::RunDir {
                    path: entry.path(),
                    message: "a directory where an artifact goes; it cannot be replaced, so move or remove it".into(),
                });
            }
        }
        Ok(())
    }

    pub fn artifact_path(&self, key: &str) -> PathBuf {
        self.root.join(MODELS).join(format!("{key}.artifact"))
    }

    fn plan_path(&self) -> PathBuf {
        self.root.join(PLAN_FILE)
    }

    /// Writes `plan`, returning what it replaced when that planned other
    /// models: array tasks still running on the old plan would now train this
    /// one's, which the caller should say.
    pub fn write_plan(&self, plan: &Plan) -> Result<Option<ReplacedPlan>> {
        let path = self.plan_path();
        let previous = read_regular(&path, MAX_PLAN_BYTES)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|old| ReplacedPlan::between(&old, plan));
        let json = serde_json::to_string_pretty(plan).expect("plans always serialise");
        replace(&path, json.as_bytes()).map_err(|source| Error::Output {
            path: path.clone(),
            source,
        })?;
        Ok(previous)
    }

    pub fn read_plan(&self) -> Result<Plan> {
        let path = self.plan_path();
        let refuse = |message: String| Error::RunDir {
            path: path.clone(),
            message,
        };
        if fs::metadata(&self.root).is_ok_and(|meta| !meta.is_dir()) {
            return Err(Error::RunDir {
                path: self.root.clone(),
                message: "not a directory".into(),
            });
        }
        let bytes = read_regular(&path, MAX_PLAN_BYTES).map_err(|err| match err {
            ReadError::Missing if self.holds_artifacts() => refuse(format!(
                "no plan here, only artifacts: an `audit --out` directory has none (an audit resumes by running it again with the same --out); for a run, write one with `churn-audit plan ... --out {}`",
                self.root.display()
            )),
            ReadError::Missing => refuse(format!(
                "no plan here; write one with `churn-audit plan ... --out {}`",
                self.root.display()
            )),
            ReadError::Refused(why) => refuse(why),
        })?;
        let plan: Plan = serde_json::from_slice(&bytes)
            .map_err(|err| refuse(format!("not a churn-audit plan: {err}")))?;
        plan.check().map_err(refuse)?;
        Ok(plan)
    }

    /// Whether `DIR/models` holds any artifact.
    fn holds_artifacts(&self) -> bool {
        fs::read_dir(self.root.join(MODELS)).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().ends_with(".artifact"))
        })
    }

    /// Waits until no other process trains model `key`, and holds it.
    pub fn lock(&self, key: &str) -> Result<Lock> {
        let path = self.root.join(LOCKS).join(format!("{key}.lock"));
        let failed = |source| Error::Output {
            path: path.clone(),
            source,
        };
        let not_a_file = |kind| Error::RunDir {
            path: path.clone(),
            message: format!("not a regular file ({}); move or remove it", describe(kind)),
        };
        // Non-blocking: opening a FIFO put there would wait for a reader
        // (it fails instead, ENXIO, and is named below).
        let opened = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path);
        let file = match opened {
            Ok(file) => file,
            Err(err) => {
                return Err(match fs::metadata(&path) {
                    Ok(meta) if !meta.is_file() => not_a_file(meta.file_type()),
                    _ => failed(err),
                })
            }
        };
        let kind = file.metadata().map_err(failed)?.file_type();
        if !kind.is_file() {
            return Err(not_a_file(kind));
        }
        let flock = |operation| {
            // SAFETY: flock on a descriptor this function owns; no memory is shared.
            if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        if let Err(err) = flock(libc::LOCK_EX | libc::LOCK_NB) {
            if err.kind() != ErrorKind::WouldBlock {
                return Err(failed(err));
            }
            eprintln!(
                "another process is training model {key} in {}; waiting for it",
                self.root.display()
            );
            flock(libc::LOCK_EX).map_err(failed)?;
        }
        Ok(Lock { _held: file })
    }

    /// The artifact of model `key`, checked against its hash, its key,
    /// `expected` (its origin), and the shape of what `config` trains on
    /// `dataset`: a test logit per test example and class, and with
    /// co-distillation one peer per other member. A key is the sha256 of the
    /// resolved model, so an artifact with the right key holds the model the
    /// plan expects.
    pub fn load(
        &self,
        key: &str,
        expected: &Origin,
        config: &RunConfig,
        dataset: &DatasetInfo,
    ) -> Result<Artifact, Unusable> {
        let shape = Shape {
            logits: dataset.n_test * dataset.n_classes,
            peers: match config.train.mitigation {
                Mitigation::Codistill { k, .. } => k.saturating_sub(1),
                _ => 0,
            },
        };
        self.read_artifact(key, expected, &shape)
    }

    fn read_artifact(
        &self,
        key: &str,
        expected: &Origin,
        shape: &Shape,
    ) -> Result<Artifact, Unusable> {
        let bytes = match read_regular(&self.artifact_path(key), shape.max_bytes()) {
            Ok(bytes) => bytes,
            Err(ReadError::Missing) => return Err(Unusable::Missing),
            Err(ReadError::Refused(why)) => return Err(Unusable::Damaged(why)),
        };
        let artifact = decode(&bytes).map_err(Unusable::Damaged)?;
        if artifact.key != key || artifact.model.key() != key {
            return Err(Unusable::Damaged(format!(
                "it holds another model ({})",
                artifact.model.key()
            )));
        }
        let differences = artifact.origin.differences(expected);
        if !differences.is_empty() {
            return Err(Unusable::Mismatch(differences.join(", ")));
        }
        shape.check(&artifact).map_err(Unusable::Damaged)?;
        Ok(artifact)
    }

    /// Writes `artifact` in place of any earlier one. Temporary files of the
    /// same model old enough to be a killed writer's are removed first;
    /// younger ones may be another writer's, on a file system without
    /// working locks, and are left to it. Should the write fail while an
    /// intact artifact of this model is there (that other writer's), the
    /// model is stored all the same.
    pub fn save(&self, artifact: &Artifact) -> Result<()> {
        let path = self.artifact_path(&artifact.key);
        self.remove_stale_temporaries(&artifact.key, SystemTime::now());
        let written = replace(&path, &encode(artifact));
        self.settle(written, artifact)
    }

    /// The outcome of writing `artifact`: failure only if no intact artifact
    /// of the same model, origin and shape is there after all.
    fn settle(&self, written: std::io::Result<()>, artifact: &Artifact) -> Result<()> {
        let Err(source) = written else {
            return Ok(());
        };
        let shape = Shape {
            logits: artifact.trained.test_logits.len(),
            peers: artifact.peers.len(),
        };
        match self.read_artifact(&artifact.key, &artifact.origin, &shape) {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::Output {
                path: self.artifact_path(&artifact.key),
                source,
            }),
        }
    }

    fn remove_stale_temporaries(&self, key: &str, now: SystemTime) {
        let leftover = format!("{key}.artifact.");
        let Ok(entries) = fs::read_dir(self.root.join(MODELS)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let writer = name
                .strip_prefix(&leftover)
                .and_then(|rest| rest.strip_suffix(".tmp"));
            if !writer.is_some_and(is_writer_suffix) {
                continue;
            }
            let modified = entry.metadata().and_then(|meta| meta.modified());
            let age = modified.map(|at| now.duration_since(at).unwrap_or_default());
            if age.is_ok_and(|age| age >= STALE_AFTER) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Whether `suffix` is the `PID.NANOSECONDS` that `temporary_sibling` puts
/// between a file's name and `.tmp`: only such files are ours to remove.
fn is_writer_suffix(suffix: &str) -> bool {
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    suffix
        .split_once('.')
        .is_some_and(|(pid, nanos)| digits(pid) && digits(nanos))
}

/// What an artifact of a model must hold: its test logits' length and its
/// number of co-distilled peers (each with as many logits).
struct Shape {
    logits: usize,
    peers: usize,
}

impl Shape {
    fn check(&self, artifact: &Artifact) -> std::result::Result<(), String> {
        let found = artifact.trained.test_logits.len();
        if found != self.logits {
            return Err(format!(
                "it holds {found} test logits, expected {} (a test example × class each)",
                self.logits
            ));
        }
        if artifact.peers.len() != self.peers {
            return Err(format!(
                "it holds {} co-distilled peers, expected {}",
                artifact.peers.len(),
                self.peers
            ));
        }
        for (member, peer) in (1..).zip(&artifact.peers) {
            let found = peer.test_logits.len();
            if found != self.logits {
                return Err(format!(
                    "its peer {member} holds {found} test logits, expected {}",
                    self.logits
                ));
            }
        }
        // The file's hash covers only what was written; logits edited and
        // the hash redone would otherwise report one model's hash over
        // another's predictions.
        let members = std::iter::once((0, &artifact.trained)).chain((1..).zip(&artifact.peers));
        for (member, trained) in members {
            let hashed = logits_sha256(&trained.test_logits);
            if hashed != trained.predictions_sha256 {
                let whose = if member == 0 {
                    "its".to_owned()
                } else {
                    format!("its peer {member}'s")
                };
                return Err(format!(
                    "{whose} test logits hash to {}, not to the predictions_sha256 it records ({})",
                    short_hash(&hashed),
                    short_hash(&trained.predictions_sha256)
                ));
            }
        }
        Ok(())
    }

    /// The most bytes an artifact of this shape can take (8 hex digits a logit).
    fn max_bytes(&self) -> u64 {
        let logits = (self.logits as u64).saturating_mul(self.peers as u64 + 1);
        logits
            .saturating_mul(8)
            .saturating_mul(2)
            .saturating_add(ARTIFACT_SLACK_BYTES)
    }
}

fn encode(artifact: &Artifact) -> Vec<u8> {
    let payload = serde_json::to_vec_pretty(artifact).expect("artifacts always serialise");
    let mut bytes = format!("{HEADER}{}\n", hex(&Sha256::digest(&payload))).into_bytes();
    bytes.extend(payload);
    bytes
}

fn decode(bytes: &[u8]) -> Result<Artifact, String> {
    let newline = bytes.iter().position(|&b| b == b'\n');
    let header = newline
        .and_then(|end| std::str::from_utf8(&bytes[..end]).ok())
        .and_then(|line| line.strip_prefix(HEADER))
        .ok_or("not a churn-audit artifact (no header line)")?;
    let payload = &bytes[newline.map_or(0, |end| end + 1)..];
    let actual = hex(&Sha256::digest(payload));
    if actual != header {
        return Err(format!(
            "truncated or corrupt: its contents hash to {actual}, its header says {header}"
        ));
    }
    serde_json::from_slice(payload).map_err(|err| format!("unreadable: {err}"))
}

/// Serde for f32 slices as the hex of their little-endian bytes: exact for
/// every value (NaN and infinities included), which JSON numbers are not.
pub mod f32_hex {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(values: &[f32], serializer: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        serializer.serialize_str(&crate::data::hex(&bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f32>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.len() % 8 != 0 || !text.is_ascii() {
            return Err(D::Error::custom("f32 hex must be 8 hex digits per value"));
        }
        text.as_bytes()
            .chunks(8)
            .map(|word| {
                let mut bytes = [0u8; 4];
                for (byte, pair) in bytes.iter_mut().zip(word.chunks(2)) {
                    let pair = std::str::from_utf8(pair).expect("checked ASCII");
                    *byte = u8::from_str_radix(pair, 16)
                        .map_err(|_| D::Error::custom(format!("'{pair}' is not hex")))?;
                }
                Ok(f32::from_le_bytes(bytes))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_survive_hex_bit_for_bit() {
        #[derive(Serialize, Deserialize)]
        struct Logits(#[serde(with = "f32_hex")] Vec<f32>);
        let values = vec![0.1, -0.0, f32::NAN, f32::INFINITY, f32::MIN_POSITIVE / 2.0];
        let json = serde_json::to_string(&Logits(values.clone())).unwrap();
        assert_eq!(json, "\"cdcccc3d000000800000c07f0000807f00004000\"");
        let back: Logits = serde_json::from_str(&json).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.0), bits(&values));
        assert!(serde_json::from_str::<Logits>("\"0000\"").is_err());
        assert!(serde_json::from_str::<Logits>("\"zz000000\"").is_err());
    }

    fn origin() -> Origin {
        Origin {
            libtorch: "2.13.0".into(),
            train_sha256: "a".into(),
            test_sha256: "b".into(),
            label_map_sha256: "c".into(),
        }
    }

    #[test]
    fn origins_name_what_differs() {
        let other = Origin {
            libtorch: "2.12.0".into(),
            test_sha256: "x".into(),
            ..origin()
        };
        assert!(origin().differences(&origin()).is_empty());
        assert_eq!(
            other.differences(&origin()),
            [
                "libtorch 2.12.0 (expected 2.13.0)",
                "test_sha256 x (expected b)"
            ]
        );
    }

    #[test]
    fn a_damaged_header_or_payload_is_refused() {
        assert_eq!(
            decode(b"{}").unwrap_err(),
            "not a churn-audit artifact (no header line)"
        );
        let text = format!("{HEADER}{}\n{{}}", "0".repeat(64));
        assert!(decode(text.as_bytes())
            .unwrap_err()
            .starts_with("truncated or corrupt: its contents hash to 44136fa3"));
    }

    fn config() -> RunConfig {
        use clap::Parser;
        let cli =
            crate::cli::Cli::try_parse_from(["churn-audit", "run", "--threads", "1"]).unwrap();
        let crate::cli::Command::Run(args) = cli.command else {
            unreachable!("parsed a run")
        };
        RunConfig::from_args(&args).unwrap()
    }

    fn plan(config: RunConfig) -> Plan {
        let specs = (0..config.models)
            .map(|index| config.model_spec(&config.vary, index, index))
            .collect();
        Plan::new(config, origin(), specs)
    }

    #[test]
    fn a_plan_with_values_no_command_accepts_is_refused() {
        assert_eq!(plan(config()).check(), Ok(()));
        let mut config = config();
        config.train.batch_size = 0;
        assert_eq!(
            plan(config.clone()).check().unwrap_err(),
            "edited or damaged: config.train.batch_size: must be at least 1, got 0"
        );
        config.train.batch_size = 32;
        config.model.dropout = 1.0;
        assert_eq!(
            plan(config.clone()).check().unwrap_err(),
            "edited or damaged: config.model.dropout: must be in [0, 1), got 1"
        );
        config.model.dropout = 0.2;
        config.train.learning_rate = f64::NAN;
        assert_eq!(
            plan(config.clone()).check().unwrap_err(),
            "edited or damaged: config.train.learning_rate: must be finite, got NaN"
        );
        config.train.learning_rate = 0.001;
        config.models = 1;
        assert_eq!(
            plan(config).check().unwrap_err(),
            "edited or damaged: config.models: must be at least 2, got 1"
        );
    }

    fn artifact(config: &RunConfig, logits: usize) -> Artifact {
        let spec = config.model_spec(&config.vary, 0, 0);
        Artifact {
            key: config.model_key(&spec),
            model: config.resolve(&spec),
            origin: origin(),
            accuracy: 0.5,
            trained: Trained {
                test_logits: vec![0.5; logits],
                weights_sha256: "w".into(),
                predictions_sha256: logits_sha256(&vec![0.5; logits]),
                data_order_sha256: "d".into(),
                steps: 1,
                seconds: 0.0,
                execution: "sequential".into(),
            },
            peers: Vec::new(),
        }
    }

    /// Two writers of one model on a file system without working locks: a
    /// write that fails (its temporary file gone, say) while an intact
    /// artifact of the same model is there has stored the model after all.
    #[test]
    fn a_failed_write_over_an_intact_artifact_of_the_model_succeeds() {
        let root = tempfile::tempdir().unwrap();
        let dir = RunDir::at(root.path());
        dir.prepare().unwrap();
        let config = config();
        let gone = || Err(std::io::Error::from(ErrorKind::NotFound));
        let mine = artifact(&config, 12);
        let failed = dir.settle(gone(), &mine).unwrap_err().to_string();
        assert_eq!(
            failed,
            format!(
                "cannot write {}: entity not found",
                dir.artifact_path(&mine.key).display()
            )
        );
        dir.save(&artifact(&config, 12)).unwrap();
        assert!(dir.settle(gone(), &mine).is_ok());
        // Not if what is there would not do in its place.
        assert!(dir.settle(gone(), &artifact(&config, 10)).is_err());
    }

    #[test]
    fn only_stale_temporary_files_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let dir = RunDir::at(root.path());
        dir.prepare().unwrap();
        let models = root.path().join(MODELS);
        let (young, old) = (
            models.join("k.artifact.7.000000001.tmp"),
            models.join("k.artifact.8.000000002.tmp"),
        );
        let other = models.join("j.artifact.9.000000003.tmp");
        // A user's files that merely look alike are not a writer's.
        let users = [
            "k.artifact.tmp",
            "k.artifact.my notes.tmp",
            "k.artifact.backup.tmp",
            "k.artifact.1..tmp",
        ]
        .map(|name| models.join(name));
        for path in [&young, &old, &other].into_iter().chain(&users) {
            fs::write(path, b"partial").unwrap();
        }
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        for path in [&old, &other].into_iter().chain(&users) {
            let file = File::options().write(true).open(path).unwrap();
            file.set_modified(an_hour_ago).unwrap();
        }
        dir.remove_stale_temporaries("k", SystemTime::now());
        assert!(young.exists() && !old.exists() && other.exists());
        assert!(users.iter().all(|path| path.exists()));
    }
}
