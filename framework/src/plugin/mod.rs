//! The five plugin kinds: each is a runtime trait plus a serializable config trait whose `build`
//! validates once and returns the object.

pub mod autoencoder;
pub mod conditioner;
pub mod denoiser;
pub mod evaluator;
pub mod sampler;

pub use autoencoder::{
    Autoencoder, AutoencoderConfig, AutoencoderContext, AutoencoderLoss, ExpressionBatch, InputKind,
};
pub use conditioner::{
    set_members, summarize, ConditionColumn, ConditionEmbedding, ConditionKind, ConditionSummary,
    ConditionTable, Conditioner, ConditionerConfig, ConditionerContext, Injection,
};
pub use denoiser::{Denoiser, DenoiserConfig, DenoiserContext};
pub use evaluator::{CellSet, EvalContext, Evaluator, EvaluatorConfig, Metric};
pub use sampler::{
    LatentSampler, ModelFn, Prediction, SamplerConfig, TrainingPair, TrainingProcess,
};
