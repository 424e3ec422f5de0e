//! Vector quantizer with product quantization (van den Oord et al. 2017), shared by the VQ
//! autoencoders: each `code_dim` chunk of the encoder output is replaced by its nearest codebook
//! entry with a straight-through gradient, trained by codebook and commitment losses (or by an
//! exponential moving average of the assigned encoder outputs), with codebook usage statistics and
//! dead-code restarts from encoder outputs.

use dfdx::prelude::*;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::{fork, ParamMut, ParamRef, Parameters};
use crate::device::{tensor2, Dev, Scalar, Tensor2, TrainTape};
use crate::{LatentError, Result};

/// How codebook entries learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CodebookUpdate {
    /// Gradient of the codebook loss ‖sg(z_e) − e_k‖² through the optimizer (the default).
    #[default]
    Loss,
    /// Exponential moving average of the encoder outputs assigned to each code (no codebook
    /// loss; the optimizer's step on the codebook is overwritten after every step).
    Ema,
}

/// Settings of a [`VectorQuantizer`] (plugins copy them from their own config fields).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizerSettings {
    /// Codebook entries (≥ 2).
    pub codebook_size: usize,
    /// Width of one code vector.
    pub code_dim: usize,
    /// Code vectors per cell (latent width = `groups · code_dim`).
    pub groups: usize,
    /// Weight β of the commitment loss (≥ 0).
    pub commitment_weight: f32,
    /// Re-initialize codes unused for this many steps (0 = never).
    pub restart_after: u64,
    /// Loss-driven or EMA codebook.
    pub update: CodebookUpdate,
    /// EMA decay γ in [0, 1) (used with [`CodebookUpdate::Ema`]).
    pub ema_decay: f32,
}

impl QuantizerSettings {
    /// Latent width `groups · code_dim`.
    pub fn latent_dim(&self) -> usize {
        self.groups * self.code_dim
    }

    /// Checks the ranges, naming `plugin` in the error.
    ///
    /// # Errors
    /// [`LatentError::InvalidConfig`] for a codebook smaller than 2, zero widths, a negative or
    /// non-finite commitment weight, or an EMA decay outside [0, 1).
    pub fn validate(&self, plugin: &str) -> Result<()> {
        if self.codebook_size < 2 || self.code_dim == 0 || self.groups == 0 {
            return Err(LatentError::config(
                plugin,
                "codebook_size/code_dim/groups",
                "codebook_size ≥ 2, others > 0",
                format!("{}/{}/{}", self.codebook_size, self.code_dim, self.groups),
            ));
        }
        if !(self.commitment_weight >= 0.0 && self.commitment_weight.is_finite()) {
            return Err(LatentError::config(
                plugin,
                "commitment_weight",
                "a finite value ≥ 0",
                self.commitment_weight,
            ));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(LatentError::config(
                plugin,
                "ema_decay",
                "a value in [0, 1)",
                self.ema_decay,
            ));
        }
        Ok(())
    }
}

/// Codebook usage of one batch of assignments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodebookUsage {
    /// exp(entropy of the code frequencies): 1 when one code is used, `K` when all are used equally.
    pub perplexity: f32,
    /// Fraction of codebook entries selected at least once.
    pub used: f32,
}

/// The differentiable result of [`VectorQuantizer::quantize`].
pub struct Quantized {
    /// Straight-through quantized latents `z_e + sg(e_k − z_e)` `(n, groups · code_dim)`.
    pub z_q: Tensor2<TrainTape>,
    /// Selected code per chunk, `n · groups` entries.
    pub indices: Vec<usize>,
    /// The quantizer's loss terms and usage.
    pub losses: QuantizerLosses,
}

/// Loss terms and usage statistics of one quantization.
pub struct QuantizerLosses {
    /// Codebook loss Σ‖sg(z_e) − e_k‖² / n (`None` with the EMA update).
    pub codebook_loss: Option<Scalar<TrainTape>>,
    /// Commitment loss Σ‖z_e − sg(e_k)‖² / n (unweighted).
    pub commitment: Scalar<TrainTape>,
    /// Weight β of the commitment loss.
    pub commitment_weight: f32,
    /// Usage of this batch.
    pub usage: CodebookUsage,
}

impl QuantizerLosses {
    /// `base + codebook_loss + β · commitment` (this order, so results are reproducible), with the
    /// logged components `codebook` (0 with EMA), `commitment`, `perplexity`, `codes_used`.
    pub fn add_to(self, base: Scalar<TrainTape>) -> (Scalar<TrainTape>, Vec<(String, f32)>) {
        let cb = self.codebook_loss.as_ref().map_or(0.0, |c| c.array());
        let cm = self.commitment.array();
        let with_codebook = match self.codebook_loss {
            Some(c) => base + c,
            None => base,
        };
        let total = with_codebook + self.commitment * self.commitment_weight;
        (
            total,
            vec![
                ("codebook".into(), cb),
                ("commitment".into(), cm),
                ("perplexity".into(), self.usage.perplexity),
                ("codes_used".into(), self.usage.used),
            ],
        )
    }
}

/// A codebook `(codebook_size, code_dim)` with its training state.
///
/// As a [`Parameters`] it is the codebook tensor itself (visited under the prefix it is given,
/// no extra name level). The EMA statistics and usage bookkeeping are training state only and are
/// not checkpointed.
pub struct VectorQuantizer {
    /// Settings.
    pub settings: QuantizerSettings,
    /// Codebook `(codebook_size, code_dim)`.
    pub codebook: Tensor2,
    dev: Dev,
    /// Step at which each code was last selected (for restarts).
    last_used: Vec<u64>,
    /// Completed training steps.
    step: u64,
    /// EMA of the number of assignments per code (starts at 1).
    ema_counts: Vec<f64>,
    /// EMA of the sum of assigned encoder outputs per code (starts at the code).
    ema_sums: Vec<f64>,
}

impl Parameters for VectorQuantizer {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ParamRef<'_>)) {
        self.codebook.visit(prefix, f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        self.codebook.visit_mut(prefix, f);
    }
}

impl VectorQuantizer {
    /// Creates a codebook with entries uniform in ±1/`codebook_size` (drawn from `rng` first).
    ///
    /// # Errors
    /// Invalid settings (see [`QuantizerSettings::validate`]).
    pub fn new(dev: &Dev, settings: QuantizerSettings, rng: &mut impl Rng) -> Result<Self> {
        settings.validate("nn.vector_quantizer")?;
        let (k, d) = (settings.codebook_size, settings.code_dim);
        let codes: Vec<f32> = (0..k * d)
            .map(|_| rng.gen_range(-1.0..1.0) / k as f32)
            .collect();
        Self::from_codes(dev, settings, &codes)
    }

    /// Creates a quantizer with the given codebook (row-major `(codebook_size, code_dim)`).
    ///
    /// # Errors
    /// Invalid settings or a wrong number of values.
    pub fn from_codes(dev: &Dev, settings: QuantizerSettings, codes: &[f32]) -> Result<Self> {
        settings.validate("nn.vector_quantizer")?;
        let k = settings.codebook_size;
        Ok(Self {
            codebook: tensor2(dev, codes, k, settings.code_dim)?,
            dev: dev.clone(),
            last_used: vec![0; k],
            step: 0,
            ema_counts: vec![1.0; k],
            ema_sums: codes.iter().map(|&c| c as f64).collect(),
            settings,
        })
    }

    /// Latent width `groups · code_dim`.
    pub fn latent_dim(&self) -> usize {
        self.settings.latent_dim()
    }

    /// Nearest code index (squared Euclidean distance, first on ties) for each `code_dim` chunk.
    pub fn nearest(&self, z: &[f32]) -> Vec<usize> {
        let d = self.settings.code_dim;
        let codes = self.codebook.as_vec();
        z.chunks(d)
            .map(|v| {
                let mut best = (0, f32::INFINITY);
                for (k, c) in codes.chunks(d).enumerate() {
                    let dist: f32 = v.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum();
                    if dist < best.1 {
                        best = (k, dist);
                    }
                }
                best.0
            })
            .collect()
    }

    /// The code vectors at `idx`, concatenated.
    pub fn gather(&self, idx: &[usize]) -> Vec<f32> {
        let d = self.settings.code_dim;
        let codes = self.codebook.as_vec();
        idx.iter()
            .flat_map(|&k| codes[k * d..(k + 1) * d].to_vec())
            .collect()
    }

    /// Each chunk of `z` replaced by its nearest code.
    pub fn snap(&self, z: &[f32]) -> Vec<f32> {
        self.gather(&self.nearest(z))
    }

    /// Random codes for every group of `n` cells (a uniform prior over the codebook).
    pub fn prior_sample(&self, n: usize, rng: &mut dyn RngCore) -> Vec<f32> {
        let idx: Vec<usize> = (0..n * self.settings.groups)
            .map(|_| rng.gen_range(0..self.settings.codebook_size))
            .collect();
        self.gather(&idx)
    }

    /// Perplexity and fraction of codes used by the assignments `idx`.
    pub fn usage(&self, idx: &[usize]) -> CodebookUsage {
        let mut counts = vec![0usize; self.settings.codebook_size];
        idx.iter().for_each(|&k| counts[k] += 1);
        let n = idx.len().max(1) as f32;
        let entropy: f32 = counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| -(c as f32 / n) * (c as f32 / n).ln())
            .sum();
        CodebookUsage {
            perplexity: entropy.exp(),
            used: counts.iter().filter(|&&c| c > 0).count() as f32 / counts.len() as f32,
        }
    }

    /// Quantizes encoder outputs `z_e` `(n, groups · code_dim)` with the straight-through
    /// estimator and builds the codebook and commitment losses.
    ///
    /// # Errors
    /// [`LatentError::Shape`] when the width is not `groups · code_dim`.
    pub fn quantize(&self, z_e: Tensor2<TrainTape>) -> Result<Quantized> {
        let (n, width) = *z_e.shape();
        let (latent, d) = (self.latent_dim(), self.settings.code_dim);
        if width != latent {
            return Err(LatentError::shape(
                "VectorQuantizer",
                format!("(batch, {latent})"),
                format!("({n}, {width})"),
            ));
        }
        let z_vals = z_e.as_vec();
        let indices = self.nearest(&z_vals);
        let q_vals = self.gather(&indices);
        let usage = self.usage(&indices);
        // Codebook loss ‖sg(z_e) − e_k‖²: gradient reaches the selected codebook rows.
        let codebook_loss = match self.settings.update {
            CodebookUpdate::Loss => {
                let mut idx_t: Tensor<(usize,), usize, Dev> =
                    self.dev.zeros_like(&(indices.len(),));
                idx_t.copy_from(&indices);
                let selected: Tensor2<TrainTape> =
                    self.codebook.retaped::<TrainTape>().gather(idx_t);
                Some(
                    (selected - tensor2(&self.dev, &z_vals, n * self.settings.groups, d)?)
                        .square()
                        .sum::<(), _>()
                        / n as f32,
                )
            }
            CodebookUpdate::Ema => None,
        };
        // Commitment ‖z_e − sg(e_k)‖² and the straight-through estimator z_q = z_e + sg(e_k − z_e).
        let (z1, z2) = fork(z_e);
        let commitment = (z1 - tensor2(&self.dev, &q_vals, n, latent)?)
            .square()
            .sum::<(), _>()
            / n as f32;
        let shift: Vec<f32> = q_vals.iter().zip(&z_vals).map(|(q, z)| q - z).collect();
        let z_q = z2 + tensor2(&self.dev, &shift, n, latent)?;
        Ok(Quantized {
            z_q,
            indices,
            losses: QuantizerLosses {
                codebook_loss,
                commitment,
                commitment_weight: self.settings.commitment_weight,
                usage,
            },
        })
    }

    /// Training bookkeeping after an optimizer step, given the batch's encoder outputs `z`
    /// (computed with the updated encoder): marks the codes in use, applies the EMA update (with
    /// [`CodebookUpdate::Ema`]), then re-initializes codes unused for `restart_after` steps from
    /// random chunks of `z`.
    ///
    /// # Errors
    /// Shape errors when `z` is not a whole number of latents.
    pub fn after_step(&mut self, z: &[f32], rng: &mut dyn RngCore) -> Result<()> {
        let d = self.settings.code_dim;
        if !z.len().is_multiple_of(self.latent_dim()) {
            return Err(LatentError::shape(
                "VectorQuantizer::after_step",
                format!("a multiple of {} values", self.latent_dim()),
                z.len(),
            ));
        }
        self.step += 1;
        let idx = self.nearest(z);
        for &k in &idx {
            self.last_used[k] = self.step;
        }
        let mut codes = self.codebook.as_vec();
        let mut changed = false;
        if self.settings.update == CodebookUpdate::Ema {
            self.ema_update(z, &idx, &mut codes);
            changed = true;
        }
        if self.settings.restart_after > 0 {
            let dead: Vec<usize> = (0..self.settings.codebook_size)
                .filter(|&k| self.step - self.last_used[k] >= self.settings.restart_after)
                .collect();
            // Re-initialize dead codes from random encoder outputs of this batch.
            let chunks = z.len() / d;
            for &k in &dead {
                let c = rng.gen_range(0..chunks.max(1));
                codes[k * d..(k + 1) * d].copy_from_slice(&z[c * d..(c + 1) * d]);
                self.last_used[k] = self.step;
                self.ema_counts[k] = 1.0;
                for j in 0..d {
                    self.ema_sums[k * d + j] = z[c * d + j] as f64;
                }
            }
            changed |= !dead.is_empty();
        }
        if changed {
            ParamMut::Matrix(&mut self.codebook).set(&codes)?;
        }
        Ok(())
    }

    /// `N_k ← γ N_k + (1 − γ) n_k`, `m_k ← γ m_k + (1 − γ) Σ_{z→k} z`, `e_k = m_k / N_k`.
    fn ema_update(&mut self, z: &[f32], idx: &[usize], codes: &mut [f32]) {
        let (d, k_total) = (self.settings.code_dim, self.settings.codebook_size);
        let g = self.settings.ema_decay as f64;
        let mut counts = vec![0.0f64; k_total];
        let mut sums = vec![0.0f64; k_total * d];
        for (chunk, &k) in z.chunks(d).zip(idx) {
            counts[k] += 1.0;
            for (s, &v) in sums[k * d..(k + 1) * d].iter_mut().zip(chunk) {
                *s += v as f64;
            }
        }
        for k in 0..k_total {
            self.ema_counts[k] = g * self.ema_counts[k] + (1.0 - g) * counts[k];
            for j in 0..d {
                let s = &mut self.ema_sums[k * d + j];
                *s = g * *s + (1.0 - g) * sums[k * d + j];
            }
            // Unused codes keep their value (both statistics decay by γ); guard underflow.
            if self.ema_counts[k] > 1e-30 {
                for j in 0..d {
                    codes[k * d + j] = (self.ema_sums[k * d + j] / self.ema_counts[k]) as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::device;
    use crate::rng::stream;

    fn settings(update: CodebookUpdate, restart_after: u64) -> QuantizerSettings {
        QuantizerSettings {
            codebook_size: 4,
            code_dim: 2,
            groups: 2,
            commitment_weight: 0.25,
            restart_after,
            update,
            ema_decay: 0.5,
        }
    }

    fn vq(update: CodebookUpdate, restart_after: u64) -> VectorQuantizer {
        let dev = device(0).unwrap();
        let codes = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 5.0, 5.0];
        VectorQuantizer::from_codes(&dev, settings(update, restart_after), &codes).unwrap()
    }

    #[test]
    fn nearest_gather_and_snap() {
        let q = vq(CodebookUpdate::Loss, 0);
        let z = [0.9, 0.1, 0.1, 0.8, 4.0, 4.0, -0.1, 0.0];
        assert_eq!(q.nearest(&z), vec![1, 2, 3, 0]);
        assert_eq!(q.snap(&z), vec![1.0, 0.0, 0.0, 1.0, 5.0, 5.0, 0.0, 0.0]);
    }

    #[test]
    fn perplexity_and_usage_follow_their_definitions() {
        let q = vq(CodebookUpdate::Loss, 0);
        let u = q.usage(&[0, 0, 1, 1]);
        assert!((u.perplexity - 2.0).abs() < 1e-5 && (u.used - 0.5).abs() < 1e-6);
        let u = q.usage(&[3, 3, 3, 3]);
        assert!((u.perplexity - 1.0).abs() < 1e-6 && (u.used - 0.25).abs() < 1e-6);
        let u = q.usage(&[0, 1, 2, 3]);
        assert!((u.perplexity - 4.0).abs() < 1e-5 && (u.used - 1.0).abs() < 1e-6);
    }

    #[test]
    fn straight_through_forward_is_the_code_and_gradients_follow_the_losses() {
        let q = vq(CodebookUpdate::Loss, 0);
        let dev = device(0).unwrap();
        let z_vals = [0.9, 0.1, 0.1, 0.8];
        let z = tensor2(&dev, &z_vals, 1, 4).unwrap();
        let out = q.quantize(z.retaped::<TrainTape>()).unwrap();
        assert_eq!(out.indices, vec![1, 2]);
        let zq = out.z_q.as_vec();
        for (a, b) in zq.iter().zip([1.0, 0.0, 0.0, 1.0]) {
            assert!((a - b).abs() < 1e-6);
        }
        // loss = sum(z_q) + codebook + β commitment: d/dz = 1 + 2β (z − e); d/de_k = 2 (e_k − z).
        let (total, parts) = out.losses.add_to(out.z_q.sum());
        assert_eq!(parts[0].0, "codebook");
        let grads = total.backward();
        let gz = grads.get(&z).as_vec();
        let expect_z = [
            1.0 + 0.5 * -0.1,
            1.0 + 0.5 * 0.1,
            1.0 + 0.5 * 0.1,
            1.0 + 0.5 * -0.2,
        ];
        for (a, b) in gz.iter().zip(expect_z) {
            assert!((a - b).abs() < 1e-5, "{gz:?}");
        }
        let gc = grads.get(&q.codebook).as_vec();
        let expect_c = [0.0, 0.0, 0.2, -0.2, -0.2, 0.4, 0.0, 0.0];
        for (a, b) in gc.iter().zip(expect_c) {
            assert!((a - b).abs() < 1e-5, "{gc:?}");
        }
    }

    #[test]
    fn wrong_width_is_an_error() {
        let q = vq(CodebookUpdate::Loss, 0);
        let dev = device(0).unwrap();
        let z = tensor2(&dev, &[0.0; 6], 1, 6).unwrap();
        assert!(matches!(
            q.quantize(z.retaped::<TrainTape>()),
            Err(LatentError::Shape { .. })
        ));
        let mut q = q;
        assert!(q.after_step(&[0.0; 3], &mut stream(0, "r")).is_err());
    }

    #[test]
    fn dead_codes_are_restarted_from_encoder_outputs() {
        let mut q = vq(CodebookUpdate::Loss, 2);
        let z = [0.9, 0.1, 0.1, 0.8, 1.1, 0.0, 0.2, 0.9];
        let mut rng = stream(0, "r");
        q.after_step(&z, &mut rng).unwrap();
        // After one step nothing is dead yet.
        assert_eq!(q.codebook.as_vec()[6..], [5.0, 5.0]);
        q.after_step(&z, &mut rng).unwrap();
        // Codes 0 and 3 were never selected for two steps: both now hold encoder chunks.
        let codes = q.codebook.as_vec();
        let chunks: Vec<&[f32]> = z.chunks(2).collect();
        for k in [0, 3] {
            assert!(
                chunks.contains(&&codes[k * 2..k * 2 + 2]),
                "code {k} = {:?}",
                &codes[k * 2..k * 2 + 2]
            );
        }
        // Codes in use are untouched.
        assert_eq!(codes[2..6], [1.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn restart_off_keeps_dead_codes() {
        let mut q = vq(CodebookUpdate::Loss, 0);
        let before = q.codebook.as_vec();
        for _ in 0..5 {
            q.after_step(&[0.9, 0.1, 0.1, 0.8], &mut stream(0, "r"))
                .unwrap();
        }
        assert_eq!(q.codebook.as_vec(), before);
    }

    #[test]
    fn ema_moves_codes_toward_the_mean_of_their_assignments() {
        let mut q = vq(CodebookUpdate::Ema, 0);
        // Code 1 = (1, 0) receives (0.8, 0.2) and (1.0, 0.4): mean (0.9, 0.3).
        let z = [0.8, 0.2, 1.0, 0.4];
        let mut rng = stream(0, "r");
        q.after_step(&z, &mut rng).unwrap();
        // γ = 0.5: N = 0.5·1 + 0.5·2 = 1.5, m = 0.5·(1, 0) + 0.5·(1.8, 0.6) = (1.4, 0.3).
        let c = q.codebook.as_vec();
        assert!((c[2] - 1.4 / 1.5).abs() < 1e-6 && (c[3] - 0.3 / 1.5).abs() < 1e-6);
        for _ in 0..40 {
            q.after_step(&z, &mut rng).unwrap();
        }
        let c = q.codebook.as_vec();
        assert!(
            (c[2] - 0.9).abs() < 1e-4 && (c[3] - 0.3).abs() < 1e-4,
            "{c:?}"
        );
        // Unassigned codes do not move.
        assert_eq!(c[4..], [0.0, 1.0, 5.0, 5.0]);
        // EMA mode has no codebook loss term.
        let dev = device(0).unwrap();
        let out = q
            .quantize(tensor2(&dev, &z, 1, 4).unwrap().retaped::<TrainTape>())
            .unwrap();
        assert!(out.losses.codebook_loss.is_none());
    }

    #[test]
    fn bad_settings_are_refused() {
        let dev = device(0).unwrap();
        let mut rng = stream(0, "b");
        for s in [
            QuantizerSettings {
                codebook_size: 0,
                ..settings(CodebookUpdate::Loss, 0)
            },
            QuantizerSettings {
                commitment_weight: -1.0,
                ..settings(CodebookUpdate::Loss, 0)
            },
            QuantizerSettings {
                ema_decay: 1.0,
                ..settings(CodebookUpdate::Ema, 0)
            },
        ] {
            assert!(matches!(
                VectorQuantizer::new(&dev, s, &mut rng),
                Err(LatentError::InvalidConfig { .. })
            ));
        }
    }
}
