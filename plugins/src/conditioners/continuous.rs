//! A numeric condition (time, pseudotime, dose, age): the value is rescaled to `u ∈ [0, 1]` over
//! the training range, expanded to smooth sinusoidal features `[u, sin(2^k π u), cos(2^k π u)]`
//! for `k < frequencies`, and projected by a two-layer MLP. Few, low frequencies keep the map
//! smooth, so values between the trained ones (a left-out time point) interpolate; values outside
//! the range extrapolate (sampling warns).

use latentlab_framework::device::{tensor2, Taped, TrainTape};
use latentlab_framework::nn::{Activation, Init, Linear, Mlp, NullEmbedding};
use latentlab_framework::plugin::{
    ConditionColumn, ConditionEmbedding, ConditionKind, ConditionTable, Conditioner,
    ConditionerConfig, ConditionerContext, Injection,
};
use latentlab_framework::rng::stream;
use latentlab_framework::{parameters, register_plugin, LatentError, Result};
use serde::{Deserialize, Serialize};

use dfdx::prelude::*;

/// Config of the `continuous` conditioner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContinuousConfig {
    /// Numeric obs column (e.g. `Hours`, `Pseudotime`). Required.
    pub key: String,
    /// Number of sinusoid octaves. Default 4.
    pub frequencies: usize,
    /// Embedding width. Default 64.
    pub dim: usize,
    /// How the denoiser injects the embedding. Default `adaln`.
    pub injection: Injection,
    /// Probability of the null (unconditional) embedding while training. Default 0.1.
    pub drop_prob: f32,
}

impl Default for ContinuousConfig {
    fn default() -> Self {
        Self {
            key: String::new(),
            frequencies: 4,
            dim: 64,
            injection: Injection::Adaln,
            drop_prob: 0.1,
        }
    }
}

const PLUGIN: &str = "conditioner.continuous";

/// `[u, sin(2^k π u), cos(2^k π u)]` for each value, row-major `(n, 1 + 2·frequencies)`.
pub fn octave_features(u: &[f32], frequencies: usize) -> Vec<f32> {
    let width = 1 + 2 * frequencies;
    let mut out = vec![0.0f32; u.len() * width];
    for (i, &v) in u.iter().enumerate() {
        out[i * width] = v;
        for k in 0..frequencies {
            let arg = std::f32::consts::PI * (1u32 << k) as f32 * v;
            out[i * width + 1 + 2 * k] = arg.sin();
            out[i * width + 2 + 2 * k] = arg.cos();
        }
    }
    out
}

#[typetag::serde(name = "continuous")]
impl ConditionerConfig for ContinuousConfig {
    fn sources(&self) -> Vec<(String, ConditionKind)> {
        vec![(self.key.clone(), ConditionKind::Continuous)]
    }
    fn drop_prob(&self) -> f32 {
        self.drop_prob
    }
    fn build(&self, ctx: &ConditionerContext) -> Result<Box<dyn Conditioner>> {
        if self.key.is_empty() {
            return Err(LatentError::config(
                PLUGIN,
                "key",
                "a numeric obs column",
                "\"\"",
            ));
        }
        if self.dim == 0 || self.frequencies > 16 {
            return Err(LatentError::config(
                PLUGIN,
                "dim/frequencies",
                "dim > 0 and frequencies ≤ 16",
                format!("dim {}, frequencies {}", self.dim, self.frequencies),
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
        let summary = ctx
            .conditions
            .get(&self.key)
            .filter(|s| s.kind == ConditionKind::Continuous)
            .ok_or_else(|| {
                LatentError::config(
                    PLUGIN,
                    "key",
                    "a numeric obs column present in the data",
                    &self.key,
                )
            })?;
        let lo = summary.min.first().copied().unwrap_or(0.0);
        let hi = summary.max.first().copied().unwrap_or(1.0);
        let mut rng = stream(ctx.seed, PLUGIN);
        let inputs = 1 + 2 * self.frequencies;
        Ok(Box::new(Continuous {
            config: self.clone(),
            offset: lo,
            span: if hi > lo { hi - lo } else { 1.0 },
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
    "continuous",
    "A numeric obs column (time, pseudotime, dose) → octave sinusoids of the value rescaled to the training range → MLP",
    "type = \"continuous\"\nkey = \"Hours\"\nfrequencies = 4\ndim = 32\ninjection = \"adaln\"\ndrop_prob = 0.1"
);

/// The conditioner.
pub struct Continuous {
    config: ContinuousConfig,
    offset: f32,
    span: f32,
    hidden: Mlp,
    out: Linear,
    null: NullEmbedding,
}
parameters!(Continuous { hidden, out, null });

impl Continuous {
    fn run<T: Taped>(
        &self,
        batch: &ConditionTable,
        null: &[bool],
    ) -> Result<ConditionEmbedding<T>> {
        let key = &self.config.key;
        let Some(ConditionColumn::Continuous(values)) = batch.columns.get(key) else {
            return Err(LatentError::Data(format!(
                "condition `{key}` is missing from the batch; it must be a numeric obs column"
            )));
        };
        if values.len() != null.len() {
            return Err(LatentError::shape("continuous", null.len(), values.len()));
        }
        let u: Vec<f32> = values
            .iter()
            .map(|v| (v - self.offset) / self.span)
            .collect();
        let width = 1 + 2 * self.config.frequencies;
        let dev = self.null.vector.device().clone();
        let features = tensor2(
            &dev,
            &octave_features(&u, self.config.frequencies),
            u.len(),
            width,
        )?;
        let h = self.hidden.forward(features.retaped::<T>(), false)?;
        Ok(ConditionEmbedding {
            vector: self.null.apply(self.out.forward(h)?, null)?,
        })
    }
}

impl Conditioner for Continuous {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octave_reference_numbers() {
        let f = octave_features(&[0.0, 0.5], 2);
        let expect = [0.0, 0.0, 1.0, 0.0, 1.0, 0.5, 1.0, 0.0, 0.0, -1.0];
        for (a, b) in f.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{f:?}");
        }
    }
}
