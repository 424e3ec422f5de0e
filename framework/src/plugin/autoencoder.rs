//! Stage 1: the autoencoder that compresses expression profiles into a latent space.

use rand::RngCore;

use crate::device::{Dev, Scalar, Tensor2, TrainTape};
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
    /// The batch's deterministic latent code `(n, latent_dim)` (what [`Autoencoder::encode`]
    /// returns: posterior mean, quantized code through the straight-through estimator) on the
    /// same tape as `total`, so that joint fine-tuning can pass the stage-2 loss's gradient into
    /// the encoder. `None` for models that cannot (no trainable encoder); adversary losses
    /// leave it `None`.
    pub latent: Option<Tensor2<TrainTape>>,
}

impl AutoencoderLoss {
    /// A loss without a taped latent code.
    pub fn new(total: Scalar<TrainTape>, components: Vec<(String, f32)>) -> Self {
        Self {
            total,
            components,
            latent: None,
        }
    }
}

/// A trained or trainable stage-1 model. `Sync`: decoding shares it between threads.
pub trait Autoencoder: Parameters + Send + Sync {
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
    /// count models scale by `library_size`. Rows are decoded independently (decoding runs over
    /// tiles of rows in parallel).
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

    /// Adversary (e.g. GAN critic) updates to run after autoencoder step `step`; 0, the default,
    /// for models without one. The trainer then calls [`Autoencoder::adversary_loss`] that many
    /// times, each followed by its own backward pass, gradient clipping and AdamW step (a second
    /// optimizer, same learning-rate schedule) on [`Autoencoder::adversary_mut`].
    fn adversary_updates(&self, step: u64) -> usize {
        let _ = step;
        0
    }
    /// The adversary's objective (to minimize) on `batch` after autoencoder step `step`.
    ///
    /// # Errors
    /// [`crate::LatentError::Incompatible`] by default (the model has no adversary).
    fn adversary_loss(
        &mut self,
        batch: &ExpressionBatch,
        step: u64,
        rng: &mut dyn RngCore,
    ) -> Result<AutoencoderLoss> {
        let _ = (batch, step, rng);
        Err(crate::LatentError::Incompatible(
            "this autoencoder has no adversary to train".into(),
        ))
    }
    /// The adversary's parameters. They are not part of the model's [`Parameters`] (so the
    /// autoencoder's optimizer never moves them, and checkpoints hold only what sampling needs).
    fn adversary_mut(&mut self) -> Option<&mut dyn Parameters> {
        None
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

    /// Checks the config against the training settings (e.g. a warm-up longer than training),
    /// run when an experiment config is loaded. Default: nothing to check.
    ///
    /// # Errors
    /// [`crate::LatentError::InvalidConfig`] naming the field.
    fn check_training(&self, train: &crate::config::TrainConfig) -> Result<()> {
        let _ = train;
        Ok(())
    }
}
