//! Runtime-shaped neural-network layers on dfdx 0.13 tensors, with a named-parameter visitor.
//!
//! dfdx's own `nn` needs compile-time shapes; these layers take `(batch, features)` tensors whose
//! sizes come from config and data. Every layer is generic over the tape, so the same code runs
//! with autodiff while training and without it while sampling. Shape mismatches are returned as
//! [`crate::LatentError::Shape`], never panics.

mod activation;
mod adversarial;
mod attention;
#[cfg(not(feature = "cuda"))]
mod attention_cpu;
pub(crate) mod data_input;
#[cfg(not(feature = "cuda"))]
pub(crate) mod deferred_weight_gradients;
mod dropout;
#[cfg(not(feature = "cuda"))]
mod dropout_cpu;
#[cfg(not(feature = "cuda"))]
mod elementary;
mod embedding;
mod expression_head;
mod fan_out;
mod fourier_features;
mod gaussian_posterior;
mod init;
#[cfg(not(feature = "cuda"))]
mod joined_parameters;
mod layer_norm;
mod linear;
#[cfg(not(feature = "cuda"))]
mod linear_cpu;
mod mlp;
mod modulation;
mod null_embedding;
mod params;
mod repeat_rows;
mod residual_block;
mod row_groups;
mod row_tiles;
#[cfg(not(feature = "cuda"))]
mod rowwise_cpu;
#[cfg(not(feature = "cuda"))]
pub(crate) mod shared_transposes;
#[cfg(not(feature = "cuda"))]
mod simd;
mod sinusoidal;
#[cfg(not(feature = "cuda"))]
mod small_product;
#[cfg(not(feature = "cuda"))]
mod sparse_rows;
mod thread_scope;
#[cfg(not(feature = "cuda"))]
mod transpose;
mod vector_quantizer;

pub use activation::Activation;
pub use adversarial::{adaptive_weight, gradient_of, softplus, AdversarialLoss};
pub use attention::MultiHeadAttention;
pub use data_input::with_data_input;
pub use dropout::{dropout, with_dropout_stream};
#[cfg(not(feature = "cuda"))]
pub(crate) use elementary::{exp, ln};
pub use embedding::Embedding;
pub use expression_head::ExpressionHead;
pub use fan_out::{fan_out, fork};
pub use fourier_features::FourierFeatures;
pub use gaussian_posterior::{kl_warmup, GaussianPosterior, PosteriorSample};
pub use init::Init;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use mlp::Mlp;
pub use modulation::{modulate, modulate_tokens, residual, residual_tokens};
pub use null_embedding::NullEmbedding;
pub use params::{join, linear_macs, ParamMut, ParamRef, Parameters};
pub use repeat_rows::repeat_rows;
pub use residual_block::{Modulation, ResidualBlock};
pub use row_groups::RowGroups;
#[cfg(not(feature = "cuda"))]
pub(crate) use row_tiles::kernel_threads;
pub use row_tiles::{
    append_tiles, map_tiles, row_blocks, row_tiles, run_tiles, training_shards, MAX_TILE_ROWS,
    MAX_TRAINING_SHARDS, ONE_THREAD_SHARD_ROWS, TRAINING_SHARD_ROWS,
};
#[cfg(not(feature = "cuda"))]
pub(crate) use simd::vectorized;
pub use sinusoidal::{sinusoidal_embedding, sinusoidal_tensor};
pub use vector_quantizer::{
    CodebookUpdate, CodebookUsage, Quantized, QuantizerLosses, QuantizerSettings, VectorQuantizer,
};
