//! Resumable training state on disk: `<out>.resume/` beside the run directory. The training
//! loops leave a [`Snapshot`] there every `train.checkpoint_every` steps and at the end of each
//! stage; `latentlab train --resume` continues from the latest one when the config and the data
//! file are unchanged. The folder is removed once the run directory is written.
//!
//! Layout: `fingerprint.json` (resolved config + data SHA-256), and per stage `<stage>.json`
//! (step, early-stopping state, curves, the tensor file's name) and `<stage>.<step>.safetensors`
//! (parameters under `param/`, optimizer moments under `optimizer/` and `adversary_optimizer/`,
//! EMA weights under `ema/`). The JSON is written last, atomically, so a crash mid-save leaves the
//! previous snapshot intact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{load, save, write_atomic, TensorMap};
use crate::train::{Checkpoints, CurvePoint, Snapshot};
use crate::{LatentError, Result};

/// What must not change between an interrupted run and its resumption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Fingerprint {
    config: serde_json::Value,
    data_sha256: String,
}

/// The JSON half of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotMeta {
    next_step: u64,
    complete: bool,
    best: Option<f64>,
    bad: u64,
    optimizer_steps: u64,
    adversary_optimizer_steps: Option<u64>,
    ema_updates: Option<u64>,
    curves: Vec<(u64, String, f64)>,
    tensors: String,
}

/// Snapshots of one training run in `<out>.resume/`.
#[derive(Debug)]
pub struct ResumeDir {
    dir: PathBuf,
    every: u64,
    fingerprint: Fingerprint,
    resuming: bool,
}

/// The state folder of the run directory `out`.
pub fn resume_dir_for(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".resume");
    PathBuf::from(name)
}

fn state_error(dir: &Path, message: impl Into<String>) -> LatentError {
    LatentError::Checkpoint {
        path: dir.into(),
        message: message.into(),
    }
}

impl ResumeDir {
    /// Opens the state of run `out`. Without `resume`, stale state of an earlier attempt is
    /// removed; with it, the state must exist and match `config` and the data digest.
    ///
    /// # Errors
    /// Nothing to resume, or a changed config or data file (with the fix).
    pub fn open(
        out: &Path,
        config: &impl Serialize,
        data_sha256: &str,
        every: u64,
        resume: bool,
    ) -> Result<Self> {
        let dir = resume_dir_for(out);
        let fingerprint = Fingerprint {
            config: serde_json::to_value(config)
                .map_err(|e| state_error(&dir, format!("cannot serialize the config: {e}")))?,
            data_sha256: data_sha256.to_string(),
        };
        if resume {
            let text = std::fs::read_to_string(dir.join("fingerprint.json")).map_err(|_| {
                state_error(
                    &dir,
                    "no interrupted training to resume (no snapshot here); run without --resume",
                )
            })?;
            let saved: Fingerprint = serde_json::from_str(&text).map_err(|e| {
                state_error(
                    &dir,
                    format!(
                        "unreadable fingerprint.json ({e}); run without --resume to start again"
                    ),
                )
            })?;
            if saved.data_sha256 != fingerprint.data_sha256 {
                return Err(state_error(&dir, "the data file changed since the interrupted run; restore it or run without --resume"));
            }
            if let Some(field) = first_difference(&saved.config, &fingerprint.config, "") {
                return Err(state_error(&dir, format!("the config differs from the interrupted run's at `{field}`; resume with the same config or run without --resume")));
            }
        } else if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| LatentError::io(&dir, e))?;
        }
        Ok(Self {
            dir,
            every,
            fingerprint,
            resuming: resume,
        })
    }

    /// Removes the state (the run directory was written, or training failed for good).
    ///
    /// # Errors
    /// I/O errors.
    pub fn remove(&self) -> Result<()> {
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).map_err(|e| LatentError::io(&self.dir, e))?;
        }
        Ok(())
    }

    fn meta_path(&self, stage: &str) -> PathBuf {
        self.dir.join(format!("{stage}.json"))
    }
}

/// The dotted path of the first field where `a` and `b` differ (numbers compared as f32, the
/// precision of the config's fields).
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    let field = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.keys()
                .chain(y.keys())
                .find_map(|k| match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => first_difference(u, v, &field(k)),
                    _ => Some(field(k)),
                })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(u, v, &field(&i.to_string()))),
        (Value::Number(x), Value::Number(y)) => {
            let same = match (x.as_f64(), y.as_f64()) {
                (Some(u), Some(v)) => u as f32 == v as f32,
                _ => x == y,
            };
            (!same).then(|| at.to_string())
        }
        _ => (a != b).then(|| at.to_string()),
    }
}

fn with_prefix(prefix: &str, map: &TensorMap, into: &mut TensorMap) {
    for (name, value) in map {
        into.insert(format!("{prefix}/{name}"), value.clone());
    }
}

fn take_prefix(prefix: &str, map: &TensorMap) -> TensorMap {
    map.iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('/'))
                .map(|name| (name.to_string(), v.clone()))
        })
        .collect()
}

impl Checkpoints for ResumeDir {
    fn every(&self) -> u64 {
        self.every
    }

    fn save(&mut self, snapshot: &Snapshot) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| LatentError::io(&self.dir, e))?;
        let fingerprint = self.dir.join("fingerprint.json");
        if !fingerprint.exists() {
            let text = serde_json::to_string_pretty(&self.fingerprint)
                .map_err(|e| state_error(&self.dir, e.to_string()))?;
            write_atomic(&fingerprint, text.as_bytes())?;
        }
        let mut tensors = TensorMap::new();
        with_prefix("param", &snapshot.params, &mut tensors);
        with_prefix("optimizer", &snapshot.optimizer.1, &mut tensors);
        if let Some((_, m)) = &snapshot.adversary_optimizer {
            with_prefix("adversary_optimizer", m, &mut tensors);
        }
        if let Some((_, m)) = &snapshot.ema {
            with_prefix("ema", m, &mut tensors);
        }
        let file = format!("{}.{}.safetensors", snapshot.stage, snapshot.next_step);
        save(&self.dir.join(&file), &tensors, BTreeMap::new())?;
        let meta_path = self.meta_path(snapshot.stage);
        let previous: Option<SnapshotMeta> = std::fs::read_to_string(&meta_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let meta = SnapshotMeta {
            next_step: snapshot.next_step,
            complete: snapshot.complete,
            best: snapshot.best.is_finite().then_some(snapshot.best),
            bad: snapshot.bad,
            optimizer_steps: snapshot.optimizer.0,
            adversary_optimizer_steps: snapshot.adversary_optimizer.as_ref().map(|s| s.0),
            ema_updates: snapshot.ema.as_ref().map(|s| s.0),
            curves: snapshot
                .curves
                .iter()
                .map(|c| (c.step, c.name.clone(), c.value))
                .collect(),
            tensors: file.clone(),
        };
        let text =
            serde_json::to_string(&meta).map_err(|e| state_error(&self.dir, e.to_string()))?;
        write_atomic(&meta_path, text.as_bytes())?;
        if let Some(old) = previous.filter(|p| p.tensors != file) {
            let _ = std::fs::remove_file(self.dir.join(old.tensors));
        }
        Ok(())
    }

    fn resume(&mut self, stage: &'static str) -> Result<Option<Snapshot>> {
        if !self.resuming {
            return Ok(None);
        }
        let meta_path = self.meta_path(stage);
        let Ok(text) = std::fs::read_to_string(&meta_path) else {
            return Ok(None);
        };
        let meta: SnapshotMeta = serde_json::from_str(&text).map_err(|e| {
            state_error(
                &meta_path,
                format!("unreadable snapshot ({e}); run without --resume to start again"),
            )
        })?;
        let tensors = load(&self.dir.join(&meta.tensors))?;
        Ok(Some(Snapshot {
            stage,
            next_step: meta.next_step,
            complete: meta.complete,
            curves: meta
                .curves
                .into_iter()
                .map(|(step, name, value)| CurvePoint {
                    stage,
                    step,
                    name,
                    value,
                })
                .collect(),
            best: meta.best.unwrap_or(f64::INFINITY),
            bad: meta.bad,
            optimizer: (meta.optimizer_steps, take_prefix("optimizer", &tensors)),
            adversary_optimizer: meta
                .adversary_optimizer_steps
                .map(|n| (n, take_prefix("adversary_optimizer", &tensors))),
            ema: meta.ema_updates.map(|n| (n, take_prefix("ema", &tensors))),
            params: take_prefix("param", &tensors),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(stage: &'static str, params: TensorMap) -> Snapshot {
        Snapshot {
            stage,
            next_step: 20,
            complete: false,
            curves: vec![CurvePoint {
                stage,
                step: 10,
                name: "train_loss".into(),
                value: 0.5,
            }],
            best: 0.25,
            bad: 1,
            optimizer: (20, params.clone()),
            adversary_optimizer: None,
            ema: None,
            params,
        }
    }

    /// A snapshot saved by one training and read by its `--resume` comes back whole, for a stage
    /// with parameters and for one without any (the identity autoencoder, whose snapshot used
    /// to be a file that could not be read back).
    #[test]
    fn snapshots_come_back_on_resume_with_and_without_parameters() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        let config = serde_json::json!({"train": {"checkpoint_every": 20}});
        let mut params = TensorMap::new();
        params.insert("w".into(), (vec![2, 2], vec![1.0, -2.0, 3.5, 0.0]));
        let mut fresh = ResumeDir::open(&out, &config, "digest", 20, false).unwrap();
        fresh
            .save(&snapshot("autoencoder", TensorMap::new()))
            .unwrap();
        fresh.save(&snapshot("denoiser", params.clone())).unwrap();

        let mut resumed = ResumeDir::open(&out, &config, "digest", 20, true).unwrap();
        for (stage, expected) in [("autoencoder", TensorMap::new()), ("denoiser", params)] {
            let back = resumed.resume(stage).unwrap().unwrap();
            assert_eq!(back.params, expected, "{stage}");
            assert_eq!(back.optimizer, (20, expected.clone()), "{stage}");
            assert_eq!((back.next_step, back.bad, back.best), (20, 1, 0.25));
            assert_eq!(back.curves.len(), 1);
        }
    }
}
