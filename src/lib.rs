//! latentlab: latent generative models for single-cell omics.
//!
//! A stage-1 autoencoder compresses expression into a latent space; a stage-2 sampler
//! (diffusion or flow) driving a denoiser network generates there, optionally conditioned.
//! Every part is a plugin chosen by name in one config. This facade re-exports the framework
//! and links the plugin crate so its registrations are present in any binary.

pub use latentlab_framework as framework;
pub use latentlab_plugins as plugins;

pub mod bench;

#[doc = include_str!("../docs/adding-a-plugin.md")]
pub mod adding_a_plugin {}
