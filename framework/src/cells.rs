//! Where the training cells come from: held in memory ([`ExpressionBatch`]) or streamed from
//! disk in row chunks ([`crate::streaming::StreamedCells`]). The trainers only draw shuffled
//! minibatches and encode every cell once, so either source trains the same models.

use rand::rngs::StdRng;

use crate::experiment::encode_rows;
use crate::plugin::{Autoencoder, ExpressionBatch};
use crate::train::Minibatches;
use crate::Result;

/// One training minibatch.
#[derive(Debug, Clone)]
pub struct CellBatch {
    /// Positions of the cells among the training cells (to look up their conditions).
    pub rows: Vec<usize>,
    /// The cells, prepared as the autoencoder consumes them.
    pub cells: ExpressionBatch,
}

/// An endless stream of shuffled training minibatches (one epoch after another).
pub trait CellBatches {
    /// The next minibatch (never empty).
    ///
    /// # Errors
    /// Read errors of a streamed source.
    fn next_batch(&mut self) -> Result<CellBatch>;
}

/// The training cells of a run.
pub trait TrainingCells {
    /// Number of training cells.
    fn len(&self) -> usize;

    /// Whether there are no training cells.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shuffled minibatches of `batch_size` cells drawn with `rng` (the last one of an epoch,
    /// or of a streamed shuffle window, may be smaller).
    ///
    /// # Errors
    /// Read errors of a streamed source.
    fn batches<'s>(&'s self, batch_size: usize, rng: StdRng) -> Result<Box<dyn CellBatches + 's>>;

    /// The latent codes `(len, latent_dim)` of every training cell, in training order.
    ///
    /// # Errors
    /// Model and read errors.
    fn encode(&self, autoencoder: &dyn Autoencoder) -> Result<Vec<f32>>;

    /// The first `k` training cells (fewer if there are fewer).
    ///
    /// # Errors
    /// Read errors of a streamed source.
    fn head(&self, k: usize) -> Result<ExpressionBatch>;
}

/// Cells to encode at once.
pub const ENCODE_CHUNK: usize = 1024;

struct InMemoryBatches<'a> {
    cells: &'a ExpressionBatch,
    order: Minibatches,
}

impl CellBatches for InMemoryBatches<'_> {
    fn next_batch(&mut self) -> Result<CellBatch> {
        let rows = self.order.next_batch();
        Ok(CellBatch {
            cells: self.cells.select(&rows),
            rows,
        })
    }
}

impl TrainingCells for ExpressionBatch {
    fn len(&self) -> usize {
        self.n
    }

    fn batches<'s>(&'s self, batch_size: usize, rng: StdRng) -> Result<Box<dyn CellBatches + 's>> {
        Ok(Box::new(InMemoryBatches {
            cells: self,
            order: Minibatches::new(self.n, batch_size, rng),
        }))
    }

    fn encode(&self, autoencoder: &dyn Autoencoder) -> Result<Vec<f32>> {
        let rows: Vec<usize> = (0..self.n).collect();
        encode_rows(autoencoder, self, &rows, ENCODE_CHUNK)
    }

    fn head(&self, k: usize) -> Result<ExpressionBatch> {
        let rows: Vec<usize> = (0..self.n.min(k)).collect();
        Ok(self.select(&rows))
    }
}
