//! Stage 1: the autoencoder that compresses expression profiles into a latent space.

use rand::RngCore;

use crate::device::{Dev, Scalar, TrainTape};
use crate::nn::Parameters;
use crate::Result;

/// What kind of values feed the autoencoder (detected from the data, checked at build).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// Non-negative integer UMI counts.
    Counts,
    /// Continuous values (log-normalized, scaled, FPKM, ...).
    Continuous,
}

/// Everything an autoencoder needs to know about the data at build time.
#[derive(Debug, Clone)]
pub struct AutoencoderContext {
    /// Number of genes (input width).
    pub n_genes: usize,
    /// Whether the input is counts.
    pub input: InputKind,
    /// Seed for weight initialization.
    pub seed: u64,
    /// Device for the weights.
    pub dev: Dev,
}

/// A minibatch of cells as the autoencoder sees them.
#[derive(Debug, Clone)]
pub struct ExpressionBatch {
    /// Row-major `(n, n_genes)` values (counts for count models, else continuous).
    pub x: Vec<f32>,
    /// Number of cells.
    pub n: usize,
    /// Per-cell library size (sum of counts over the modelled genes; row sum otherwise).
    pub library_size: Vec<f32>,
}

impl ExpressionBatch {
    /// Number of genes per cell.
    pub fn n_genes(&self) -> usize {
        self.x.len().checked_div(self.n).unwrap_or(0)
    }

    /// The cells at `rows` (in that order).
    pub fn select(&self, rows: &[usize]) -> ExpressionBatch {
        let g = self.n_genes();
        let mut x = Vec::with_capacity(rows.len() * g);
        for &r in rows {
            x.extend_from_slice(&self.x[r * g..(r + 1) * g]);
        }
        ExpressionBatch {
            x,
            n: rows.len(),
            library_size: rows.iter().map(|&r| self.library_size[r]).collect(),
        }
    }
}

/// One evaluation of the training objective.
pub struct AutoencoderLoss {
    /// Differentiable total loss (mean over the batch).
    pub total: Scalar<TrainTape>,
    /// Named scalar components for logging (`reconstruction`, `kl`, `commitment`, ...).
    pub components: Vec<(String, f32)>,
}

/// A trained or trainable stage-1 model.
pub trait Autoencoder: Parameters + Send {
    /// Width of the latent space.
    fn latent_dim(&self) -> usize;
    /// Number of genes it reconstructs.
    fn n_genes(&self) -> usize;
    /// Training loss on a batch; `step` drives warm-ups (e.g. KL annealing) and `rng` draws
    /// reparameterization noise.
    ///
    /// # Errors
    /// Shape errors when the batch width differs from `n_genes`.
    fn loss(
        &mut self,
        batch: &ExpressionBatch,
        step: u64,
        rng: &mut dyn RngCore,
    ) -> Result<AutoencoderLoss>;
    /// Deterministic latent code (posterior mean / quantized code) `(n, latent_dim)`.
    ///
    /// # Errors
    /// Shape errors.
    fn encode(&self, batch: &ExpressionBatch) -> Result<Vec<f32>>;
    /// Expected expression in the input's space `(n, n_genes)` for latents `z` `(n, latent_dim)`;
    /// count models scale by `library_size`.
    ///
    /// # Errors
    /// Shape errors.
    fn decode_mean(&self, z: &[f32], n: usize, library_size: &[f32]) -> Result<Vec<f32>>;
    /// A draw from the observation model (counts for NB/ZINB; the mean for continuous models).
    ///
    /// # Errors
    /// Shape errors.
    fn decode_sample(
        &self,
        z: &[f32],
        n: usize,
        library_size: &[f32],
        rng: &mut dyn RngCore,
    ) -> Result<Vec<f32>> {
        let _ = rng;
        self.decode_mean(z, n, library_size)
    }
    /// Samples from the latent prior (`None` when the model has no generative prior).
    fn prior_sample(&self, n: usize, rng: &mut dyn RngCore) -> Option<Vec<f32>>;
    /// Called after each optimizer step (VQ codebook EMA, dead-code restarts).
    ///
    /// # Errors
    /// Plugin specific.
    fn after_step(&mut self, batch: &ExpressionBatch, rng: &mut dyn RngCore) -> Result<()> {
        let _ = (batch, rng);
        Ok(())
    }
}

/// Serializable description of an autoencoder; `type = "<name>"` selects the plugin.
#[typetag::serde(tag = "type")]
pub trait AutoencoderConfig: std::fmt::Debug + Send + Sync {
    /// Validates the config against the data and builds the model.
    ///
    /// # Errors
    /// [`crate::LatentError::InvalidConfig`] for invalid fields or input kinds.
    fn build(&self, ctx: &AutoencoderContext) -> Result<Box<dyn Autoencoder>>;
}
