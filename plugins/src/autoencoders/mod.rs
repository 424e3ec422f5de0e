//! Stage-1 autoencoders.

mod count_vae;
mod identity;
mod vae;
mod vq_gan;
mod vq_vae;
