//! Dropout that is active only while training.

use crate::device::{Taped, Tensor2};

/// Zeroes each element with probability `p` during training and rescales by `1 / (1 - p)`.
/// Randomness comes from the seeded device, so runs are reproducible.
pub fn dropout<T: Taped>(x: Tensor2<T>, p: f32, train: bool) -> Tensor2<T> {
    if !train || p <= 0.0 {
        return x;
    }
    x.dropout(p)
}
