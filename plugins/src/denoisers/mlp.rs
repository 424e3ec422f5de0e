//! Residual MLP denoiser: input projection, pre-norm residual blocks modulated by the time (and
//! condition) embedding, zero-initialized output layer.
//!
//! Injection styles: `concat` appends the condition to the input; `add` adds its projection to the
//! time embedding, which FiLM-modulates every block; `film` modulates every block by the condition
//! alone (time is added at the input); `adaln` modulates with scale, shift and a zero-initialized
//! gate from time + condition (adaLN-Zero, Peebles & Xie 2023).

use dfdx::prelude::*;
use latentlab_framework::device::{Dev, Taped, Tensor2, TrainTape};
use latentlab_framework::nn::{
    fan_out, sinusoidal_tensor, Activation, Init, LayerNorm, Linear, Modulation, ResidualBlock,
};
use latentlab_framework::plugin::{
    ConditionEmbedding, Denoiser, DenoiserConfig, DenoiserContext, Injection,
};
use latentlab_framework::rng::stream;
use latentlab_framework::{parameters, register_plugin, LatentError, Result};
use serde::{Deserialize, Serialize};

/// Config of the `mlp` denoiser.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlpDenoiserConfig {
    /// Hidden width. Default 256.
    pub width: usize,
    /// Number of residual blocks. Default 4.
    pub blocks: usize,
    /// Hidden width of each block as a multiple of `width`. Default 2.
    pub expansion: usize,
    /// Width of the sinusoidal time features. Default 128.
    pub time_features: usize,
    /// Nonlinearity. Default `silu`.
    pub activation: Activation,
    /// Dropout inside blocks. Default 0.
    pub dropout: f32,
}

impl Default for MlpDenoiserConfig {
    fn default() -> Self {
        Self {
            width: 256,
            blocks: 4,
            expansion: 2,
            time_features: 128,
            activation: Activation::Silu,
            dropout: 0.0,
        }
    }
}

#[typetag::serde(name = "mlp")]
impl DenoiserConfig for MlpDenoiserConfig {
    fn supported_injections(&self) -> Vec<Injection> {
        vec![
            Injection::Concat,
            Injection::Add,
            Injection::Film,
            Injection::Adaln,
        ]
    }
    fn build(&self, ctx: &DenoiserContext) -> Result<Box<dyn Denoiser>> {
        let p = "denoiser.mlp";
        if self.width == 0 || self.blocks == 0 || self.expansion == 0 || self.time_features < 2 {
            return Err(LatentError::config(
                p,
                "width/blocks/expansion/time_features",
                "positive (time_features ≥ 2)",
                format!(
                    "{}/{}/{}/{}",
                    self.width, self.blocks, self.expansion, self.time_features
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(LatentError::config(
                p,
                "dropout",
                "a value in [0, 1)",
                self.dropout,
            ));
        }
        if let Some((_, inj)) = ctx.condition {
            if !self.supported_injections().contains(&inj) {
                return Err(LatentError::Incompatible(format!("the mlp denoiser cannot inject a condition by {inj:?}; use concat, add, film or adaln, or the dit denoiser for cross_attention")));
            }
        }
        let dev = &ctx.dev;
        let mut rng = stream(ctx.seed, "denoiser.mlp");
        let w = self.width;
        let injection = ctx.condition.map(|(_, i)| i);
        let cond_dim = ctx.condition.map_or(0, |(d, _)| d);
        let input_width = ctx.latent_dim
            + if injection == Some(Injection::Concat) {
                cond_dim
            } else {
                0
            };
        let cond_proj = match injection {
            Some(Injection::Add | Injection::Film | Injection::Adaln) => Some(Linear::new(
                dev,
                cond_dim,
                w,
                Init::KaimingUniform,
                &mut rng,
            )?),
            _ => None,
        };
        let mut blocks = Vec::new();
        let (mut scale, mut shift, mut gate) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.blocks {
            blocks.push(ResidualBlock::new(
                dev,
                w,
                w * self.expansion,
                self.activation,
                true,
                self.dropout,
                &mut rng,
            )?);
            scale.push(Linear::new(dev, w, w, Init::Zeros, &mut rng)?);
            shift.push(Linear::new(dev, w, w, Init::Zeros, &mut rng)?);
            if injection == Some(Injection::Adaln) {
                gate.push(Linear::new(dev, w, w, Init::Zeros, &mut rng)?);
            }
        }
        Ok(Box::new(MlpDenoiser {
            config: self.clone(),
            injection,
            dev: dev.clone(),
            input: Linear::new(dev, input_width, w, Init::KaimingUniform, &mut rng)?,
            time1: Linear::new(dev, self.time_features, w, Init::KaimingUniform, &mut rng)?,
            time2: Linear::new(dev, w, w, Init::KaimingUniform, &mut rng)?,
            cond_proj,
            blocks,
            scale,
            shift,
            gate,
            out_norm: LayerNorm::new(dev, w),
            output: Linear::new(dev, w, ctx.latent_dim, Init::Zeros, &mut rng)?,
        }))
    }
}

register_plugin!(
    Denoiser,
    "mlp",
    "Residual MLP with sinusoidal time embedding; condition by concat, add, FiLM or adaLN-Zero",
    "type = \"mlp\"\nwidth = 128\nblocks = 2\nexpansion = 2\ntime_features = 64"
);

/// The residual MLP denoiser.
pub struct MlpDenoiser {
    config: MlpDenoiserConfig,
    injection: Option<Injection>,
    dev: Dev,
    input: Linear,
    time1: Linear,
    time2: Linear,
    cond_proj: Option<Linear>,
    blocks: Vec<ResidualBlock>,
    scale: Vec<Linear>,
    shift: Vec<Linear>,
    gate: Vec<Linear>,
    out_norm: LayerNorm,
    output: Linear,
}
parameters!(MlpDenoiser {
    input,
    time1,
    time2,
    cond_proj,
    blocks,
    scale,
    shift,
    gate,
    out_norm,
    output
});

impl MlpDenoiser {
    fn run<T: Taped>(
        &self,
        z: Tensor2<T>,
        t: &[f32],
        cond: Option<ConditionEmbedding<T>>,
        train: bool,
    ) -> Result<Tensor2<T>> {
        let (batch, _) = *z.shape();
        if t.len() != batch {
            return Err(LatentError::shape("mlp denoiser time", batch, t.len()));
        }
        let scaled: Vec<f32> = t.iter().map(|v| v * 1000.0).collect();
        let features = sinusoidal_tensor(&self.dev, &scaled, self.config.time_features, 10_000.0)?
            .retaped::<T>();
        let temb = self
            .time2
            .forward(Activation::Silu.forward(self.time1.forward(features)?))?;
        let cond = match (self.injection, cond) {
            (None, _) => None,
            (Some(_), Some(c)) => Some(c.vector),
            (Some(_), None) => {
                return Err(LatentError::Incompatible("this denoiser was built with a conditioner; pass a condition embedding (the null embedding for unconditional passes)".into()))
            }
        };
        let (mut h, e) = match (self.injection, cond, &self.cond_proj) {
            (Some(Injection::Concat), Some(c), _) => {
                (self.input.forward((z, c).concat_along(Axis::<1>))?, temb)
            }
            (Some(Injection::Film), Some(c), Some(p)) => {
                (self.input.forward(z)? + temb, p.forward(c)?)
            }
            (Some(Injection::Add | Injection::Adaln), Some(c), Some(p)) => {
                (self.input.forward(z)?, temb + p.forward(c)?)
            }
            _ => (self.input.forward(z)?, temb),
        };
        let uses = self.blocks.len() * if self.gate.is_empty() { 2 } else { 3 };
        let mut e = fan_out(Activation::Silu.forward(e), uses).into_iter();
        let mut next = || {
            e.next()
                .ok_or_else(|| LatentError::shape("mlp modulation", uses, "fewer"))
        };
        for (i, block) in self.blocks.iter().enumerate() {
            let modulation = Modulation {
                scale: self.scale[i].forward(next()?)?,
                shift: self.shift[i].forward(next()?)?,
                gate: match self.gate.get(i) {
                    Some(g) => Some(g.forward(next()?)?),
                    None => None,
                },
            };
            h = block.forward(h, Some(modulation), train)?;
        }
        self.output.forward(self.out_norm.forward(h)?)
    }
}

impl Denoiser for MlpDenoiser {
    fn forward_train(
        &self,
        z: Tensor2<TrainTape>,
        t: &[f32],
        cond: Option<ConditionEmbedding<TrainTape>>,
    ) -> Result<Tensor2<TrainTape>> {
        self.run(z, t, cond, true)
    }
    fn forward(
        &self,
        z: Tensor2,
        t: &[f32],
        cond: Option<ConditionEmbedding<NoneTape>>,
    ) -> Result<Tensor2> {
        self.run(z, t, cond, false)
    }
}
