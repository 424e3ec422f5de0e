//! Run directories: everything `latentlab train` produces, written atomically, and loading it back
//! with checks (gene names, config ↔ weights, sampler ↔ training process).
//!
//! Layout: `config.toml` (resolved), `manifest.json`, `weights.safetensors`, `genes.txt`,
//! `latent_stats.json`, `curves.csv`, `split.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::{self, write_atomic};
use crate::config::ExperimentConfig;
use crate::device::Dev;
use crate::experiment::{build_models_from_summaries, Models};
use crate::pipeline::LatentStats;
use crate::plugin::{ConditionSummary, InputKind, TrainingProcess};
use crate::{LatentError, Result};

/// Provenance and facts about a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// latentlab version that wrote the run.
    pub crate_version: String,
    /// Master seed.
    pub seed: u64,
    /// Training data file.
    pub data_path: PathBuf,
    /// SHA-256 of the data file.
    pub data_sha256: String,
    /// SHA-256 of the gene list (newline-joined).
    pub genes_sha256: String,
    /// Cells in the file / training split / validation split.
    pub n_cells: usize,
    /// Training cells.
    pub n_train: usize,
    /// Validation cells.
    pub n_validation: usize,
    /// Whether the model input is counts.
    pub input_kind: InputKind,
    /// Process the denoiser was trained under.
    pub process: TrainingProcess,
    /// Label column (stratification / reports).
    pub label_key: Option<String>,
    /// Condition sources.
    pub conditions: Vec<ConditionSummary>,
    /// A sample of training library sizes (for count decoders at sampling time).
    pub library_sizes: Vec<f32>,
    /// Final losses by name.
    pub final_losses: BTreeMap<String, f64>,
    /// Stage-1 reconstruction quality on the validation split (see [`crate::experiment::reconstruction_quality`]).
    #[serde(default)]
    pub reconstruction: BTreeMap<String, f64>,
    /// Wall-clock seconds per phase.
    pub timings_s: BTreeMap<String, f64>,
}

/// obs names of the training and validation cells.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Split {
    /// Training cells.
    pub train: Vec<String>,
    /// Validation cells.
    pub validation: Vec<String>,
}

/// SHA-256 hex digest of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 (hex) of a file's bytes, read in blocks (a folder or unreadable path hashes as
/// empty, so a 10x folder's runs compare equal across re-runs).
pub fn file_sha256(path: &std::path::Path) -> String {
    use std::io::Read;
    let mut hasher = Sha256::new();
    if let Some(mut f) = std::fs::File::open(path).ok().filter(|_| path.is_file()) {
        let mut block = vec![0u8; 1 << 20];
        while let Ok(n) = f.read(&mut block) {
            if n == 0 {
                break;
            }
            hasher.update(&block[..n]);
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 of a gene list.
pub fn genes_digest(genes: &[String]) -> String {
    sha256_hex(genes.join("\n").as_bytes())
}

/// Everything needed to write a run.
pub struct RunContents<'a> {
    /// Resolved config.
    pub config: &'a ExperimentConfig,
    /// Trained models.
    pub models: &'a Models,
    /// Gene names.
    pub genes: &'a [String],
    /// Manifest.
    pub manifest: &'a Manifest,
    /// Training curves CSV.
    pub curves_csv: &'a str,
    /// Split.
    pub split: &'a Split,
}

fn json<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| LatentError::Checkpoint {
        path: path.into(),
        message: e.to_string(),
    })
}

/// Writes a run directory atomically: into a sibling temporary directory, then renamed into
/// place. An existing directory is only replaced when `overwrite` is set.
///
/// # Errors
/// [`LatentError::Checkpoint`] if `dir` exists without `overwrite`; I/O errors.
pub fn save(dir: &Path, contents: &RunContents<'_>, overwrite: bool) -> Result<()> {
    if dir.exists() && !overwrite {
        return Err(LatentError::Checkpoint {
            path: dir.into(),
            message: "already exists; choose another --out or pass --overwrite".into(),
        });
    }
    crate::atomic_file::replace_dir_with(dir, |tmp| write_contents(tmp, contents))
}

fn write_contents(dir: &Path, c: &RunContents<'_>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| LatentError::io(dir, e))?;
    write_atomic(&dir.join("config.toml"), c.config.to_toml()?.as_bytes())?;
    write_atomic(
        &dir.join("manifest.json"),
        &json(c.manifest, &dir.join("manifest.json"))?,
    )?;
    write_atomic(
        &dir.join("genes.txt"),
        (c.genes.join("\n") + "\n").as_bytes(),
    )?;
    write_atomic(
        &dir.join("latent_stats.json"),
        &json(&c.models.stats, &dir.join("latent_stats.json"))?,
    )?;
    write_atomic(&dir.join("curves.csv"), c.curves_csv.as_bytes())?;
    write_atomic(
        &dir.join("split.json"),
        &json(c.split, &dir.join("split.json"))?,
    )?;
    let m = c.models;
    let mut components: Vec<(&str, &dyn crate::nn::Parameters)> = vec![
        ("autoencoder", m.autoencoder.as_ref()),
        ("denoiser", m.denoiser.as_ref()),
    ];
    if let Some(cond) = &m.conditioner {
        components.push(("conditioner", cond.as_ref()));
    }
    let tensors = checkpoint::collect(&components);
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "latentlab-run-v1".to_string());
    meta.insert(
        "crate_version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    checkpoint::save(&dir.join("weights.safetensors"), &tensors, meta)
}

/// A run loaded back from disk.
pub struct Run {
    /// Directory.
    pub dir: PathBuf,
    /// Resolved config.
    pub config: ExperimentConfig,
    /// Manifest.
    pub manifest: Manifest,
    /// Gene names.
    pub genes: Vec<String>,
    /// Split.
    pub split: Split,
    /// Models with trained weights.
    pub models: Models,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| LatentError::Checkpoint {
        path: path.into(),
        message: format!(
            "cannot read ({e}); is this a run directory written by `latentlab train`?"
        ),
    })?;
    serde_json::from_str(&text).map_err(|e| LatentError::Checkpoint {
        path: path.into(),
        message: format!("malformed ({e}); the run directory is damaged, retrain"),
    })
}

/// Loads a run: config, manifest, genes, and models with their trained weights.
///
/// # Errors
/// [`LatentError::Checkpoint`] naming the damaged or mismatching file.
pub fn load(dir: &Path, dev: &Dev) -> Result<Run> {
    if !dir.is_dir() {
        return Err(LatentError::Checkpoint {
            path: dir.into(),
            message: "not a directory; pass the --out directory of `latentlab train`".into(),
        });
    }
    let config_path = dir.join("config.toml");
    let config = ExperimentConfig::load(&config_path).map_err(|e| match e {
        LatentError::Io { source, .. } => LatentError::Checkpoint {
            path: config_path.clone(),
            message: format!("cannot read ({source}); is this a run directory?"),
        },
        other => other,
    })?;
    let manifest: Manifest = read_json(&dir.join("manifest.json"))?;
    let split: Split = read_json(&dir.join("split.json"))?;
    let genes_path = dir.join("genes.txt");
    let genes: Vec<String> = std::fs::read_to_string(&genes_path)
        .map_err(|e| LatentError::Checkpoint {
            path: genes_path.clone(),
            message: format!("cannot read ({e})"),
        })?
        .lines()
        .map(str::to_string)
        .collect();
    if genes_digest(&genes) != manifest.genes_sha256 {
        return Err(LatentError::Checkpoint {
            path: genes_path,
            message: "gene list does not match the manifest digest; the run directory was modified"
                .into(),
        });
    }
    let conditions = manifest
        .conditions
        .iter()
        .map(|c| (c.key.clone(), c.clone()))
        .collect();
    let mut models =
        build_models_from_summaries(&config, genes.len(), manifest.input_kind, &conditions, dev)?;
    if models.process != manifest.process {
        return Err(LatentError::Checkpoint {
            path: config_path,
            message: "sampler config differs from the one the denoiser was trained with".into(),
        });
    }
    models.stats = read_json::<LatentStats>(&dir.join("latent_stats.json"))?;
    let weights_path = dir.join("weights.safetensors");
    let tensors = checkpoint::load(&weights_path)?;
    checkpoint::restore(
        &tensors,
        models.autoencoder.as_mut(),
        "autoencoder",
        &weights_path,
    )?;
    checkpoint::restore(
        &tensors,
        models.denoiser.as_mut(),
        "denoiser",
        &weights_path,
    )?;
    if let Some(c) = models.conditioner.as_mut() {
        checkpoint::restore(&tensors, c.as_mut(), "conditioner", &weights_path)?;
    }
    Ok(Run {
        dir: dir.into(),
        config,
        manifest,
        genes,
        split,
        models,
    })
}
