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
        let (rows, width) = *x.shape();
        let (crows, context_width) = *context.shape();
        if batch == 0 || rows % batch != 0 || crows % batch != 0 {
            return Err(LatentError::shape(
                "MultiHeadAttention",
                format!("row counts divisible by batch {batch}"),
                format!("{rows} and {crows}"),
            ));
        }
        let (dim, cdim) = (self.query[0].inputs(), self.key[0].inputs());
        if width != dim || context_width != cdim {
            return Err(LatentError::shape(
                "MultiHeadAttention",
                format!("inputs (rows, {dim}) and context (rows, {cdim})"),
                format!("({rows}, {width}) and ({crows}, {context_width})"),
            ));
        }
        let hd = self.query[0].outputs();
        let scale = 1.0 / (hd as f32).sqrt();
        #[cfg(not(feature = "cuda"))]
        {
            Ok(self.all_heads(x, context, batch, scale))
        }
        #[cfg(feature = "cuda")]
        {
            self.head_by_head(x, context, batch, scale)
        }
    }

    /// All heads at once (CPU build): one product for the queries of every head, one for the
    /// keys and values, the fused attention kernel, one product for the output projection; the
    /// per-head parameters are joined for the products ([`super::joined_parameters`]).
    #[cfg(not(feature = "cuda"))]
    fn all_heads<T: Taped>(
        &self,
        x: Tensor2<T>,
        context: Tensor2<T>,
        batch: usize,
        scale: f32,
    ) -> Tensor2<T> {
        use super::joined_parameters::{join_columns, join_vectors, stack_rows, sum_vectors};
        use super::linear_cpu::{linear, LayerInput};
        use crate::device::Tensor1;
        fn weights<'a>(layers: &[&'a Vec<Linear>]) -> Vec<&'a Tensor2> {
            layers
                .iter()
                .flat_map(|l| l.iter().map(|l| &l.weight))
                .collect()
        }
        fn biases<'a>(layers: &[&'a Vec<Linear>]) -> Vec<&'a Tensor1> {
            layers
                .iter()
                .flat_map(|l| l.iter().map(|l| &l.bias))
                .collect()
        }
        // The joins' backward ops are recorded before the products that read the joined values,
        // so they run after those products' backward ops have filled the joined gradients.
        let (x, mut tape) = x.split_tape();
        let wq = join_columns(&mut tape, &weights(&[&self.query]));
        let bq = join_vectors(&mut tape, &biases(&[&self.query]));
        let wkv = join_columns(&mut tape, &weights(&[&self.key, &self.value]));
        let bkv = join_vectors(&mut tape, &biases(&[&self.key, &self.value]));
        let wo = stack_rows(&mut tape, &weights(&[&self.output]));
        let bo = sum_vectors(&mut tape, &biases(&[&self.output]));
        let q = linear(x.put_tape(tape), &wq, &bq, LayerInput::Hidden);
        let kv = linear(context, &wkv, &bkv, LayerInput::Hidden);
        let heads = super::attention_cpu::attention_heads(q, kv, self.query.len(), batch, scale);
        linear(heads, &wo, &bo, LayerInput::Hidden)
    }

    /// Head by head (CUDA build; the CPU tests' reference): each head's projections, dfdx's
    /// batched products and softmax, and the sum of the heads' output projections.
    #[cfg(any(feature = "cuda", test))]
    fn head_by_head<T: Taped>(
        &self,
        x: Tensor2<T>,
        context: Tensor2<T>,
        batch: usize,
        scale: f32,
    ) -> Result<Tensor2<T>> {
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

/// One head's `softmax(q kᵀ · scale) v` per sequence (CUDA build; the CPU tests' reference):
/// `q (batch · tokens, hd)`, `k` and `v` `(batch · ctx_tokens, hd)`, result `(batch · tokens,
/// hd)`, from dfdx's batched products and softmax.
#[cfg(any(feature = "cuda", test))]
fn attend<T: Taped>(
    q: Tensor2<T>,
    k: Tensor2<T>,
    v: Tensor2<T>,
    batch: usize,
    scale: f32,
) -> Tensor2<T> {
    let ((rows, hd), ctx_rows) = (*q.shape(), k.shape().0);
    let q = q.reshape_like(&(batch, rows / batch, hd));
    let k = k.reshape_like(&(batch, ctx_rows / batch, hd));
    let v = v.reshape_like(&(batch, ctx_rows / batch, hd));
    let scores = q.matmul(k.permute::<_, Axes3<0, 2, 1>>()) * scale;
    let weights = scores.softmax::<Axis<2>>();
    weights.matmul(v).reshape_like(&(rows, hd))
}

#[cfg(all(test, not(feature = "cuda")))]
mod tests {
    use super::*;
    use crate::device::{device, tensor2, TrainTape};
    use crate::nn::{ParamRef, Parameters};
    use rand::SeedableRng;

    /// All heads at once (the CPU path) equals head by head (the CUDA path, dfdx's products and
    /// softmax) in values and in the gradients of every parameter, the inputs and the context:
    /// self-attention (the context is the input), cross-attention to one context token of
    /// another width, and the DiT's reference block shape.
    #[test]
    fn all_heads_at_once_equal_head_by_head() {
        let dev = device(0).unwrap();
        for (batch, tokens, dim, heads, context) in [
            (3, 4, 8, 2, None),
            (2, 3, 8, 4, Some((1, 5))),
            (5, 16, 32, 4, None),
        ] {
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let cdim = context.map_or(dim, |(_, w)| w);
            let attention = MultiHeadAttention::new(&dev, dim, cdim, heads, &mut rng).unwrap();
            let matrix = |rows: usize, width: usize, seed: u32| {
                let values = crate::testing::spread_values(rows * width, seed, 1.5);
                tensor2(&dev, &values, rows, width).unwrap()
            };
            let x = matrix(batch * tokens, dim, 1);
            let c = context.map(|(keys, w)| matrix(batch * keys, w, 2));
            let r = matrix(batch * tokens, dim, 3);
            let scale = 1.0 / ((dim / heads) as f32).sqrt();
            let run = |at_once: bool| {
                let xt = x.clone().retaped::<TrainTape>();
                let ct = match &c {
                    Some(c) => c.clone().retaped::<TrainTape>(),
                    None => xt.with_empty_tape(),
                };
                let y = if at_once {
                    attention.all_heads(xt, ct, batch, scale)
                } else {
                    attention.head_by_head(xt, ct, batch, scale).unwrap()
                };
                let mut values = vec![y.as_vec()];
                let mut grads = (y * r.clone()).sum::<(), _>().backward();
                values.push(grads.get(&x).as_vec());
                if let Some(c) = &c {
                    values.push(grads.get(c).as_vec());
                }
                attention.visit("", &mut |_, p| match p {
                    ParamRef::Matrix(t) => {
                        grads.try_alloc_for(t).unwrap();
                        values.push(grads.get(t).as_vec());
                    }
                    ParamRef::Vector(t) => {
                        grads.try_alloc_for(t).unwrap();
                        values.push(grads.get(t).as_vec());
                    }
                });
                values
            };
            let (reference, fused) = (run(false), run(true));
            assert_eq!(reference.len(), fused.len());
            for (k, (a, b)) in reference.iter().zip(&fused).enumerate() {
                assert_eq!(a.len(), b.len());
                for (u, w) in a.iter().zip(b) {
                    assert!(
                        (u - w).abs() <= 1e-4 * (1.0 + u.abs()),
                        "tensor {k} of {:?}: {u} vs {w}",
                        (batch, tokens, dim, heads, context)
                    );
                }
            }
        }
    }

    /// Inputs or contexts of the wrong width are shape errors, not panics in the products.
    #[test]
    fn wrong_widths_are_shape_errors() {
        let dev = device(0).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let attention = MultiHeadAttention::new(&dev, 8, 5, 2, &mut rng).unwrap();
        let good: Tensor2 = dev.zeros_like(&(4, 8));
        let context: Tensor2 = dev.zeros_like(&(2, 5));
        assert!(attention.forward(good.clone(), context.clone(), 2).is_ok());
        let wide: Tensor2 = dev.zeros_like(&(4, 9));
        assert!(matches!(
            attention.forward(wide, context, 2),
            Err(LatentError::Shape { .. })
        ));
        let narrow: Tensor2 = dev.zeros_like(&(2, 4));
        assert!(matches!(
            attention.forward(good, narrow, 2),
            Err(LatentError::Shape { .. })
        ));
    }
}
