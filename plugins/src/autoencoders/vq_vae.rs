//! VQ-VAE (van den Oord et al. 2017) with product quantization: the encoder output is split into
//! `groups` vectors of `code_dim`, each replaced by its nearest entry of a shared codebook
//! (straight-through gradient), trained with codebook and commitment losses (or an EMA codebook).
//! Dead codes (unused for `restart_after` steps) are re-initialized from encoder outputs. The
//! quantizer is the framework's [`VectorQuantizer`]. The latent for stage 2 is the concatenated
//! quantized code vectors (continuous, `groups · code_dim` wide); generated latents are snapped to
//! the nearest codes before decoding (configurable).

use dfdx::prelude::*;
use latentlab_framework::device::{tensor2, Dev, Tensor2, TrainTape};
use latentlab_framework::nn::{
    fork, Activation, CodebookUpdate, ExpressionHead, Init, Linear, Mlp, QuantizerSettings,
    VectorQuantizer,
};
use latentlab_framework::plugin::{
    Autoencoder, AutoencoderConfig, AutoencoderContext, AutoencoderLoss, ExpressionBatch,
};
use latentlab_framework::rng::stream;
use latentlab_framework::{parameters, register_plugin, LatentError, Result};
use rand::RngCore;
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
    /// How codes learn: `loss` (codebook loss through the optimizer) or `ema` (moving average of
    /// their assigned encoder outputs). Default `loss`.
    pub codebook_update: CodebookUpdate,
    /// EMA decay γ in [0, 1) for `codebook_update = "ema"`. Default 0.99.
    pub ema_decay: f32,
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
            codebook_update: CodebookUpdate::Loss,
            ema_decay: 0.99,
            zero_inflation: true,
            snap_generated: true,
        }
    }
}

#[typetag::serde(name = "vq_vae")]
impl AutoencoderConfig for VqVaeConfig {
    fn build(&self, ctx: &AutoencoderContext) -> Result<Box<dyn Autoencoder>> {
        let p = "autoencoder.vq_vae";
        let settings = self.quantizer_settings();
        settings.validate(p)?;
        if self.hidden.is_empty() || self.hidden.contains(&0) || !(0.0..1.0).contains(&self.dropout)
        {
            return Err(LatentError::config(
                p,
                "hidden/dropout",
                "positive widths, dropout in [0, 1)",
                format!("{:?}/{}", self.hidden, self.dropout),
            ));
        }
        let dev = &ctx.dev;
        let mut rng = stream(ctx.seed, p);
        let latent = settings.latent_dim();
        let top = self.hidden[self.hidden.len() - 1];
        let reversed: Vec<usize> = self.hidden.iter().rev().copied().collect();
        // The codebook is drawn first (this order fixes the weights of a given seed).
        let codebook = VectorQuantizer::new(dev, settings, &mut rng)?;
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
            codebook,
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
        }))
    }
}

impl VqVaeConfig {
    fn quantizer_settings(&self) -> QuantizerSettings {
        QuantizerSettings {
            codebook_size: self.codebook_size,
            code_dim: self.code_dim,
            groups: self.groups,
            commitment_weight: self.commitment_weight,
            restart_after: self.restart_after,
            update: self.codebook_update,
            ema_decay: self.ema_decay,
        }
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
    /// Codebook `(codebook_size, code_dim)` and its training state.
    codebook: VectorQuantizer,
    decoder: Mlp,
    /// Gaussian / hurdle observation model.
    head: ExpressionHead,
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

    fn encode_continuous(&self, batch: &ExpressionBatch) -> Result<Vec<f32>> {
        Ok(self
            .to_code
            .forward(self.encoder.forward_data(self.input(batch)?, false)?)?
            .as_vec())
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
        let z_e = self
            .to_code
            .forward(self.encoder.forward_data(x.retaped::<TrainTape>(), true)?)?;
        let q = self.codebook.quantize(z_e)?;
        let (z_q, latent) = fork(q.z_q);
        let h = self.decoder.forward(z_q, true)?;
        let reconstruction = self.head.loss(h, &batch.x, x)?;
        let r = reconstruction.array();
        let (total, parts) = q.losses.add_to(reconstruction);
        let mut components = vec![("reconstruction".to_string(), r)];
        components.extend(parts);
        Ok(AutoencoderLoss {
            total,
            components,
            latent: Some(latent),
        })
    }

    fn after_step(&mut self, batch: &ExpressionBatch, rng: &mut dyn RngCore) -> Result<()> {
        let z = self.encode_continuous(batch)?;
        self.codebook.after_step(&z, rng)
    }

    fn encode(&self, batch: &ExpressionBatch) -> Result<Vec<f32>> {
        Ok(self.codebook.snap(&self.encode_continuous(batch)?))
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
        Some(self.codebook.prior_sample(n, rng))
    }
}

impl VqVae {
    /// Decoder hidden states for (optionally snapped) latents `z`.
    fn decoder_hidden(&self, z: &[f32], n: usize) -> Result<Tensor2> {
        let snapped;
        let z = if self.config.snap_generated {
            snapped = self.codebook.snap(z);
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

    fn model(restart_after: u64, codebook_update: CodebookUpdate) -> Box<dyn Autoencoder> {
        let cfg = VqVaeConfig {
            codebook_size: 32,
            code_dim: 2,
            groups: 3,
            hidden: vec![16, 8],
            restart_after,
            codebook_update,
            dropout: 0.0,
            ..Default::default()
        };
        cfg.build(&testing::autoencoder_context(InputKind::Continuous).unwrap())
            .unwrap()
    }

    fn codebook(m: &dyn Autoencoder) -> Vec<f32> {
        let mut out = Vec::new();
        m.visit("", &mut |name, p| {
            if name == "codebook" {
                out = p.to_vec();
            }
        });
        out
    }

    #[test]
    fn dead_codes_are_restarted_from_encoder_outputs() {
        let mut vq = model(1, CodebookUpdate::Loss);
        let batch = testing::expression(4, 0, false);
        vq.after_step(&batch, &mut stream(1, "r")).unwrap();
        // 12 encoder chunks can select at most 12 of 32 codes: every other code was dead and
        // now holds an encoder chunk.
        let codes = codebook(vq.as_ref());
        let initial = codebook(model(1, CodebookUpdate::Loss).as_ref());
        let changed = codes
            .chunks(2)
            .zip(initial.chunks(2))
            .filter(|(a, b)| a != b)
            .count();
        assert!(changed >= 32 - 12, "only {changed} codes restarted");
    }

    #[test]
    fn loss_reports_codebook_health_and_ema_has_no_codebook_term() {
        let batch = testing::expression(8, 0, false);
        for update in [CodebookUpdate::Loss, CodebookUpdate::Ema] {
            let mut vq = model(0, update);
            let loss = vq.loss(&batch, 0, &mut stream(0, "l")).unwrap();
            let get = |name: &str| {
                loss.components
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| *v)
                    .unwrap()
            };
            let (p, used) = (get("perplexity"), get("codes_used"));
            assert!((1.0..=24.0).contains(&p) && used > 0.0 && used <= 1.0);
            assert_eq!(get("codebook") == 0.0, update == CodebookUpdate::Ema);
        }
    }
}
