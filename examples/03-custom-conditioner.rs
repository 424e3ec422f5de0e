//! 03 — An out-of-tree conditioner defined in this file: a continuous obs column (e.g. time or
//! pseudotime) embedded with sinusoidal features and a learned projection, plus a learned null
//! vector for classifier-free guidance. It registers itself and is chosen by name in a config,
//! exactly like the built-in plugins.
//!
//! Run: `cargo run --release --example 03-custom-conditioner`

use anyhow::Result;
use latentlab::framework::device::{tensor1, Taped, Tensor1, TrainTape};
use latentlab::framework::dfdx::prelude::*;
use latentlab::framework::nn::{sinusoidal_tensor, Init, Linear};
use latentlab::framework::plugin::{
    summarize, ConditionColumn, ConditionEmbedding, ConditionKind, ConditionTable, Conditioner,
    ConditionerConfig, ConditionerContext, Injection,
};
use latentlab::framework::rng::stream;
use latentlab::framework::{parameters, register_plugin, LatentError};
use serde::{Deserialize, Serialize};

/// Config of the `scalar_time` conditioner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalarTimeConfig {
    /// Numeric obs column.
    pub key: String,
    /// Embedding width.
    pub dim: usize,
    /// Guidance dropout probability.
    pub drop_prob: f32,
}

#[typetag::serde(name = "scalar_time")]
impl ConditionerConfig for ScalarTimeConfig {
    fn sources(&self) -> Vec<(String, ConditionKind)> {
        vec![(self.key.clone(), ConditionKind::Continuous)]
    }
    fn drop_prob(&self) -> f32 {
        self.drop_prob
    }
    fn build(
        &self,
        ctx: &ConditionerContext,
    ) -> latentlab::framework::Result<Box<dyn Conditioner>> {
        if self.dim < 2 {
            return Err(LatentError::config(
                "conditioner.scalar_time",
                "dim",
                "≥ 2",
                self.dim,
            ));
        }
        let mut rng = stream(ctx.seed, "scalar_time");
        Ok(Box::new(ScalarTime {
            config: self.clone(),
            projection: Linear::new(&ctx.dev, self.dim, self.dim, Init::XavierUniform, &mut rng)?,
            null: tensor1(&ctx.dev, &vec![0.0; self.dim]),
        }))
    }
}

register_plugin!(
    Conditioner,
    "scalar_time",
    "A numeric obs column (time, pseudotime) → sinusoidal features → linear",
    "type = \"scalar_time\"\nkey = \"time\"\ndim = 16\ndrop_prob = 0.1"
);

/// The conditioner.
pub struct ScalarTime {
    config: ScalarTimeConfig,
    projection: Linear,
    null: Tensor1,
}
parameters!(ScalarTime { projection, null });

impl ScalarTime {
    fn run<T: Taped>(
        &self,
        batch: &ConditionTable,
        null: &[bool],
    ) -> latentlab::framework::Result<ConditionEmbedding<T>> {
        let Some(ConditionColumn::Continuous(values)) = batch.columns.get(&self.config.key) else {
            return Err(LatentError::Data(format!(
                "condition `{}` must be a numeric obs column",
                self.config.key
            )));
        };
        let dev = self.null.device().clone();
        let features = sinusoidal_tensor(&dev, values, self.config.dim, 10_000.0)?.retaped::<T>();
        let embedded = self.projection.forward(features)?;
        // Blend in the learned null vector for dropped rows.
        let keep: Vec<f32> = null.iter().map(|&n| if n { 0.0 } else { 1.0 }).collect();
        let shape = *embedded.shape();
        let mut keep_t: latentlab::framework::device::Tensor2 = dev.zeros_like(&shape);
        keep_t.copy_from(
            &keep
                .iter()
                .flat_map(|k| std::iter::repeat_n(*k, shape.1))
                .collect::<Vec<_>>(),
        );
        let drop_t = keep_t.clone() * -1.0 + 1.0;
        let null_rows = self
            .null
            .retaped::<T>()
            .broadcast_like::<_, Axis<0>>(&shape)
            * drop_t;
        Ok(ConditionEmbedding {
            vector: embedded * keep_t + null_rows,
        })
    }
}

impl Conditioner for ScalarTime {
    fn dim(&self) -> usize {
        self.config.dim
    }
    fn injection(&self) -> Injection {
        Injection::Film
    }
    fn embed_train(
        &self,
        batch: &ConditionTable,
        null: &[bool],
        _rng: &mut dyn rand::RngCore,
    ) -> latentlab::framework::Result<ConditionEmbedding<TrainTape>> {
        self.run(batch, null)
    }
    fn embed(
        &self,
        batch: &ConditionTable,
        null: &[bool],
    ) -> latentlab::framework::Result<ConditionEmbedding<NoneTape>> {
        self.run(batch, null)
    }
}

fn main() -> Result<()> {
    latentlab::plugins::link();
    // The conditioner is now in the catalog and parses by name.
    let config: Box<dyn ConditionerConfig> =
        toml::from_str("type = \"scalar_time\"\nkey = \"S_score\"\ndim = 8\ndrop_prob = 0.1")?;
    let sources = config.sources();
    let table = latentlab::framework::testing::condition_table(&sources, 10, 0);
    let ctx = ConditionerContext {
        conditions: summarize(&table, &sources),
        seed: 0,
        dev: latentlab::framework::device::device(0)?,
    };
    let conditioner = config.build(&ctx)?;
    let e = conditioner.embed(&table.select(&[0, 1, 2]), &[false, false, true])?;
    println!(
        "embedded 3 cells into {:?}: {:?}",
        e.vector.shape(),
        e.vector.as_vec()
    );
    Ok(())
}
