//! Rows of a batch that are exact duplicates, so that work depending only on them is done once
//! per distinct row.
//!
//! At sampling time every cell of a chunk shares the step's time `t`, and class-conditioned cells
//! share one of a few condition embeddings: a denoiser's time embedding, condition projection
//! and every block's modulation (scale, shift, gate) then take only as many distinct values as
//! there are classes. Computing them for the distinct rows and copying the results out to the
//! batch gives the same values for a fraction of the matrix products (half of the reference
//! MLP denoiser's work at 10 classes and 1,024 cells per chunk).

use std::collections::HashMap;

use dfdx::prelude::*;

use crate::device::{host_values, Dev, Tensor2};
use crate::{LatentError, Result};

/// A partition of `n` rows into groups of bit-identical keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowGroups {
    /// The first row of every group, in order of first appearance.
    representatives: Vec<usize>,
    /// For every row, the index of its group in `representatives`.
    inverse: Vec<usize>,
}

impl RowGroups {
    /// Whether grouping pays on this build's device. On the CPU the matrix products it saves
    /// dominate a sampling step. On CUDA those products are small kernels, while grouping reads
    /// the keys back to the host (a device synchronisation) and copies rows every step: measured
    /// on an H200, sampling ran at a quarter of the ungrouped rate (docs/performance.md), so
    /// denoisers skip it there.
    pub const PAYS_ON_THIS_DEVICE: bool = cfg!(not(feature = "cuda"));

    /// Groups the rows of the row-major `(n, width)` matrix `keys` by their bit patterns (so
    /// `0.0` and `-0.0` differ, and NaN rows group only with identical NaNs: grouping never merges
    /// rows whose values could differ).
    ///
    /// # Errors
    /// [`LatentError::Shape`] when `keys` is not a whole number of rows of `width`.
    pub fn of(keys: &[f32], width: usize) -> Result<Self> {
        if width == 0 || !keys.len().is_multiple_of(width) {
            return Err(LatentError::shape(
                "row group keys",
                format!("rows of {width} values"),
                keys.len(),
            ));
        }
        // Rows are found by a cheap hash of their bits and confirmed bit for bit, so a collision
        // costs a comparison, never a wrong group.
        let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut representatives: Vec<usize> = Vec::new();
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        let inverse = keys
            .chunks_exact(width)
            .enumerate()
            .map(|(row, key)| {
                let candidates = by_hash.entry(row_hash(key)).or_default();
                let found = candidates.iter().copied().find(|&group| {
                    let r = representatives[group];
                    same(&keys[r * width..(r + 1) * width], key)
                });
                found.unwrap_or_else(|| {
                    representatives.push(row);
                    candidates.push(representatives.len() - 1);
                    representatives.len() - 1
                })
            })
            .collect();
        Ok(Self {
            representatives,
            inverse,
        })
    }

    /// Number of rows grouped.
    pub fn rows(&self) -> usize {
        self.inverse.len()
    }

    /// Number of distinct rows (groups).
    pub fn distinct(&self) -> usize {
        self.representatives.len()
    }

    /// True when at most half of the rows are distinct: below that, the copies out cost more
    /// than the work they save.
    pub fn worthwhile(&self) -> bool {
        2 * self.distinct() <= self.rows()
    }

    /// The representatives' entries of a per-row list.
    ///
    /// # Errors
    /// [`LatentError::Shape`] when `values` does not have one entry per row.
    pub fn pick<V: Copy>(&self, values: &[V]) -> Result<Vec<V>> {
        if values.len() != self.rows() {
            return Err(LatentError::shape(
                "row groups pick",
                self.rows(),
                values.len(),
            ));
        }
        Ok(self.representatives.iter().map(|&r| values[r]).collect())
    }

    /// The representatives' rows of `x (rows, width)`: `(distinct, width)`.
    ///
    /// # Errors
    /// [`LatentError::Shape`] when `x` does not have one row per grouped row.
    pub fn select(&self, x: &Tensor2) -> Result<Tensor2> {
        if x.shape().0 != self.rows() {
            return Err(LatentError::shape(
                "row groups select",
                self.rows(),
                x.shape().0,
            ));
        }
        gather_rows(x, &self.representatives)
    }

    /// Every row's group value from `x (distinct, width)`: `(rows, width)`.
    ///
    /// # Errors
    /// [`LatentError::Shape`] when `x` does not have one row per group.
    pub fn expand(&self, x: &Tensor2) -> Result<Tensor2> {
        if x.shape().0 != self.distinct() {
            return Err(LatentError::shape(
                "row groups expand",
                self.distinct(),
                x.shape().0,
            ));
        }
        gather_rows(x, &self.inverse)
    }

    /// The representatives' rows of the row-major `(rows, width)` values: `(distinct, width)`.
    /// The caller passes one row per grouped row.
    #[cfg(not(feature = "cuda"))]
    pub(crate) fn select_values(&self, values: &[f32], width: usize) -> Vec<f32> {
        gather_values(values, width, &self.representatives)
    }

    /// Every row's group value from the row-major `(distinct, width)` values: `(rows, width)`.
    /// The caller passes one row per group.
    #[cfg(not(feature = "cuda"))]
    pub(crate) fn expand_values(&self, values: &[f32], width: usize) -> Vec<f32> {
        gather_values(values, width, &self.inverse)
    }

    /// Per group, the sum of its rows of the row-major `(rows, width)` values, added in row
    /// order: `(distinct, width)`. The caller passes one row per grouped row.
    #[cfg(not(feature = "cuda"))]
    pub(crate) fn sum_values(&self, values: &[f32], width: usize) -> Vec<f32> {
        let mut sums = vec![0.0f32; self.distinct() * width];
        for (row, &group) in values.chunks_exact(width).zip(&self.inverse) {
            for (s, v) in sums[group * width..(group + 1) * width].iter_mut().zip(row) {
                *s += v;
            }
        }
        sums
    }
}

/// A hash of a row's bit patterns: four interleaved multiply-xor lanes (independent, so the
/// loop runs at about a word per cycle), folded together with the row length.
fn row_hash(row: &[f32]) -> u64 {
    const MUL: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut lanes = [
        0x243F_6A88_85A3_08D3u64,
        0x1319_8A2E_0370_7344,
        0xA409_3822_299F_31D0,
        0x082E_FA98_EC4E_6C89,
    ];
    let mut words = row.chunks_exact(4);
    for chunk in &mut words {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane = (*lane ^ u64::from(v.to_bits())).wrapping_mul(MUL);
        }
    }
    for (lane, v) in lanes.iter_mut().zip(words.remainder()) {
        *lane = (*lane ^ u64::from(v.to_bits())).wrapping_mul(MUL);
    }
    lanes.iter().fold(row.len() as u64, |h, &lane| {
        (h.rotate_left(23) ^ lane).wrapping_mul(MUL)
    })
}

/// `out[i] = x[index[i]]` for the rows of `x`, by host row copies (the tensors involved are a
/// few MiB at most and carry no tape).
fn gather_rows(x: &Tensor2, index: &[usize]) -> Result<Tensor2> {
    let width = x.shape().1;
    let out = gather_values(&host_values(x), width, index);
    let dev: Dev = x.device().clone();
    Ok(dev.tensor_from_vec(out, (index.len(), width)))
}

/// `out[i] = values[index[i]]` for the rows of the row-major `(_, width)` values.
fn gather_values(values: &[f32], width: usize, index: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(index.len() * width);
    for &row in index {
        out.extend_from_slice(&values[row * width..(row + 1) * width]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{device, tensor2};

    #[test]
    fn groups_identical_rows_in_order_of_first_appearance() {
        let keys = [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 0.0, -0.0, 3.0, 4.0, 1.0, 2.0];
        let g = RowGroups::of(&keys, 2).unwrap();
        assert_eq!(g.representatives, vec![0, 1, 3]);
        assert_eq!(g.inverse, vec![0, 1, 0, 2, 1, 0]);
        assert_eq!((g.rows(), g.distinct()), (6, 3));
        assert!(g.worthwhile());
        // 0.0 and -0.0 stay apart; all-distinct rows are not worth grouping.
        let apart = RowGroups::of(&[0.0, -0.0, 1.0], 1).unwrap();
        assert_eq!(apart.distinct(), 3);
        assert!(!apart.worthwhile());
        assert!(RowGroups::of(&keys, 5).is_err());
        assert!(RowGroups::of(&keys, 0).is_err());
    }

    #[test]
    fn select_then_expand_restores_every_row() {
        let dev = device(0).unwrap();
        let keys = [5.0, 7.0, 5.0, 5.0, 7.0, 9.0];
        let g = RowGroups::of(&keys, 1).unwrap();
        let x: Vec<f32> = keys.iter().flat_map(|&k| [k, 10.0 * k, -k]).collect();
        let xt = tensor2(&dev, &x, 6, 3).unwrap();
        let distinct = g.select(&xt).unwrap();
        assert_eq!(
            distinct.as_vec(),
            vec![5.0, 50.0, -5.0, 7.0, 70.0, -7.0, 9.0, 90.0, -9.0]
        );
        assert_eq!(g.expand(&distinct).unwrap().as_vec(), x);
        assert_eq!(g.pick(&[0, 1, 2, 3, 4, 5]).unwrap(), vec![0, 1, 5]);
        assert!(g.pick(&[0, 1]).is_err());
        assert!(g.expand(&xt).is_err());
        assert!(g.select(&distinct).is_err());
    }

    /// The host-value forms of select and expand, and per-group sums in row order.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn values_select_expand_and_sum_by_group() {
        let keys = [5.0, 7.0, 5.0, 5.0, 7.0, 9.0];
        let g = RowGroups::of(&keys, 1).unwrap();
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(g.select_values(&x, 2), vec![0.0, 1.0, 2.0, 3.0, 10.0, 11.0]);
        assert_eq!(
            g.expand_values(&[1.0, 2.0, 3.0], 1),
            vec![1.0, 2.0, 1.0, 1.0, 2.0, 3.0]
        );
        // Rows 0, 2, 3 (group 0), rows 1, 4 (group 1), row 5 (group 2).
        assert_eq!(
            g.sum_values(&x, 2),
            vec![
                0.0 + 4.0 + 6.0,
                1.0 + 5.0 + 7.0,
                2.0 + 8.0,
                3.0 + 9.0,
                10.0,
                11.0
            ]
        );
    }
}
