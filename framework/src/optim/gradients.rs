//! Gradients pulled out of a dfdx backward pass, keyed by parameter name.
//!
//! Computing gradients and applying the optimizer are separate calls, so a data-parallel
//! all-reduce over [`NamedGradients`] fits between them.

use std::collections::BTreeMap;

use dfdx::prelude::*;
use rayon::prelude::*;

#[cfg(feature = "cuda")]
use crate::device::dense_values;
use crate::device::{Dev, Scalar, TrainTape};
use crate::nn::{ParamRef, Parameters};
use crate::{LatentError, Result};

/// Host copies of the gradient of every parameter, by stable name.
#[derive(Debug, Clone, Default)]
pub struct NamedGradients {
    /// Parameter name -> gradient values (row-major, same length as the parameter).
    pub by_name: BTreeMap<String, Vec<f32>>,
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

    /// Global L2 norm over all gradients (summed in f64 over fixed chunks, so the value does not
    /// depend on the thread count).
    pub fn global_norm(&self) -> f32 {
        self.by_name
            .values()
            .map(|g| {
                g.par_chunks(NORM_CHUNK)
                    .map(|c| c.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
                    .collect::<Vec<f64>>()
                    .into_iter()
                    .sum::<f64>()
            })
            .sum::<f64>()
            .sqrt() as f32
    }

    /// Scales all gradients so their global norm is at most `max_norm` (as PyTorch's
    /// `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when it is below one). Returns the norm
    /// before clipping.
    pub fn clip_global_norm(&mut self, max_norm: f32) -> f32 {
        let norm = self.global_norm();
        let factor = max_norm / (norm + 1e-6);
        if factor < 1.0 {
            for g in self.by_name.values_mut() {
                g.par_iter_mut().for_each(|x| *x *= factor);
            }
        }
        norm
    }

    /// True when every gradient value is finite.
    pub fn all_finite(&self) -> bool {
        self.by_name
            .values()
            .all(|g| g.iter().all(|x| x.is_finite()))
    }
}

/// Elements per parallel partial sum of [`NamedGradients::global_norm`].
const NORM_CHUNK: usize = 64 * 1024;

/// Moves the gradient of `t` out of dfdx's store (zeros when `t` took no part in the loss). On
/// the CPU the buffer itself is moved, not copied: parameters are leaves, and nothing reads their
/// gradient after the backward pass.
fn take_gradient<S: Shape>(
    grads: &mut Gradients<f32, Dev>,
    t: &Tensor<S, f32, Dev>,
) -> std::result::Result<Vec<f32>, String> {
    let n = t.shape().num_elements();
    #[cfg(not(feature = "cuda"))]
    let values = std::mem::take(&mut **grads.get_or_alloc_mut(t).map_err(|e| format!("{e:?}"))?);
    #[cfg(feature = "cuda")]
    let values = {
        grads.try_alloc_for(t).map_err(|e| format!("{e:?}"))?;
        dense_values(&grads.get(t))
    };
    if values.len() == n {
        Ok(values)
    } else {
        Err(format!(
            "{} gradient values for {n} parameters (a tensor visited under two names?)",
            values.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_matches_torch_formula() {
        let mut g = NamedGradients::default();
        g.by_name.insert("a".into(), vec![3.0, 0.0]);
        g.by_name.insert("b".into(), vec![4.0]);
        assert!((g.global_norm() - 5.0).abs() < 1e-6);
        let before = g.clip_global_norm(1.0);
        assert!((before - 5.0).abs() < 1e-6);
        assert!((g.global_norm() - 1.0).abs() < 1e-5);
        assert!((g.by_name["a"][0] - 0.6).abs() < 1e-5);
    }
}
