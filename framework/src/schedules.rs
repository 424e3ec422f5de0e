//! Diffusion noise schedules (shared by DDPM and DDIM), following diffusers' `betas_for_*`.

use serde::{Deserialize, Serialize};

use crate::{LatentError, Result};

/// A beta schedule over `T` discrete steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// Linear betas from `beta_start` to `beta_end` (Ho et al. 2020: 1e-4 to 0.02).
    Linear,
    /// Linear in sqrt(beta), squared (Stable Diffusion's "scaled_linear").
    ScaledLinear,
    /// Cosine ᾱ(t) = cos²(((t/T) + s)/(1 + s) · π/2), s = 0.008, betas clipped at 0.999 (Nichol & Dhariwal 2021).
    #[default]
    Cosine,
}

impl BetaSchedule {
    /// Name as written in configs.
    pub fn name(self) -> &'static str {
        match self {
            BetaSchedule::Linear => "linear",
            BetaSchedule::ScaledLinear => "scaled_linear",
            BetaSchedule::Cosine => "cosine",
        }
    }

    /// Cumulative products ᾱ_t for t = 0..T-1 (strictly decreasing, in (0, 1]).
    ///
    /// # Errors
    /// [`LatentError::InvalidConfig`] for `steps < 2` or betas outside (0, 1).
    pub fn alphas_cumprod(self, steps: usize, beta_start: f64, beta_end: f64) -> Result<Vec<f64>> {
        if steps < 2 {
            return Err(LatentError::config(
                "sampler",
                "train_steps",
                "at least 2",
                steps,
            ));
        }
        if !(0.0 < beta_start && beta_start < beta_end && beta_end < 1.0) {
            return Err(LatentError::config(
                "sampler",
                "beta_start/beta_end",
                "0 < beta_start < beta_end < 1",
                format!("{beta_start}/{beta_end}"),
            ));
        }
        let last = (steps - 1) as f64;
        let betas: Vec<f64> = match self {
            BetaSchedule::Linear => (0..steps)
                .map(|i| beta_start + (beta_end - beta_start) * i as f64 / last)
                .collect(),
            BetaSchedule::ScaledLinear => (0..steps)
                .map(|i| {
                    let s =
                        beta_start.sqrt() + (beta_end.sqrt() - beta_start.sqrt()) * i as f64 / last;
                    s * s
                })
                .collect(),
            BetaSchedule::Cosine => {
                let f = |t: f64| {
                    ((t / steps as f64 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..steps)
                    .map(|i| (1.0 - f(i as f64 + 1.0) / f(i as f64)).min(0.999))
                    .collect()
            }
        };
        let mut acc = 1.0;
        Ok(betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_reference_numbers() {
        let a = BetaSchedule::Linear.alphas_cumprod(3, 0.1, 0.3).unwrap();
        // betas 0.1, 0.2, 0.3 -> 0.9, 0.72, 0.504
        for (x, y) in a.iter().zip([0.9, 0.72, 0.504]) {
            assert!((x - y).abs() < 1e-12);
        }
    }

    #[test]
    fn cosine_matches_diffusers_first_values() {
        // diffusers betas_for_alpha_bar(1000, "cosine")[0] = 1 - f(1)/f(0) = 4.128422e-05 (python, this formula)
        let a = BetaSchedule::Cosine
            .alphas_cumprod(1000, 1e-4, 0.02)
            .unwrap();
        assert!((1.0 - a[0] - 4.128_422e-5).abs() < 1e-10, "{}", 1.0 - a[0]);
        assert!(a.windows(2).all(|w| w[1] < w[0]));
    }
}
