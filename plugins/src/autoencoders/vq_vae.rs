//! VQ-VAE (van den Oord et al. 2017) with product quantization: the encoder output is split into
//! `groups` vectors of `code_dim`, each replaced by its nearest entry of a shared codebook
//! (straight-through gradient), trained with codebook and commitment losses. Dead codes (unused
//! for `restart_after` steps) are re-initialized from encoder outputs. The latent for stage 2 is
//! the concatenated quantized code vectors (continuous, `groups · code_dim` wide); generated
//! latents are snapped to the nearest codes before decoding (configurable).

use dfdx::prelude::*;
use latentlab_framework::device::{tensor2, Dev, Tensor2, TrainTape};
use latentlab_framework::nn::{fork, Activation, ExpressionHead, Init, Linear, Mlp, ParamMut};
use latentlab_framework::plugin::{
    Autoencoder, AutoencoderConfig, AutoencoderContext, AutoencoderLoss, ExpressionBatch,
};
use latentlab_framework::rng::stream;
use latentlab_framework::{parameters, register_plugin, LatentError, Result};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

/// Config of the `vq_vae` autoencoder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VqVaeConfig {
    /// Codebook entries. Default 256.
    pub codebook_size: usize,
    /// Width of one code vector. Default 4.
    pub code_dim: usize,
    /// Code vectors per cell (latent width = groups · code_dim). Default 8.
    pub groups: usize,
    /// Encoder hidden widths (the decoder mirrors them). Default [256, 128].
    pub hidden: Vec<usize>,
    /// Nonlinearity. Default `silu`.
    pub activation: Activation,
    /// Dropout after each hidden layer. Default 0.1.
    pub dropout: f32,
    /// Weight β of the commitment loss. Default 0.25.
    pub commitment_weight: f32,
    /// Re-initialize codes unused for this many steps (0 = never). Default 100.
    pub restart_after: u64,
    /// Model exact zeros (hurdle Gaussian, as in `vae`). Default true.
    pub zero_inflation: bool,
    /// Snap generated latents to their nearest codes before decoding. Default true.
    pub snap_generated: bool,
}

impl Default for VqVaeConfig {
    fn default() -> Self {
        Self {
            codebook_size: 256,
            code_dim: 4,
            groups: 8,
            hidden: vec![256, 128],
            activation: Activation::Silu,
            dropout: 0.1,
            commitment_weight: 0.25,
            restart_after: 100,
            zero_inflation: true,
            snap_generated: true,
        }
    }
}

#[typetag::serde(name = "vq_vae")]
impl AutoencoderConfig for VqVaeConfig {
    fn build(&self, ctx: &AutoencoderContext) -> Result<Box<dyn Autoencoder>> {
        let p = "autoencoder.vq_vae";
        if self.codebook_size < 2 || self.code_dim == 0 || self.groups == 0 {
            return Err(LatentError::config(
                p,
                "codebook_size/code_dim/groups",
                "codebook_size ≥ 2, others > 0",
                format!("{}/{}/{}", self.codebook_size, self.code_dim, self.groups),
            ));
        }
        if self.hidden.is_empty()
            || self.hidden.contains(&0)
            || !(0.0..1.0).contains(&self.dropout)
            || self.commitment_weight < 0.0
        {
            return Err(LatentError::config(
                p,
                "hidden/dropout/commitment_weight",
                "positive widths, dropout in [0, 1), β ≥ 0",
                format!(
                    "{:?}/{}/{}",
                    self.hidden, self.dropout, self.commitment_weight
                ),
            ));
        }
        let dev = &ctx.dev;
        let mut rng = stream(ctx.seed, p);
        let latent = self.groups * self.code_dim;
        let top = self.hidden[self.hidden.len() - 1];
        let reversed: Vec<usize> = self.hidden.iter().rev().copied().collect();
        let codes: Vec<f32> = (0..self.codebook_size * self.code_dim)
            .map(|_| rng.gen_range(-1.0..1.0) / self.codebook_size as f32)
            .collect();
        Ok(Box::new(VqVae {
            config: self.clone(),
            n_genes: ctx.n_genes,
            dev: dev.clone(),
            encoder: Mlp::new(
                dev,
                ctx.n_genes,
                &self.hidden,
                self.activation,
                true,
                self.dropout,
                &mut rng,
            )?,
            to_code: Linear::new(dev, top, latent, Init::KaimingUniform, &mut rng)?,
            codebook: tensor2(dev, &codes, self.codebook_size, self.code_dim)?,
            decoder: Mlp::new(
                dev,
                latent,
                &reversed,
                self.activation,
                true,
                self.dropout,
                &mut rng,
            )?,
            head: ExpressionHead::new(
                dev,
                self.hidden[0],
                ctx.n_genes,
                self.zero_inflation,
                &mut rng,
            )?,
            last_used: vec![0; self.codebook_size],
            step: 0,
        }))
    }
}

register_plugin!(
    Autoencoder,
    "vq_vae",
    "VQ-VAE with product quantization, straight-through gradients, commitment loss and dead-code restarts",
    "type = \"vq_vae\"\ncodebook_size = 16\ncode_dim = 2\ngroups = 3\nhidden = [32, 16]"
);

/// A VQ-VAE.
pub struct VqVae {
    config: VqVaeConfig,
    n_genes: usize,
    dev: Dev,
    encoder: Mlp,
    to_code: Linear,
    /// Codebook `(codebook_size, code_dim)`.
    codebook: Tensor2,
    decoder: Mlp,
    /// Gaussian / hurdle observation model.
    head: ExpressionHead,
    /// Step at which each code was last selected (for restarts).
    last_used: Vec<u64>,
    step: u64,
}
parameters!(VqVae {
    encoder,
    to_code,
    codebook,
    decoder,
    head
});

impl VqVae {
    fn input(&self, batch: &ExpressionBatch) -> Result<Tensor2> {
        if batch.x.len() != batch.n * self.n_genes {
            return Err(LatentError::shape(
                "vq_vae input",
                format!("{} cells x {} genes", batch.n, self.n_genes),
                batch.x.len(),
            ));
        }
        tensor2(&self.dev, &batch.x, batch.n, self.n_genes)
    }

    /// Nearest code index for each `code_dim` chunk of `z`.
    fn nearest(&self, z: &[f32]) -> Vec<usize> {
        let d = self.config.code_dim;
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

    fn gather_codes(&self, idx: &[usize]) -> Vec<f32> {
        let d = self.config.code_dim;
        let codes = self.codebook.as_vec();
        idx.iter()
            .flat_map(|&k| codes[k * d..(k + 1) * d].to_vec())
            .collect()
    }

    fn encode_continuous(&self, batch: &ExpressionBatch) -> Result<Vec<f32>> {
        Ok(self
            .to_code
            .forward(self.encoder.forward(self.input(batch)?, false)?)?
            .as_vec())
    }

    /// Codebook perplexity (exp of the entropy of code usage) and fraction of codes used.
    fn usage(&self, idx: &[usize]) -> (f32, f32) {
        let mut counts = vec![0usize; self.config.codebook_size];
        idx.iter().for_each(|&k| counts[k] += 1);
        let n = idx.len().max(1) as f32;
        let entropy: f32 = counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| -(c as f32 / n) * (c as f32 / n).ln())
            .sum();
        (
            entropy.exp(),
            counts.iter().filter(|&&c| c > 0).count() as f32 / counts.len() as f32,
        )
    }
}

impl Autoencoder for VqVae {
    fn latent_dim(&self) -> usize {
        self.config.groups * self.config.code_dim
    }
    fn n_genes(&self) -> usize {
        self.n_genes
    }

    fn loss(
        &mut self,
        batch: &ExpressionBatch,
        _step: u64,
        _rng: &mut dyn RngCore,
    ) -> Result<AutoencoderLoss> {
        let x = self.input(batch)?;
        let (n, latent, d) = (batch.n, self.latent_dim(), self.config.code_dim);
        let z_e = self
            .to_code
            .forward(self.encoder.forward(x.retaped::<TrainTape>(), true)?)?;
        let z_vals = z_e.as_vec();
        let idx = self.nearest(&z_vals);
        let q_vals = self.gather_codes(&idx);
        let (perplexity, used) = self.usage(&idx);
        // Codebook loss ‖sg(z_e) − e_k‖²: gradient reaches the selected codebook rows.
        let mut idx_t: Tensor<(usize,), usize, Dev> = self.dev.zeros_like(&(idx.len(),));
        idx_t.copy_from(&idx);
        let selected: Tensor2<TrainTape> = self.codebook.retaped::<TrainTape>().gather(idx_t);
        let codebook_loss = (selected - tensor2(&self.dev, &z_vals, n * self.config.groups, d)?)
            .square()
            .sum::<(), _>()
            / n as f32;
        // Commitment β‖z_e − sg(e_k)‖² and the straight-through estimator z_q = z_e + sg(e_k − z_e).
        let (z1, z2) = fork(z_e);
        let commitment = (z1 - tensor2(&self.dev, &q_vals, n, latent)?)
            .square()
            .sum::<(), _>()
            / n as f32;
        let shift: Vec<f32> = q_vals.iter().zip(&z_vals).map(|(q, z)| q - z).collect();
        let z_q = z2 + tensor2(&self.dev, &shift, n, latent)?;
        let h = self.decoder.forward(z_q, true)?;
        let reconstruction = self.head.loss(h, &batch.x, x)?;
        let (r, cb, cm) = (
            reconstruction.array(),
            codebook_loss.array(),
            commitment.array(),
        );
        let total = reconstruction + codebook_loss + commitment * self.config.commitment_weight;
        Ok(AutoencoderLoss {
            total,
            components: vec![
                ("reconstruction".into(), r),
                ("codebook".into(), cb),
                ("commitment".into(), cm),
                ("perplexity".into(), perplexity),
                ("codes_used".into(), used),
            ],
        })
    }

    fn after_step(&mut self, batch: &ExpressionBatch, rng: &mut dyn RngCore) -> Result<()> {
        self.step += 1;
        let z = self.encode_continuous(batch)?;
        for k in self.nearest(&z) {
            self.last_used[k] = self.step;
        }
        if self.config.restart_after == 0 {
            return Ok(());
        }
        let dead: Vec<usize> = (0..self.config.codebook_size)
            .filter(|&k| self.step - self.last_used[k] >= self.config.restart_after)
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        // Re-initialize dead codes from random encoder outputs of this batch.
        let d = self.config.code_dim;
        let chunks = z.len() / d;
        let mut codes = self.codebook.as_vec();
        for &k in &dead {
            let c = rng.gen_range(0..chunks.max(1));
            codes[k * d..(k + 1) * d].copy_from_slice(&z[c * d..(c + 1) * d]);
            self.last_used[k] = self.step;
        }
        ParamMut::Matrix(&mut self.codebook).set(&codes)
    }

    fn encode(&self, batch: &ExpressionBatch) -> Result<Vec<f32>> {
        let z = self.encode_continuous(batch)?;
        Ok(self.gather_codes(&self.nearest(&z)))
    }

    fn decode_mean(&self, z: &[f32], n: usize, _library_size: &[f32]) -> Result<Vec<f32>> {
        self.head.expected(self.decoder_hidden(z, n)?)
    }

    fn decode_sample(
        &self,
        z: &[f32],
        n: usize,
        _library_size: &[f32],
        rng: &mut dyn RngCore,
    ) -> Result<Vec<f32>> {
        self.head.sample(self.decoder_hidden(z, n)?, rng)
    }

    fn prior_sample(&self, n: usize, rng: &mut dyn RngCore) -> Option<Vec<f32>> {
        let idx: Vec<usize> = (0..n * self.config.groups)
            .map(|_| rng.gen_range(0..self.config.codebook_size))
            .collect();
        Some(self.gather_codes(&idx))
    }
}

impl VqVae {
    /// Decoder hidden states for (optionally snapped) latents `z`.
    fn decoder_hidden(&self, z: &[f32], n: usize) -> Result<Tensor2> {
        let snapped;
        let z = if self.config.snap_generated {
            snapped = self.gather_codes(&self.nearest(z));
            &snapped[..]
        } else {
            z
        };
        self.decoder
            .forward(tensor2(&self.dev, z, n, self.latent_dim())?, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latentlab_framework::plugin::InputKind;
    use latentlab_framework::testing;

    fn model(restart_after: u64) -> VqVae {
        let cfg = VqVaeConfig {
            codebook_size: 32,
            code_dim: 2,
            groups: 3,
            hidden: vec![16, 8],
            restart_after,
            dropout: 0.0,
            ..Default::default()
        };
        let ctx = testing::autoencoder_context(InputKind::Continuous).unwrap();
        let dev = ctx.dev.clone();
        let mut rng = stream(0, "vq");
        let codes: Vec<f32> = (0..64).map(|_| rng.gen_range(-1.0..1.0)).collect();
        VqVae {
            config: cfg.clone(),
            n_genes: ctx.n_genes,
            dev: dev.clone(),
            encoder: Mlp::new(
                &dev,
                ctx.n_genes,
                &cfg.hidden,
                cfg.activation,
                true,
                0.0,
                &mut rng,
            )
            .unwrap(),
            to_code: Linear::new(&dev, 8, 6, Init::KaimingUniform, &mut rng).unwrap(),
            codebook: tensor2(&dev, &codes, 32, 2).unwrap(),
            decoder: Mlp::new(&dev, 6, &[8, 16], cfg.activation, true, 0.0, &mut rng).unwrap(),
            head: ExpressionHead::new(&dev, 16, ctx.n_genes, false, &mut rng).unwrap(),
            last_used: vec![0; 32],
            step: 0,
        }
    }

    #[test]
    fn dead_codes_are_restarted_from_encoder_outputs() {
        let mut vq = model(1);
        let batch = testing::expression(4, 0, false);
        vq.after_step(&batch, &mut stream(1, "r")).unwrap();
        let z = vq.encode_continuous(&batch).unwrap();
        let chunks: Vec<&[f32]> = z.chunks(2).collect();
        // 12 encoder chunks can select at most 12 of 32 codes: every other code was dead and now
        // holds an encoder output.
        let codes = vq.codebook.as_vec();
        let restarted = codes
            .chunks(2)
            .filter(|c| chunks.iter().any(|z| z == c))
            .count();
        assert!(
            restarted >= 32 - 12,
            "only {restarted} codes hold encoder outputs"
        );
    }

    #[test]
    fn perplexity_and_usage_follow_their_definitions() {
        let vq = model(0);
        let (p, used) = vq.usage(&[0, 0, 1, 1]);
        assert!((p - 2.0).abs() < 1e-5 && (used - 2.0 / 32.0).abs() < 1e-6);
        let (p, _) = vq.usage(&[3, 3, 3, 3]);
        assert!((p - 1.0).abs() < 1e-6);
    }
}
