//! latentlab framework: plugin traits and registry, runtime-shaped neural-network layers on dfdx,
//! optimization, data loading, training loops, the generation pipeline, checkpoints and evaluation.
//!
//! Plugins (in `latentlab-plugins`) implement the traits in [`plugin`] and register themselves
//! with [`register_plugin!`]; everything is chosen by name in one experiment config.

mod atomic_file;
pub mod cells;
pub mod checkpoint;
pub mod config;
pub mod counterfactual;
pub mod data;
pub mod dataset;
pub mod device;
pub mod diffusion;
pub mod error;
pub mod evaluation;
pub mod experiment;
pub mod held_out;
pub mod joint;
pub mod likelihood;
#[cfg(not(feature = "cuda"))]
mod likelihood_cpu;
pub mod metrics;
pub mod modality;
pub mod nn;
pub mod optim;
pub mod parallel;
pub mod pipeline;
pub mod plots;
pub mod plugin;
pub mod prediction;
pub mod preparation;
pub mod protocol;
pub mod registry;
pub mod report;
pub mod resume;
pub mod rng;
pub mod run;
pub mod run_evaluation;
pub mod sampling;
pub mod schedules;
pub mod streaming;
pub mod testing;
pub mod train;
pub mod train_run;

pub use error::{LatentError, Result};

#[doc(hidden)]
pub use inventory;

/// The tensor/autodiff layer, re-exported so plugins and tests use the same version.
pub use dfdx;
