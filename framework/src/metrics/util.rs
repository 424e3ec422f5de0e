//! Shared input validation and small numeric helpers (crate-private).

use super::{MetricsError, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Checks that `x` is a finite `(n, d)` row-major matrix with `d > 0` and `n >= min_rows`.
pub(crate) fn check_matrix(
    what: &str,
    x: &[f32],
    n: usize,
    d: usize,
    min_rows: usize,
) -> Result<()> {
    if d == 0 {
        return Err(MetricsError::Shape {
            what: what.to_string(),
            detail: "d must be > 0".to_string(),
        });
    }
    let expected = n.checked_mul(d).ok_or_else(|| MetricsError::Shape {
        what: what.to_string(),
        detail: format!("n*d overflows (n={n}, d={d})"),
    })?;
    if x.len() != expected {
        return Err(MetricsError::Shape {
            what: what.to_string(),
            detail: format!("len {} != n*d = {n}*{d} = {expected}", x.len()),
        });
    }
    if n < min_rows {
        return Err(MetricsError::TooFew {
            what: what.to_string(),
            got: n,
            need: min_rows,
        });
    }
    check_finite(what, x)
}

/// Checks that every value is finite.
pub(crate) fn check_finite(what: &str, x: &[f32]) -> Result<()> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MetricsError::NonFinite {
            what: what.to_string(),
            index,
        }),
        None => Ok(()),
    }
}

/// Checks that every value is finite (f64 version) and that there are at least `min` values.
pub(crate) fn check_vec64(what: &str, x: &[f64], min: usize) -> Result<()> {
    if x.len() < min {
        return Err(MetricsError::TooFew {
            what: what.to_string(),
            got: x.len(),
            need: min,
        });
    }
    match x.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MetricsError::NonFinite {
            what: what.to_string(),
            index,
        }),
        None => Ok(()),
    }
}

/// Squared Euclidean distance between two equal-length rows, accumulated in f64.
#[inline]
pub(crate) fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    // Four independent accumulators let the compiler vectorize the loop.
    let mut acc = [0.0f64; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..4 {
            let t = f64::from(x[k]) - f64::from(y[k]);
            acc[k] += t * t;
        }
    }
    let mut s = acc[0] + acc[1] + acc[2] + acc[3];
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        let t = f64::from(*x) - f64::from(*y);
        s += t * t;
    }
    s
}

/// Deterministic subsample: all of `0..n` if `n <= max`, else `max` indices drawn without
/// replacement with `StdRng::seed_from_u64(seed)`, returned sorted.
pub(crate) fn subsample_indices(n: usize, max: usize, seed: u64) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rng);
    idx.truncate(max);
    idx.sort_unstable();
    idx
}

/// Copies the selected rows of a row-major `(n, d)` matrix.
#[cfg(test)]
pub(crate) fn gather_rows(x: &[f32], d: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * d);
    for &r in rows {
        out.extend_from_slice(&x[r * d..(r + 1) * d]);
    }
    out
}

/// Ranks (1-based) with ties replaced by their average rank. NaN-free input assumed.
pub(crate) fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        while j < idx.len() && v[idx[j]] == v[idx[i]] {
            j += 1;
        }
        // positions i..j (0-based) share ranks i+1..=j, average (i+1+j)/2
        let r = (i + 1 + j) as f64 / 2.0;
        for &k in &idx[i..j] {
            ranks[k] = r;
        }
        i = j;
    }
    ranks
}

/// Median of a non-empty slice (average of the two middle values for even length); sorts `v`.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len();
    if m % 2 == 1 {
        v[m / 2]
    } else {
        0.5 * (v[m / 2 - 1] + v[m / 2])
    }
}

/// Copies the (contiguous) values of a CPU tensor into `out`, resized to fit: one memcpy
/// into a buffer that is reused across blocks (dfdx's `as_vec` allocates and walks an index
/// iterator per element, which cost more than the matrix product itself here).
pub(crate) fn copy_out<S: dfdx::shapes::Shape>(
    t: &dfdx::tensor::Tensor<S, f64, dfdx::tensor::Cpu>,
    out: &mut Vec<f64>,
) {
    use dfdx::prelude::*;
    out.resize(t.shape().num_elements(), 0.0);
    t.copy_into(out);
}

/// Rows of one tile of the pair matrix (matrix product plus scan), see [`TILE_COLS`].
pub(crate) const TILE_ROWS: usize = 128;
/// Columns of one tile: `128 × 1024` f64 entries (1 MB) stay in cache between the matrix
/// product that writes them and the scan that reads them (a whole `rows × nb` slab does
/// not, and streaming it through memory several times cost as much as the products).
pub(crate) const TILE_COLS: usize = 1024;

/// A row-major f64 matrix on dfdx's CPU device.
pub(crate) type CpuMatrix = dfdx::tensor::Tensor<(usize, usize), f64, dfdx::tensor::Cpu>;

/// The rows of `x` (`(n, d)`, f64) in blocks of [`TILE_COLS`] as `(first row, end, tensor)`.
pub(crate) fn column_tiles(x: &[f64], n: usize, d: usize) -> Vec<(usize, usize, CpuMatrix)> {
    use dfdx::prelude::*;
    let dev: Cpu = Default::default();
    (0..n)
        .step_by(TILE_COLS)
        .map(|c0| {
            let c1 = (c0 + TILE_COLS).min(n);
            (
                c0,
                c1,
                dev.tensor_from_vec(x[c0 * d..c1 * d].to_vec(), (c1 - c0, d)),
            )
        })
        .collect()
}

/// For every row `i` of `a` (`(na, d)` row-major), `Σ_j f(‖a_i − b_j‖²)` over the rows `j`
/// of `b` (`(nb, d)` row-major), with `j > i` only when `upper` (then `a` and `b` must be the
/// same matrix). Returns the `na` row sums.
///
/// Squared distances are formed as `max(‖a_i‖² + ‖b_j‖² − 2 a_i·b_j, 0)` in f64, the dot
/// products by one dense matrix product per `TILE_ROWS × TILE_COLS` tile (the `gemm`
/// kernels behind dfdx's CPU matmul; with `upper`, tiles wholly on or below the diagonal
/// are skipped). This agrees with the direct difference [`sq_dist`] up to rounding
/// relative to the row norms (about `1e-16 (‖a_i‖² + ‖b_j‖²)` absolute). Each row sum is
/// accumulated in increasing `j` across tiles, parallel over rows: deterministic for a
/// given thread count.
pub(crate) fn pairwise_sq_dist_row_sums<F>(
    a: &[f32],
    na: usize,
    b: &[f32],
    nb: usize,
    d: usize,
    upper: bool,
    f: F,
) -> Vec<f64>
where
    F: Fn(f64) -> f64 + Sync,
{
    use dfdx::prelude::*;
    use rayon::prelude::*;
    let mut sums = vec![0.0f64; na];
    if na == 0 || nb == 0 {
        return sums;
    }
    let dev: Cpu = Default::default();
    let a64: Vec<f64> = a.iter().map(|v| f64::from(*v)).collect();
    let b64: Vec<f64> = b.iter().map(|v| f64::from(*v)).collect();
    let norm = |r: &[f64]| r.iter().map(|v| v * v).sum::<f64>();
    let an: Vec<f64> = a64.chunks_exact(d).map(norm).collect();
    let bn: Vec<f64> = b64.chunks_exact(d).map(norm).collect();
    let tiles = column_tiles(&b64, nb, d);
    let mut g = Vec::new();
    for i0 in (0..na).step_by(TILE_ROWS) {
        let i1 = (i0 + TILE_ROWS).min(na);
        let at = dev.tensor_from_vec(a64[i0 * d..i1 * d].to_vec(), (i1 - i0, d));
        for (c0, c1, bt) in &tiles {
            let (c0, c1) = (*c0, *c1);
            if upper && c1 <= i0 + 1 {
                continue; // no j > i in this tile
            }
            copy_out(
                &at.clone().matmul(bt.clone().permute::<_, Axes2<1, 0>>()),
                &mut g,
            );
            sums[i0..i1]
                .par_iter_mut()
                .zip(g.par_chunks(c1 - c0))
                .enumerate()
                .for_each(|(r, (s, gr))| {
                    let i = i0 + r;
                    let j0 = if upper { (i + 1).max(c0) } else { c0 };
                    let mut acc = *s;
                    for j in j0..c1 {
                        acc += f((an[i] + bn[j] - 2.0 * gr[j - c0]).max(0.0));
                    }
                    *s = acc;
                });
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    /// The middle value of an odd count, the mean of the middle two of an even count, whatever
    /// the input order.
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(super::median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(super::median(&mut [7.0]), 7.0);
    }
}
