//! adaLN's feature-wise modulation and the (gated) residual update, each one fused pass on the
//! CPU build (dfdx composes them from two or three single-threaded element-wise ops, each
//! allocating its result and, when training, its gradient).

use dfdx::prelude::*;

use crate::device::{Taped, Tensor2};
use crate::{LatentError, Result};

/// The `(batch, width)` shapes of every input must agree.
fn same_shapes(op: &str, first: &Tensor2<impl Taped>, others: &[(usize, usize)]) -> Result<()> {
    let expected = *first.shape();
    match others.iter().find(|&&s| s != expected) {
        Some(s) => Err(LatentError::shape(
            op,
            format!("{expected:?}"),
            format!("{s:?}"),
        )),
        None => Ok(()),
    }
}

/// `h · (1 + scale) + shift`, all `(batch, width)`.
///
/// # Errors
/// [`LatentError::Shape`] when the shapes differ.
pub fn modulate<T: Taped>(
    h: Tensor2<T>,
    scale: Tensor2<T>,
    shift: Tensor2<T>,
) -> Result<Tensor2<T>> {
    same_shapes("modulate", &h, &[*scale.shape(), *shift.shape()])?;
    #[cfg(not(feature = "cuda"))]
    {
        Ok(super::rowwise_cpu::modulate(h, scale, shift))
    }
    #[cfg(feature = "cuda")]
    {
        Ok(h.with_empty_tape() * scale + h + shift)
    }
}

/// `x + h · gate`, or `x + h` without a gate, all `(batch, width)`.
///
/// # Errors
/// [`LatentError::Shape`] when the shapes differ.
pub fn residual<T: Taped>(
    x: Tensor2<T>,
    h: Tensor2<T>,
    gate: Option<Tensor2<T>>,
) -> Result<Tensor2<T>> {
    let mut others = vec![*h.shape()];
    others.extend(gate.as_ref().map(|g| *g.shape()));
    same_shapes("residual", &x, &others)?;
    #[cfg(not(feature = "cuda"))]
    {
        Ok(super::rowwise_cpu::residual(x, h, gate))
    }
    #[cfg(feature = "cuda")]
    {
        Ok(match gate {
            Some(g) => x + h * g,
            None => x + h,
        })
    }
}
