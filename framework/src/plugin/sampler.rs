//! Stage 2's generative process: one trait for diffusion (DDPM, DDIM) and flow (rectified flow).
//!
//! Time convention for every sampler: `t ∈ [0, 1]`, `t = 0` is data and `t = 1` is pure Gaussian
//! noise. Diffusion samplers map `t` to their discrete step `round(t * (T - 1))`. Samplers own no
//! weights; they build training pairs and integrate the reverse process by calling the model.

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::Result;

/// What the denoiser is trained to output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The added noise ε.
    #[default]
    Epsilon,
    /// v = sqrt(ᾱ) ε − sqrt(1 − ᾱ) x₀ (Salimans & Ho 2022).
    V,
    /// The clean latent x₀.
    Sample,
    /// The flow velocity dz/dt (rectified flow: ε − x₀).
    Velocity,
}

/// The training process a denoiser was fitted under; two samplers may share a trained denoiser
/// only when their processes are equal (e.g. DDPM-trained → DDIM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingProcess {
    /// `diffusion` or `flow`.
    pub family: String,
    /// Noise schedule (`linear`, `scaled_linear`, `cosine`, or `linear_interpolant` for flow).
    pub schedule: String,
    /// Discrete training steps (0 for continuous time).
    pub train_steps: usize,
    /// Prediction target.
    pub prediction: Prediction,
}

/// A batch of training inputs for the denoiser.
#[derive(Debug, Clone)]
pub struct TrainingPair {
    /// Noisy latents `z_t`, row-major `(n, dim)`.
    pub noisy: Vec<f32>,
    /// Regression target of the prediction type, `(n, dim)`.
    pub target: Vec<f32>,
    /// Time given to the network for each row (in `[0, 1]`).
    pub model_time: Vec<f32>,
}

/// The model as a sampler sees it: `(z_t (n, dim), t) -> prediction (n, dim)`.
pub type ModelFn<'a> = dyn FnMut(&[f32], f32) -> Result<Vec<f32>> + 'a;

/// A weight-free generative process (diffusion or flow).
pub trait LatentSampler: Send + Sync {
    /// The process a denoiser trained by this sampler follows.
    fn process(&self) -> TrainingProcess;
    /// Draws one training time in `[0, 1]`.
    fn sample_time(&self, rng: &mut dyn RngCore) -> f32;
    /// Noisy inputs and targets for clean latents `z0`, noise and times (one per row).
    ///
    /// # Errors
    /// Shape errors.
    fn training_pair(
        &self,
        z0: &[f32],
        noise: &[f32],
        t: &[f32],
        dim: usize,
    ) -> Result<TrainingPair>;
    /// Decreasing time grid from noise to data with `steps + 1` points.
    ///
    /// # Errors
    /// [`crate::LatentError::InvalidConfig`] when `steps` is zero or above the training steps.
    fn time_grid(&self, steps: usize) -> Result<Vec<f32>>;
    /// One reverse update from `t` to `t_next < t`; may call `model` more than once (Heun).
    ///
    /// # Errors
    /// Propagates model errors.
    fn step(
        &self,
        model: &mut ModelFn<'_>,
        z: &[f32],
        t: f32,
        t_next: f32,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<f32>>;
    /// One deterministic forward update from `t` to `t_next > t` (data → noise), for per-cell
    /// inversion. `None` when the process cannot be inverted deterministically.
    ///
    /// # Errors
    /// Propagates model errors.
    fn invert_step(
        &self,
        model: &mut ModelFn<'_>,
        z: &[f32],
        t: f32,
        t_next: f32,
    ) -> Option<Result<Vec<f32>>> {
        let _ = (model, z, t, t_next);
        None
    }
}

/// Serializable description of a sampler.
#[typetag::serde(tag = "type")]
pub trait SamplerConfig: std::fmt::Debug + Send + Sync {
    /// Default number of sampling steps.
    fn default_steps(&self) -> usize;
    /// Validates and builds.
    ///
    /// # Errors
    /// [`crate::LatentError::InvalidConfig`].
    fn build(&self) -> Result<Box<dyn LatentSampler>>;
}
