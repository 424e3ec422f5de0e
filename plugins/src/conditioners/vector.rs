//! A vector condition: an `obsm` matrix (spatial coordinates, a precomputed representation), or
//! with `[conditioner.modality]` another measured modality of the same cells (the RNA of an
//! RNA → protein model: a matrix of the data file, preprocessed and projected on principal
//! components fitted on the training cells, see `latentlab_framework::modality`). Standardized
//! per dimension with the training mean and spread, then either used as is or expanded into
//! random Fourier features (fixed Gaussian frequencies drawn from the seed; suited to 2-D/3-D
//! coordinates), and projected by a two-layer MLP.

use dfdx::prelude::*;
use latentlab_framework::device::{Taped, TrainTape};
use latentlab_framework::modality::ModalitySource;
use latentlab_framework::nn::{Activation, FourierFeatures, Init, Linear, Mlp, NullEmbedding};
use latentlab_framework::plugin::{
    ConditionColumn, ConditionEmbedding, ConditionKind, ConditionTable, Conditioner,
    ConditionerConfig, ConditionerContext, Injection,
};
use latentlab_framework::rng::{derive_seed, stream};
use latentlab_framework::{parameters, register_plugin, LatentError, Result};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// How the standardized vector is featurized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VectorFeatures {
    /// The standardized values themselves (another modality's representation).
    #[default]
    Standardized,
    /// Random Fourier features `[sin 2πBx, cos 2πBx]` (coordinates).
    Fourier,
}

/// Config of the `vector` conditioner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VectorConfig {
    /// obsm key (e.g. `spatial`, `X_pca`); with `modality`, the condition's name (e.g. `rna`).
    /// Required.
    pub key: String,
    /// Encode another modality of the data file instead of reading an obsm key: its `matrix`,
    /// `preprocess` and number of principal `components`. Default none.
    pub modality: Option<ModalitySource>,
    /// Featurization. Default `standardized`.
    pub features: VectorFeatures,
    /// Number of Fourier frequencies (output width 2×). Default 32.
    pub fourier_features: usize,
    /// Standard deviation of the Fourier frequencies, in units of the standardized coordinates
    /// (larger = finer spatial detail). Default 1.0.
    pub fourier_scale: f32,
    /// Embedding width. Default 64.
    pub dim: usize,
    /// How the denoiser injects the embedding. Default `adaln`.
    pub injection: Injection,
    /// Probability of the null (unconditional) embedding while training. Default 0.1.
    pub drop_prob: f32,
    /// Standard deviation of Gaussian noise added to the standardized condition while training
    /// (not when sampling). A per-cell condition such as another modality is unique to each
    /// training cell, so a network trained long enough learns a near-deterministic output per
    /// cell and its samples understate the uncertainty on new cells; noise on the condition makes
    /// it learn the spread of nearby cells instead. Default 0 (off).
    pub condition_noise: f32,
}

impl Default for VectorConfig {
    fn default() -> Self {
        Self {
            key: String::new(),
            modality: None,
            features: VectorFeatures::Standardized,
            fourier_features: 32,
            fourier_scale: 1.0,
            dim: 64,
            injection: Injection::Adaln,
            drop_prob: 0.1,
            condition_noise: 0.0,
        }
    }
}

const PLUGIN: &str = "conditioner.vector";

#[typetag::serde(name = "vector")]
impl ConditionerConfig for VectorConfig {
    fn sources(&self) -> Vec<(String, ConditionKind)> {
        let kind = match &self.modality {
            Some(source) => ConditionKind::Modality(source.clone()),
            None => ConditionKind::Vector,
        };
        vec![(self.key.clone(), kind)]
    }
    fn drop_prob(&self) -> f32 {
        self.drop_prob
    }
    fn build(&self, ctx: &ConditionerContext) -> Result<Box<dyn Conditioner>> {
        if self.key.is_empty() {
            return Err(LatentError::config(PLUGIN, "key", "an obsm key", "\"\""));
        }
        if self.dim == 0 {
            return Err(LatentError::config(PLUGIN, "dim", "> 0", 0));
        }
        if !(0.0..1.0).contains(&self.drop_prob) {
            return Err(LatentError::config(
                PLUGIN,
                "drop_prob",
                "a value in [0, 1)",
                self.drop_prob,
            ));
        }
        if !(self.condition_noise >= 0.0 && self.condition_noise.is_finite()) {
            return Err(LatentError::config(
                PLUGIN,
                "condition_noise",
                "a finite value ≥ 0",
                self.condition_noise,
            ));
        }
        if self.modality.as_ref().is_some_and(|m| m.components == 0) {
            return Err(LatentError::config(PLUGIN, "modality.components", "> 0", 0));
        }
        let declared = &self.sources()[0].1;
        let summary = ctx
            .conditions
            .get(&self.key)
            .filter(|s| &s.kind == declared)
            .ok_or_else(|| {
                LatentError::config(PLUGIN, "key", "an obsm key present in the data", &self.key)
            })?;
        let width = summary.dim;
        let fourier = match self.features {
            VectorFeatures::Standardized => None,
            VectorFeatures::Fourier => Some(FourierFeatures::new(
                width,
                self.fourier_features,
                self.fourier_scale,
                derive_seed(ctx.seed, "fourier"),
            )?),
        };
        let inputs = fourier.as_ref().map_or(width, FourierFeatures::outputs);
        let mut rng = stream(ctx.seed, PLUGIN);
        Ok(Box::new(Vector {
            config: self.clone(),
            width,
            mean: summary.mean.clone(),
            scale: summary.std.iter().map(|s| 1.0 / s.max(1e-6)).collect(),
            fourier,
            hidden: Mlp::new(
                &ctx.dev,
                inputs,
                &[self.dim],
                Activation::Silu,
                false,
                0.0,
                &mut rng,
            )?,
            out: Linear::new(&ctx.dev, self.dim, self.dim, Init::XavierUniform, &mut rng)?,
            null: NullEmbedding::new(&ctx.dev, self.dim),
        }))
    }
}

register_plugin!(
    Conditioner,
    "vector",
    "An obsm vector (spatial coordinates via random Fourier features) or another measured modality (RNA → principal components fitted on the training cells) → standardized → MLP",
    "type = \"vector\"\nkey = \"spatial\"\nfeatures = \"fourier\"\nfourier_features = 16\nfourier_scale = 1.0\ndim = 32\ninjection = \"adaln\"\ndrop_prob = 0.1"
);

/// The conditioner.
pub struct Vector {
    config: VectorConfig,
    width: usize,
    mean: Vec<f32>,
    scale: Vec<f32>,
    fourier: Option<FourierFeatures>,
    hidden: Mlp,
    out: Linear,
    null: NullEmbedding,
}
parameters!(Vector { hidden, out, null });

impl Vector {
    fn run<T: Taped>(
        &self,
        batch: &ConditionTable,
        null: &[bool],
        training_noise: Option<&mut dyn rand::RngCore>,
    ) -> Result<ConditionEmbedding<T>> {
        let key = &self.config.key;
        let Some(ConditionColumn::Vector { dim, values }) = batch.columns.get(key) else {
            return Err(LatentError::Data(format!(
                "condition `{key}` is missing from the batch; it must be an obsm matrix"
            )));
        };
        if *dim != self.width || values.len() != null.len() * self.width {
            return Err(LatentError::shape(
                "vector condition",
                format!("{}x{}", null.len(), self.width),
                format!("{} values of width {dim}", values.len()),
            ));
        }
        let mut standardized: Vec<f32> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (v - self.mean[i % self.width]) * self.scale[i % self.width])
            .collect();
        let sigma = self.config.condition_noise;
        if let Some(rng) = training_noise.filter(|_| sigma > 0.0) {
            for v in &mut standardized {
                *v += sigma * rng.sample::<f32, _>(StandardNormal);
            }
        }
        let dev = self.null.vector.device().clone();
        let features = match &self.fourier {
            Some(f) => f.tensor(&dev, &standardized)?,
            None => {
                latentlab_framework::device::tensor2(&dev, &standardized, null.len(), self.width)?
            }
        };
        let h = self.hidden.forward(features.retaped::<T>(), false)?;
        Ok(ConditionEmbedding {
            vector: self.null.apply(self.out.forward(h)?, null)?,
        })
    }
}

impl Conditioner for Vector {
    fn dim(&self) -> usize {
        self.config.dim
    }
    fn injection(&self) -> Injection {
        self.config.injection
    }
    fn embed_train(
        &self,
        batch: &ConditionTable,
        null: &[bool],
        rng: &mut dyn rand::RngCore,
    ) -> Result<ConditionEmbedding<TrainTape>> {
        self.run(batch, null, Some(rng))
    }
    fn embed(&self, batch: &ConditionTable, null: &[bool]) -> Result<ConditionEmbedding<NoneTape>> {
        self.run(batch, null, None)
    }
}
