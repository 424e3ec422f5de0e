//! Conditioning: turns per-cell conditions (labels, perturbations, time, coordinates, another
//! modality) into embeddings the denoiser consumes, with a learned null for classifier-free guidance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::device::{Dev, Taped, Tensor2};
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionKind {
    /// A categorical obs column.
    Categorical,
    /// A numeric obs column.
    Continuous,
    /// An obsm matrix.
    Vector,
}

/// What the conditioner is built against: the training data's condition table.
#[derive(Debug, Clone)]
pub struct ConditionerContext {
    /// The training cells' conditions (categories, ranges, widths).
    pub table: ConditionTable,
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

/// A trainable condition encoder.
pub trait Conditioner: Parameters + Send {
    /// Embedding width.
    fn dim(&self) -> usize;
    /// How the denoiser should inject it.
    fn injection(&self) -> Injection;
    /// Embeds `batch` (rows of the condition table); rows with `null[i] = true` get the learned
    /// null embedding (classifier-free guidance dropout / unconditional pass).
    ///
    /// # Errors
    /// Missing keys or unknown category codes.
    fn embed_train(
        &self,
        batch: &ConditionTable,
        null: &[bool],
    ) -> Result<ConditionEmbedding<crate::device::TrainTape>>;
    /// Same as [`Conditioner::embed_train`] without autodiff.
    ///
    /// # Errors
    /// Missing keys or unknown category codes.
    fn embed(
        &self,
        batch: &ConditionTable,
        null: &[bool],
    ) -> Result<ConditionEmbedding<dfdx::tensor::NoneTape>>;
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
