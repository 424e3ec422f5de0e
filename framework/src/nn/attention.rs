//! Multi-head scaled dot-product attention over token sequences (self- and cross-attention).

use dfdx::prelude::*;
use rand::Rng;

use super::{Init, Linear};
use crate::device::{Dev, Taped, Tensor2};
use crate::{LatentError, Result};

/// Multi-head attention. Queries come from `x` `(batch * tokens, dim)`, keys and values from
/// `context` `(batch * context_tokens, context_dim)` (`context = x` for self-attention).
///
/// Each head has its own `dim -> head_dim` projections; the output projection of each head is
/// summed, which is exactly `concat(heads) · W_o` of the usual formulation.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    /// Query projection per head `(dim, head_dim)`.
    pub query: Vec<Linear>,
    /// Key projection per head `(context_dim, head_dim)`.
    pub key: Vec<Linear>,
    /// Value projection per head `(context_dim, head_dim)`.
    pub value: Vec<Linear>,
    /// Output projection per head `(head_dim, dim)`.
    pub output: Vec<Linear>,
}
crate::parameters!(MultiHeadAttention {
    query,
    key,
    value,
    output
});

impl MultiHeadAttention {
    /// Creates attention with `heads` heads of width `dim / heads`.
    ///
    /// # Errors
    /// [`LatentError::InvalidConfig`] when `dim` is not divisible by `heads`.
    pub fn new(
        dev: &Dev,
        dim: usize,
        context_dim: usize,
        heads: usize,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(LatentError::config(
                "nn.attention",
                "heads",
                format!("a divisor of dim {dim}"),
                heads,
            ));
        }
        let hd = dim / heads;
        let mut make = |i, o, n| {
            (0..n)
                .map(|_| Linear::new(dev, i, o, Init::XavierUniform, rng))
                .collect::<Result<Vec<_>>>()
        };
        Ok(Self {
            query: make(dim, hd, heads)?,
            key: make(context_dim, hd, heads)?,
            value: make(context_dim, hd, heads)?,
            output: make(hd, dim, heads)?,
        })
    }

    /// Attends `x` (`batch * tokens` rows) to `context` (`batch * context_tokens` rows).
    ///
    /// # Errors
    /// [`LatentError::Shape`] when row counts are not multiples of `batch` or widths disagree.
    pub fn forward<T: Taped>(
        &self,
        x: Tensor2<T>,
        context: Tensor2<T>,
        batch: usize,
    ) -> Result<Tensor2<T>> {
        let (rows, _) = *x.shape();
        let (crows, _) = *context.shape();
        if batch == 0 || rows % batch != 0 || crows % batch != 0 {
            return Err(LatentError::shape(
                "MultiHeadAttention",
                format!("row counts divisible by batch {batch}"),
                format!("{rows} and {crows}"),
            ));
        }
        let hd = self.query[0].outputs();
        let scale = 1.0 / (hd as f32).sqrt();
        let (x, mut x_tape) = x.split_tape();
        let (context, mut ctx_tape) = context.split_tape();
        let mut out: Option<Tensor2<T>> = None;
        for h in 0..self.query.len() {
            // The recorded history of each input is attached to exactly one of its uses.
            let xq = x.clone().put_tape(std::mem::take(&mut x_tape));
            let ck = context.clone().put_tape(std::mem::take(&mut ctx_tape));
            let cv = context.clone().put_tape(T::default());
            let q = self.query[h].forward(xq)?;
            let k = self.key[h].forward(ck)?;
            let v = self.value[h].forward(cv)?;
            let heads = attend(q, k, v, batch, scale);
            let projected = self.output[h].forward(heads)?;
            out = Some(match out {
                None => projected,
                Some(acc) => acc + projected,
            });
        }
        out.ok_or_else(|| LatentError::config("nn.attention", "heads", "at least 1", 0))
    }
}

/// One head's `softmax(q kᵀ · scale) v` per sequence: `q (batch · tokens, hd)`, `k` and `v`
/// `(batch · ctx_tokens, hd)`, result `(batch · tokens, hd)`; one fused kernel on the CPU, dfdx's
/// batched products and softmax on CUDA.
fn attend<T: Taped>(
    q: Tensor2<T>,
    k: Tensor2<T>,
    v: Tensor2<T>,
    batch: usize,
    scale: f32,
) -> Tensor2<T> {
    #[cfg(not(feature = "cuda"))]
    {
        super::attention_cpu::attention_head(q, k, v, batch, scale)
    }
    #[cfg(feature = "cuda")]
    {
        let ((rows, hd), ctx_rows) = (*q.shape(), k.shape().0);
        let q = q.reshape_like(&(batch, rows / batch, hd));
        let k = k.reshape_like(&(batch, ctx_rows / batch, hd));
        let v = v.reshape_like(&(batch, ctx_rows / batch, hd));
        let scores = q.matmul(k.permute::<_, Axes3<0, 2, 1>>()) * scale;
        let weights = scores.softmax::<Axis<2>>();
        weights.matmul(v).reshape_like(&(rows, hd))
    }
}
