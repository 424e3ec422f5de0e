//! Diagonal-Gaussian posterior head of a VAE encoder: mean and log-variance projections,
//! reparameterized sampling and the KL term to N(0, I). Shared by the `vae` and count VAEs.

use dfdx::prelude::*;
use rand::{Rng, RngCore};

use super::{fan_out, Init, Linear};
use crate::device::{tensor2, Dev, Scalar, Tensor2, TrainTape};
use crate::likelihood::kl_standard_normal;
use crate::rng::fill_normal;
use crate::{LatentError, Result};

/// One draw from [`GaussianPosterior::sample`].
pub struct PosteriorSample {
    /// Reparameterized sample `(n, latent)`.
    pub z: Tensor2<TrainTape>,
    /// `KL(q ‖ N(0, I))`, batch mean.
    pub kl: Scalar<TrainTape>,
    /// Posterior mean `(n, latent)` (what `encode` returns), differentiable.
    pub mean: Tensor2<TrainTape>,
}

/// `q(z | h) = N(W_μ h, diag(exp(W_σ h)))`, log-variance clamped to [−12, 12].
#[derive(Debug, Clone)]
pub struct GaussianPosterior {
    /// Mean projection `(hidden, latent)`.
    pub mean: Linear,
    /// Log-variance projection `(hidden, latent)`.
    pub log_var: Linear,
}
crate::parameters!(GaussianPosterior { mean, log_var });

impl GaussianPosterior {
    /// Creates the two projections (mean first, then log-variance).
    ///
    /// # Errors
    /// Zero sizes.
    pub fn new(dev: &Dev, hidden: usize, latent: usize, rng: &mut impl Rng) -> Result<Self> {
        Ok(Self {
            mean: Linear::new(dev, hidden, latent, Init::KaimingUniform, rng)?,
            log_var: Linear::new(dev, hidden, latent, Init::KaimingUniform, rng)?,
        })
    }

    /// Latent width.
    pub fn latent_dim(&self) -> usize {
        self.mean.outputs()
    }

    /// A reparameterized sample `z = μ + exp(log σ² / 2) ε`, `KL(q ‖ N(0, I))` (batch mean) and
    /// the mean `μ` itself on the same tape (a separate handle for joint fine-tuning; unused
    /// handles cost nothing).
    ///
    /// # Errors
    /// Shape errors.
    pub fn sample(&self, h: Tensor2<TrainTape>, rng: &mut dyn RngCore) -> Result<PosteriorSample> {
        let n = h.shape().0;
        let mut h = fan_out(h, 2).into_iter();
        let (Some(h1), Some(h2)) = (h.next(), h.next()) else {
            return Err(LatentError::shape("gaussian posterior", 2, "fewer"));
        };
        let mu = self.mean.forward(h1)?;
        let log_var = self.log_var.forward(h2)?.clamp(-12.0, 12.0);
        let mut noise = vec![0.0f32; n * self.latent_dim()];
        fill_normal(&mut &mut *rng, &mut noise);
        let eps = tensor2(&mu.device().clone(), &noise, n, self.latent_dim())?;
        let mean = mu.with_empty_tape();
        let z = mu.with_empty_tape() + (log_var.with_empty_tape() * 0.5).exp() * eps;
        Ok(PosteriorSample {
            z,
            kl: kl_standard_normal(mu, log_var),
            mean,
        })
    }

    /// Posterior means `(n, latent)`.
    ///
    /// # Errors
    /// Shape errors.
    pub fn means(&self, h: Tensor2) -> Result<Tensor2> {
        self.mean.forward(h)
    }
}

/// The KL weight at `step` with a linear warm-up from 0 over `warmup_steps` (no warm-up when 0).
pub fn kl_warmup(weight: f32, warmup_steps: u64, step: u64) -> f32 {
    if warmup_steps == 0 {
        return weight;
    }
    weight * ((step as f32 + 1.0) / warmup_steps as f32).min(1.0)
}
