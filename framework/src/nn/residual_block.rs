//! Pre-norm residual MLP block with optional feature-wise modulation (FiLM / adaLN-Zero).

use dfdx::prelude::*;
use rand::Rng;

use super::{dropout, modulate, residual, Activation, Init, LayerNorm, Linear};
use crate::device::{Dev, Taped, Tensor2};
use crate::Result;

/// Per-sample modulation of a block, computed from a condition embedding.
///
/// `h <- h * (1 + scale) + shift` after the normalization; `gate` multiplies the residual branch
/// (adaLN-Zero: zero-initialized so the block starts as the identity).
pub struct Modulation<T: Taped> {
    /// `(batch, dim)` multiplicative term (added to one).
    pub scale: Tensor2<T>,
    /// `(batch, dim)` additive term.
    pub shift: Tensor2<T>,
    /// Optional `(batch, dim)` gate on the residual branch.
    pub gate: Option<Tensor2<T>>,
}

/// `x + W2 · dropout(act(W1 · modulate(LN(x))))`, width preserved.
#[derive(Debug, Clone)]
pub struct ResidualBlock {
    /// Pre-normalization (learned affine unless modulated).
    pub norm: Option<LayerNorm>,
    /// Expansion layer `(dim, hidden)`.
    pub linear1: Linear,
    /// Projection back `(hidden, dim)`.
    pub linear2: Linear,
    /// Nonlinearity.
    pub activation: Activation,
    /// Dropout probability inside the branch.
    pub dropout: f32,
}
crate::parameters!(ResidualBlock {
    norm,
    linear1,
    linear2
});

impl ResidualBlock {
    /// Creates a block of width `dim` with hidden width `hidden`.
    ///
    /// # Errors
    /// Propagates layer construction errors (zero sizes).
    pub fn new(
        dev: &Dev,
        dim: usize,
        hidden: usize,
        activation: Activation,
        layer_norm: bool,
        dropout: f32,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        Ok(Self {
            norm: layer_norm.then(|| LayerNorm::new(dev, dim)),
            linear1: Linear::new(dev, dim, hidden, Init::KaimingUniform, rng)?,
            linear2: Linear::new(dev, hidden, dim, Init::KaimingUniform, rng)?,
            activation,
            dropout,
        })
    }

    /// `(batch, dim) -> (batch, dim)`.
    ///
    /// # Errors
    /// [`crate::LatentError::Shape`] when widths disagree.
    pub fn forward<T: Taped>(
        &self,
        x: Tensor2<T>,
        modulation: Option<Modulation<T>>,
        train: bool,
    ) -> Result<Tensor2<T>> {
        let mut h = x.with_empty_tape();
        if let Some(norm) = &self.norm {
            h = if modulation.is_some() {
                norm.normalize(h)?
            } else {
                norm.forward(h)?
            };
        }
        let mut gate = None;
        if let Some(m) = modulation {
            h = modulate(h, m.scale, m.shift)?;
            gate = m.gate;
        }
        let h = self.activation.forward(self.linear1.forward(h)?);
        let h = dropout(h, self.dropout, train);
        residual(x, self.linear2.forward(h)?, gate)
    }
}
