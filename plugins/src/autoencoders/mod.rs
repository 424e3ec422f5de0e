//! Stage-1 autoencoders.

mod identity;
mod vae;
