//! adaLN's feature-wise modulation and the (gated) residual update, each one fused pass on the
//! CPU build (dfdx composes them from two or three single-threaded element-wise ops, each
//! allocating its result and, when training, its gradient).

use dfdx::prelude::*;

use crate::device::{Taped, Tensor2};
use crate::{LatentError, Result};

/// `x` has `tokens` rows per row of each of `per_sample` and the same width.
fn tokens_of(
    op: &str,
    x: &Tensor2<impl Taped>,
    per_sample: &[(usize, usize)],
    tokens: usize,
) -> Result<()> {
    let (rows, width) = *x.shape();
    match per_sample
        .iter()
        .find(|&&(r, w)| w != width || r.checked_mul(tokens) != Some(rows))
    {
        Some(s) => Err(LatentError::shape(
            op,
            format!(
                "({}, {width}) for {rows} rows of {tokens} tokens",
                rows / tokens.max(1)
            ),
            format!("{s:?}"),
        )),
        None if tokens == 0 => Err(LatentError::shape(op, "at least 1 token", 0)),
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
    modulate_tokens(h, scale, shift, 1)
}

/// `h · (1 + scale) + shift` with `h (batch · tokens, width)` and one `(batch, width)` row of
/// `scale` and `shift` per sample, applied to each of its `tokens` rows (a transformer's
/// per-sample adaLN, without copying the modulation to every token).
///
/// # Errors
/// [`LatentError::Shape`] when the shapes do not fit.
pub fn modulate_tokens<T: Taped>(
    h: Tensor2<T>,
    scale: Tensor2<T>,
    shift: Tensor2<T>,
    tokens: usize,
) -> Result<Tensor2<T>> {
    tokens_of("modulate", &h, &[*scale.shape(), *shift.shape()], tokens)?;
    #[cfg(not(feature = "cuda"))]
    {
        Ok(super::rowwise_cpu::modulate(h, scale, shift, tokens))
    }
    #[cfg(feature = "cuda")]
    {
        let (scale, shift) = match tokens {
            1 => (scale, shift),
            _ => (
                super::repeat_rows(scale, tokens),
                super::repeat_rows(shift, tokens),
            ),
        };
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
    residual_tokens(x, h, gate, 1)
}

/// `x + h · gate` (or `x + h`) with `x` and `h (batch · tokens, width)` and one `(batch, width)`
/// row of `gate` per sample, applied to each of its `tokens` rows.
///
/// # Errors
/// [`LatentError::Shape`] when the shapes do not fit.
pub fn residual_tokens<T: Taped>(
    x: Tensor2<T>,
    h: Tensor2<T>,
    gate: Option<Tensor2<T>>,
    tokens: usize,
) -> Result<Tensor2<T>> {
    if h.shape() != x.shape() {
        return Err(LatentError::shape(
            "residual",
            format!("{:?}", x.shape()),
            format!("{:?}", h.shape()),
        ));
    }
    let gate_shape: Vec<(usize, usize)> = gate.iter().map(|g| *g.shape()).collect();
    tokens_of("residual", &x, &gate_shape, tokens)?;
    #[cfg(not(feature = "cuda"))]
    {
        Ok(super::rowwise_cpu::residual(x, h, gate, tokens))
    }
    #[cfg(feature = "cuda")]
    {
        Ok(match gate {
            Some(g) if tokens == 1 => x + h * g,
            Some(g) => x + h * super::repeat_rows(g, tokens),
            None => x + h,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::device;

    /// Per-sample inputs must have one row per `tokens` rows of `h` and its width; anything
    /// else (or zero tokens) is a shape error, never a panic.
    #[test]
    fn per_sample_shapes_are_checked() {
        let dev = device(0).unwrap();
        let zeros = |rows: usize, width: usize| -> Tensor2 { dev.zeros_like(&(rows, width)) };
        let (h, s) = (zeros(12, 5), zeros(3, 5));
        assert!(modulate_tokens(h.clone(), s.clone(), s.clone(), 4).is_ok());
        assert!(residual_tokens(h.clone(), h.clone(), Some(s.clone()), 4).is_ok());
        for (scale, tokens) in [
            (zeros(3, 5), 3),
            (zeros(4, 5), 4),
            (zeros(3, 6), 4),
            (s.clone(), 0),
        ] {
            assert!(matches!(
                modulate_tokens(h.clone(), scale.clone(), s.clone(), tokens),
                Err(LatentError::Shape { .. })
            ));
            assert!(matches!(
                residual_tokens(h.clone(), h.clone(), Some(scale), tokens),
                Err(LatentError::Shape { .. })
            ));
        }
        assert!(matches!(
            residual_tokens(h.clone(), zeros(12, 4), None, 1),
            Err(LatentError::Shape { .. })
        ));
        assert!(matches!(
            modulate(h.clone(), zeros(12, 5), zeros(11, 5)),
            Err(LatentError::Shape { .. })
        ));
    }
}
