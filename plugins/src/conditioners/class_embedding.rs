//! Categorical conditions (cell type, batch, perturbation label, …): one learned embedding table
//! per obs key, summed over keys, with an extra learned "null" row per key for classifier-free
//! guidance.

use dfdx::prelude::*;
use latentlab_framework::device::{Taped, TrainTape};
use latentlab_framework::nn::Embedding;
use latentlab_framework::plugin::{
    ConditionColumn, ConditionEmbedding, ConditionKind, ConditionTable, Conditioner,
    ConditionerConfig, ConditionerContext, Injection,
};
use latentlab_framework::rng::stream;
use latentlab_framework::{parameters, register_plugin, LatentError, Result};
use serde::{Deserialize, Serialize};

/// Config of the `class_embedding` conditioner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassEmbeddingConfig {
    /// Categorical obs columns to condition on (e.g. `["bulk_labels"]`). Required.
    pub keys: Vec<String>,
    /// Embedding width. Default 128.
    pub dim: usize,
    /// How the denoiser injects the embedding. Default `adaln`.
    pub injection: Injection,
    /// Probability of replacing the condition by the null embedding while training
    /// (classifier-free guidance). Default 0.1.
    pub drop_prob: f32,
}

impl Default for ClassEmbeddingConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            dim: 128,
            injection: Injection::Adaln,
            drop_prob: 0.1,
        }
    }
}

#[typetag::serde(name = "class_embedding")]
impl ConditionerConfig for ClassEmbeddingConfig {
    fn sources(&self) -> Vec<(String, ConditionKind)> {
        self.keys
            .iter()
            .map(|k| (k.clone(), ConditionKind::Categorical))
            .collect()
    }
    fn drop_prob(&self) -> f32 {
        self.drop_prob
    }
    fn build(&self, ctx: &ConditionerContext) -> Result<Box<dyn Conditioner>> {
        if self.keys.is_empty() {
            return Err(LatentError::config(
                "conditioner.class_embedding",
                "keys",
                "at least one categorical obs column",
                "[]",
            ));
        }
        if !(0.0..1.0).contains(&self.drop_prob) {
            return Err(LatentError::config(
                "conditioner.class_embedding",
                "drop_prob",
                "a value in [0, 1)",
                self.drop_prob,
            ));
        }
        if self.dim == 0 {
            return Err(LatentError::config(
                "conditioner.class_embedding",
                "dim",
                "> 0",
                0,
            ));
        }
        let mut rng = stream(ctx.seed, "conditioner.class_embedding");
        let mut tables = Vec::new();
        for key in &self.keys {
            let Some(categories) = ctx
                .conditions
                .get(key)
                .filter(|c| c.kind == ConditionKind::Categorical)
                .map(|c| &c.categories)
            else {
                return Err(LatentError::config(
                    "conditioner.class_embedding",
                    "keys",
                    "categorical obs columns present in the data",
                    key,
                ));
            };
            tables.push(Embedding::new(
                &ctx.dev,
                categories.len() + 1,
                self.dim,
                &mut rng,
            )?);
        }
        Ok(Box::new(ClassEmbedding {
            config: self.clone(),
            tables,
        }))
    }
}

register_plugin!(
    Conditioner,
    "class_embedding",
    "Categorical obs labels (one or several keys) → summed learned embeddings with a null row for classifier-free guidance",
    "type = \"class_embedding\"\nkeys = [\"bulk_labels\"]\ndim = 64\ninjection = \"adaln\"\ndrop_prob = 0.1"
);

/// Learned label embeddings.
pub struct ClassEmbedding {
    config: ClassEmbeddingConfig,
    tables: Vec<Embedding>,
}
parameters!(ClassEmbedding { tables });

impl ClassEmbedding {
    fn run<T: Taped>(
        &self,
        batch: &ConditionTable,
        null: &[bool],
    ) -> Result<ConditionEmbedding<T>> {
        let mut sum: Option<latentlab_framework::device::Tensor2<T>> = None;
        for (key, table) in self.config.keys.iter().zip(&self.tables) {
            let Some(ConditionColumn::Categorical { codes, .. }) = batch.columns.get(key) else {
                return Err(LatentError::Data(format!("condition `{key}` is missing from the batch; it must be a categorical obs column")));
            };
            if codes.len() != null.len() {
                return Err(LatentError::shape(
                    "class_embedding",
                    null.len(),
                    codes.len(),
                ));
            }
            let null_row = table.len() - 1;
            let idx: Vec<usize> = codes
                .iter()
                .zip(null)
                .map(|(&c, &n)| {
                    if n {
                        null_row
                    } else {
                        (c as usize).min(null_row)
                    }
                })
                .collect();
            let e = table.forward::<T>(&idx)?;
            sum = Some(match sum {
                None => e,
                Some(s) => s + e,
            });
        }
        let vector = sum.ok_or_else(|| {
            LatentError::config(
                "conditioner.class_embedding",
                "keys",
                "at least one key",
                "[]",
            )
        })?;
        Ok(ConditionEmbedding { vector })
    }
}

impl Conditioner for ClassEmbedding {
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
        _rng: &mut dyn rand::RngCore,
    ) -> Result<ConditionEmbedding<TrainTape>> {
        self.run(batch, null)
    }
    fn embed(&self, batch: &ConditionTable, null: &[bool]) -> Result<ConditionEmbedding<NoneTape>> {
        self.run(batch, null)
    }
}
