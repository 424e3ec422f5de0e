//! latentlab: latent generative models for single-cell omics.
pub use latentlab_framework as framework;
pub use latentlab_plugins as plugins;
