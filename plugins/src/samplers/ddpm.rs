//! DDPM (Ho et al. 2020): Gaussian diffusion with ancestral sampling. With fewer sampling steps
//! than training steps it samples the generalized posterior between the chosen steps (DDIM with
//! eta = 1), as diffusers' `DDPMScheduler` does.

use latentlab_framework::diffusion::{Diffusion, TimestepSpacing};
use latentlab_framework::plugin::{
    LatentSampler, ModelFn, Prediction, SamplerConfig, TrainingPair, TrainingProcess,
};
use latentlab_framework::rng::fill_normal;
use latentlab_framework::schedules::BetaSchedule;
use latentlab_framework::{register_plugin, LatentError, Result};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Config of the `ddpm` sampler.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdpmConfig {
    /// Training steps T. Default 1000.
    pub train_steps: usize,
    /// Beta schedule (`linear`, `scaled_linear`, `cosine`). Default `cosine`.
    pub schedule: BetaSchedule,
    /// First beta of linear schedules. Default 1e-4.
    pub beta_start: f64,
    /// Last beta of linear schedules. Default 0.02.
    pub beta_end: f64,
    /// Network target (`epsilon`, `v`, `sample`). Default `epsilon`.
    pub prediction: Prediction,
    /// Default number of sampling steps. Default 100.
    pub steps: usize,
    /// How sampling steps are spaced. Default `trailing`.
    pub timestep_spacing: TimestepSpacing,
    /// Bound on the predicted clean latent x̂₀ at every step (latents are standardized; stops
    /// the blow-up of ε-prediction where ᾱ ≈ 0 near t = 1, see `Diffusion::clip_prediction`);
    /// 0 = off. Default 5.
    pub clip_sample: f32,
}

impl Default for DdpmConfig {
    fn default() -> Self {
        Self {
            train_steps: 1000,
            schedule: BetaSchedule::Cosine,
            beta_start: 1e-4,
            beta_end: 0.02,
            prediction: Prediction::Epsilon,
            steps: 100,
            timestep_spacing: TimestepSpacing::Trailing,
            clip_sample: 5.0,
        }
    }
}

#[typetag::serde(name = "ddpm")]
impl SamplerConfig for DdpmConfig {
    fn default_steps(&self) -> usize {
        self.steps
    }
    fn build(&self) -> Result<Box<dyn LatentSampler>> {
        if !(self.clip_sample >= 0.0 && self.clip_sample.is_finite()) {
            return Err(LatentError::config(
                "sampler.ddpm",
                "clip_sample",
                "a finite value ≥ 0 (0 = off)",
                self.clip_sample,
            ));
        }
        let diffusion = Diffusion::new(
            self.schedule,
            self.train_steps,
            self.beta_start,
            self.beta_end,
            self.prediction,
        )?;
        diffusion.time_grid(self.steps, self.timestep_spacing)?;
        Ok(Box::new(Ddpm {
            config: self.clone(),
            diffusion,
        }))
    }
}

register_plugin!(
    Sampler,
    "ddpm",
    "DDPM: Gaussian diffusion (linear/scaled-linear/cosine betas), epsilon/v/x0 targets, ancestral sampling",
    "type = \"ddpm\"\ntrain_steps = 1000\nschedule = \"cosine\"\nprediction = \"epsilon\"\nsteps = 100"
);

/// The DDPM process.
#[derive(Debug, Clone)]
pub struct Ddpm {
    config: DdpmConfig,
    diffusion: Diffusion,
}

impl LatentSampler for Ddpm {
    fn process(&self) -> TrainingProcess {
        self.diffusion.process()
    }
    fn sample_time(&self, rng: &mut dyn RngCore) -> f32 {
        self.diffusion.sample_time(rng)
    }
    fn training_pair(
        &self,
        z0: &[f32],
        noise: &[f32],
        t: &[f32],
        dim: usize,
    ) -> Result<TrainingPair> {
        self.diffusion.training_pair(z0, noise, t, dim)
    }
    fn time_grid(&self, steps: usize) -> Result<Vec<f32>> {
        self.diffusion
            .time_grid(steps, self.config.timestep_spacing)
    }
    fn step(
        &self,
        model: &mut ModelFn<'_>,
        z: &[f32],
        t: f32,
        t_next: f32,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<f32>> {
        let out = model(z, t)?;
        let (mut x0, mut eps) = self.diffusion.split_prediction(&out, z, t);
        self.diffusion
            .clip_prediction(&mut x0, &mut eps, z, t, self.config.clip_sample);
        let mut noise = vec![0.0; z.len()];
        fill_normal(&mut &mut *rng, &mut noise);
        Ok(self
            .diffusion
            .ddim_update(&x0, &eps, t, t_next, 1.0, &noise))
    }
}
