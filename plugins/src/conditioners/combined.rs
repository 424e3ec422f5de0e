//! Several conditioners at once (cell type + perturbation, cell type + time, …): each part embeds
//! its own sources to the same width and the embeddings are summed. Guidance drops all parts
//! together (the null embedding is the sum of the parts' nulls); the parts' own `drop_prob` and
//! `injection` are ignored in favour of the combined ones.

use latentlab_framework::device::TrainTape;
use latentlab_framework::plugin::{
    ConditionEmbedding, ConditionKind, ConditionTable, Conditioner, ConditionerConfig,
    ConditionerContext, Injection,
};
use latentlab_framework::rng::derive_seed;
use latentlab_framework::{parameters, register_plugin, LatentError, Result};
use serde::{Deserialize, Serialize};

use dfdx::prelude::*;

/// Config of the `combined` conditioner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CombinedConfig {
    /// The conditioners to combine; all must have the same `dim`. Required (≥ 2).
    pub parts: Vec<Box<dyn ConditionerConfig>>,
    /// How the denoiser injects the summed embedding. Default `adaln`.
    #[serde(default)]
    pub injection: Injection,
    /// Probability of the null (unconditional) embedding while training. Default 0.1.
    #[serde(default = "default_drop")]
    pub drop_prob: f32,
}

fn default_drop() -> f32 {
    0.1
}

const PLUGIN: &str = "conditioner.combined";

#[typetag::serde(name = "combined")]
impl ConditionerConfig for CombinedConfig {
    fn sources(&self) -> Vec<(String, ConditionKind)> {
        let mut out: Vec<(String, ConditionKind)> = Vec::new();
        for (k, kind) in self.parts.iter().flat_map(|p| p.sources()) {
            if !out.iter().any(|(o, _)| *o == k) {
                out.push((k, kind));
            }
        }
        out
    }
    fn drop_prob(&self) -> f32 {
        self.drop_prob
    }
    fn build(&self, ctx: &ConditionerContext) -> Result<Box<dyn Conditioner>> {
        if self.parts.len() < 2 {
            return Err(LatentError::config(
                PLUGIN,
                "parts",
                "at least two conditioners",
                self.parts.len(),
            ));
        }
        if !(0.0..1.0).contains(&self.drop_prob) {
            return Err(LatentError::config(
                PLUGIN,
                "drop_prob",
                "a value in [0, 1)",
                self.drop_prob,
            ));
        }
        let mut parts = Vec::with_capacity(self.parts.len());
        for (i, p) in self.parts.iter().enumerate() {
            let part_ctx = ConditionerContext {
                conditions: ctx.conditions.clone(),
                seed: derive_seed(ctx.seed, &format!("part{i}")),
                dev: ctx.dev.clone(),
            };
            parts.push(p.build(&part_ctx)?);
        }
        let dim = parts[0].dim();
        if let Some(bad) = parts.iter().position(|p| p.dim() != dim) {
            return Err(LatentError::config(
                PLUGIN,
                format!("parts[{bad}].dim"),
                format!("the same width as parts[0] ({dim})"),
                parts[bad].dim(),
            ));
        }
        Ok(Box::new(Combined {
            parts,
            dim,
            injection: self.injection,
        }))
    }
}

register_plugin!(
    Conditioner,
    "combined",
    "Sum of several conditioners' embeddings (e.g. cell type + perturbation), dropped together for guidance",
    "type = \"combined\"\ninjection = \"adaln\"\ndrop_prob = 0.1\n[[parts]]\ntype = \"class_embedding\"\nkeys = [\"cell_type\"]\ndim = 32\n[[parts]]\ntype = \"continuous\"\nkey = \"time\"\ndim = 32"
);

/// The conditioner.
pub struct Combined {
    parts: Vec<Box<dyn Conditioner>>,
    dim: usize,
    injection: Injection,
}
parameters!(Combined { parts });

impl Conditioner for Combined {
    fn dim(&self) -> usize {
        self.dim
    }
    fn injection(&self) -> Injection {
        self.injection
    }
    fn embed_train(
        &self,
        batch: &ConditionTable,
        null: &[bool],
    ) -> Result<ConditionEmbedding<TrainTape>> {
        let mut sum = self.parts[0].embed_train(batch, null)?.vector;
        for p in &self.parts[1..] {
            sum = sum + p.embed_train(batch, null)?.vector;
        }
        Ok(ConditionEmbedding { vector: sum })
    }
    fn embed(&self, batch: &ConditionTable, null: &[bool]) -> Result<ConditionEmbedding<NoneTape>> {
        let mut sum = self.parts[0].embed(batch, null)?.vector;
        for p in &self.parts[1..] {
            sum = sum + p.embed(batch, null)?.vector;
        }
        Ok(ConditionEmbedding { vector: sum })
    }
}
