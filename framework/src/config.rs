//! The experiment config: one file (TOML or JSON) composes data, plugins, training, sampling and
//! evaluation. Unknown fields are rejected; every field has a documented default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::optim::LrSchedule;
use crate::plugin::{
    AutoencoderConfig, ConditionerConfig, DenoiserConfig, EvaluatorConfig, SamplerConfig,
};
use crate::{LatentError, Result};

/// A complete experiment.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Master seed; every random stream derives from it. Default 0.
    #[serde(default)]
    pub seed: u64,
    /// Input data and preprocessing.
    pub data: DataConfig,
    /// Stage-1 model (`type = "vae"`, ...).
    pub autoencoder: Box<dyn AutoencoderConfig>,
    /// Stage-2 network (`type = "mlp"`, ...).
    pub denoiser: Box<dyn DenoiserConfig>,
    /// Stage-2 process (`type = "rectified_flow"`, ...).
    pub sampler: Box<dyn SamplerConfig>,
    /// Optional condition encoder (`type = "class_embedding"`, ...).
    #[serde(default)]
    pub conditioner: Option<Box<dyn ConditionerConfig>>,
    /// Optimization settings.
    #[serde(default)]
    pub train: TrainConfig,
    /// Sampling defaults.
    #[serde(default)]
    pub sample: SampleConfig,
    /// Evaluation settings.
    #[serde(default)]
    pub evaluate: EvaluateConfig,
}

/// Which data to read and how to prepare it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Path to `.h5ad` (or a 10x MTX folder / CSV), relative to the working directory.
    pub path: PathBuf,
    /// Matrix that feeds the model: `"X"`, `"raw"` or `"layers/<name>"`. Default `"X"`.
    #[serde(default = "default_matrix")]
    pub matrix: String,
    /// Fraction of cells held out for validation (stratified by `label_key`). Default 0.2.
    #[serde(default = "default_validation_fraction")]
    pub validation_fraction: f64,
    /// Categorical obs column used to stratify the split and to report per-label metrics
    /// (default: the conditioner's first categorical key, if any).
    #[serde(default)]
    pub label_key: Option<String>,
    /// Preprocessing steps applied in order (normalize → log1p → HVG → scaling).
    #[serde(default)]
    pub preprocess: PreprocessConfig,
    /// Cells left out of training and validation entirely (e.g. one time point), kept as the
    /// reference of the held-out-condition protocol of `latentlab run`. Default none.
    #[serde(default)]
    pub hold_out: Option<HoldOutConfig>,
    /// Stream the matrix from disk in row chunks instead of loading it (`.h5ad` with a CSR or
    /// dense `X`/layer/`raw`): memory stays bounded by the chunk size, not the number of cells.
    /// Default off (the whole matrix is loaded).
    #[serde(default)]
    pub streaming: Option<StreamingConfig>,
}

/// `[data.streaming]`: training from row chunks read from disk.
///
/// Preprocessing is fitted in one or two passes over the chunks (HVG statistics, counts
/// detection); training minibatches come from shuffle windows of `shuffle_chunks` chunks in a
/// new random chunk order every epoch; stage 2's latents are encoded chunk by chunk. The
/// validation cells held in memory are a seeded random subset of at most
/// `max_validation_cells` of the validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// Rows read per chunk. Default 4096.
    pub chunk_cells: usize,
    /// Chunks shuffled together into one window of minibatches. Default 8.
    pub shuffle_chunks: usize,
    /// Validation cells kept in memory (for validation losses and the report). Default 10000.
    pub max_validation_cells: usize,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            chunk_cells: 4096,
            shuffle_chunks: 8,
            max_validation_cells: 10_000,
        }
    }
}

/// `[data.hold_out]`: the cells whose obs `key` has one of `values` are never trained on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldOutConfig {
    /// obs column (categorical or numeric), e.g. `Hours`.
    pub key: String,
    /// Values to hold out, as written (numbers are compared numerically), e.g. `["48"]`.
    pub values: Vec<String>,
}

fn default_matrix() -> String {
    "X".into()
}
fn default_validation_fraction() -> f64 {
    0.2
}

/// Preprocessing as config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessConfig {
    /// Library-size normalization to this total per cell (e.g. 1e4). Default off.
    pub normalize_total: Option<f32>,
    /// Apply `log1p` after normalization. Default false.
    pub log1p: bool,
    /// Keep only this many highly variable genes. Default off (all genes).
    pub highly_variable_genes: Option<usize>,
    /// Keep only these genes (by var name), in this order. Default off.
    pub genes: Option<Vec<String>>,
}

/// Optimization settings for both stages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Stage-1 optimizer steps. Default 2000.
    pub autoencoder_steps: u64,
    /// Stage-2 optimizer steps. Default 4000.
    pub denoiser_steps: u64,
    /// Cells per minibatch. Default 128.
    pub batch_size: usize,
    /// Stage-1 learning rate. Default 1e-3.
    pub autoencoder_lr: f32,
    /// Stage-2 learning rate. Default 1e-3.
    pub denoiser_lr: f32,
    /// AdamW decoupled weight decay. Default 1e-4.
    pub weight_decay: f32,
    /// Global gradient-norm clip (0 = off). Default 1.0.
    pub grad_clip: f32,
    /// EMA decay of the denoiser weights used for sampling (0 = off). Default 0.999.
    pub ema_decay: f32,
    /// Learning-rate schedule for both stages. Default warm-up 100 steps then cosine to 10%.
    pub lr_schedule: LrSchedule,
    /// Evaluate the validation loss every this many steps. Default 200.
    pub validate_every: u64,
    /// Stop a stage after this many validations without improvement (0 = never). Default 0.
    pub early_stopping_patience: u64,
    /// Keep a resumable snapshot (weights, optimizer moments, EMA, curves) every this many steps
    /// in `<out>.resume/`, removed when the run is written; `latentlab train --resume` continues
    /// from it. 0 = only at the end of stage 1. Default 500.
    pub checkpoint_every: u64,
    /// Joint fine-tuning after stage 2: steps that train the autoencoder, denoiser and
    /// conditioner together on `autoencoder loss + joint_denoiser_weight × stage-2 loss`, the
    /// stage-2 loss taken on the encoder's (differentiable) latent codes. 0 = off. Default 0.
    pub joint_steps: u64,
    /// Learning rate of the joint phase (same schedule shape as the stages). Default 1e-4.
    pub joint_lr: f32,
    /// Weight of the stage-2 loss in the joint objective. Default 1.0.
    pub joint_denoiser_weight: f32,
    /// Data-parallel shards of each stage-2 batch on the CPU (ignored on CUDA). Omitted (the
    /// default): one shard at one thread (unless the denoiser's products are long: batch rows ×
    /// its rows per sample above 1,024); with more threads one per 128 rows, 2–8 of them, so the
    /// trained weights are the same bits at every thread count from two up, and one thread
    /// gives other low bits. A number `n`: `n` shards (at most the batch's rows) at any thread
    /// count, for weights that are the same bits at every thread count including one (at one
    /// thread ~7 % slower at batches of 256 than the default). Default omitted.
    pub shards: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            autoencoder_steps: 2000,
            denoiser_steps: 4000,
            batch_size: 128,
            autoencoder_lr: 1e-3,
            denoiser_lr: 1e-3,
            weight_decay: 1e-4,
            grad_clip: 1.0,
            ema_decay: 0.999,
            lr_schedule: LrSchedule::WarmupCosine {
                warmup_steps: 100,
                min_ratio: 0.1,
            },
            validate_every: 200,
            early_stopping_patience: 0,
            checkpoint_every: 500,
            joint_steps: 0,
            joint_lr: 1e-4,
            joint_denoiser_weight: 1.0,
            shards: None,
        }
    }
}

/// Sampling defaults (each can be overridden on the command line).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampleConfig {
    /// Sampling steps (default: the sampler's own default).
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (1 = plain conditional). Default 1.0.
    pub guidance: f32,
    /// Cells generated together (their noise drawn, then every step run over them). On the CPU
    /// a chunk's network calls run in tiles (at least one per thread, at most 1024 cells) spread
    /// over the threads; on CUDA one call covers the chunk. Default 4096.
    pub chunk_size: usize,
    /// Per-attribute guidance scales by condition key (a `combined` conditioner trained with
    /// `part_drop_prob > 0`); attributes not named take `guidance`. Default empty.
    pub attribute_guidance: std::collections::BTreeMap<String, f32>,
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self {
            steps: None,
            guidance: 1.0,
            chunk_size: 4096,
            attribute_guidance: Default::default(),
        }
    }
}

/// Evaluation settings.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluateConfig {
    /// PCA components (fit on real training cells) for distribution metrics. Default 30.
    pub pca_components: usize,
    /// Evaluators to run (default: every registered evaluator with its default config).
    pub evaluators: Vec<Box<dyn EvaluatorConfig>>,
    /// Evaluate counterfactual predictions instead of plain generation (perturbation response):
    /// see [`CounterfactualConfig`]. Default none.
    pub counterfactual: Option<CounterfactualConfig>,
    /// Evaluate per-row predictions of the held-out validation rows from their conditions
    /// (spatial expression at held-out spots, …): see [`PredictionConfig`]. Default none.
    pub prediction: Option<PredictionConfig>,
}

impl Default for EvaluateConfig {
    fn default() -> Self {
        Self {
            pca_components: 30,
            evaluators: Vec::new(),
            counterfactual: None,
            prediction: None,
        }
    }
}

/// The per-row prediction protocol of `latentlab run` (`[evaluate.prediction]`): every held-out
/// validation row gets `samples_per_row` generated samples from its own conditions; their mean
/// is compared with the row's measured values beside k-nearest-neighbour regression in condition
/// space (mean of the `neighbors` nearest training rows), ridge regression on the condition
/// features and the training mean.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictionConfig {
    /// Generated samples per held-out row (≥ 5 also reports interval calibration). Default 10.
    pub samples_per_row: usize,
    /// Neighbours of the kNN baseline. Default 6.
    pub neighbors: usize,
    /// Ridge penalty of the ridge baseline (on standardized condition features). Default 1.0.
    pub ridge_lambda: f64,
}

impl Default for PredictionConfig {
    fn default() -> Self {
        Self {
            samples_per_row: 10,
            neighbors: 6,
            ridge_lambda: 1.0,
        }
    }
}

/// The counterfactual protocol of `latentlab run` (`[evaluate.counterfactual]`): the held-out
/// validation cells with `key = source` are inverted to noise under their own condition and
/// regenerated with `key = target`; the prediction is compared with the held-out `target` cells,
/// beside a no-change baseline (the source cells), an additive-shift baseline (source cells plus
/// the training mean difference target − source) and real training `target` cells.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterfactualConfig {
    /// The condition column that changes (e.g. `condition`). Required.
    pub key: String,
    /// Its value in the cells the prediction starts from (e.g. `ctrl`). Required.
    pub source: String,
    /// Its value to predict (e.g. `stim`). Required.
    pub target: String,
}

impl ExperimentConfig {
    /// Parses a TOML (default) or JSON (`.json`) config.
    ///
    /// # Errors
    /// [`LatentError::ConfigParse`] naming the file, the offending field or plugin type and the fix.
    pub fn from_str_with_path(text: &str, path: &Path) -> Result<Self> {
        let is_json = path.extension().is_some_and(|e| e == "json");
        let parsed: std::result::Result<Self, String> = if is_json {
            serde_json::from_str(text).map_err(|e| e.to_string())
        } else {
            toml::from_str(text).map_err(|e| e.message().to_string())
        };
        let config = parsed.map_err(|message| LatentError::ConfigParse {
            path: path.into(),
            message: one_line(&message),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Reads and parses a config file.
    ///
    /// # Errors
    /// [`LatentError::Io`] or [`LatentError::ConfigParse`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LatentError::io(path, e))?;
        Self::from_str_with_path(&text, path)
    }

    /// Serializes to TOML (the resolved config stored in a run directory).
    ///
    /// # Errors
    /// [`LatentError::ConfigParse`] when a plugin config cannot be serialized.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| LatentError::ConfigParse {
            path: "config.toml".into(),
            message: e.to_string(),
        })
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let t = &self.train;
        let bad = |field: &str, expected: &str, got: String| LatentError::ConfigParse {
            path: path.into(),
            message: format!("invalid `{field}`: expected {expected}, got {got}"),
        };
        if t.batch_size == 0 {
            return Err(bad("train.batch_size", "> 0", "0".into()));
        }
        if t.shards == Some(0) {
            return Err(bad(
                "train.shards",
                "a number of shards > 0 (or the line removed for the default)",
                "0".into(),
            ));
        }
        if !(t.autoencoder_lr > 0.0 && t.denoiser_lr > 0.0) {
            return Err(bad(
                "train.*_lr",
                "> 0",
                format!("{}/{}", t.autoencoder_lr, t.denoiser_lr),
            ));
        }
        if !(t.joint_lr > 0.0 && t.joint_lr.is_finite()) {
            return Err(bad("train.joint_lr", "> 0", t.joint_lr.to_string()));
        }
        if !(t.joint_denoiser_weight >= 0.0 && t.joint_denoiser_weight.is_finite()) {
            return Err(bad(
                "train.joint_denoiser_weight",
                "≥ 0",
                t.joint_denoiser_weight.to_string(),
            ));
        }
        if !(0.0..1.0).contains(&t.ema_decay) {
            return Err(bad(
                "train.ema_decay",
                "a value in [0, 1)",
                t.ema_decay.to_string(),
            ));
        }
        if !(0.0 < self.data.validation_fraction && self.data.validation_fraction < 1.0) {
            return Err(bad(
                "data.validation_fraction",
                "a value in (0, 1)",
                self.data.validation_fraction.to_string(),
            ));
        }
        if let Some(st) = &self.data.streaming {
            if st.chunk_cells == 0 || st.shuffle_chunks == 0 || st.max_validation_cells == 0 {
                return Err(bad(
                    "data.streaming.chunk_cells/shuffle_chunks/max_validation_cells",
                    "> 0",
                    format!(
                        "{}/{}/{}",
                        st.chunk_cells, st.shuffle_chunks, st.max_validation_cells
                    ),
                ));
            }
        }
        if self.sample.guidance < 0.0 || self.sample.chunk_size == 0 {
            return Err(bad(
                "sample.guidance/chunk_size",
                "guidance ≥ 0 and chunk_size > 0",
                format!("{}/{}", self.sample.guidance, self.sample.chunk_size),
            ));
        }
        self.autoencoder.check_training(t)?;
        Ok(())
    }
}

/// Collapses a multi-line parser message into one line.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
