//! Discrete-time Gaussian diffusion math shared by the DDPM and DDIM samplers.
//!
//! Time mapping: discrete step `k ∈ {0, …, T−1}` ↔ `t = (k + 1) / T ∈ (0, 1]`, and `t = 0` is
//! clean data (ᾱ = 1, diffusers' `set_alpha_to_one`).

use serde::{Deserialize, Serialize};

use crate::plugin::{Prediction, TrainingPair, TrainingProcess};
use crate::schedules::BetaSchedule;
use crate::{LatentError, Result};

/// How DDIM/DDPM choose `N` of the `T` training steps (diffusers' `timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// `k = i · (T / N)` for i = 0..N (never reaches T−1).
    Leading,
    /// `k = round(T − i · T / N) − 1` (always starts at T−1).
    #[default]
    Trailing,
    /// `k = round(linspace(0, T−1, N))`.
    Linspace,
}

/// ᾱ table and prediction type of a trained diffusion model.
#[derive(Debug, Clone)]
pub struct Diffusion {
    /// ᾱ_k for k = 0..T−1.
    pub alphas_cumprod: Vec<f64>,
    /// What the network predicts.
    pub prediction: Prediction,
    /// Schedule description, e.g. `cosine(0.0001, 0.02)`.
    pub schedule: String,
}

impl Diffusion {
    /// Builds the table.
    ///
    /// # Errors
    /// Invalid schedule parameters, or a `velocity` prediction (that is a flow target).
    pub fn new(
        schedule: BetaSchedule,
        steps: usize,
        beta_start: f64,
        beta_end: f64,
        prediction: Prediction,
    ) -> Result<Self> {
        if prediction == Prediction::Velocity {
            return Err(LatentError::config(
                "sampler",
                "prediction",
                "epsilon, v or sample for a diffusion sampler",
                "velocity",
            ));
        }
        Ok(Self {
            alphas_cumprod: schedule.alphas_cumprod(steps, beta_start, beta_end)?,
            prediction,
            schedule: format!("{}({beta_start}, {beta_end})", schedule.name()),
        })
    }

    /// The training process a denoiser fitted on this diffusion follows.
    pub fn process(&self) -> TrainingProcess {
        TrainingProcess {
            family: "diffusion".into(),
            schedule: self.schedule.clone(),
            train_steps: self.steps(),
            prediction: self.prediction,
        }
    }

    /// Number of training steps T.
    pub fn steps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// ᾱ at time `t` (1 for t ≤ 0).
    pub fn alpha_bar(&self, t: f32) -> f64 {
        let k = (t as f64 * self.steps() as f64).round() as i64 - 1;
        if k < 0 {
            1.0
        } else {
            self.alphas_cumprod[(k as usize).min(self.steps() - 1)]
        }
    }

    /// Draws a training time: a uniformly chosen discrete step, as its time.
    pub fn sample_time(&self, rng: &mut dyn rand::RngCore) -> f32 {
        use rand::Rng;
        self.time_of(rng.gen_range(0..self.steps()))
    }

    /// Time of discrete step `k`.
    pub fn time_of(&self, k: usize) -> f32 {
        (k + 1) as f32 / self.steps() as f32
    }

    /// `z_t = sqrt(ᾱ) z0 + sqrt(1−ᾱ) ε` and the target of the prediction type.
    ///
    /// # Errors
    /// Shape errors.
    pub fn training_pair(
        &self,
        z0: &[f32],
        noise: &[f32],
        t: &[f32],
        dim: usize,
    ) -> Result<TrainingPair> {
        check_rows(z0, noise, t, dim)?;
        let mut noisy = vec![0.0; z0.len()];
        let mut target = vec![0.0; z0.len()];
        for (row, &ti) in t.iter().enumerate() {
            let ab = self.alpha_bar(ti);
            let (a, s) = (ab.sqrt() as f32, (1.0 - ab).sqrt() as f32);
            for j in row * dim..(row + 1) * dim {
                noisy[j] = a * z0[j] + s * noise[j];
                target[j] = match self.prediction {
                    Prediction::Epsilon => noise[j],
                    Prediction::V => a * noise[j] - s * z0[j],
                    Prediction::Sample | Prediction::Velocity => z0[j],
                };
            }
        }
        Ok(TrainingPair {
            noisy,
            target,
            model_time: t.to_vec(),
        })
    }

    /// Converts a network output at time `t` into predicted `(x0, ε)`.
    pub fn split_prediction(&self, out: &[f32], z: &[f32], t: f32) -> (Vec<f32>, Vec<f32>) {
        let ab = self.alpha_bar(t);
        let (a, s) = (ab.sqrt() as f32, (1.0 - ab).sqrt().max(1e-12) as f32);
        let mut x0 = vec![0.0; z.len()];
        let mut eps = vec![0.0; z.len()];
        for j in 0..z.len() {
            match self.prediction {
                Prediction::Epsilon => {
                    eps[j] = out[j];
                    x0[j] = (z[j] - s * out[j]) / a;
                }
                Prediction::V => {
                    x0[j] = a * z[j] - s * out[j];
                    eps[j] = s * z[j] + a * out[j];
                }
                Prediction::Sample | Prediction::Velocity => {
                    x0[j] = out[j];
                    eps[j] = (z[j] - a * out[j]) / s;
                }
            }
        }
        (x0, eps)
    }

    /// Clips the predicted clean latent to `[-limit, limit]` (no-op for `limit <= 0`) and, where
    /// it clipped, recomputes ε from it so that `z = sqrt(ᾱ) x0 + sqrt(1−ᾱ) ε` still holds (as
    /// diffusers' `clip_sample`). Near t = 1 with a schedule whose ᾱ reaches ~0 (cosine, trailing
    /// spacing), `x0 = (z − sqrt(1−ᾱ) ε̂)/sqrt(ᾱ)` multiplies any error of ε̂ by 1/sqrt(ᾱ) (~10⁴);
    /// latents are standardized, so a bound of a few units only removes that blow-up.
    pub fn clip_prediction(&self, x0: &mut [f32], eps: &mut [f32], z: &[f32], t: f32, limit: f32) {
        if limit <= 0.0 {
            return;
        }
        let ab = self.alpha_bar(t);
        let (a, s) = (ab.sqrt() as f32, (1.0 - ab).sqrt().max(1e-12) as f32);
        for j in 0..x0.len() {
            let clipped = x0[j].clamp(-limit, limit);
            if clipped != x0[j] {
                x0[j] = clipped;
                eps[j] = (z[j] - a * clipped) / s;
            }
        }
    }

    /// Generalized DDIM update from `t` to `t_next` with stochasticity `eta` (eta = 1 is DDPM's
    /// ancestral posterior sample; eta = 0 is deterministic). `noise` is used only when σ > 0.
    pub fn ddim_update(
        &self,
        x0: &[f32],
        eps: &[f32],
        t: f32,
        t_next: f32,
        eta: f32,
        noise: &[f32],
    ) -> Vec<f32> {
        let ab = self.alpha_bar(t);
        let ab_next = self.alpha_bar(t_next);
        let sigma = if t_next <= 0.0 {
            0.0
        } else {
            eta as f64
                * ((1.0 - ab_next) / (1.0 - ab) * (1.0 - ab / ab_next))
                    .max(0.0)
                    .sqrt()
        };
        let dir = (1.0 - ab_next - sigma * sigma).max(0.0).sqrt() as f32;
        let (a, sg) = (ab_next.sqrt() as f32, sigma as f32);
        (0..x0.len())
            .map(|j| a * x0[j] + dir * eps[j] + sg * noise[j])
            .collect()
    }

    /// Decreasing time grid with `steps + 1` points ending at 0.
    ///
    /// # Errors
    /// `steps` is zero or larger than T.
    pub fn time_grid(&self, steps: usize, spacing: TimestepSpacing) -> Result<Vec<f32>> {
        let total = self.steps();
        if steps == 0 || steps > total {
            return Err(LatentError::config(
                "sample",
                "steps",
                format!("between 1 and the {total} training steps"),
                steps,
            ));
        }
        let mut ks: Vec<usize> = match spacing {
            TimestepSpacing::Leading => (0..steps).map(|i| i * (total / steps)).collect(),
            TimestepSpacing::Trailing => (0..steps)
                .map(|i| {
                    ((total as f64 - i as f64 * total as f64 / steps as f64).round() as usize)
                        .saturating_sub(1)
                })
                .collect(),
            TimestepSpacing::Linspace => (0..steps)
                .map(|i| {
                    if steps == 1 {
                        total - 1
                    } else {
                        (i as f64 * (total - 1) as f64 / (steps - 1) as f64).round() as usize
                    }
                })
                .collect(),
        };
        ks.sort_unstable_by(|a, b| b.cmp(a));
        ks.dedup();
        let mut grid: Vec<f32> = ks.into_iter().map(|k| self.time_of(k)).collect();
        grid.push(0.0);
        Ok(grid)
    }
}

/// Checks that `z0`, `noise` and `t` describe the same rows of width `dim`.
///
/// # Errors
/// [`LatentError::Shape`].
pub fn check_rows(z0: &[f32], noise: &[f32], t: &[f32], dim: usize) -> Result<()> {
    if z0.len() != noise.len() || z0.len() != t.len() * dim {
        return Err(LatentError::shape(
            "training_pair",
            format!("{} rows x {dim}", t.len()),
            format!("z0 {} / noise {} values", z0.len(), noise.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_bounds_x0_and_keeps_the_noisy_latent_consistent() {
        let d =
            Diffusion::new(BetaSchedule::Cosine, 1000, 1e-4, 0.02, Prediction::Epsilon).unwrap();
        let t = 1.0;
        // A slightly wrong ε̂ at t = 1 explodes x0 without clipping.
        let z = [0.8f32, -0.3];
        let (mut x0, mut eps) = d.split_prediction(&[0.79, -0.3], &z, t);
        assert!(x0[0].abs() > 50.0, "{}", x0[0]);
        d.clip_prediction(&mut x0, &mut eps, &z, t, 5.0);
        assert_eq!(x0[0], 5.0);
        let ab = d.alpha_bar(t);
        let back = ab.sqrt() as f32 * x0[0] + (1.0 - ab).sqrt() as f32 * eps[0];
        assert!((back - z[0]).abs() < 1e-4, "{back}");
        // Within the bound nothing changes.
        assert!(x0[1].abs() < 5.0);
    }

    #[test]
    fn split_prediction_inverts_training_pair() {
        for prediction in [Prediction::Epsilon, Prediction::V, Prediction::Sample] {
            let d = Diffusion::new(BetaSchedule::Linear, 100, 1e-4, 0.02, prediction).unwrap();
            let z0 = [0.3, -1.2];
            let eps = [0.7, 0.1];
            let pair = d.training_pair(&z0, &eps, &[0.5], 2).unwrap();
            let (x0, e) = d.split_prediction(&pair.target, &pair.noisy, 0.5);
            for j in 0..2 {
                assert!(
                    (x0[j] - z0[j]).abs() < 1e-5 && (e[j] - eps[j]).abs() < 1e-5,
                    "{prediction:?}"
                );
            }
        }
    }

    #[test]
    fn grids_match_diffusers_spacings() {
        let d =
            Diffusion::new(BetaSchedule::Linear, 1000, 1e-4, 0.02, Prediction::Epsilon).unwrap();
        let k = |g: Vec<f32>| {
            g.iter()
                .map(|t| (t * 1000.0).round() as i64 - 1)
                .collect::<Vec<_>>()
        };
        // diffusers DDIMScheduler(1000).set_timesteps(5): leading [800 600 400 200 0], trailing [999 799 599 399 199]
        assert_eq!(
            k(d.time_grid(5, TimestepSpacing::Leading).unwrap()),
            vec![800, 600, 400, 200, 0, -1]
        );
        assert_eq!(
            k(d.time_grid(5, TimestepSpacing::Trailing).unwrap()),
            vec![999, 799, 599, 399, 199, -1]
        );
        assert_eq!(
            k(d.time_grid(4, TimestepSpacing::Linspace).unwrap()),
            vec![999, 666, 333, 0, -1]
        );
        assert!(d.time_grid(0, TimestepSpacing::Leading).is_err());
        assert!(d.time_grid(1001, TimestepSpacing::Leading).is_err());
    }

    #[test]
    fn final_ddim_step_returns_x0() {
        let d = Diffusion::new(BetaSchedule::Cosine, 50, 1e-4, 0.02, Prediction::Epsilon).unwrap();
        let z = d.ddim_update(&[1.0, 2.0], &[0.5, 0.5], 0.02, 0.0, 1.0, &[9.0, 9.0]);
        assert_eq!(z, vec![1.0, 2.0]);
    }
}
