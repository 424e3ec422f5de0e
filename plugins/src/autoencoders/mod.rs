//! Stage-1 autoencoders.

mod vae;
