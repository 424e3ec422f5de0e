//! Conditioning: turns per-cell conditions (labels, perturbations, time, coordinates, another
//! modality) into embeddings the denoiser consumes, with a learned null for classifier-free guidance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::device::{Dev, Taped, Tensor2};
use crate::modality::{ModalityEncoder, ModalitySource};
use crate::nn::Parameters;
use crate::Result;

/// How a denoiser injects the condition embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Injection {
    /// Concatenate to the network input.
    Concat,
    /// Add to the time embedding.
    Add,
    /// Feature-wise scale and shift in every block.
    Film,
    /// Adaptive LayerNorm with zero-initialized gates (DiT's adaLN-Zero).
    #[default]
    Adaln,
    /// Tokens attended by cross-attention.
    CrossAttention,
}

/// One condition source as extracted from the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionColumn {
    /// Category codes with their names.
    Categorical {
        /// Category names, index = code.
        categories: Vec<String>,
        /// Per-cell codes.
        codes: Vec<u32>,
    },
    /// A scalar per cell (time, pseudotime, dose).
    Continuous(Vec<f32>),
    /// A fixed-width vector per cell, row-major (coordinates, another modality).
    Vector {
        /// Width.
        dim: usize,
        /// Row-major values.
        values: Vec<f32>,
    },
}

impl ConditionColumn {
    /// Number of cells.
    pub fn len(&self) -> usize {
        match self {
            ConditionColumn::Categorical { codes, .. } => codes.len(),
            ConditionColumn::Continuous(v) => v.len(),
            ConditionColumn::Vector { dim, values } => values.len() / (*dim).max(1),
        }
    }
    /// True when there are no cells.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The column restricted to `rows`.
    pub fn select(&self, rows: &[usize]) -> Self {
        match self {
            ConditionColumn::Categorical { categories, codes } => ConditionColumn::Categorical {
                categories: categories.clone(),
                codes: rows.iter().map(|&r| codes[r]).collect(),
            },
            ConditionColumn::Continuous(v) => {
                ConditionColumn::Continuous(rows.iter().map(|&r| v[r]).collect())
            }
            ConditionColumn::Vector { dim, values } => ConditionColumn::Vector {
                dim: *dim,
                values: rows
                    .iter()
                    .flat_map(|&r| values[r * dim..(r + 1) * dim].iter().copied())
                    .collect(),
            },
        }
    }
}

/// All condition sources for a set of cells, by obs/obsm key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConditionTable {
    /// Key -> column.
    pub columns: BTreeMap<String, ConditionColumn>,
    /// Key -> the fitted encoder of a modality condition (training data only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encoders: BTreeMap<String, ModalityEncoder>,
}

impl ConditionTable {
    /// The table restricted to `rows`.
    pub fn select(&self, rows: &[usize]) -> Self {
        Self {
            columns: self
                .columns
                .iter()
                .map(|(k, c)| (k.clone(), c.select(rows)))
                .collect(),
            encoders: self.encoders.clone(),
        }
    }
    /// Number of cells (0 when there are no columns).
    pub fn len(&self) -> usize {
        self.columns.values().next().map_or(0, ConditionColumn::len)
    }
    /// True when there are no cells.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a condition source must look like (declared by a conditioner config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConditionKind {
    /// A categorical obs column.
    Categorical,
    /// A categorical obs column whose values are sets of members joined by `separator`
    /// (perturbation combinations such as `IFNB+TNF`); at sampling time any combination of
    /// members seen in training is accepted, also unseen ones.
    Set {
        /// Separator between members (e.g. `+`).
        separator: char,
    },
    /// A numeric obs column.
    Continuous,
    /// An obsm matrix.
    Vector,
    /// Another measured modality of the same cells (e.g. RNA for a protein model): a matrix of
    /// the data file, preprocessed and projected by a [`ModalityEncoder`] fitted on the training
    /// cells; arrives as a vector of principal-component scores.
    Modality(ModalitySource),
}

/// Splits a set value into its members (trimmed, empty parts dropped).
pub fn set_members(value: &str, separator: char) -> Vec<&str> {
    value
        .split(separator)
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect()
}

/// What a conditioner (and the sampler's condition checks) know about one condition source of
/// the training cells: categories and their counts, or per-dimension range, mean and spread.
/// Stored in the run manifest so that a loaded run rebuilds the same conditioner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionSummary {
    /// obs/obsm key.
    pub key: String,
    /// Kind of source.
    pub kind: ConditionKind,
    /// Category names (categorical and set kinds).
    #[serde(default)]
    pub categories: Vec<String>,
    /// Training cells per category, used for default proportions when sampling.
    #[serde(default)]
    pub counts: Vec<usize>,
    /// Width (1 for categorical and continuous).
    pub dim: usize,
    /// Per-dimension minimum (continuous and vector kinds).
    #[serde(default)]
    pub min: Vec<f32>,
    /// Per-dimension maximum.
    #[serde(default)]
    pub max: Vec<f32>,
    /// Per-dimension mean.
    #[serde(default)]
    pub mean: Vec<f32>,
    /// Per-dimension standard deviation (population).
    #[serde(default)]
    pub std: Vec<f32>,
    /// The encoder of a modality condition (features, centre, axes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<ModalityEncoder>,
}

impl ConditionSummary {
    /// Summarizes the training cells' column `column` declared as `kind`.
    pub fn of(key: &str, kind: &ConditionKind, column: &ConditionColumn) -> Self {
        let mut summary = Self {
            key: key.into(),
            kind: kind.clone(),
            categories: vec![],
            counts: vec![],
            dim: 1,
            min: vec![],
            max: vec![],
            mean: vec![],
            std: vec![],
            encoder: None,
        };
        match column {
            ConditionColumn::Categorical { categories, codes } => {
                let mut counts = vec![0; categories.len()];
                for &c in codes {
                    if let Some(slot) = counts.get_mut(c as usize) {
                        *slot += 1;
                    }
                }
                summary.categories = categories.clone();
                summary.counts = counts;
            }
            ConditionColumn::Continuous(values) => summary.set_moments(values, 1),
            ConditionColumn::Vector { dim, values } => summary.set_moments(values, *dim),
        }
        summary
    }

    fn set_moments(&mut self, values: &[f32], dim: usize) {
        let dim = dim.max(1);
        let n = values.len() / dim;
        self.dim = dim;
        self.min = vec![f32::INFINITY; dim];
        self.max = vec![f32::NEG_INFINITY; dim];
        let mut sum = vec![0.0f64; dim];
        let mut sq = vec![0.0f64; dim];
        for row in values.chunks_exact(dim) {
            for (j, &v) in row.iter().enumerate() {
                self.min[j] = self.min[j].min(v);
                self.max[j] = self.max[j].max(v);
                sum[j] += v as f64;
                sq[j] += (v as f64) * (v as f64);
            }
        }
        let n = n.max(1) as f64;
        self.mean = sum.iter().map(|s| (s / n) as f32).collect();
        self.std = sum
            .iter()
            .zip(&sq)
            .map(|(s, q)| ((q / n - (s / n) * (s / n)).max(0.0).sqrt()) as f32)
            .collect();
        if values.is_empty() {
            self.min = vec![0.0; dim];
            self.max = vec![0.0; dim];
        }
    }

    /// Members seen in training (set kind: categories split by the separator; categorical: the
    /// categories).
    pub fn members(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.categories {
            let parts = match self.kind {
                ConditionKind::Set { separator } => set_members(c, separator),
                _ => vec![c.as_str()],
            };
            for m in parts {
                if !out.iter().any(|o| o == m) {
                    out.push(m.to_string());
                }
            }
        }
        out
    }

    /// An empty column of this shape (categories kept).
    pub fn empty_column(&self) -> ConditionColumn {
        match self.kind {
            ConditionKind::Categorical | ConditionKind::Set { .. } => {
                ConditionColumn::Categorical {
                    categories: self.categories.clone(),
                    codes: vec![],
                }
            }
            ConditionKind::Continuous => ConditionColumn::Continuous(vec![]),
            ConditionKind::Vector | ConditionKind::Modality(_) => ConditionColumn::Vector {
                dim: self.dim,
                values: vec![],
            },
        }
    }
}

/// Summaries of every source in `table`, using the kinds declared in `sources`
/// (columns not declared are summarized by their shape).
pub fn summarize(
    table: &ConditionTable,
    sources: &[(String, ConditionKind)],
) -> BTreeMap<String, ConditionSummary> {
    table
        .columns
        .iter()
        .map(|(key, column)| {
            let kind = sources
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, kind)| kind.clone())
                .unwrap_or(match column {
                    ConditionColumn::Categorical { .. } => ConditionKind::Categorical,
                    ConditionColumn::Continuous(_) => ConditionKind::Continuous,
                    ConditionColumn::Vector { .. } => ConditionKind::Vector,
                });
            let mut summary = ConditionSummary::of(key, &kind, column);
            summary.encoder = table.encoders.get(key).cloned();
            (key.clone(), summary)
        })
        .collect()
}

/// What the conditioner is built against: summaries of the training cells' conditions.
#[derive(Debug, Clone)]
pub struct ConditionerContext {
    /// Per source key: categories, ranges, widths of the training cells' conditions.
    pub conditions: BTreeMap<String, ConditionSummary>,
    /// Seed for initialization.
    pub seed: u64,
    /// Device.
    pub dev: Dev,
}

/// The condition embedding handed to a denoiser.
pub struct ConditionEmbedding<T: Taped> {
    /// `(batch, dim)` pooled embedding.
    pub vector: Tensor2<T>,
}

/// A trainable condition encoder. `Sync`: sampling shares it between threads.
pub trait Conditioner: Parameters + Send + Sync {
    /// Embedding width.
    fn dim(&self) -> usize;
    /// How the denoiser should inject it.
    fn injection(&self) -> Injection;
    /// Embeds `batch` (rows of the condition table) while training; rows with `null[i] = true`
    /// get the learned null embedding (classifier-free guidance dropout). `rng` is the training
    /// loop's noise stream, for training-only randomness (condition noise, per-attribute dropout).
    ///
    /// # Errors
    /// Missing keys or unknown category codes.
    fn embed_train(
        &self,
        batch: &ConditionTable,
        null: &[bool],
        rng: &mut dyn rand::RngCore,
    ) -> Result<ConditionEmbedding<crate::device::TrainTape>>;
    /// Same as [`Conditioner::embed_train`] without autodiff or training-only randomness. Rows
    /// are embedded independently: sampling embeds tiles of rows in parallel.
    ///
    /// # Errors
    /// Missing keys or unknown category codes.
    fn embed(
        &self,
        batch: &ConditionTable,
        null: &[bool],
    ) -> Result<ConditionEmbedding<dfdx::tensor::NoneTape>>;
    /// The attributes guidance can scale separately, in the order guidance composes them; each
    /// is named by the condition keys it covers. Empty (the default) when guidance has a single
    /// scale: one attribute, or attributes never dropped separately while training.
    fn attributes(&self) -> Vec<Vec<String>> {
        Vec::new()
    }
    /// Embeds every row of `batch` with only the attributes flagged in `present` (one flag per
    /// [`Conditioner::attributes`] entry); the others get their null embedding.
    ///
    /// # Errors
    /// [`crate::LatentError::Incompatible`] by default (no separate attributes); shape errors.
    fn embed_attributes(
        &self,
        batch: &ConditionTable,
        present: &[bool],
    ) -> Result<ConditionEmbedding<dfdx::tensor::NoneTape>> {
        let _ = (batch, present);
        Err(crate::LatentError::Incompatible(
            "this conditioner has no separately guided attributes".into(),
        ))
    }
}

/// Serializable description of a conditioner.
#[typetag::serde(tag = "type")]
pub trait ConditionerConfig: std::fmt::Debug + Send + Sync {
    /// Condition sources this conditioner reads, by key.
    fn sources(&self) -> Vec<(String, ConditionKind)>;
    /// Probability of replacing a condition by the null embedding during training.
    fn drop_prob(&self) -> f32;
    /// Validates against the data and builds.
    ///
    /// # Errors
    /// [`crate::LatentError::InvalidConfig`] for invalid fields or missing keys.
    fn build(&self, ctx: &ConditionerContext) -> Result<Box<dyn Conditioner>>;
}
