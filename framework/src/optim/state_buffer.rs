//! One vector of optimizer state (an AdamW moment, an EMA shadow) that lives beside its
//! parameter: on the CPU in host memory, on CUDA in GPU memory, so the per-step update never
//! crosses the bus. Restored checkpoints hand over host values, which move to the parameter's
//! device on first use (no device is at hand when a checkpoint is read).

use dfdx::prelude::*;

use crate::device::{dense_values, tensor1, Dev, Tensor1};

/// Optimizer state for one parameter: host values from a checkpoint until first used, then a
/// vector on the parameter's device.
#[derive(Debug, Clone)]
pub(crate) struct StateBuffer {
    restored: Vec<f32>,
    on_device: Option<Tensor1>,
}

impl StateBuffer {
    /// State restored from host values (a checkpoint).
    pub(crate) fn from_host(values: Vec<f32>) -> Self {
        Self {
            restored: values,
            on_device: None,
        }
    }

    /// State already on the device.
    pub(crate) fn from_device(values: Tensor1) -> Self {
        Self {
            restored: Vec::new(),
            on_device: Some(values),
        }
    }

    /// Number of values.
    pub(crate) fn len(&self) -> usize {
        self.on_device
            .as_ref()
            .map_or(self.restored.len(), |t| t.shape().0)
    }

    /// The values on `dev` (moved there on first use).
    pub(crate) fn on_device(&mut self, dev: &Dev) -> &mut Tensor1 {
        let restored = &mut self.restored;
        self.on_device
            .get_or_insert_with(|| tensor1(dev, &std::mem::take(restored)))
    }

    /// The values copied to the host (checkpoints).
    pub(crate) fn to_host(&self) -> Vec<f32> {
        self.on_device
            .as_ref()
            .map_or_else(|| self.restored.clone(), dense_values)
    }
}
