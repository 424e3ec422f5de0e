//! Learning-rate schedules.

use serde::{Deserialize, Serialize};

/// How the learning rate evolves over training steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// The base rate at every step.
    #[default]
    Constant,
    /// Linear warm-up from 0 over `warmup_steps`, then cosine decay to `min_ratio * lr` at the last step.
    WarmupCosine {
        /// Steps of linear warm-up.
        warmup_steps: u64,
        /// Final rate as a fraction of the base rate.
        min_ratio: f32,
    },
}

impl LrSchedule {
    /// Learning rate at `step` (0-based) of `total` steps for base rate `lr`.
    pub fn rate(&self, lr: f32, step: u64, total: u64) -> f32 {
        match *self {
            LrSchedule::Constant => lr,
            LrSchedule::WarmupCosine {
                warmup_steps,
                min_ratio,
            } => {
                if step < warmup_steps {
                    return lr * (step + 1) as f32 / warmup_steps as f32;
                }
                let span = total.saturating_sub(warmup_steps).max(1);
                let progress = ((step - warmup_steps) as f32 / span as f32).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f32::consts::PI * progress).cos());
                lr * (min_ratio + (1.0 - min_ratio) * cosine)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = LrSchedule::WarmupCosine {
            warmup_steps: 10,
            min_ratio: 0.1,
        };
        assert!((s.rate(1.0, 0, 110) - 0.1).abs() < 1e-6);
        assert!((s.rate(1.0, 9, 110) - 1.0).abs() < 1e-6);
        assert!((s.rate(1.0, 10, 110) - 1.0).abs() < 1e-6);
        assert!((s.rate(1.0, 60, 110) - 0.55).abs() < 1e-6);
        assert!((s.rate(1.0, 110, 110) - 0.1).abs() < 1e-6);
        assert_eq!(LrSchedule::Constant.rate(0.3, 5, 10), 0.3);
    }
}
