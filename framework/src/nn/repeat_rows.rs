//! Per-sample vectors copied to each of the sample's tokens.

#[cfg(feature = "cuda")]
use dfdx::prelude::*;

#[cfg(feature = "cuda")]
use crate::device::Dev;
use crate::device::{Taped, Tensor2};

/// `(batch, width) -> (batch · times, width)`: row `r` of the result is row `r / times` of `x`
/// (a per-sample modulation broadcast over its `times` tokens). Gradients of the copies are
/// summed back onto each row.
pub fn repeat_rows<T: Taped>(x: Tensor2<T>, times: usize) -> Tensor2<T> {
    #[cfg(not(feature = "cuda"))]
    {
        super::rowwise_cpu::repeat_rows(x, times)
    }
    #[cfg(feature = "cuda")]
    {
        let rows = x.shape().0 * times;
        let owner: Vec<usize> = (0..rows).map(|r| r / times.max(1)).collect();
        let dev: Dev = x.device().clone();
        let mut idx: Tensor<(usize,), usize, Dev> = dev.zeros_like(&(rows,));
        idx.copy_from(&owner);
        x.gather(idx)
    }
}
