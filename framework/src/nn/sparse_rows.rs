//! Products with a mostly-zero left operand: a linear layer fed expression data (log-normalized
//! counts are 2–48 % non-zero in the shipped sets) spends a dense product's work on zeros in its
//! forward pass `x W` and its weight gradient `xᵀ g`. [`SparseRows`] keeps only the non-zero
//! values of `x` and runs both products over them, each output block summed in registers
//! (decision 0023).
//!
//! Each output element is summed by one task in a fixed order (the non-zeros of its row of `x`,
//! or of its column for `xᵀ g`, left to right from `+0`), then added to the destination once, so
//! the bits do not depend on the thread count or on AVX2; they differ from `gemm`'s (another
//! order), so the choice between the two depends only on the input's values
//! ([`SparseRows::of`]).

use rayon::prelude::*;

/// Largest fraction of non-zero values for which [`SparseRows::of`] takes the sparse products:
/// the reference VAE step (256 cells × 2,000 genes into 512) gains 15–23 % at 10–15 % non-zero
/// and nothing at 30 %, at one and two threads (docs/performance.md, session 17). One fixed
/// limit, so that the thread count never changes which path, and so which bits, a batch gets.
pub(crate) const MAX_DENSITY: f64 = 0.25;

/// Columns of the output one register block sums (eight AVX2 registers).
const BLOCK: usize = 64;

/// The non-zero values of a row-major `(rows, cols)` matrix, row by row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SparseRows {
    rows: usize,
    cols: usize,
    /// Row `i`'s non-zeros are `starts[i]..starts[i + 1]` of `columns` and `values`.
    starts: Vec<usize>,
    columns: Vec<u32>,
    values: Vec<f32>,
}

impl SparseRows {
    /// The non-zeros of `x` (row-major, `cols` wide), or `None` when more than
    /// [`MAX_DENSITY`] of its values are non-zero, `cols` is 0, either dimension exceeds
    /// `u32`, or `x` is not whole rows. Stops reading once the budget of non-zeros is spent.
    pub(crate) fn of(x: &[f32], cols: usize) -> Option<Self> {
        if cols == 0 || !x.len().is_multiple_of(cols) {
            return None;
        }
        let rows = x.len() / cols;
        if u32::try_from(cols).is_err() || u32::try_from(rows).is_err() {
            return None;
        }
        let budget = (MAX_DENSITY * x.len() as f64) as usize;
        // A dense input is refused within its first sixteenth of rows: the non-zeros seen may
        // exceed the budget's share of the rows read by at most that many rows' share.
        let allowance = |read: usize| (MAX_DENSITY * (cols * (read + rows / 16)) as f64) as usize;
        // First the count per row (a read-only pass that stops early on dense input), then
        // the values into buffers of exactly that size.
        let mut starts = Vec::with_capacity(rows + 1);
        starts.push(0);
        let mut len = 0;
        for (i, row) in x.chunks_exact(cols).enumerate() {
            len += row.iter().filter(|&&v| v != 0.0).count();
            if len > budget.min(allowance(i + 1)) {
                return None;
            }
            starts.push(len);
        }
        // Then the values, one task per thread over a share of the rows.
        let task_rows = rows.div_ceil(super::kernel_threads().max(1)).max(1);
        let mut parts: Vec<(Vec<u32>, Vec<f32>)> = x
            .par_chunks(task_rows * cols)
            .enumerate()
            .map(|(task, x)| {
                let nz = starts[task * task_rows]..starts[task * task_rows + x.len() / cols];
                let mut columns = Vec::with_capacity(nz.len());
                let mut values = Vec::with_capacity(nz.len());
                for row in x.chunks_exact(cols) {
                    push_non_zeros(row, &mut columns, &mut values);
                }
                (columns, values)
            })
            .collect();
        let (columns, values) = if parts.len() == 1 {
            parts.swap_remove(0)
        } else {
            (
                parts.iter().flat_map(|p| p.0.iter().copied()).collect(),
                parts.iter().flat_map(|p| p.1.iter().copied()).collect(),
            )
        };
        Some(Self {
            rows,
            cols,
            starts,
            columns,
            values,
        })
    }

    /// `dst (rows × n, row-major) += self · b` for `b (cols × n, row-major)`: each output
    /// element's sum over its row's non-zeros is added to `dst` once.
    ///
    /// # Panics
    /// When `b` or `dst` is shorter than the shapes say (a caller's bug, not user input).
    pub(crate) fn product(&self, b: &[f32], n: usize, dst: &mut [f32]) {
        self.product_from(b, n, dst, false);
    }

    /// `dst (cols × n, row-major) = [dst +] selfᵀ · g` for `g (rows × n, row-major)`: a linear
    /// layer's weight gradient from its sparse input and its output gradient.
    ///
    /// # Panics
    /// When `g` or `dst` is shorter than the shapes say (a caller's bug, not user input).
    pub(crate) fn transposed_product(
        &self,
        g: &[f32],
        n: usize,
        dst: &mut [f32],
        accumulate: bool,
    ) {
        assert!(
            dst.len() >= self.cols * n,
            "sparse product operands do not match their shapes"
        );
        let dst = &mut dst[..self.cols * n];
        if !accumulate {
            dst.fill(0.0);
        }
        self.by_column().product_from(g, n, dst, true);
    }

    /// [`Self::product`], reading `b`'s full column blocks from [`panels`] when `pack`: worth
    /// its copy when the output has many rows per row of `b` (the weight gradient: 2,000
    /// genes over 256 cells' gradients, 1.6–1.7 × as fast), not the other way round (the
    /// forward pass: 256 cells over 2,000 genes' weights, no faster than reading them in place).
    fn product_from(&self, b: &[f32], n: usize, dst: &mut [f32], pack: bool) {
        assert!(
            b.len() >= self.cols * n && dst.len() >= self.rows * n,
            "sparse product operands do not match their shapes"
        );
        if n == 0 {
            return;
        }
        let b = &b[..self.cols * n];
        let panels = if pack { panels(b, n) } else { Vec::new() };
        // One task per thread, each sweeping one column block at a time over all its rows.
        let task_rows = self.rows.div_ceil(super::kernel_threads().max(1)).max(1);
        dst[..self.rows * n]
            .par_chunks_mut(task_rows * n)
            .enumerate()
            .for_each(|(task, out)| {
                super::vectorized(
                    #[inline(always)]
                    || self.add_sums(task * task_rows, out, &panels, b, n),
                )
            });
    }

    /// Row `i`'s non-zeros as `(column, value)`.
    #[inline(always)]
    fn terms(&self, i: usize) -> impl Iterator<Item = (usize, &f32)> + Clone {
        let nz = self.starts[i]..self.starts[i + 1];
        self.columns[nz.clone()]
            .iter()
            .map(|&j| j as usize)
            .zip(&self.values[nz])
    }

    /// `out[r · n + c] += Σ v · b[j · n + c]` over the `(j, v)` terms of row `first + r`, in
    /// order from `+0`, for every row `r` of `out` (row-major, `n` wide): [`BLOCK`] columns at
    /// a time held in registers (read from `panels` unless it is empty), then the last
    /// `n % BLOCK` columns 8 and one at a time.
    #[inline(always)]
    fn add_sums(&self, first: usize, out: &mut [f32], panels: &[f32], b: &[f32], n: usize) {
        for p in 0..n / BLOCK {
            let (source, stride, start) = match panels.is_empty() {
                true => (b, n, p * BLOCK),
                false => (
                    &panels[p * self.cols * BLOCK..(p + 1) * self.cols * BLOCK],
                    BLOCK,
                    0,
                ),
            };
            for (r, row) in out.chunks_exact_mut(n).enumerate() {
                let out = &mut row[p * BLOCK..(p + 1) * BLOCK];
                add_block::<BLOCK>(out, self.terms(first + r), source, stride, start);
            }
        }
        let mut start = n / BLOCK * BLOCK;
        while start < n {
            let width = if n - start >= 8 { 8 } else { 1 };
            for (r, row) in out.chunks_exact_mut(n).enumerate() {
                let out = &mut row[start..start + width];
                match width {
                    8 => add_block::<8>(out, self.terms(first + r), b, n, start),
                    _ => add_block::<1>(out, self.terms(first + r), b, n, start),
                }
            }
            start += width;
        }
    }

    /// The same non-zeros indexed by column (the rows of the transpose), each column's in row
    /// order; one task per thread fills a share of the columns.
    fn by_column(&self) -> SparseRows {
        let mut starts = vec![0usize; self.cols + 1];
        for &j in &self.columns {
            starts[j as usize + 1] += 1;
        }
        for j in 0..self.cols {
            starts[j + 1] += starts[j];
        }
        let nnz = self.values.len();
        let (mut rows, mut values) = (vec![0u32; nnz], vec![0.0f32; nnz]);
        let task_columns = self.cols.div_ceil(super::kernel_threads().max(1)).max(1);
        // Each task's columns `c0..c1` own `starts[c0]..starts[c1]` of the output.
        let mut shares = Vec::new();
        let (mut rest_rows, mut rest_values) = (&mut rows[..], &mut values[..]);
        for c0 in (0..self.cols).step_by(task_columns) {
            let c1 = (c0 + task_columns).min(self.cols);
            let size = starts[c1] - starts[c0];
            let (share_rows, tail_rows) = std::mem::take(&mut rest_rows).split_at_mut(size);
            let (share_values, tail_values) = std::mem::take(&mut rest_values).split_at_mut(size);
            (rest_rows, rest_values) = (tail_rows, tail_values);
            shares.push((c0..c1, share_rows, share_values));
        }
        shares
            .into_par_iter()
            .for_each(|(range, share_rows, share_values)| {
                let base = starts[range.start];
                let mut next: Vec<usize> = starts[range.clone()].iter().map(|s| s - base).collect();
                for i in 0..self.rows {
                    let row = &self.columns[self.starts[i]..self.starts[i + 1]];
                    let from = row.partition_point(|&j| (j as usize) < range.start);
                    let to = row.partition_point(|&j| (j as usize) < range.end);
                    for k in from..to {
                        let slot = &mut next[row[k] as usize - range.start];
                        share_rows[*slot] = i as u32;
                        share_values[*slot] = self.values[self.starts[i] + k];
                        *slot += 1;
                    }
                }
            });
        SparseRows {
            rows: self.cols,
            cols: self.rows,
            starts,
            columns: rows,
            values,
        }
    }
}

/// Appends the non-zeros of `row` (their columns and values) to `columns` and `values`: eight
/// values' zero tests as one mask, then only its set bits visited.
#[inline]
fn push_non_zeros(row: &[f32], columns: &mut Vec<u32>, values: &mut Vec<f32>) {
    let (chunks, rest) = row.as_chunks::<8>();
    for (c, chunk) in chunks.iter().enumerate() {
        let mut mask = chunk
            .iter()
            .enumerate()
            .fold(0u32, |m, (l, &v)| m | (u32::from(v != 0.0) << l));
        while mask != 0 {
            let l = mask.trailing_zeros() as usize;
            columns.push((c * 8 + l) as u32);
            values.push(chunk[l]);
            mask &= mask - 1;
        }
    }
    for (l, &v) in rest.iter().enumerate() {
        if v != 0.0 {
            columns.push((chunks.len() * 8 + l) as u32);
            values.push(v);
        }
    }
}

/// The first `n / BLOCK · BLOCK` columns of `b (k × n, row-major)` as `n / BLOCK` panels, each
/// `k × BLOCK` row-major: a panel's rows lie 256 bytes apart, where `b`'s (2 KiB apart at 512
/// columns) fall into a few cache sets and keep evicting one another.
fn panels(b: &[f32], n: usize) -> Vec<f32> {
    let k = b.len() / n;
    let mut panels = vec![0.0f32; n / BLOCK * BLOCK * k];
    panels
        .par_chunks_mut((k * BLOCK).max(1))
        .enumerate()
        .for_each(|(p, panel)| {
            for (dst, row) in panel.chunks_exact_mut(BLOCK).zip(b.chunks_exact(n)) {
                dst.copy_from_slice(&row[p * BLOCK..(p + 1) * BLOCK]);
            }
        });
    panels
}

/// `out[c] += Σ v · b[j · stride + start + c]` over the `(j, v)` terms, in order from `+0`, for
/// the `W` values of `out` (held in registers).
#[inline(always)]
fn add_block<'a, const W: usize>(
    out: &mut [f32],
    terms: impl Iterator<Item = (usize, &'a f32)>,
    b: &[f32],
    stride: usize,
    start: usize,
) {
    let mut sums = [0.0f32; W];
    for (j, &v) in terms {
        let row: &[f32; W] = b[j * stride + start..j * stride + start + W]
            .try_into()
            .expect("a block of W columns");
        for (s, w) in sums.iter_mut().zip(row) {
            *s += v * w;
        }
    }
    for (o, s) in out.iter_mut().zip(&sums) {
        *o += s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::spread_values;

    /// A `(rows, cols)` matrix with about `density` of its values non-zero (and some `-0.0`).
    fn sparse_matrix(rows: usize, cols: usize, density: f64, seed: u32) -> Vec<f32> {
        let keep = spread_values(rows * cols, seed + 100, 1.0);
        spread_values(rows * cols, seed, 2.0)
            .into_iter()
            .zip(keep)
            .enumerate()
            .map(|(k, (v, u))| {
                if (f64::from(u) + 1.0) / 2.0 < density {
                    v
                } else if k % 7 == 0 {
                    -0.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// `[dst +] a · b` summed per element over `a`'s non-zeros left to right from `+0`.
    fn reference(
        a: &[f32],
        b: &[f32],
        (m, k, n): (usize, usize, usize),
        dst: &[f32],
        transposed_a: bool,
    ) -> Vec<f32> {
        let at = |i: usize, l: usize| {
            if transposed_a {
                a[l * m + i]
            } else {
                a[i * k + l]
            }
        };
        let mut out = dst.to_vec();
        for i in 0..m {
            for c in 0..n {
                let mut sum = 0.0f32;
                for l in 0..k {
                    if at(i, l) != 0.0 {
                        sum += at(i, l) * b[l * n + c];
                    }
                }
                out[i * n + c] += sum;
            }
        }
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// Both products equal the element-by-element reference to the bit, at widths with full
    /// blocks, 8-column blocks and single columns, with one and two threads.
    #[test]
    fn products_sum_each_element_over_its_non_zeros_in_order() {
        for (rows, cols, n) in [(37, 70, 19), (40, 300, 136), (3, 40, 64)] {
            let x = sparse_matrix(rows, cols, 0.1, 1);
            let sparse = SparseRows::of(&x, cols).expect("10 % non-zero is sparse");
            let w = spread_values(cols * n, 2, 1.0);
            let g = spread_values(rows * n, 3, 1.0);
            let start = spread_values(rows.max(cols) * n, 4, 1.0);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let found = pool.install(|| SparseRows::of(&x, cols));
                assert_eq!(found.as_ref(), Some(&sparse), "{threads} threads");
                let mut forward = start[..rows * n].to_vec();
                pool.install(|| sparse.product(&w, n, &mut forward));
                let expected = reference(&x, &w, (rows, cols, n), &start[..rows * n], false);
                assert_eq!(bits(&forward), bits(&expected), "{rows}x{cols}x{n} forward");
                for accumulate in [false, true] {
                    let mut gradient = start[..cols * n].to_vec();
                    pool.install(|| sparse.transposed_product(&g, n, &mut gradient, accumulate));
                    let initial = if accumulate {
                        start[..cols * n].to_vec()
                    } else {
                        vec![0.0; cols * n]
                    };
                    let expected = reference(&x, &g, (cols, rows, n), &initial, true);
                    assert_eq!(
                        bits(&gradient),
                        bits(&expected),
                        "{rows}x{cols}x{n} gradient"
                    );
                }
            }
        }
    }

    /// Inputs over the density limit, empty widths and ragged lengths take the dense path.
    #[test]
    fn dense_or_malformed_inputs_are_refused() {
        assert!(SparseRows::of(&sparse_matrix(20, 50, 0.6, 5), 50).is_none());
        assert!(SparseRows::of(&spread_values(100, 6, 1.0), 10).is_none());
        assert!(SparseRows::of(&[0.0; 10], 0).is_none());
        assert!(SparseRows::of(&[0.0; 10], 3).is_none());
        let empty = SparseRows::of(&[0.0; 12], 4).expect("all zeros is sparse");
        let mut out = vec![1.5; 3 * 2];
        empty.product(&[1.0; 4 * 2], 2, &mut out);
        assert_eq!(out, vec![1.5; 6]);
    }

    /// A short operand is a caller's bug and stops before any raw read.
    #[test]
    #[should_panic(expected = "do not match")]
    fn short_operands_panic() {
        let mut x = [0.0; 40];
        x[0] = 1.0;
        let sparse = SparseRows::of(&x, 4).unwrap();
        sparse.product(&[1.0; 7], 2, &mut [0.0; 20]);
    }
}
