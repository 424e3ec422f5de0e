//! The network of stage 2: predicts noise, velocity, v or the clean latent from a noisy latent.

use dfdx::tensor::NoneTape;

use super::conditioner::{ConditionEmbedding, Injection};
use crate::device::{Dev, Tensor2, TrainTape};
use crate::nn::Parameters;
use crate::Result;

/// Build-time facts a denoiser needs.
#[derive(Debug, Clone)]
pub struct DenoiserContext {
    /// Latent width (input and output width).
    pub latent_dim: usize,
    /// Condition embedding width and injection, when conditioned.
    pub condition: Option<(usize, Injection)>,
    /// Seed for initialization.
    pub seed: u64,
    /// Device.
    pub dev: Dev,
}

/// A trainable denoiser network `f(z_t, t, c)`. Time `t` is in `[0, 1]` (1 = pure noise).
/// `Sync`: sampling shares it between threads.
pub trait Denoiser: Parameters + Send + Sync {
    /// Forward pass with autodiff. `z` is `(batch, latent_dim)`, `t` has `batch` entries.
    /// Training randomness (dropout) goes through [`crate::nn::dropout`], which data-parallel
    /// shards seed from their own streams.
    ///
    /// # Errors
    /// Shape errors.
    fn forward_train(
        &self,
        z: Tensor2<TrainTape>,
        t: &[f32],
        cond: Option<ConditionEmbedding<TrainTape>>,
    ) -> Result<Tensor2<TrainTape>>;
    /// Forward pass without autodiff (sampling). Rows must not interact: sampling calls it on
    /// tiles of rows in parallel (the registry conformance test checks it).
    ///
    /// # Errors
    /// Shape errors.
    fn forward(
        &self,
        z: Tensor2,
        t: &[f32],
        cond: Option<ConditionEmbedding<NoneTape>>,
    ) -> Result<Tensor2>;
    /// Rows each sample occupies in this network's matrix products: a transformer's tokens, 1
    /// (the default) for a network that runs a sample as one row. Stage-2 training at one thread
    /// keeps a batch in one shard while its products have at most
    /// [`crate::nn::ONE_THREAD_SHARD_ROWS`] rows and splits longer ones, which then run faster
    /// in halves (decision 0029).
    fn rows_per_sample(&self) -> usize {
        1
    }
}

/// Serializable description of a denoiser.
#[typetag::serde(tag = "type")]
pub trait DenoiserConfig: std::fmt::Debug + Send + Sync {
    /// Injection styles this denoiser implements (validated against the conditioner at build).
    fn supported_injections(&self) -> Vec<Injection>;
    /// Validates and builds.
    ///
    /// # Errors
    /// [`crate::LatentError::InvalidConfig`] / [`crate::LatentError::Incompatible`].
    fn build(&self, ctx: &DenoiserContext) -> Result<Box<dyn Denoiser>>;
}
