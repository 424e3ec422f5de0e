//! DDIM (Song et al. 2021): the non-Markovian sampler of a DDPM-trained model; `eta = 0` is
//! deterministic (and invertible), `eta = 1` matches DDPM's ancestral statistics. A denoiser
//! trained with `ddpm` can be sampled with `ddim` when schedule, T and prediction agree.

use latentlab_framework::diffusion::{Diffusion, TimestepSpacing};
use latentlab_framework::plugin::{
    LatentSampler, ModelFn, Prediction, SamplerConfig, TrainingPair, TrainingProcess,
};
use latentlab_framework::schedules::BetaSchedule;
use latentlab_framework::{register_plugin, LatentError, Result};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

/// Config of the `ddim` sampler.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdimConfig {
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
    /// Default number of sampling steps (≤ train_steps). Default 50.
    pub steps: usize,
    /// Stochasticity: 0 deterministic, 1 DDPM-like. Default 0.
    pub eta: f32,
    /// How sampling steps are spaced. Default `trailing`.
    pub timestep_spacing: TimestepSpacing,
    /// Bound on the predicted clean latent x̂₀ at every step (latents are standardized; stops
    /// the blow-up of ε-prediction where ᾱ ≈ 0 near t = 1, see `Diffusion::clip_prediction`);
    /// 0 = off. Default 5.
    pub clip_sample: f32,
}

impl Default for DdimConfig {
    fn default() -> Self {
        Self {
            train_steps: 1000,
            schedule: BetaSchedule::Cosine,
            beta_start: 1e-4,
            beta_end: 0.02,
            prediction: Prediction::Epsilon,
            steps: 50,
            eta: 0.0,
            timestep_spacing: TimestepSpacing::Trailing,
            clip_sample: 5.0,
        }
    }
}

#[typetag::serde(name = "ddim")]
impl SamplerConfig for DdimConfig {
    fn default_steps(&self) -> usize {
        self.steps
    }
    fn build(&self) -> Result<Box<dyn LatentSampler>> {
        if !(self.clip_sample >= 0.0 && self.clip_sample.is_finite()) {
            return Err(LatentError::config(
                "sampler.ddim",
                "clip_sample",
                "a finite value ≥ 0 (0 = off)",
                self.clip_sample,
            ));
        }
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(LatentError::config(
                "sampler.ddim",
                "eta",
                "a value in [0, 1]",
                self.eta,
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
        Ok(Box::new(Ddim {
            config: self.clone(),
            diffusion,
        }))
    }
}

register_plugin!(
    Sampler,
    "ddim",
    "DDIM: deterministic (eta = 0) or stochastic sampling of a DDPM-trained denoiser in few steps; invertible at eta = 0",
    "type = \"ddim\"\ntrain_steps = 1000\nschedule = \"cosine\"\nprediction = \"epsilon\"\nsteps = 50\neta = 0.0"
);

/// The DDIM process.
#[derive(Debug, Clone)]
pub struct Ddim {
    config: DdimConfig,
    diffusion: Diffusion,
}

impl LatentSampler for Ddim {
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
        let noise: Vec<f32> = if self.config.eta > 0.0 {
            (0..z.len())
                .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
                .collect()
        } else {
            vec![0.0; z.len()]
        };
        Ok(self
            .diffusion
            .ddim_update(&x0, &eps, t, t_next, self.config.eta, &noise))
    }
    fn invert_step(
        &self,
        model: &mut ModelFn<'_>,
        z: &[f32],
        t: f32,
        t_next: f32,
    ) -> Option<Result<Vec<f32>>> {
        if self.config.eta != 0.0 {
            return None;
        }
        // DDIM inversion: predict (x0, ε) at the current (lower-noise) time and re-noise deterministically.
        Some(model(z, t).map(|out| {
            let (x0, eps) = self.diffusion.split_prediction(&out, z, t.max(1e-6));
            self.diffusion
                .ddim_update(&x0, &eps, t, t_next, 0.0, &vec![0.0; z.len()])
        }))
    }
}
