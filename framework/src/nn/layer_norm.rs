//! Layer normalization over the feature axis with learned scale and shift.

use dfdx::prelude::*;

use crate::device::{tensor1, Dev, Taped, Tensor1, Tensor2};
use crate::{LatentError, Result};

/// LayerNorm over the last axis of `(batch, dim)`: `(x - mean) / sqrt(var + eps) * gamma + beta`.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// Scale `(dim,)`, initialized to one.
    pub gamma: Tensor1,
    /// Shift `(dim,)`, initialized to zero.
    pub beta: Tensor1,
    /// Added to the variance (PyTorch default 1e-5).
    pub eps: f64,
}
crate::parameters!(LayerNorm { gamma, beta });

impl LayerNorm {
    /// Creates a LayerNorm of width `dim` with eps 1e-5.
    pub fn new(dev: &Dev, dim: usize) -> Self {
        Self {
            gamma: tensor1(dev, &vec![1.0; dim]),
            beta: tensor1(dev, &vec![0.0; dim]),
            eps: 1e-5,
        }
    }

    /// Normalizes without the learned affine part (used by adaLN, where scale/shift come from the condition).
    ///
    /// # Errors
    /// [`LatentError::Shape`] on a width mismatch.
    pub fn normalize<T: Taped>(&self, x: Tensor2<T>) -> Result<Tensor2<T>> {
        let (batch, width) = *x.shape();
        if width != self.gamma.shape().0 {
            return Err(LatentError::shape(
                "LayerNorm",
                format!("(batch, {})", self.gamma.shape().0),
                format!("({batch}, {width})"),
            ));
        }
        #[cfg(not(feature = "cuda"))]
        {
            Ok(super::rowwise_cpu::normalize_rows(x, self.eps))
        }
        #[cfg(feature = "cuda")]
        {
            Ok(x.normalize::<Axis<1>>(self.eps))
        }
    }

    /// `(batch, dim) -> (batch, dim)`.
    ///
    /// # Errors
    /// [`LatentError::Shape`] on a width mismatch.
    pub fn forward<T: Taped>(&self, x: Tensor2<T>) -> Result<Tensor2<T>> {
        let y = self.normalize(x)?;
        #[cfg(not(feature = "cuda"))]
        {
            Ok(super::rowwise_cpu::scale_and_shift(
                y,
                &self.gamma,
                &self.beta,
            ))
        }
        #[cfg(feature = "cuda")]
        {
            Ok(self.affine(y))
        }
    }

    /// `y · gamma + beta` by dfdx's broadcast ops (the CUDA build's affine part).
    #[cfg(feature = "cuda")]
    fn affine<T: Taped>(&self, y: Tensor2<T>) -> Tensor2<T> {
        let shape = *y.shape();
        let g = self
            .gamma
            .retaped::<T>()
            .broadcast_like::<_, Axis<0>>(&shape);
        let b = self
            .beta
            .retaped::<T>()
            .broadcast_like::<_, Axis<0>>(&shape);
        y * g + b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{device, tensor2};

    #[test]
    fn reference_numbers() {
        let dev = device(0).unwrap();
        let mut ln = LayerNorm::new(&dev, 4);
        ln.gamma = tensor1(&dev, &[1.0, 2.0, 1.0, 1.0]);
        ln.beta = tensor1(&dev, &[0.0, 0.0, 1.0, 0.0]);
        let x = tensor2(&dev, &[1.0, 2.0, 3.0, 4.0], 1, 4).unwrap();
        let y = ln.forward(x).unwrap().as_vec();
        // mean 2.5, biased var 1.25 -> (x - 2.5) / sqrt(1.25 + 1e-5)
        let s = (1.25f64 + 1e-5).sqrt();
        let expect = [-1.5 / s, 2.0 * (-0.5 / s), 0.5 / s + 1.0, 1.5 / s];
        for (a, b) in y.iter().zip(expect) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
