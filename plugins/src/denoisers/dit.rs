//! DiT denoiser (Peebles & Xie 2023) on latent tokens: the latent vector is split into tokens of
//! `patch_size` values, each projected to `width` with a learned position embedding; transformer
//! blocks with multi-head self-attention and an MLP are modulated by adaLN-Zero from the time (+
//! condition) embedding; with `cross_attention` injection each block also attends to the
//! condition embedding as a context token. Output tokens are projected back and re-assembled.

use dfdx::prelude::*;
use latentlab_framework::device::{Dev, Taped, Tensor2, TrainTape};
use latentlab_framework::nn::{
    fan_out, modulate_tokens, residual_tokens, sinusoidal_tensor, Activation, Embedding, Init,
    LayerNorm, Linear, MultiHeadAttention,
};
use latentlab_framework::plugin::{
    ConditionEmbedding, Denoiser, DenoiserConfig, DenoiserContext, Injection,
};
use latentlab_framework::rng::stream;
use latentlab_framework::{parameters, register_plugin, LatentError, Result};
use serde::{Deserialize, Serialize};

/// Config of the `dit` denoiser.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DitConfig {
    /// Latent values per token (must divide the latent width). Default 4.
    pub patch_size: usize,
    /// Token width. Default 128.
    pub width: usize,
    /// Transformer blocks. Default 4.
    pub blocks: usize,
    /// Attention heads (must divide `width`). Default 4.
    pub heads: usize,
    /// MLP hidden width as a multiple of `width`. Default 4.
    pub mlp_ratio: usize,
    /// Width of the sinusoidal time features. Default 128.
    pub time_features: usize,
}

impl Default for DitConfig {
    fn default() -> Self {
        Self {
            patch_size: 4,
            width: 128,
            blocks: 4,
            heads: 4,
            mlp_ratio: 4,
            time_features: 128,
        }
    }
}

#[typetag::serde(name = "dit")]
impl DenoiserConfig for DitConfig {
    fn supported_injections(&self) -> Vec<Injection> {
        vec![Injection::Add, Injection::Adaln, Injection::CrossAttention]
    }
    fn build(&self, ctx: &DenoiserContext) -> Result<Box<dyn Denoiser>> {
        let p = "denoiser.dit";
        if self.patch_size == 0 || !ctx.latent_dim.is_multiple_of(self.patch_size) {
            return Err(LatentError::config(
                p,
                "patch_size",
                format!("a divisor of the latent width {}", ctx.latent_dim),
                self.patch_size,
            ));
        }
        if self.width == 0
            || self.heads == 0
            || !self.width.is_multiple_of(self.heads)
            || self.blocks == 0
            || self.mlp_ratio == 0
            || self.time_features < 2
        {
            return Err(LatentError::config(
                p,
                "width/heads/blocks/mlp_ratio",
                "positive, heads dividing width",
                format!(
                    "{}/{}/{}/{}",
                    self.width, self.heads, self.blocks, self.mlp_ratio
                ),
            ));
        }
        if let Some((_, inj)) = ctx.condition {
            if !self.supported_injections().contains(&inj) {
                return Err(LatentError::Incompatible(format!("the dit denoiser injects conditions by add, adaln or cross_attention, not {inj:?}")));
            }
        }
        let dev = &ctx.dev;
        let mut rng = stream(ctx.seed, p);
        let w = self.width;
        let injection = ctx.condition.map(|(_, i)| i);
        let cond_dim = ctx.condition.map_or(0, |(d, _)| d);
        let tokens = ctx.latent_dim / self.patch_size;
        let zeros = |rng: &mut rand::rngs::StdRng| Linear::new(dev, w, w, Init::Zeros, rng);
        let mut blocks = Vec::new();
        for _ in 0..self.blocks {
            blocks.push(DitBlock {
                norm1: LayerNorm::new(dev, w),
                attention: MultiHeadAttention::new(dev, w, w, self.heads, &mut rng)?,
                cross: if injection == Some(Injection::CrossAttention) {
                    Some(MultiHeadAttention::new(
                        dev, w, cond_dim, self.heads, &mut rng,
                    )?)
                } else {
                    None
                },
                norm2: LayerNorm::new(dev, w),
                fc1: Linear::new(dev, w, w * self.mlp_ratio, Init::KaimingUniform, &mut rng)?,
                fc2: Linear::new(dev, w * self.mlp_ratio, w, Init::KaimingUniform, &mut rng)?,
                modulation: (0..6).map(|_| zeros(&mut rng)).collect::<Result<_>>()?,
            });
        }
        Ok(Box::new(Dit {
            config: self.clone(),
            injection,
            tokens,
            dev: dev.clone(),
            patch_in: Linear::new(dev, self.patch_size, w, Init::XavierUniform, &mut rng)?,
            position: Embedding::new(dev, tokens, w, &mut rng)?,
            time1: Linear::new(dev, self.time_features, w, Init::KaimingUniform, &mut rng)?,
            time2: Linear::new(dev, w, w, Init::KaimingUniform, &mut rng)?,
            cond_proj: match injection {
                Some(Injection::Add | Injection::Adaln) => Some(Linear::new(
                    dev,
                    cond_dim,
                    w,
                    Init::KaimingUniform,
                    &mut rng,
                )?),
                _ => None,
            },
            blocks,
            final_norm: LayerNorm::new(dev, w),
            final_modulation: (0..2).map(|_| zeros(&mut rng)).collect::<Result<_>>()?,
            patch_out: Linear::new(dev, w, self.patch_size, Init::Zeros, &mut rng)?,
        }))
    }
}

register_plugin!(
    Denoiser,
    "dit",
    "Diffusion transformer on latent tokens: self-attention blocks with adaLN-Zero; condition by add, adaLN or cross-attention",
    "type = \"dit\"\npatch_size = 2\nwidth = 32\nblocks = 2\nheads = 2\nmlp_ratio = 2\ntime_features = 32"
);

/// One transformer block.
pub struct DitBlock {
    norm1: LayerNorm,
    attention: MultiHeadAttention,
    cross: Option<MultiHeadAttention>,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    /// shift1, scale1, gate1, shift2, scale2, gate2 (zero-initialized).
    modulation: Vec<Linear>,
}
parameters!(DitBlock {
    norm1,
    attention,
    cross,
    norm2,
    fc1,
    fc2,
    modulation
});

/// The DiT denoiser.
pub struct Dit {
    config: DitConfig,
    injection: Option<Injection>,
    tokens: usize,
    dev: Dev,
    patch_in: Linear,
    position: Embedding,
    time1: Linear,
    time2: Linear,
    cond_proj: Option<Linear>,
    blocks: Vec<DitBlock>,
    final_norm: LayerNorm,
    final_modulation: Vec<Linear>,
    patch_out: Linear,
}
parameters!(Dit {
    patch_in,
    position,
    time1,
    time2,
    cond_proj,
    blocks,
    final_norm,
    final_modulation,
    patch_out
});

impl Dit {
    fn run<T: Taped>(
        &self,
        z: Tensor2<T>,
        t: &[f32],
        cond: Option<ConditionEmbedding<T>>,
    ) -> Result<Tensor2<T>> {
        let (batch, dim) = *z.shape();
        if t.len() != batch || dim != self.tokens * self.config.patch_size {
            return Err(LatentError::shape(
                "dit input",
                format!(
                    "({batch}, {}) and {batch} times",
                    self.tokens * self.config.patch_size
                ),
                format!("({batch}, {dim}) and {} times", t.len()),
            ));
        }
        let rows = batch * self.tokens;
        let scaled: Vec<f32> = t.iter().map(|v| v * 1000.0).collect();
        let features = sinusoidal_tensor(&self.dev, &scaled, self.config.time_features, 10_000.0)?
            .retaped::<T>();
        let mut c = self
            .time2
            .forward(Activation::Silu.forward(self.time1.forward_data(features)?))?;
        let mut context = None;
        match (self.injection, cond) {
            (None, _) => {}
            (Some(Injection::CrossAttention), Some(e)) => context = Some(e.vector),
            (Some(_), Some(e)) => {
                let proj = self.cond_proj.as_ref().ok_or_else(|| {
                    LatentError::Incompatible("dit built without a condition projection".into())
                })?;
                c = c + proj.forward_repeated_rows(e.vector)?;
            }
            (Some(_), None) => {
                return Err(LatentError::Incompatible(
                    "this denoiser was built with a conditioner; pass a condition embedding".into(),
                ))
            }
        }
        // Every modulation is computed once per sample from the activated conditioning vector
        // and applied to each of the sample's tokens by the modulation and residual kernels
        // (the projection is row-wise, so projecting per-token copies would give the same
        // values for `tokens` times the work).
        let uses = self.blocks.len() * 6 + 2;
        let mut c_uses = fan_out(Activation::Silu.forward(c), uses).into_iter();
        let mut modulation = |layer: &Linear| -> Result<Tensor2<T>> {
            let c = c_uses
                .next()
                .ok_or_else(|| LatentError::shape("dit modulation", uses, "fewer"))?;
            layer.forward(c)
        };
        let positions: Vec<usize> = (0..rows).map(|r| r % self.tokens).collect();
        let mut h = self
            .patch_in
            .forward(z.reshape_like(&(rows, self.config.patch_size)))?
            + self.position.forward::<T>(&positions)?;
        let mut context_uses = context.map(|c| fan_out(c, self.blocks.len()).into_iter());
        for block in &self.blocks {
            let m: Vec<Tensor2<T>> = block
                .modulation
                .iter()
                .map(&mut modulation)
                .collect::<Result<_>>()?;
            let mut m = m.into_iter();
            let (Some(sh1), Some(sc1), Some(g1), Some(sh2), Some(sc2), Some(g2)) =
                (m.next(), m.next(), m.next(), m.next(), m.next(), m.next())
            else {
                return Err(LatentError::shape("dit modulation", 6, "fewer"));
            };
            let x = modulate_tokens(
                block.norm1.normalize(h.with_empty_tape())?,
                sc1,
                sh1,
                self.tokens,
            )?;
            let x_ctx = x.with_empty_tape();
            let attended = block.attention.forward(x, x_ctx, batch)?;
            h = residual_tokens(h, attended, Some(g1), self.tokens)?;
            if let (Some(cross), Some(ctx_iter)) = (&block.cross, context_uses.as_mut()) {
                let ctx = ctx_iter
                    .next()
                    .ok_or_else(|| LatentError::shape("dit context", 1, 0))?;
                let q = block.norm1.normalize(h.with_empty_tape())?;
                h = h + cross.forward(q, ctx, batch)?;
            }
            let y = modulate_tokens(
                block.norm2.normalize(h.with_empty_tape())?,
                sc2,
                sh2,
                self.tokens,
            )?;
            let y = block
                .fc2
                .forward(Activation::Gelu.forward(block.fc1.forward(y)?))?;
            h = residual_tokens(h, y, Some(g2), self.tokens)?;
        }
        let shift = modulation(&self.final_modulation[0])?;
        let scale = modulation(&self.final_modulation[1])?;
        let out = self.patch_out.forward(modulate_tokens(
            self.final_norm.normalize(h)?,
            scale,
            shift,
            self.tokens,
        )?)?;
        Ok(out.reshape_like(&(batch, dim)))
    }
}

impl Denoiser for Dit {
    fn forward_train(
        &self,
        z: Tensor2<TrainTape>,
        t: &[f32],
        cond: Option<ConditionEmbedding<TrainTape>>,
    ) -> Result<Tensor2<TrainTape>> {
        self.run(z, t, cond)
    }
    fn forward(
        &self,
        z: Tensor2,
        t: &[f32],
        cond: Option<ConditionEmbedding<NoneTape>>,
    ) -> Result<Tensor2> {
        self.run(z, t, cond)
    }
    fn rows_per_sample(&self) -> usize {
        self.tokens
    }
}
