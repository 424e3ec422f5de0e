//! A vector condition from `obsm` (spatial coordinates, another modality's representation such
//! as an RNA PCA or latent): standardized per dimension with the training mean and spread, then
//! either used as is or expanded into random Fourier features (fixed Gaussian frequencies drawn
//! from the seed; suited to 2-D/3-D coordinates), and projected by a two-layer MLP.

use dfdx::prelude::*;
use latentlab_framework::device::{Taped, TrainTape};
use latentlab_framework::nn::{Activation, FourierFeatures, Init, Linear, Mlp, NullEmbedding};
use latentlab_framework::plugin::{
    ConditionColumn, ConditionEmbedding, ConditionKind, ConditionTable, Conditioner,
    ConditionerConfig, ConditionerContext, Injection,
};
use latentlab_framework::rng::{derive_seed, stream};
use latentlab_framework::{parameters, register_plugin, LatentError, Result};
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
    /// obsm key (e.g. `spatial`, `X_pca`). Required.
    pub key: String,
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
}

impl Default for VectorConfig {
    fn default() -> Self {
        Self {
            key: String::new(),
            features: VectorFeatures::Standardized,
            fourier_features: 32,
            fourier_scale: 1.0,
            dim: 64,
            injection: Injection::Adaln,
            drop_prob: 0.1,
        }
    }
}

const PLUGIN: &str = "conditioner.vector";

#[typetag::serde(name = "vector")]
impl ConditionerConfig for VectorConfig {
    fn sources(&self) -> Vec<(String, ConditionKind)> {
        vec![(self.key.clone(), ConditionKind::Vector)]
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
        let summary = ctx
            .conditions
            .get(&self.key)
            .filter(|s| s.kind == ConditionKind::Vector)
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
    "An obsm vector (spatial coordinates via random Fourier features, or another modality's representation) → standardized → MLP",
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
        let standardized: Vec<f32> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (v - self.mean[i % self.width]) * self.scale[i % self.width])
            .collect();
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
    ) -> Result<ConditionEmbedding<TrainTape>> {
        self.run(batch, null)
    }
    fn embed(&self, batch: &ConditionTable, null: &[bool]) -> Result<ConditionEmbedding<NoneTape>> {
        self.run(batch, null)
    }
}
