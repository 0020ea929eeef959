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
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{ResolvedModel, RunConfig};
use crate::data::hex;
use crate::error::{Error, Result};
use crate::output::{replace, temporary_sibling};
use crate::report::{DatasetInfo, ToolInfo};
use crate::train::{ModelSpec, Trained};

const HEADER: &str = "churn-audit artifact v1 sha256:";
const PLAN_VERSION: u32 = 1;
const PLAN_FILE: &str = "plan.json";
const MODELS: &str = "models";
const LOCKS: &str = "locks";

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
    /// so a read-only or missing destination fails before any training.
    pub fn prepare(&self) -> Result<()> {
        for dir in [
            self.root.clone(),
            self.root.join(MODELS),
            self.root.join(LOCKS),
        ] {
            let probe = temporary_sibling(&dir.join(".probe"));
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
        Ok(())
    }

    pub fn artifact_path(&self, key: &str) -> PathBuf {
        self.root.join(MODELS).join(format!("{key}.artifact"))
    }

    fn plan_path(&self) -> PathBuf {
        self.root.join(PLAN_FILE)
    }

    pub fn write_plan(&self, plan: &Plan) -> Result<()> {
        let path = self.plan_path();
        let json = serde_json::to_string_pretty(plan).expect("plans always serialise");
        replace(&path, json.as_bytes()).map_err(|source| Error::Output { path, source })
    }

    pub fn read_plan(&self) -> Result<Plan> {
        let path = self.plan_path();
        let refuse = |message: String| Error::RunDir {
            path: path.clone(),
            message,
        };
        let text = fs::read_to_string(&path).map_err(|err| match err.kind() {
            ErrorKind::NotFound => refuse(format!(
                "no plan here; write one with `churn-audit plan ... --out {}`",
                self.root.display()
            )),
            _ => refuse(format!("cannot read: {err}")),
        })?;
        let plan: Plan = serde_json::from_str(&text)
            .map_err(|err| refuse(format!("not a churn-audit plan: {err}")))?;
        if plan.version != PLAN_VERSION {
            return Err(refuse(format!(
                "plan version {} (this churn-audit reads version {PLAN_VERSION})",
                plan.version
            )));
        }
        Ok(plan)
    }

    /// Waits until no other process trains model `key`, and holds it.
    pub fn lock(&self, key: &str) -> Result<Lock> {
        let path = self.root.join(LOCKS).join(format!("{key}.lock"));
        let failed = |source| Error::Output {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(failed)?;
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

    /// The artifact of model `key`, checked against its hash, its key and
    /// `expected`.
    pub fn load(&self, key: &str, expected: &Origin) -> Result<Artifact, Unusable> {
        let bytes = match fs::read(self.artifact_path(key)) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == ErrorKind::NotFound => return Err(Unusable::Missing),
            Err(err) => return Err(Unusable::Damaged(format!("cannot read it: {err}"))),
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
        Ok(artifact)
    }

    /// Writes `artifact` in place of any earlier one. The caller holds its lock,
    /// so temporary files of the same model are leftovers of a killed writer.
    pub fn save(&self, artifact: &Artifact) -> Result<()> {
        let path = self.artifact_path(&artifact.key);
        let leftover = format!("{}.artifact.", artifact.key);
        if let Ok(entries) = fs::read_dir(self.root.join(MODELS)) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&leftover) && name.ends_with(".tmp") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        replace(&path, &encode(artifact)).map_err(|source| Error::Output { path, source })
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
}
