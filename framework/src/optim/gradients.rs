//! Gradients pulled out of a dfdx backward pass, keyed by parameter name.
//!
//! Computing gradients and applying the optimizer are separate calls, so a data-parallel
//! all-reduce over [`NamedGradients`] fits between them.

use std::collections::BTreeMap;

use dfdx::prelude::*;
#[cfg(not(feature = "cuda"))]
use rayon::prelude::*;

use crate::device::{Dev, Scalar, Tensor1, TrainTape};
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
        let value = loss.array();
        if !value.is_finite() {
            return Err(LatentError::NonFinite(format!("loss ({value})")));
        }
        let mut grads: Gradients<f32, Dev> = loss.backward();
        let mut out = Self::default();
        let mut failure = None;
        model.visit(prefix, &mut |name, p| {
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
            None => Ok((value, out)),
        }
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
                        .map(|c| c.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
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
