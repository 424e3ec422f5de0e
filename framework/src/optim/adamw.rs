//! AdamW (Loshchilov & Hutter) with decoupled weight decay, matching `torch.optim.AdamW`.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Elements per parallel work item.
const CHUNK: usize = 16 * 1024;

use super::NamedGradients;
use crate::checkpoint::TensorMap;
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

/// Moment buffers of one parameter.
#[derive(Debug, Clone)]
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

/// AdamW optimizer state keyed by parameter name.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    step: u64,
    moments: BTreeMap<String, Moments>,
    /// Host copy of the parameter being updated, reused across parameters and steps.
    scratch: Vec<f32>,
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
            scratch: Vec::new(),
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
            map.insert(format!("m.{name}"), (vec![s.m.len()], s.m.clone()));
            map.insert(format!("v.{name}"), (vec![s.v.len()], s.v.clone()));
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
                    m: m.clone(),
                    v: v.1.clone(),
                },
            );
        }
        Ok(())
    }

    /// Applies one update with learning rate `lr` to every parameter of `model` that has a gradient.
    ///
    /// # Errors
    /// [`LatentError::Shape`] when a gradient's length differs from its parameter.
    pub fn apply(
        &mut self,
        model: &mut dyn Parameters,
        prefix: &str,
        grads: &NamedGradients,
        lr: f32,
    ) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2 = 1.0 - c.beta2.powi(self.step as i32);
        // Element-wise and independent: split across the rayon pool in fixed chunks (the result
        // does not depend on the thread count).
        let update = |w: &mut [f32], state: &mut Moments, g: &[f32]| {
            w.par_chunks_mut(CHUNK)
                .zip(state.m.par_chunks_mut(CHUNK))
                .zip(state.v.par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK))
                .for_each(|(((w, m), v), g)| {
                    for i in 0..w.len() {
                        let gi = g[i];
                        w[i] -= lr * c.weight_decay * w[i];
                        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * gi;
                        v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * gi * gi;
                        let m_hat = m[i] / bias1;
                        let v_hat = v[i] / bias2;
                        w[i] -= lr * m_hat / (v_hat.sqrt() + c.eps);
                    }
                });
        };
        let mut failure = None;
        let (moments, values) = (&mut self.moments, &mut self.scratch);
        model.visit_mut(prefix, &mut |name, mut p| {
            let Some(g) = grads.by_name.get(name) else {
                return;
            };
            let n: usize = p.shape().iter().product();
            if g.len() != n {
                failure = Some(LatentError::shape(format!("AdamW({name})"), n, g.len()));
                return;
            }
            if !moments.contains_key(name) {
                let zeros = Moments {
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                };
                moments.insert(name.to_string(), zeros);
            }
            let Some(state) = moments.get_mut(name) else {
                return;
            };
            // In place on the CPU build; through a reused host buffer where values live on a
            // device.
            if let Some(w) = p.values_mut() {
                update(w, state, g);
                return;
            }
            p.copy_values_into(values);
            update(values, state, g);
            if let Err(e) = p.set(values) {
                failure = Some(e);
            }
        });
        failure.map_or(Ok(()), Err)
    }
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
        g.by_name.insert("w".into(), vec![0.5, -1.0]);
        opt.apply(&mut model, "", &g, 0.1).unwrap();
        let p1 = model.0.as_vec();
        assert!((p1[0] - (1.0 * 0.999 - 0.1)).abs() < 1e-6, "{p1:?}");
        assert!((p1[1] - (-2.0 * 0.999 + 0.1)).abs() < 1e-6, "{p1:?}");
        g.by_name.insert("w".into(), vec![0.25, 2.0]);
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
}
