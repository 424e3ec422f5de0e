//! Stage-2 denoiser networks.

mod mlp;
