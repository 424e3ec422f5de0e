//! Lookup table for categorical inputs.

use dfdx::prelude::*;
use rand::Rng;

use crate::device::{tensor2, Dev, Taped, Tensor2};
use crate::{LatentError, Result};

/// An embedding table `(num_embeddings, dim)` initialized N(0, 1) like PyTorch.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// Table `(num_embeddings, dim)`.
    pub table: Tensor2,
}
crate::parameters!(Embedding { table });

impl Embedding {
    /// Creates a table with `num` rows of width `dim`.
    ///
    /// # Errors
    /// [`LatentError::InvalidConfig`] for zero sizes.
    pub fn new(dev: &Dev, num: usize, dim: usize, rng: &mut impl Rng) -> Result<Self> {
        if num == 0 || dim == 0 {
            return Err(LatentError::config(
                "nn.embedding",
                "size",
                "num and dim > 0",
                format!("{num}x{dim}"),
            ));
        }
        let values: Vec<f32> = (0..num * dim)
            .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
            .collect();
        Ok(Self {
            table: tensor2(dev, &values, num, dim)?,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.table.shape().0
    }
    /// True when the table has no rows (never for a built layer).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows for `indices` -> `(indices.len(), dim)`.
    ///
    /// # Errors
    /// [`LatentError::Shape`] when an index is out of range.
    pub fn forward<T: Taped>(&self, indices: &[usize]) -> Result<Tensor2<T>> {
        if let Some(bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(LatentError::shape(
                "Embedding",
                format!("index < {}", self.len()),
                bad,
            ));
        }
        let dev = self.table.device().clone();
        let mut idx: Tensor<(usize,), usize, Dev> = dev.zeros_like(&(indices.len(),));
        idx.copy_from(indices);
        Ok(self.table.retaped::<T>().gather(idx))
    }
}
