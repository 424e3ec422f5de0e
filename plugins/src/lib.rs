//! latentlab plugins, one algorithm per file, grouped by kind. Each registers itself with the
//! framework's catalog at compile time; adding one is a new file plus one `mod` line.

mod autoencoders;
mod conditioners;
mod denoisers;
mod evaluators;
mod samplers;

/// Forces the linker to keep this crate (and so its registrations) in a binary.
pub fn link() {}
