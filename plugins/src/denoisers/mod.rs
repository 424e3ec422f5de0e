//! Stage-2 denoiser networks.

mod dit;
mod mlp;
