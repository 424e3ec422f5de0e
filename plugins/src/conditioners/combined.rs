//! Several conditioners at once (cell type + perturbation, cell type + time, …): each part embeds
//! its own sources to the same width and the embeddings are summed. Guidance dropout nulls all
//! parts together (`drop_prob`; the null embedding is the sum of the parts' nulls) and, with
//! `part_drop_prob > 0`, also each part on its own, which makes the parts separately guidable
//! attributes (`latentlab sample --cfg-attribute KEY=SCALE`). The parts' own `drop_prob` and
//! `injection` are ignored in favour of the combined ones.

use latentlab_framework::device::{Tensor2, TrainTape};
use latentlab_framework::plugin::{
    ConditionEmbedding, ConditionKind, ConditionTable, Conditioner, ConditionerConfig,
    ConditionerContext, Injection,
};
use latentlab_framework::rng::derive_seed;
use latentlab_framework::{parameters, register_plugin, LatentError, Result};
use rand::Rng;
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
    /// Probability that one part alone is nulled while training (independently per part and
    /// cell), so that sampling can scale each part's guidance separately. Default 0 (parts are
    /// only dropped together; per-attribute guidance is refused).
    #[serde(default)]
    pub part_drop_prob: f32,
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
        if !(0.0..1.0).contains(&self.part_drop_prob) {
            return Err(LatentError::config(
                PLUGIN,
                "part_drop_prob",
                "a value in [0, 1)",
                self.part_drop_prob,
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
            keys: self
                .parts
                .iter()
                .map(|p| p.sources().into_iter().map(|(k, _)| k).collect())
                .collect(),
            dim,
            injection: self.injection,
            part_drop_prob: self.part_drop_prob,
        }))
    }
}

register_plugin!(
    Conditioner,
    "combined",
    "Sum of several conditioners' embeddings (e.g. cell type + perturbation); guidance per part with part_drop_prob > 0",
    "type = \"combined\"\ninjection = \"adaln\"\ndrop_prob = 0.1\npart_drop_prob = 0.15\n[[parts]]\ntype = \"class_embedding\"\nkeys = [\"cell_type\"]\ndim = 32\n[[parts]]\ntype = \"continuous\"\nkey = \"time\"\ndim = 32"
);

/// The conditioner.
pub struct Combined {
    parts: Vec<Box<dyn Conditioner>>,
    /// Each part's condition keys (the attribute names).
    keys: Vec<Vec<String>>,
    dim: usize,
    injection: Injection,
    part_drop_prob: f32,
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
        rng: &mut dyn rand::RngCore,
    ) -> Result<ConditionEmbedding<TrainTape>> {
        let mut sum: Option<Tensor2<TrainTape>> = None;
        for p in &self.parts {
            let part_null: Vec<bool> = if self.part_drop_prob > 0.0 {
                null.iter()
                    .map(|&n| n || rng.gen::<f32>() < self.part_drop_prob)
                    .collect()
            } else {
                null.to_vec()
            };
            let v = p.embed_train(batch, &part_null, rng)?.vector;
            sum = Some(match sum {
                Some(s) => s + v,
                None => v,
            });
        }
        sum.map(|vector| ConditionEmbedding { vector })
            .ok_or_else(|| LatentError::Incompatible("combined conditioner without parts".into()))
    }
    fn embed(&self, batch: &ConditionTable, null: &[bool]) -> Result<ConditionEmbedding<NoneTape>> {
        self.sum_parts(batch, |_| null.to_vec())
    }
    fn attributes(&self) -> Vec<Vec<String>> {
        if self.part_drop_prob > 0.0 {
            self.keys.clone()
        } else {
            Vec::new()
        }
    }
    fn embed_attributes(
        &self,
        batch: &ConditionTable,
        present: &[bool],
    ) -> Result<ConditionEmbedding<NoneTape>> {
        if self.part_drop_prob <= 0.0 || present.len() != self.parts.len() {
            return Err(LatentError::Incompatible(format!(
                "per-attribute guidance needs the combined conditioner trained with \
                 part_drop_prob > 0 and one flag per part ({} parts, {} flags)",
                self.parts.len(),
                present.len()
            )));
        }
        let n = batch.len();
        self.sum_parts(batch, |i| vec![!present[i]; n])
    }
}

impl Combined {
    /// Sum of the parts' embeddings, part `i` with null flags `null_of(i)`.
    fn sum_parts(
        &self,
        batch: &ConditionTable,
        null_of: impl Fn(usize) -> Vec<bool>,
    ) -> Result<ConditionEmbedding<NoneTape>> {
        let mut sum: Option<Tensor2> = None;
        for (i, p) in self.parts.iter().enumerate() {
            let v = p.embed(batch, &null_of(i))?.vector;
            sum = Some(match sum {
                Some(s) => s + v,
                None => v,
            });
        }
        sum.map(|vector| ConditionEmbedding { vector })
            .ok_or_else(|| LatentError::Incompatible("combined conditioner without parts".into()))
    }
}
