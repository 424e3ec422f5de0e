//! Gradients pulled out of a dfdx backward pass, keyed by parameter name.
//!
//! Computing gradients and applying the optimizer are separate calls, so a data-parallel
//! all-reduce over [`NamedGradients`] fits between them.

use std::collections::BTreeMap;

use dfdx::prelude::*;
#[cfg(not(feature = "cuda"))]
use dfdx::tensor::UniqueId;
#[cfg(not(feature = "cuda"))]
use rayon::prelude::*;

use crate::device::{Dev, Scalar, Tensor1, TrainTape};
#[cfg(not(feature = "cuda"))]
use crate::nn::deferred_weight_gradients::{
    collect_weight_products, sum_weight_products, WeightProduct,
};
use crate::nn::{ParamRef, Parameters};
use crate::{LatentError, Result};

/// The gradient of every parameter, by stable name, as flat vectors on the model's device (host
/// memory on the CPU build, GPU memory on CUDA: no transfer between backward and the update).
#[derive(Debug, Clone, Default)]
pub struct NamedGradients {
    /// Parameter name -> gradient values (row-major, same length as the parameter).
    pub by_name: BTreeMap<String, Tensor1>,
}

impl NamedGradients {
    /// Runs backward on `loss` and collects gradients for every parameter of `model` (named under
    /// `prefix`). Parameters that did not take part in the loss get zero gradients.
    ///
    /// # Errors
    /// [`LatentError::NonFinite`] when the loss is NaN or infinite.
    pub fn backward(
        loss: Scalar<TrainTape>,
        model: &dyn Parameters,
        prefix: &str,
    ) -> Result<(f32, Self)> {
        let value = finite_value(&loss)?;
        Self::take_all(loss.backward(), model, prefix, &mut |_, _, _| true).map(|g| (value, g))
    }

    /// Moves the gradient of every parameter of `model` for which `wanted(name, parameter)` out
    /// of `grads` (zeros for those that took no part in the loss).
    fn take_all(
        mut grads: Gradients<f32, Dev>,
        model: &dyn Parameters,
        prefix: &str,
        wanted: &mut Wanted<'_>,
    ) -> Result<Self> {
        let mut out = Self::default();
        let mut failure = None;
        model.visit(prefix, &mut |name, p| {
            if !wanted(name, &p, &grads) {
                return;
            }
            let values = match p {
                ParamRef::Vector(t) => take_gradient(&mut grads, t),
                ParamRef::Matrix(t) => take_gradient(&mut grads, t),
            };
            match values {
                Ok(v) => {
                    out.by_name.insert(name.to_string(), v);
                }
                Err(e) => failure = Some(format!("{name}: {e}")),
            }
        });
        match failure {
            Some(f) => Err(LatentError::NonFinite(format!(
                "gradient extraction failed for {f}"
            ))),
            None => Ok(out),
        }
    }

    /// [`NamedGradients::backward`] for one shard of a data-parallel batch: on the CPU the linear
    /// layers' weight-gradient products are left for [`NamedGradients::sum_shards`] (decision
    /// 0020) instead of being computed here.
    ///
    /// # Errors
    /// As [`NamedGradients::backward`].
    pub fn backward_shard(
        loss: Scalar<TrainTape>,
        model: &dyn Parameters,
        prefix: &str,
    ) -> Result<(f32, ShardGradients)> {
        #[cfg(not(feature = "cuda"))]
        {
            let value = finite_value(&loss)?;
            let (grads, deferred) = collect_weight_products(|| loss.backward());
            let mut products: BTreeMap<UniqueId, Vec<WeightProduct>> = BTreeMap::new();
            for (id, product) in deferred {
                products.entry(id).or_default().push(product);
            }
            let mut by_weight = BTreeMap::new();
            // A weight with products keeps a dfdx gradient only where something else added one.
            let named = Self::take_all(grads, model, prefix, &mut |name, p, grads| {
                let ParamRef::Matrix(t) = p else {
                    return true;
                };
                let Some(ps) = products.remove(&t.unique_id()) else {
                    return true;
                };
                by_weight.insert(name.to_string(), ps);
                grads.contains(*t)
            })?;
            Ok((
                value,
                ShardGradients {
                    named,
                    products: by_weight,
                },
            ))
        }
        #[cfg(feature = "cuda")]
        {
            let (value, named) = Self::backward(loss, model, prefix)?;
            Ok((value, ShardGradients { named }))
        }
    }

    /// The gradients of a data-parallel batch from its shards' (in shard order, the order that
    /// makes the sums independent of the thread count): dfdx's gradients summed shard by shard,
    /// then on the CPU each deferred weight gradient computed from its products in shard order
    /// (weights in parallel) and added.
    ///
    /// # Errors
    /// [`LatentError::Shape`] when the shards hold different parameters; an error for no shards.
    pub fn sum_shards(shards: Vec<ShardGradients>) -> Result<Self> {
        let mut shards = shards.into_iter();
        let first = shards
            .next()
            .ok_or_else(|| LatentError::Data("a training batch without rows".into()))?;
        let mut sum = first.named;
        #[cfg(not(feature = "cuda"))]
        let mut products = first.products;
        for shard in shards {
            sum.add_assign(&shard.named)?;
            #[cfg(not(feature = "cuda"))]
            for (name, ps) in shard.products {
                products.entry(name).or_default().extend(ps);
            }
        }
        #[cfg(not(feature = "cuda"))]
        {
            let products: Vec<(String, Vec<WeightProduct>)> = products.into_iter().collect();
            let gradients = crate::nn::run_tiles(products.len(), |i| {
                sum_weight_products(&products[i].1).ok_or_else(|| {
                    LatentError::Data(format!("no gradient products for {}", products[i].0))
                })
            })?;
            for ((name, _), g) in products.into_iter().zip(gradients) {
                match sum.by_name.get_mut(&name) {
                    Some(other) => add_into(other, &g),
                    None => {
                        sum.by_name.insert(name, g);
                    }
                }
            }
        }
        Ok(sum)
    }

    /// Adds `other`'s gradients to these, name by name (the reduction of data-parallel shards;
    /// summing shards in a fixed order keeps the result independent of the thread count).
    ///
    /// # Errors
    /// [`LatentError::Shape`] when the two hold different names or lengths.
    pub fn add_assign(&mut self, other: &NamedGradients) -> Result<()> {
        let mismatch = |expected: String, got: String| LatentError::Shape {
            op: "sum of shard gradients".into(),
            expected,
            got,
        };
        if self.by_name.len() != other.by_name.len() {
            return Err(mismatch(
                format!("{} parameters", self.by_name.len()),
                format!("{}", other.by_name.len()),
            ));
        }
        for (name, g) in &mut self.by_name {
            let h = other
                .by_name
                .get(name)
                .ok_or_else(|| mismatch(name.clone(), "no such gradient".into()))?;
            if g.shape() != h.shape() {
                return Err(mismatch(
                    format!("{name} of {:?} values", g.shape().0),
                    format!("{:?}", h.shape().0),
                ));
            }
            add_into(g, h);
        }
        Ok(())
    }

    /// Global L2 norm over all gradients. On the CPU it is summed in f64 over fixed chunks, so
    /// the value does not depend on the thread count; on CUDA it is reduced on the device and
    /// only the final value is read back.
    pub fn global_norm(&self) -> f32 {
        #[cfg(not(feature = "cuda"))]
        {
            self.by_name
                .values()
                .map(|g| {
                    crate::device::host_values(g)
                        .par_chunks(PASS_CHUNK)
                        .map(sum_of_squares)
                        .collect::<Vec<f64>>()
                        .into_iter()
                        .sum::<f64>()
                })
                .sum::<f64>()
                .sqrt() as f32
        }
        #[cfg(feature = "cuda")]
        {
            self.by_name
                .values()
                .map(|g| g.clone().square().sum())
                .reduce(|a, b| a + b)
                .map_or(0.0, |total| total.array().sqrt())
        }
    }

    /// Scales all gradients so their global norm is at most `max_norm` (as PyTorch's
    /// `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when it is below one). Returns the norm
    /// before clipping.
    pub fn clip_global_norm(&mut self, max_norm: f32) -> f32 {
        let norm = self.global_norm();
        let factor = max_norm / (norm + 1e-6);
        if factor < 1.0 {
            for g in self.by_name.values_mut() {
                scale(g, factor);
            }
        }
        norm
    }
}

/// The loss's value.
///
/// # Errors
/// [`LatentError::NonFinite`] when it is NaN or infinite.
fn finite_value(loss: &Scalar<TrainTape>) -> Result<f32> {
    let value = loss.array();
    if value.is_finite() {
        Ok(value)
    } else {
        Err(LatentError::NonFinite(format!("loss ({value})")))
    }
}

/// Whether [`NamedGradients::take_all`] takes a parameter's gradient, by name, parameter and the
/// backward pass's gradients.
type Wanted<'a> = dyn FnMut(&str, &ParamRef<'_>, &Gradients<f32, Dev>) -> bool + 'a;

/// One shard's gradients ([`NamedGradients::backward_shard`]), to be summed with the other
/// shards' by [`NamedGradients::sum_shards`].
pub struct ShardGradients {
    /// The gradients dfdx summed.
    named: NamedGradients,
    /// Deferred weight-gradient products by parameter name, in the order they were deferred.
    #[cfg(not(feature = "cuda"))]
    products: BTreeMap<String, Vec<WeightProduct>>,
}

/// Multiplies every value of `g` by `factor`, in place where the storage allows.
fn scale(g: &mut Tensor1, factor: f32) {
    #[cfg(not(feature = "cuda"))]
    if let Some(values) = g.dense_slice_mut() {
        values.par_iter_mut().for_each(|x| *x *= factor);
        return;
    }
    *g = g.clone() * factor;
}

/// `g += h` elementwise, in place where the storage allows.
fn add_into(g: &mut Tensor1, h: &Tensor1) {
    #[cfg(not(feature = "cuda"))]
    if let Some(values) = g.dense_slice_mut() {
        let other = crate::device::host_values(h);
        values
            .par_chunks_mut(PASS_CHUNK)
            .zip(other.par_chunks(PASS_CHUNK))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(x, y)| *x += y));
        return;
    }
    *g = g.clone() + h.clone();
}

/// `Σ x²` in `f64` over eight interleaved partial sums, added in a fixed order (so the value
/// depends on the values alone): a single running sum is a chain of dependent additions, four
/// cycles each, which made the norm of a small model's gradients 6 % of its training step.
#[cfg(not(feature = "cuda"))]
fn sum_of_squares(values: &[f32]) -> f64 {
    let (blocks, rest) = values.as_chunks::<8>();
    let mut lanes = [0.0f64; 8];
    for block in blocks {
        for (lane, &x) in lanes.iter_mut().zip(block) {
            *lane += f64::from(x) * f64::from(x);
        }
    }
    let mut total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
        + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for &x in rest {
        total += f64::from(x) * f64::from(x);
    }
    total
}

/// Elements per parallel task of the passes over gradients: [`NamedGradients::global_norm`]'s
/// partial sums (fixed, so the norm does not depend on the thread count) and shard sums.
#[cfg(not(feature = "cuda"))]
const PASS_CHUNK: usize = 64 * 1024;

/// Moves the gradient of `t` out of dfdx's store as a flat vector (zeros when `t` took no part in
/// the loss). On the CPU the buffer itself is moved, not copied: parameters are leaves, and
/// nothing reads their gradient after the backward pass. On CUDA it is copied on the device.
fn take_gradient<S: Shape>(
    grads: &mut Gradients<f32, Dev>,
    t: &Tensor<S, f32, Dev>,
) -> std::result::Result<Tensor1, String> {
    let n = t.shape().num_elements();
    let stored = grads.get_or_alloc_mut(t).map_err(|e| format!("{e:?}"))?;
    let len = t.device().len(stored);
    if len != n {
        return Err(format!(
            "{len} gradient values for {n} parameters (a tensor visited under two names?)"
        ));
    }
    #[cfg(not(feature = "cuda"))]
    let flat = t
        .device()
        .try_tensor_from_vec(std::mem::take(&mut **stored), (n,))
        .map_err(|e| format!("{e:?}"))?;
    #[cfg(feature = "cuda")]
    let flat = grads
        .get(t)
        .try_reshape_like(&(n,))
        .map_err(|e| format!("{e:?}"))?;
    Ok(flat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::tensor1;

    /// The eight-lane sum: exact on integers (1² + … + 21² = 3,311, with a 5-value tail), equal
    /// to a plain running sum to rounding on 1,003 spread values, and +0 for nothing.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn sum_of_squares_lanes() {
        let ints: Vec<f32> = (1..=21).map(|i| i as f32).collect();
        assert_eq!(sum_of_squares(&ints), 3311.0);
        let spread = crate::testing::spread_values(1003, 7, 3.0);
        let plain: f64 = spread.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        assert!((sum_of_squares(&spread) - plain).abs() <= 1e-12 * plain);
        assert_eq!(sum_of_squares(&[]).to_bits(), 0.0f64.to_bits());
    }

    #[test]
    fn clipping_matches_torch_formula() {
        let dev = crate::device::device(0).unwrap();
        let mut g = NamedGradients::default();
        g.by_name.insert("a".into(), tensor1(&dev, &[3.0, 0.0]));
        g.by_name.insert("b".into(), tensor1(&dev, &[4.0]));
        assert!((g.global_norm() - 5.0).abs() < 1e-6);
        let before = g.clip_global_norm(1.0);
        assert!((before - 5.0).abs() < 1e-6);
        assert!((g.global_norm() - 1.0).abs() < 1e-5);
        assert!((g.by_name["a"].as_vec()[0] - 0.6).abs() < 1e-5);
    }
}
