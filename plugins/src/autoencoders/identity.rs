//! Identity "autoencoder": the latent is the expression itself (optionally standardized per gene
//! by the stage-2 latent statistics), so every sampler and denoiser runs in gene space. This is
//! the baseline that measures what the latent space buys (speed and quality of latent vs
//! gene-space diffusion). It has no parameters and needs no stage-1 training.

use latentlab_framework::config::TrainConfig;
use latentlab_framework::plugin::{
    Autoencoder, AutoencoderConfig, AutoencoderContext, AutoencoderLoss, ExpressionBatch,
};
use latentlab_framework::{parameters, register_plugin, LatentError, Result};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Config of the `identity` autoencoder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Clip generated values below zero (for non-negative expression). Default false.
    pub clip_negative: bool,
}

#[typetag::serde(name = "identity")]
impl AutoencoderConfig for IdentityConfig {
    fn build(&self, ctx: &AutoencoderContext) -> Result<Box<dyn Autoencoder>> {
        if ctx.n_genes == 0 {
            return Err(LatentError::config(
                "autoencoder.identity",
                "n_genes",
                "> 0",
                0,
            ));
        }
        Ok(Box::new(Identity {
            n_genes: ctx.n_genes,
            clip_negative: self.clip_negative,
            nothing: Vec::new(),
        }))
    }

    fn check_training(&self, train: &TrainConfig) -> Result<()> {
        if train.joint_steps > 0 {
            return Err(LatentError::config(
                "train",
                "joint_steps",
                "0 with the identity autoencoder (it has no encoder to fine-tune)",
                train.joint_steps,
            ));
        }
        Ok(())
    }
}

register_plugin!(
    Autoencoder,
    "identity",
    "No compression: latent = gene expression (the gene-space diffusion baseline)",
    "type = \"identity\"\nclip_negative = true"
);

/// Pass-through autoencoder.
pub struct Identity {
    n_genes: usize,
    clip_negative: bool,
    nothing: Vec<latentlab_framework::device::Tensor1>,
}
parameters!(Identity { nothing });

impl Identity {
    fn check(&self, x: &[f32], n: usize) -> Result<()> {
        if x.len() != n * self.n_genes {
            return Err(LatentError::shape(
                "identity",
                format!("{n} cells x {} genes", self.n_genes),
                x.len(),
            ));
        }
        Ok(())
    }
}

impl Autoencoder for Identity {
    fn latent_dim(&self) -> usize {
        self.n_genes
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
        Err(LatentError::Incompatible(format!(
            "the identity autoencoder has nothing to train (batch of {} cells); set train.autoencoder_steps = 0",
            batch.n
        )))
    }
    fn encode(&self, batch: &ExpressionBatch) -> Result<Vec<f32>> {
        self.check(&batch.x, batch.n)?;
        Ok(batch.x.clone())
    }
    fn decode_mean(&self, z: &[f32], n: usize, _library_size: &[f32]) -> Result<Vec<f32>> {
        self.check(z, n)?;
        Ok(if self.clip_negative {
            z.iter().map(|v| v.max(0.0)).collect()
        } else {
            z.to_vec()
        })
    }
    fn prior_sample(&self, _n: usize, _rng: &mut dyn RngCore) -> Option<Vec<f32>> {
        None
    }
}
