//! Gaussian VAE on continuous (log-normalized) expression: MLP encoder to a diagonal Gaussian
//! posterior, MLP decoder to the mean expression, Gaussian likelihood with a learned per-gene
//! variance, plus a (warmed-up) KL term to N(0, I).

use dfdx::prelude::*;
use latentlab_framework::device::{tensor2, Dev, Tensor2, TrainTape};
use latentlab_framework::nn::{kl_warmup, Activation, ExpressionHead, GaussianPosterior, Mlp};
use latentlab_framework::plugin::{
    Autoencoder, AutoencoderConfig, AutoencoderContext, AutoencoderLoss, ExpressionBatch,
};
use latentlab_framework::rng::{fill_normal, stream};
use latentlab_framework::{parameters, register_plugin, LatentError, Result};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Config of the `vae` autoencoder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaeConfig {
    /// Latent width. Default 16.
    pub latent_dim: usize,
    /// Encoder hidden widths (the decoder mirrors them). Default [256, 128].
    pub hidden: Vec<usize>,
    /// Nonlinearity. Default `silu`.
    pub activation: Activation,
    /// LayerNorm after each hidden layer. Default true.
    pub layer_norm: bool,
    /// Dropout after each hidden layer. Default 0.1.
    pub dropout: f32,
    /// Weight of the KL term after warm-up. Default 1.0.
    pub kl_weight: f32,
    /// Steps over which the KL weight ramps linearly from 0. Default 500.
    pub kl_warmup_steps: u64,
    /// Model exact zeros with a per-gene, per-cell zero probability (hurdle Gaussian) so that
    /// generated cells have realistic sparsity. Needs non-negative input. Default true.
    pub zero_inflation: bool,
}

impl Default for VaeConfig {
    fn default() -> Self {
        Self {
            latent_dim: 16,
            hidden: vec![256, 128],
            activation: Activation::Silu,
            layer_norm: true,
            dropout: 0.1,
            kl_weight: 1.0,
            kl_warmup_steps: 500,
            zero_inflation: true,
        }
    }
}

#[typetag::serde(name = "vae")]
impl AutoencoderConfig for VaeConfig {
    fn build(&self, ctx: &AutoencoderContext) -> Result<Box<dyn Autoencoder>> {
        let p = "autoencoder.vae";
        if self.latent_dim == 0 {
            return Err(LatentError::config(p, "latent_dim", "> 0", 0));
        }
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return Err(LatentError::config(
                p,
                "hidden",
                "a non-empty list of positive widths",
                format!("{:?}", self.hidden),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) || self.kl_weight < 0.0 {
            return Err(LatentError::config(
                p,
                "dropout/kl_weight",
                "dropout in [0, 1) and kl_weight ≥ 0",
                format!("{}/{}", self.dropout, self.kl_weight),
            ));
        }
        let dev = &ctx.dev;
        let mut rng = stream(ctx.seed, p);
        let encoder = Mlp::new(
            dev,
            ctx.n_genes,
            &self.hidden,
            self.activation,
            self.layer_norm,
            self.dropout,
            &mut rng,
        )?;
        let top = *self.hidden.last().unwrap_or(&1);
        let reversed: Vec<usize> = self.hidden.iter().rev().copied().collect();
        let decoder = Mlp::new(
            dev,
            self.latent_dim,
            &reversed,
            self.activation,
            self.layer_norm,
            self.dropout,
            &mut rng,
        )?;
        Ok(Box::new(Vae {
            config: self.clone(),
            n_genes: ctx.n_genes,
            dev: dev.clone(),
            encoder,
            posterior: GaussianPosterior::new(dev, top, self.latent_dim, &mut rng)?,
            decoder,
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

register_plugin!(
    Autoencoder,
    "vae",
    "Gaussian VAE on log-normalized expression (MLP encoder/decoder, KL warm-up)",
    "type = \"vae\"\nlatent_dim = 8\nhidden = [64, 32]\nkl_weight = 1.0\nkl_warmup_steps = 100"
);

/// A Gaussian VAE.
pub struct Vae {
    config: VaeConfig,
    n_genes: usize,
    dev: Dev,
    encoder: Mlp,
    posterior: GaussianPosterior,
    decoder: Mlp,
    /// Gaussian / hurdle observation model.
    head: ExpressionHead,
}
parameters!(Vae {
    encoder,
    posterior,
    decoder,
    head
});

impl Vae {
    fn input(&self, batch: &ExpressionBatch) -> Result<Tensor2> {
        if batch.x.len() != batch.n * self.n_genes {
            return Err(LatentError::shape(
                "vae input",
                format!("{} cells x {} genes", batch.n, self.n_genes),
                batch.x.len(),
            ));
        }
        tensor2(&self.dev, &batch.x, batch.n, self.n_genes)
    }
}

impl Autoencoder for Vae {
    fn latent_dim(&self) -> usize {
        self.config.latent_dim
    }
    fn n_genes(&self) -> usize {
        self.n_genes
    }

    fn loss(
        &mut self,
        batch: &ExpressionBatch,
        step: u64,
        rng: &mut dyn RngCore,
    ) -> Result<AutoencoderLoss> {
        let x = self.input(batch)?;
        let h = self.encoder.forward_data(x.retaped::<TrainTape>(), true)?;
        let posterior = self.posterior.sample(h, rng)?;
        let h = self.decoder.forward(posterior.z, true)?;
        let reconstruction = self.head.loss(h, &batch.x, x)?;
        let (rec_value, kl_value) = (reconstruction.array(), posterior.kl.array());
        let total = reconstruction
            + posterior.kl * kl_warmup(self.config.kl_weight, self.config.kl_warmup_steps, step);
        Ok(AutoencoderLoss {
            total,
            components: vec![
                ("reconstruction".into(), rec_value),
                ("kl".into(), kl_value),
            ],
            latent: Some(posterior.mean),
        })
    }

    fn encode(&self, batch: &ExpressionBatch) -> Result<Vec<f32>> {
        let x = self.input(batch)?;
        Ok(self
            .posterior
            .means(self.encoder.forward_data(x, false)?)?
            .as_vec())
    }

    fn decode_mean(&self, z: &[f32], n: usize, _library_size: &[f32]) -> Result<Vec<f32>> {
        self.head.expected(
            self.decoder
                .forward(tensor2(&self.dev, z, n, self.config.latent_dim)?, false)?,
        )
    }

    fn decode_sample(
        &self,
        z: &[f32],
        n: usize,
        _library_size: &[f32],
        rng: &mut dyn RngCore,
    ) -> Result<Vec<f32>> {
        self.head.sample(
            self.decoder
                .forward(tensor2(&self.dev, z, n, self.config.latent_dim)?, false)?,
            rng,
        )
    }

    fn prior_sample(&self, n: usize, rng: &mut dyn RngCore) -> Option<Vec<f32>> {
        let mut z = vec![0.0; n * self.config.latent_dim];
        fill_normal(&mut &mut *rng, &mut z);
        Some(z)
    }
}
