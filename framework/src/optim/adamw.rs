//! AdamW (Loshchilov & Hutter) with decoupled weight decay, matching `torch.optim.AdamW`.

use std::collections::BTreeMap;

use dfdx::prelude::*;
#[cfg(not(feature = "cuda"))]
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::state_buffer::StateBuffer;
use super::NamedGradients;
use crate::checkpoint::TensorMap;
#[cfg(feature = "cuda")]
use crate::nn::ParamMut;
use crate::nn::Parameters;
use crate::{LatentError, Result};

/// AdamW hyper-parameters (defaults are PyTorch's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// First-moment decay. Default 0.9.
    pub beta1: f32,
    /// Second-moment decay. Default 0.999.
    pub beta2: f32,
    /// Added to the denominator. Default 1e-8.
    pub eps: f32,
    /// Decoupled weight decay. Default 0.01.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// Moment buffers of one parameter (on the parameter's device).
#[derive(Debug, Clone)]
struct Moments {
    m: StateBuffer,
    v: StateBuffer,
}

/// AdamW optimizer state keyed by parameter name. The update runs where the parameters live: in
/// place on the host (rayon-parallel) on the CPU build, as one fused dfdx kernel per parameter
/// on CUDA, with moments kept on the device.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    step: u64,
    moments: BTreeMap<String, Moments>,
}

impl AdamW {
    /// Creates an optimizer with empty state.
    ///
    /// # Errors
    /// [`LatentError::InvalidConfig`] for betas outside [0, 1) or negative eps/decay.
    pub fn new(config: AdamWConfig) -> Result<Self> {
        for (field, v) in [("beta1", config.beta1), ("beta2", config.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(LatentError::config(
                    "optim.adamw",
                    field,
                    "a value in [0, 1)",
                    v,
                ));
            }
        }
        if config.eps < 0.0 || config.weight_decay < 0.0 {
            return Err(LatentError::config(
                "optim.adamw",
                "eps/weight_decay",
                "non-negative",
                format!("{}/{}", config.eps, config.weight_decay),
            ));
        }
        Ok(Self {
            config,
            step: 0,
            moments: BTreeMap::new(),
        })
    }

    /// Number of updates applied so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The state to checkpoint: updates taken and the moment buffers as tensors `m.<name>` and
    /// `v.<name>`.
    pub fn state(&self) -> (u64, TensorMap) {
        let mut map = TensorMap::new();
        for (name, s) in &self.moments {
            map.insert(format!("m.{name}"), (vec![s.m.len()], s.m.to_host()));
            map.insert(format!("v.{name}"), (vec![s.v.len()], s.v.to_host()));
        }
        (self.step, map)
    }

    /// Continues from a state written by [`AdamW::state`].
    ///
    /// # Errors
    /// [`LatentError::Checkpoint`]-style data error when a first moment has no second moment.
    pub fn restore_state(&mut self, step: u64, map: &TensorMap) -> Result<()> {
        self.step = step;
        self.moments.clear();
        for (key, (_, m)) in map {
            let Some(name) = key.strip_prefix("m.") else {
                continue;
            };
            let v = map
                .get(&format!("v.{name}"))
                .filter(|(_, v)| v.len() == m.len())
                .ok_or_else(|| {
                    LatentError::Data(format!(
                        "optimizer state: second moment of {name} missing or mis-sized"
                    ))
                })?;
            self.moments.insert(
                name.to_string(),
                Moments {
                    m: StateBuffer::from_host(m.clone()),
                    v: StateBuffer::from_host(v.1.clone()),
                },
            );
        }
        Ok(())
    }

    /// Applies one update with learning rate `lr` to every parameter of `model` that has a gradient.
    ///
    /// # Errors
    /// [`LatentError::Shape`] when a gradient's or a restored moment's length differs from its
    /// parameter; [`LatentError::Incompatible`] when the CUDA kernel fails to launch.
    pub fn apply(
        &mut self,
        model: &mut dyn Parameters,
        prefix: &str,
        grads: &NamedGradients,
        lr: f32,
    ) -> Result<()> {
        self.step += 1;
        let rule = UpdateRule {
            config: self.config,
            step: self.step,
            lr,
        };
        let mut failure = None;
        let moments = &mut self.moments;
        model.visit_mut(prefix, &mut |name, mut p| {
            let Some(g) = grads.by_name.get(name) else {
                return;
            };
            let n: usize = p.shape().iter().product();
            if g.shape().0 != n {
                failure = Some(LatentError::shape(format!("AdamW({name})"), n, g.shape().0));
                return;
            }
            if !moments.contains_key(name) {
                let zeros = || StateBuffer::from_device(g.device().zeros_like(&(n,)));
                let fresh = Moments {
                    m: zeros(),
                    v: zeros(),
                };
                moments.insert(name.to_string(), fresh);
            }
            let Some(state) = moments.get_mut(name) else {
                return;
            };
            if state.m.len() != n || state.v.len() != n {
                failure = Some(LatentError::shape(
                    format!("AdamW({name}) restored moments"),
                    n,
                    format!("{}/{}", state.m.len(), state.v.len()),
                ));
                return;
            }
            let m = state.m.on_device(g.device());
            let v = state.v.on_device(g.device());
            if let Err(e) = update(rule, name, &mut p, m, v, g) {
                failure = Some(e);
            }
        });
        failure.map_or(Ok(()), Err)
    }
}

/// The hyper-parameters of one update.
#[derive(Debug, Clone, Copy)]
struct UpdateRule {
    config: AdamWConfig,
    step: u64,
    lr: f32,
}

/// The error for a parameter, moment or gradient that is a strided view (never built by
/// latentlab's layers; the update needs each as one dense buffer).
fn strided(name: &str) -> LatentError {
    LatentError::shape(
        format!("AdamW({name})"),
        "dense row-major storage",
        "a strided view",
    )
}

/// One AdamW step of one parameter on the host, in place, split across the rayon pool in fixed
/// chunks (element-wise and independent, so the result does not depend on the thread count).
#[cfg(not(feature = "cuda"))]
fn update(
    rule: UpdateRule,
    name: &str,
    p: &mut crate::nn::ParamMut<'_>,
    m: &mut crate::device::Tensor1,
    v: &mut crate::device::Tensor1,
    g: &crate::device::Tensor1,
) -> Result<()> {
    let (c, lr) = (rule.config, rule.lr);
    let bias1 = 1.0 - c.beta1.powi(rule.step as i32);
    let bias2 = 1.0 - c.beta2.powi(rule.step as i32);
    let (Some(w), Some(m), Some(v), Some(g)) = (
        p.values_mut(),
        m.dense_slice_mut(),
        v.dense_slice_mut(),
        g.dense_slice(),
    ) else {
        return Err(strided(name));
    };
    w.par_chunks_mut(super::UPDATE_CHUNK)
        .zip(m.par_chunks_mut(super::UPDATE_CHUNK))
        .zip(v.par_chunks_mut(super::UPDATE_CHUNK))
        .zip(g.par_chunks(super::UPDATE_CHUNK))
        .for_each(|(((w, m), v), g)| {
            crate::nn::vectorized(
                #[inline(always)]
                || {
                    for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(g) {
                        *w -= lr * c.weight_decay * *w;
                        *m = c.beta1 * *m + (1.0 - c.beta1) * g;
                        *v = c.beta2 * *v + (1.0 - c.beta2) * g * g;
                        let m_hat = *m / bias1;
                        let v_hat = *v / bias2;
                        *w -= lr * m_hat / (v_hat.sqrt() + c.eps);
                    }
                },
            )
        });
    Ok(())
}

/// One AdamW step of one parameter on the GPU: dfdx's fused Adam kernel with decoupled weight
/// decay (`p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)`, the same update as the host loop),
/// parameters, moments and gradient all in device memory.
#[cfg(feature = "cuda")]
fn update(
    rule: UpdateRule,
    name: &str,
    p: &mut ParamMut<'_>,
    m: &mut crate::device::Tensor1,
    v: &mut crate::device::Tensor1,
    g: &crate::device::Tensor1,
) -> Result<()> {
    let c = rule.config;
    let adam = dfdx::optim::AdamConfig {
        lr: f64::from(rule.lr),
        betas: [f64::from(c.beta1), f64::from(c.beta2)],
        eps: f64::from(c.eps),
        weight_decay: Some(dfdx::optim::WeightDecay::Decoupled(f64::from(
            c.weight_decay,
        ))),
    };
    let (Some(m), Some(v), Some(g)) = (
        m.dense_storage_mut(),
        v.dense_storage_mut(),
        g.dense_storage(),
    ) else {
        return Err(strided(name));
    };
    let step = rule.step as i32;
    match p {
        ParamMut::Vector(t) => adam.try_update(step, t, m, v, g),
        ParamMut::Matrix(t) => adam.try_update(step, t, m, v, g),
    }
    .map_err(|e| LatentError::Incompatible(format!("AdamW({name}) CUDA kernel: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Tensor1;
    use crate::device::{device, tensor1};
    use crate::nn::{ParamMut, ParamRef};

    struct One(Tensor1);
    impl Parameters for One {
        fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ParamRef<'_>)) {
            f(&crate::nn::join(prefix, "w"), ParamRef::Vector(&self.0));
        }
        fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
            f(&crate::nn::join(prefix, "w"), ParamMut::Vector(&mut self.0));
        }
    }

    /// Two steps of `torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)` on p = [1, -2] with
    /// gradients [0.5, -1] then [0.25, 2], worked by hand: step 1 has m_hat = g and v_hat = g^2, so it
    /// moves by lr * sign(g) after the decay p * (1 - lr * wd) -> [0.899, -1.898]; step 2 gives
    /// [0.804883, -1.932712] (m = [0.07, 0.11], v = [3.1225e-4, 4.999e-3]).
    #[test]
    fn matches_torch_reference() {
        let dev = device(0).unwrap();
        let mut model = One(tensor1(&dev, &[1.0, -2.0]));
        let mut opt = AdamW::new(AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        })
        .unwrap();
        let mut g = NamedGradients::default();
        g.by_name.insert("w".into(), tensor1(&dev, &[0.5, -1.0]));
        opt.apply(&mut model, "", &g, 0.1).unwrap();
        let p1 = model.0.as_vec();
        assert!((p1[0] - (1.0 * 0.999 - 0.1)).abs() < 1e-6, "{p1:?}");
        assert!((p1[1] - (-2.0 * 0.999 + 0.1)).abs() < 1e-6, "{p1:?}");
        g.by_name.insert("w".into(), tensor1(&dev, &[0.25, 2.0]));
        opt.apply(&mut model, "", &g, 0.1).unwrap();
        // Second step by hand (b1 = 0.9, b2 = 0.999).
        let step2 = |p: f32, g1: f32, g2: f32| {
            let p = p * 0.999;
            let m = 0.9 * 0.1 * g1 + 0.1 * g2;
            let v = 0.999 * 0.001 * g1 * g1 + 0.001 * g2 * g2;
            p - 0.1 * (m / (1.0 - 0.81)) / ((v / (1.0 - 0.998_001)).sqrt() + 1e-8)
        };
        let p2 = model.0.as_vec();
        assert!((p2[0] - step2(p1[0], 0.5, 0.25)).abs() < 1e-6);
        assert!((p2[1] - step2(p1[1], -1.0, 2.0)).abs() < 1e-6);
        assert!(
            (p2[0] - 0.804_883).abs() < 1e-5 && (p2[1] + 1.932_712).abs() < 1e-5,
            "{p2:?}"
        );
    }

    /// An optimizer restored from another's state continues exactly as the original; the update
    /// writes a parameter whose storage is shared (here with an EMA shadow) without changing the
    /// sharer; restored moments of the wrong size are an error, not a silent truncation.
    #[test]
    fn restored_state_continues_and_shared_storage_is_not_aliased() {
        let dev = device(0).unwrap();
        let config = AdamWConfig::default();
        let mut a = One(tensor1(&dev, &[1.0, -2.0]));
        let mut opt = AdamW::new(config).unwrap();
        let ema = super::super::Ema::new(&a, "", 0.999);
        let mut g = NamedGradients::default();
        g.by_name.insert("w".into(), tensor1(&dev, &[0.5, -1.0]));
        opt.apply(&mut a, "", &g, 0.1).unwrap();
        assert_eq!(ema.state().1["w"].1, vec![1.0, -2.0]);

        let (step, map) = opt.state();
        let mut restored = AdamW::new(config).unwrap();
        restored.restore_state(step, &map).unwrap();
        let mut b = One(tensor1(&dev, &a.0.as_vec()));
        g.by_name.insert("w".into(), tensor1(&dev, &[0.25, 2.0]));
        opt.apply(&mut a, "", &g, 0.1).unwrap();
        restored.apply(&mut b, "", &g, 0.1).unwrap();
        assert_eq!(a.0.as_vec(), b.0.as_vec());
        assert_eq!(opt.state().1, restored.state().1);

        let mut short = TensorMap::new();
        short.insert("m.w".into(), (vec![1], vec![0.0]));
        short.insert("v.w".into(), (vec![1], vec![0.0]));
        let mut mis_sized = AdamW::new(config).unwrap();
        mis_sized.restore_state(1, &short).unwrap();
        let err = mis_sized
            .apply(&mut b, "", &g, 0.1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("AdamW(w)"), "{err}");
    }
}
