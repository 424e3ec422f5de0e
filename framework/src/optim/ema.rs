//! Exponential moving average of weights (used for sampling, as in diffusion practice).

use std::collections::BTreeMap;

use crate::checkpoint::TensorMap;
use crate::nn::Parameters;
use crate::Result;

/// Shadow copy of a model's parameters: `shadow = d * shadow + (1 - d) * param` with the warm-up
/// `d = min(decay, (1 + k) / (10 + k))` at update `k` (as diffusers' `EMAModel`), so short runs are
/// not dominated by the initial weights.
#[derive(Debug, Clone)]
pub struct Ema {
    /// Maximum decay per update (e.g. 0.999).
    pub decay: f32,
    updates: u64,
    shadow: BTreeMap<String, Vec<f32>>,
}

impl Ema {
    /// Starts the average at the model's current weights.
    pub fn new(model: &dyn Parameters, prefix: &str, decay: f32) -> Self {
        let mut shadow = BTreeMap::new();
        model.visit(prefix, &mut |name, p| {
            shadow.insert(name.to_string(), p.to_vec());
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
            .map(|(k, v)| (k.clone(), (vec![v.len()], v.clone())))
            .collect();
        (self.updates, map)
    }

    /// Continues from a state written by [`Ema::state`].
    pub fn restore_state(&mut self, updates: u64, map: &TensorMap) {
        self.updates = updates;
        self.shadow = map
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect();
    }

    /// Folds the model's current weights into the average.
    pub fn update(&mut self, model: &dyn Parameters, prefix: &str) {
        let k = self.updates as f32;
        let d = self.decay.min((1.0 + k) / (10.0 + k));
        self.updates += 1;
        model.visit(prefix, &mut |name, p| {
            let values = p.to_vec();
            let s = self
                .shadow
                .entry(name.to_string())
                .or_insert_with(|| values.clone());
            for (s, v) in s.iter_mut().zip(&values) {
                *s = d * *s + (1.0 - d) * v;
            }
        });
    }

    /// Writes the averaged weights into `model`.
    ///
    /// # Errors
    /// [`crate::LatentError::Shape`] when the model's shapes changed since [`Ema::new`].
    pub fn copy_to(&self, model: &mut dyn Parameters, prefix: &str) -> Result<()> {
        let mut failure = None;
        model.visit_mut(prefix, &mut |name, mut p| {
            if let Some(s) = self.shadow.get(name) {
                if let Err(e) = p.set(s) {
                    failure = Some(e);
                }
            }
        });
        failure.map_or(Ok(()), Err)
    }
}
