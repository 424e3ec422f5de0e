//! Several parameters used as one (CPU build): the per-head weights of an attention layer joined
//! side by side or stacked, so that all heads run as one matrix product, while the parameters —
//! their names, shapes and checkpoint layout — stay per head. The joined tensor is a fresh
//! value; its backward op, recorded on the tape before the op that reads it, hands each part its
//! block of the joined gradient after that op's backward pass has filled it.

use dfdx::prelude::*;

use crate::device::{host_values, Dev, Taped, Tensor1, Tensor2};

/// Where part `i` of a join lies: row `r` of the part starts at `start + r * stride` of the
/// joined values.
#[derive(Clone, Copy)]
struct Block {
    start: usize,
    stride: usize,
    rows: usize,
    cols: usize,
}

impl Block {
    /// The joined values' range holding the part's row `r`.
    fn row(&self, r: usize) -> std::ops::Range<usize> {
        let at = self.start + r * self.stride;
        at..at + self.cols
    }
}

/// The matrices `parts` (all `(rows, cols_i)`) side by side: `(rows, Σ cols_i)`. Backward adds
/// each part's columns of the joined gradient to the part's gradient. The caller passes at
/// least one part, all with the same row count.
pub(crate) fn join_columns<T: Taped>(tape: &mut T, parts: &[&Tensor2]) -> Tensor2 {
    join(tape, parts, true)
}

/// The matrices `parts` (all `(rows_i, cols)`) stacked: `(Σ rows_i, cols)`. Backward adds each
/// part's rows of the joined gradient to the part's gradient. The caller passes at least one
/// part, all with the same column count.
pub(crate) fn stack_rows<T: Taped>(tape: &mut T, parts: &[&Tensor2]) -> Tensor2 {
    join(tape, parts, false)
}

/// The vectors `parts` one after another: `(Σ len_i,)`. Backward adds each part's range of the
/// joined gradient to the part's gradient.
pub(crate) fn join_vectors<T: Taped>(tape: &mut T, parts: &[&Tensor1]) -> Tensor1 {
    let rows: Vec<Tensor2> = parts
        .iter()
        .map(|p| (*p).clone().reshape_like(&(1, p.shape().0)))
        .collect();
    let joined = join_columns(tape, &rows.iter().collect::<Vec<_>>());
    let len = joined.shape().1;
    joined.reshape_like(&(len,))
}

/// The sum of the vectors `parts` (all `(len,)`); backward adds the gradient of the sum to each.
/// The caller passes at least one part, all of the same length.
pub(crate) fn sum_vectors<T: Taped>(tape: &mut T, parts: &[&Tensor1]) -> Tensor1 {
    let len = parts.first().map_or(0, |p| p.shape().0);
    let mut sum = vec![0.0f32; len];
    for part in parts {
        for (s, v) in sum.iter_mut().zip(host_values(*part).iter()) {
            *s += v;
        }
    }
    let block = Block {
        start: 0,
        stride: 0,
        rows: 1,
        cols: len,
    };
    let out = device_of(parts).tensor_from_vec(sum, (len,));
    let parts: Vec<Tensor2> = parts
        .iter()
        .map(|p| (*p).clone().reshape_like(&(1, len)))
        .collect();
    let blocks = vec![block; parts.len()];
    record_backward(tape, parts, blocks, out.clone());
    out
}

/// Joins `parts` side by side (`side_by_side`) or stacked, and records the backward op.
fn join<T: Taped>(tape: &mut T, parts: &[&Tensor2], side_by_side: bool) -> Tensor2 {
    let (first_rows, first_cols) = parts.first().map_or((0, 0), |p| *p.shape());
    let (rows, cols) = if side_by_side {
        (first_rows, parts.iter().map(|p| p.shape().1).sum())
    } else {
        (parts.iter().map(|p| p.shape().0).sum(), first_cols)
    };
    // Each part starts where the previous one ends: after its columns side by side, after its
    // rows stacked.
    let mut start = 0;
    let blocks: Vec<Block> = parts
        .iter()
        .map(|p| {
            let (part_rows, part_cols) = *p.shape();
            let block = Block {
                start,
                stride: cols,
                rows: part_rows,
                cols: part_cols,
            };
            start += if side_by_side {
                part_cols
            } else {
                part_rows * cols
            };
            block
        })
        .collect();
    let mut joined = vec![0.0f32; rows * cols];
    for (part, block) in parts.iter().zip(&blocks) {
        let values = host_values(*part);
        for r in 0..block.rows {
            joined[block.row(r)].copy_from_slice(&values[r * block.cols..(r + 1) * block.cols]);
        }
    }
    let out = device_of(parts).tensor_from_vec(joined, (rows, cols));
    let parts: Vec<Tensor2> = parts.iter().map(|&p| p.clone()).collect();
    record_backward(tape, parts, blocks, out.clone());
    out
}

/// The device of the first part (the default device when there is none).
fn device_of<S: Shape>(parts: &[&Tensor<S, f32, Dev>]) -> Dev {
    parts
        .first()
        .map_or_else(Dev::default, |p| p.device().clone())
}

/// Records the op handing each part its block of `result`'s gradient.
fn record_backward<T: Taped, S: Shape>(
    tape: &mut T,
    parts: Vec<Tensor2>,
    blocks: Vec<Block>,
    result: Tensor<S, f32, Dev>,
) {
    if !T::OWNS_TAPE {
        return;
    }
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&result)?;
        // Complete when this op runs (it was recorded before the op reading `result`) and read
        // by nothing afterwards: moved, not copied.
        let g = std::mem::take(&mut **grads.get_or_alloc_mut(&result)?);
        for (part, block) in parts.iter().zip(&blocks) {
            grads.try_alloc_for(part)?;
            let acc = grads.get_or_alloc_mut(part)?;
            for r in 0..block.rows {
                let row = &mut acc[r * block.cols..(r + 1) * block.cols];
                for (a, v) in row.iter_mut().zip(&g[block.row(r)]) {
                    *a += v;
                }
            }
        }
        Ok(())
    });
}
