//! Residual MLP denoiser: input projection, pre-norm residual blocks modulated by the time (and
//! condition) embedding, zero-initialized output layer.
//!
//! Injection styles: `concat` appends the condition to the input; `add` adds its projection to the
//! time embedding, which FiLM-modulates every block; `film` modulates every block by the condition
//! alone (time is added at the input); `adaln` modulates with scale, shift and a zero-initialized
//! gate from time + condition (adaLN-Zero, Peebles & Xie 2023).

use dfdx::prelude::*;
use latentlab_framework::device::{host_values, Dev, Taped, Tensor2, TrainTape};
use latentlab_framework::nn::{
    fan_out, sinusoidal_tensor, Activation, Init, LayerNorm, Linear, Modulation, ResidualBlock,
    RowGroups,
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
        Ok(Box::new(self.build_mlp(ctx)?))
    }
}

impl MlpDenoiserConfig {
    fn build_mlp(&self, ctx: &DenoiserContext) -> Result<MlpDenoiser> {
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
        Ok(MlpDenoiser {
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
        })
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
        let cond = match (self.injection, cond) {
            (None, _) => None,
            (Some(_), Some(c)) => Some(c.vector),
            (Some(_), None) => {
                return Err(LatentError::Incompatible("this denoiser was built with a conditioner; pass a condition embedding (the null embedding for unconditional passes)".into()))
            }
        };
        let concat = self.injection == Some(Injection::Concat);
        let (hidden_cond, modulation_cond) = if concat { (cond, None) } else { (None, cond) };
        let h = self.hidden_input(z, t, hidden_cond)?;
        let modulations = match self.modulation_groups::<T>(t, modulation_cond.as_ref())? {
            Some(groups) => self.grouped_modulations(&groups, t, modulation_cond)?,
            None => self.modulations(self.modulation_input(t, modulation_cond)?)?,
        };
        let mut h = h;
        for (block, modulation) in self.blocks.iter().zip(modulations) {
            h = block.forward(h, Some(modulation), train)?;
        }
        self.output.forward(self.out_norm.forward(h)?)
    }

    /// `time2(SiLU(time1(sinusoid(1000 t))))`: `(len t, width)`.
    fn time_embedding<T: Taped>(&self, t: &[f32]) -> Result<Tensor2<T>> {
        let scaled: Vec<f32> = t.iter().map(|v| v * 1000.0).collect();
        let features = sinusoidal_tensor(&self.dev, &scaled, self.config.time_features, 10_000.0)?
            .retaped::<T>();
        self.time2
            .forward(Activation::Silu.forward(self.time1.forward_data(features)?))
    }

    /// The first hidden state: the input projection of `z` (with the condition appended for
    /// `concat`, plus the time embedding for `film`).
    fn hidden_input<T: Taped>(
        &self,
        z: Tensor2<T>,
        t: &[f32],
        concat_cond: Option<Tensor2<T>>,
    ) -> Result<Tensor2<T>> {
        match (self.injection, concat_cond) {
            (Some(Injection::Concat), Some(c)) => {
                self.input.forward((z, c).concat_along(Axis::<1>))
            }
            (Some(Injection::Film), _) => Ok(self.input.forward(z)? + self.time_embedding::<T>(t)?),
            _ => self.input.forward(z),
        }
    }

    /// The per-row vector every block's modulation is computed from: the time embedding, plus
    /// the projected condition (`add`, `adaln`), or the projected condition alone (`film`).
    fn modulation_input<T: Taped>(
        &self,
        t: &[f32],
        cond: Option<Tensor2<T>>,
    ) -> Result<Tensor2<T>> {
        match (self.injection, cond, &self.cond_proj) {
            (Some(Injection::Film), Some(c), Some(p)) => p.forward_repeated_rows(c),
            (Some(Injection::Add | Injection::Adaln), Some(c), Some(p)) => {
                Ok(self.time_embedding::<T>(t)? + p.forward_repeated_rows(c)?)
            }
            _ => self.time_embedding(t),
        }
    }

    /// Scale, shift (and gate, for adaLN-Zero) of every block from the modulation input `e`.
    fn modulations<T: Taped>(&self, e: Tensor2<T>) -> Result<Vec<Modulation<T>>> {
        let uses = self.blocks.len() * if self.gate.is_empty() { 2 } else { 3 };
        let mut e = fan_out(Activation::Silu.forward(e), uses).into_iter();
        let mut next = || {
            e.next()
                .ok_or_else(|| LatentError::shape("mlp modulation", uses, "fewer"))
        };
        (0..self.blocks.len())
            .map(|i| {
                Ok(Modulation {
                    scale: self.scale[i].forward(next()?)?,
                    shift: self.shift[i].forward(next()?)?,
                    gate: match self.gate.get(i) {
                        Some(g) => Some(g.forward(next()?)?),
                        None => None,
                    },
                })
            })
            .collect()
    }

    /// Without a tape, rows that share every input of the modulation path (at sampling time:
    /// the step's `t` and a class's condition embedding) share every modulation; `None` when
    /// recording gradients, when too few rows repeat, or on a device where grouping does not pay
    /// ([`RowGroups::PAYS_ON_THIS_DEVICE`]).
    fn modulation_groups<T: Taped>(
        &self,
        t: &[f32],
        cond: Option<&Tensor2<T>>,
    ) -> Result<Option<RowGroups>> {
        if T::OWNS_TAPE || !RowGroups::PAYS_ON_THIS_DEVICE {
            return Ok(None);
        }
        let uses_time = self.injection != Some(Injection::Film);
        let cond_values = cond.map(|c| host_values(c));
        let cond_width = cond.map_or(0, |c| c.shape().1);
        let width = usize::from(uses_time) + cond_width;
        let mut keys = Vec::with_capacity(t.len() * width);
        for (row, &time) in t.iter().enumerate() {
            if uses_time {
                keys.push(time);
            }
            if let Some(values) = &cond_values {
                keys.extend_from_slice(&values[row * cond_width..(row + 1) * cond_width]);
            }
        }
        if width == 0 {
            return Ok(None);
        }
        let groups = RowGroups::of(&keys, width)?;
        Ok(groups.worthwhile().then_some(groups))
    }

    /// [`Self::modulations`] computed once per group of `groups` and copied out to every row.
    fn grouped_modulations<T: Taped>(
        &self,
        groups: &RowGroups,
        t: &[f32],
        cond: Option<Tensor2<T>>,
    ) -> Result<Vec<Modulation<T>>> {
        let cond = match cond {
            Some(c) => Some(groups.select(&c.split_tape().0)?),
            None => None,
        };
        let expand = |x: Tensor2| -> Result<Tensor2<T>> { Ok(groups.expand(&x)?.retaped::<T>()) };
        self.modulations(self.modulation_input::<NoneTape>(&groups.pick(t)?, cond)?)?
            .into_iter()
            .map(|m| {
                Ok(Modulation {
                    scale: expand(m.scale)?,
                    shift: expand(m.shift)?,
                    gate: m.gate.map(expand).transpose()?,
                })
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use latentlab_framework::device::{device, tensor2};
    use latentlab_framework::nn::Parameters;
    use latentlab_framework::testing::spread_values;

    /// A sampling-time batch (one `t`, three distinct conditions among eight rows) takes the
    /// grouped modulation path; every row equals the same row computed alone (ungrouped), for
    /// every injection style, with every weight non-zero.
    #[test]
    fn grouped_modulations_match_row_by_row() {
        let dev = device(0).unwrap();
        let (batch, dim, cond_dim) = (8, 3, 5);
        let classes = [0u32, 1, 0, 2, 1, 0, 0, 2];
        let cond: Vec<f32> = classes
            .iter()
            .flat_map(|&c| spread_values(cond_dim, 7 + c, 1.0))
            .collect();
        let z = spread_values(batch * dim, 99, 1.0);
        let t = vec![0.3; batch];
        let injections = [
            None,
            Some(Injection::Concat),
            Some(Injection::Add),
            Some(Injection::Film),
            Some(Injection::Adaln),
        ];
        for injection in injections {
            let cfg = MlpDenoiserConfig {
                width: 16,
                blocks: 2,
                time_features: 8,
                ..Default::default()
            };
            let mut den = cfg
                .build_mlp(&DenoiserContext {
                    latent_dim: dim,
                    condition: injection.map(|i| (cond_dim, i)),
                    seed: 1,
                    dev: dev.clone(),
                })
                .unwrap();
            let mut k = 0;
            den.visit_mut("", &mut |_, mut p| {
                k += 1;
                let n = p.shape().iter().product();
                p.set(&spread_values(n, k, 0.5)).unwrap();
            });
            let embed = |rows: std::ops::Range<usize>| {
                injection.map(|_| ConditionEmbedding {
                    vector: tensor2(
                        &dev,
                        &cond[rows.start * cond_dim..rows.end * cond_dim],
                        rows.len(),
                        cond_dim,
                    )
                    .unwrap(),
                })
            };
            let grouped = den
                .modulation_groups::<NoneTape>(
                    &t,
                    embed(0..batch)
                        .filter(|_| injection != Some(Injection::Concat))
                        .map(|e| e.vector)
                        .as_ref(),
                )
                .unwrap();
            let expected_groups = match injection {
                None | Some(Injection::Concat) => 1,
                _ => 3,
            };
            assert_eq!(
                grouped.map(|g| g.distinct()),
                RowGroups::PAYS_ON_THIS_DEVICE.then_some(expected_groups)
            );
            let all = den
                .forward(tensor2(&dev, &z, batch, dim).unwrap(), &t, embed(0..batch))
                .unwrap()
                .as_vec();
            assert!(all.iter().any(|v| v.abs() > 1e-3), "{injection:?}: {all:?}");
            for r in 0..batch {
                let one = den
                    .forward(
                        tensor2(&dev, &z[r * dim..(r + 1) * dim], 1, dim).unwrap(),
                        &t[r..r + 1],
                        embed(r..r + 1),
                    )
                    .unwrap()
                    .as_vec();
                for (a, b) in all[r * dim..(r + 1) * dim].iter().zip(&one) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{injection:?} row {r}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
