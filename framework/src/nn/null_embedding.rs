//! The learned "no condition" vector of classifier-free guidance: rows flagged as null are
//! replaced by one trainable vector, the others pass through unchanged.

use dfdx::prelude::*;

use crate::device::{tensor2, Dev, Taped, Tensor1, Tensor2};
use crate::{LatentError, Result};

/// A learned null vector `(dim,)`, initialized at zero.
#[derive(Debug, Clone)]
pub struct NullEmbedding {
    /// The null vector.
    pub vector: Tensor1,
}
crate::parameters!(NullEmbedding { vector });

impl NullEmbedding {
    /// A zero null vector of width `dim`.
    pub fn new(dev: &Dev, dim: usize) -> Self {
        Self {
            vector: dev.zeros_like(&(dim,)),
        }
    }

    /// Width.
    pub fn dim(&self) -> usize {
        self.vector.shape().0
    }

    /// `embedded (batch, dim)` with the rows where `null[i]` is true replaced by the null vector.
    ///
    /// # Errors
    /// [`LatentError::Shape`] when `null.len()` or the width do not match.
    pub fn apply<T: Taped>(&self, embedded: Tensor2<T>, null: &[bool]) -> Result<Tensor2<T>> {
        let (rows, dim) = *embedded.shape();
        if rows != null.len() || dim != self.dim() {
            return Err(LatentError::shape(
                "NullEmbedding",
                format!("{}x{}", null.len(), self.dim()),
                format!("{rows}x{dim}"),
            ));
        }
        let dev = self.vector.device().clone();
        let keep: Vec<f32> = null
            .iter()
            .flat_map(|&n| std::iter::repeat_n(if n { 0.0 } else { 1.0 }, dim))
            .collect();
        let drop: Vec<f32> = keep.iter().map(|k| 1.0 - k).collect();
        let keep = tensor2(&dev, &keep, rows, dim)?;
        let drop = tensor2(&dev, &drop, rows, dim)?;
        let null_rows = self
            .vector
            .retaped::<T>()
            .broadcast_like::<_, Axis<0>>(&(rows, dim))
            * drop;
        Ok(embedded * keep + null_rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{device, tensor1};

    #[test]
    fn replaces_only_flagged_rows() {
        let dev = device(0).unwrap();
        let mut n = NullEmbedding::new(&dev, 2);
        n.vector = tensor1(&dev, &[7.0, 8.0]);
        let x = tensor2(&dev, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3, 2).unwrap();
        let y = n.apply(x, &[false, true, false]).unwrap().as_vec();
        assert_eq!(y, vec![1.0, 2.0, 7.0, 8.0, 5.0, 6.0]);
        let x = tensor2(&dev, &[1.0, 2.0], 1, 2).unwrap();
        assert!(n.apply(x, &[false, true]).is_err());
    }
}
