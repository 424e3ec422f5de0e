//! Exponential moving average of weights (used for sampling, as in diffusion practice).

use std::collections::BTreeMap;

use dfdx::prelude::*;

use super::state_buffer::StateBuffer;
use crate::checkpoint::TensorMap;
use crate::device::Tensor1;
use crate::nn::Parameters;
use crate::{LatentError, Result};

/// Shadow copy of a model's parameters: `shadow = d * shadow + (1 - d) * param` with the warm-up
/// `d = min(decay, (1 + k) / (10 + k))` at update `k` (as diffusers' `EMAModel`), so short runs are
/// not dominated by the initial weights. The shadow lives on the parameters' device and is
/// updated there (no transfer per step on CUDA).
#[derive(Debug, Clone)]
pub struct Ema {
    /// Maximum decay per update (e.g. 0.999).
    pub decay: f32,
    updates: u64,
    shadow: BTreeMap<String, StateBuffer>,
}

impl Ema {
    /// Starts the average at the model's current weights.
    pub fn new(model: &dyn Parameters, prefix: &str, decay: f32) -> Self {
        let mut shadow = BTreeMap::new();
        model.visit(prefix, &mut |name, p| {
            shadow.insert(name.to_string(), StateBuffer::from_device(p.flat()));
        });
        Self {
            decay,
            updates: 0,
            shadow,
        }
    }

    /// The state to checkpoint: updates folded in and the shadow weights.
    pub fn state(&self) -> (u64, TensorMap) {
        let map = self
            .shadow
            .iter()
            .map(|(k, v)| (k.clone(), (vec![v.len()], v.to_host())))
            .collect();
        (self.updates, map)
    }

    /// Continues from a state written by [`Ema::state`].
    pub fn restore_state(&mut self, updates: u64, map: &TensorMap) {
        self.updates = updates;
        self.shadow = map
            .iter()
            .map(|(k, (_, v))| (k.clone(), StateBuffer::from_host(v.clone())))
            .collect();
    }

    /// Folds the model's current weights into the average.
    ///
    /// # Errors
    /// [`LatentError::Shape`] when a parameter's size differs from its restored shadow.
    pub fn update(&mut self, model: &dyn Parameters, prefix: &str) -> Result<()> {
        let k = self.updates as f32;
        let d = self.decay.min((1.0 + k) / (10.0 + k));
        self.updates += 1;
        let mut failure = None;
        let shadow = &mut self.shadow;
        model.visit(prefix, &mut |name, p| {
            let values = p.flat();
            let Some(s) = shadow.get_mut(name) else {
                shadow.insert(name.to_string(), StateBuffer::from_device(values));
                return;
            };
            if s.len() != values.shape().0 {
                failure = Some(LatentError::shape(
                    format!("EMA({name})"),
                    s.len(),
                    values.shape().0,
                ));
                return;
            }
            fold(s.on_device(values.device()), &values, d);
        });
        failure.map_or(Ok(()), Err)
    }

    /// Writes the averaged weights into `model`.
    ///
    /// # Errors
    /// [`LatentError::Shape`] when the model's shapes changed since [`Ema::new`].
    pub fn copy_to(&self, model: &mut dyn Parameters, prefix: &str) -> Result<()> {
        let mut failure = None;
        model.visit_mut(prefix, &mut |name, mut p| {
            if let Some(s) = self.shadow.get(name) {
                if let Err(e) = p.set(&s.to_host()) {
                    failure = Some(e);
                }
            }
        });
        failure.map_or(Ok(()), Err)
    }
}

/// `shadow = d · shadow + (1 − d) · values`, element by element. On the CPU in place, split
/// across the rayon pool in fixed chunks with the wide instructions (dfdx's `axpy` runs one
/// baseline-compiled loop on one thread: 2 % of the README job's training); the same expression
/// as `axpy`'s, so the same bits.
fn fold(shadow: &mut Tensor1, values: &Tensor1, d: f32) {
    #[cfg(not(feature = "cuda"))]
    if let (Some(s), Some(v)) = (shadow.dense_slice_mut(), values.dense_slice()) {
        use rayon::prelude::*;
        let keep = 1.0 - d;
        s.par_chunks_mut(super::UPDATE_CHUNK)
            .zip(v.par_chunks(super::UPDATE_CHUNK))
            .for_each(|(s, v)| {
                crate::nn::vectorized(
                    #[inline(always)]
                    || {
                        for (s, &v) in s.iter_mut().zip(v) {
                            *s = *s * d + v * keep;
                        }
                    },
                )
            });
        return;
    }
    shadow.axpy(d, values, 1.0 - d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{device, tensor1, tensor2, Tensor2};
    use crate::nn::{ParamMut, ParamRef};

    /// The in-place fold gives dfdx's `axpy` bits on a vector longer than one parallel chunk.
    #[test]
    fn fold_matches_axpy_bit_for_bit() {
        let dev = device(0).unwrap();
        let n = 40_000;
        let shadow = crate::testing::spread_values(n, 1, 3.0);
        let values = tensor1(&dev, &crate::testing::spread_values(n, 2, 3.0));
        let d = 0.9_f32.min(7.0 / 16.0);
        let mut folded = tensor1(&dev, &shadow);
        fold(&mut folded, &values, d);
        let mut reference = tensor1(&dev, &shadow);
        reference.axpy(d, &values, 1.0 - d);
        let bits = |t: &Tensor1| t.as_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&folded), bits(&reference));
    }

    struct Model {
        w: Tensor2,
        b: Tensor1,
    }
    crate::parameters!(Model { w, b });

    fn set(model: &mut Model, name: &str, values: &[f32]) {
        model.visit_mut("", &mut |n, mut p: ParamMut<'_>| {
            if n == name {
                p.set(values).unwrap();
            }
        });
    }

    fn weights(model: &Model) -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        model.visit("", &mut |_, p: ParamRef<'_>| out.push(p.to_vec()));
        out
    }

    /// Warm-up decays 1/10 then 2/11 on a matrix and a vector: the shadow starts at the initial
    /// weights, does not follow in-place changes of the parameters it was copied from, and
    /// survives a checkpoint round trip.
    #[test]
    fn shadow_follows_the_warm_up_formula_and_round_trips() {
        let dev = device(0).unwrap();
        let mut model = Model {
            w: tensor2(&dev, &[1.0, 2.0, 3.0, 4.0], 2, 2).unwrap(),
            b: tensor1(&dev, &[10.0]),
        };
        let mut ema = Ema::new(&model, "", 0.999);
        set(&mut model, "w", &[2.0, 2.0, 2.0, 2.0]);
        set(&mut model, "b", &[0.0]);
        ema.update(&model, "").unwrap();
        let d1 = 0.1f32;
        let expect_w1: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .map(|s| d1 * s + (1.0 - d1) * 2.0)
            .collect();
        let (updates, map) = ema.state();
        assert_eq!(updates, 1);
        assert_eq!(map["w"].1, expect_w1);
        assert_eq!(map["b"].1, vec![d1 * 10.0]);

        let mut restored = Ema::new(&model, "", 0.999);
        restored.restore_state(updates, &map);
        set(&mut model, "b", &[1.0]);
        restored.update(&model, "").unwrap();
        let d2 = 2.0f32 / 11.0;
        let mut averaged = Model {
            w: tensor2(&dev, &[0.0; 4], 2, 2).unwrap(),
            b: tensor1(&dev, &[0.0]),
        };
        restored.copy_to(&mut averaged, "").unwrap();
        let got = weights(&averaged);
        let expect_w2: Vec<f32> = expect_w1
            .iter()
            .map(|s| d2 * s + (1.0 - d2) * 2.0)
            .collect();
        assert_eq!(got[0], expect_w2);
        assert_eq!(got[1], vec![d2 * (d1 * 10.0) + (1.0 - d2) * 1.0]);
    }

    #[test]
    fn mis_sized_restored_shadow_is_an_error() {
        let dev = device(0).unwrap();
        let model = Model {
            w: tensor2(&dev, &[1.0, 2.0, 3.0, 4.0], 2, 2).unwrap(),
            b: tensor1(&dev, &[10.0]),
        };
        let mut ema = Ema::new(&model, "", 0.999);
        let mut map = TensorMap::new();
        map.insert("w".into(), (vec![3], vec![0.0; 3]));
        ema.restore_state(5, &map);
        let err = ema.update(&model, "").unwrap_err().to_string();
        assert!(err.contains("EMA(w)"), "{err}");
    }
}
