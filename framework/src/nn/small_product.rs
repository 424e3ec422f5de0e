//! Products of the small matrices inside one attention head (16 × 16 × 32 at the DiT reference
//! shape, thousands per step): too small for a `gemm` call, whose packing and dispatch cost more
//! than the product, and too short for dot products, whose sum's latency and horizontal
//! reduction bound them (~10 GFLOP/s). Blocks of up to 4 × 16 values of the result stay in
//! AVX2 registers over the whole inner dimension (80–85 GFLOP/s in isolation). The factors are
//! read, and the result written, in place through strides: one head's columns of the joined
//! projections, no copies.
//!
//! Every value is one sum over the inner dimension in order, of products rounded before they
//! are added (a multiply and an add, never a fused multiply-add), so the AVX2 kernel and the
//! portable loop compute the same bits, whichever block computes a value.

#![allow(unsafe_code)] // the AVX2 kernel: raw-pointer loads and stores inside checked bounds

/// A matrix read through strides: element `(i, l)` is `values[i · row + l · col]` (a transposed
/// row-major matrix has `row = 1`).
#[derive(Clone, Copy)]
pub(crate) struct Strided<'a> {
    pub(crate) values: &'a [f32],
    pub(crate) row: usize,
    pub(crate) col: usize,
}

/// Rows of contiguous values `stride` apart: row `l` starts at `values[l · stride]` (a block of
/// columns of a wider row-major matrix).
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub(crate) values: &'a [f32],
    pub(crate) stride: usize,
}

/// Rows of contiguous values `stride` apart, written.
pub(crate) struct RowsMut<'a> {
    pub(crate) values: &'a mut [f32],
    pub(crate) stride: usize,
}

/// Whether a product replaces the values of `c` or is added to them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// `c = a · b`.
    Set,
    /// `c = c + a · b` (the product summed first, then added).
    Add,
}

/// `c (m, n) = a (m, k) · b (k, n)` (or `c + a · b`, per `write`); `(m, n, k)` = `dims`. Each
/// value of the product is `Σ_l a_il · b_lj` summed in order of `l` from zero.
///
/// # Panics
/// If a slice is shorter than `dims` and the strides need (a caller's bug, not input).
pub(crate) fn product(dims: (usize, usize, usize), a: Strided, b: Rows, c: RowsMut, write: Write) {
    let (m, n, k) = dims;
    if m == 0 || n == 0 {
        return;
    }
    let extent = |rows: usize, stride: usize, last: usize| match rows {
        0 => 0,
        _ => (rows - 1) * stride + last,
    };
    let a_needed = match k {
        0 => 0,
        _ => (m - 1) * a.row + (k - 1) * a.col + 1,
    };
    assert!(
        a.values.len() >= a_needed
            && b.values.len() >= extent(k, b.stride, n)
            && c.values.len() >= extent(m, c.stride, n),
        "small product: slices shorter than {dims:?} and the strides need"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above), and every element the kernel reads or
        // writes lies inside the slices (their lengths are checked against `dims` and the
        // strides just above; the kernel touches `a` at `i · row + l · col` for `i < m`, `l <
        // k`, `b` at `l · b.stride + j` and `c` at `i · c.stride + j` for `j < n`).
        unsafe {
            avx2::product(
                dims,
                (a.values.as_ptr(), a.row, a.col),
                (b.values.as_ptr(), b.stride),
                (c.values.as_mut_ptr(), c.stride),
                write,
            );
        }
        return;
    }
    portable(dims, a, b, c, write);
}

/// [`product`] one value at a time (CPUs without AVX2, and the tests' reference).
fn portable((m, n, k): (usize, usize, usize), a: Strided, b: Rows, c: RowsMut, write: Write) {
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0.0f32;
            for l in 0..k {
                sum += a.values[i * a.row + l * a.col] * b.values[l * b.stride + j];
            }
            let at = i * c.stride + j;
            c.values[at] = match write {
                Write::Set => sum,
                Write::Add => c.values[at] + sum,
            };
        }
    }
}

/// Asks the CPU to bring `values` into its caches (a hint: no effect on results).
#[inline(always)]
pub(crate) fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks(16) {
        // SAFETY: a prefetch reads nothing architecturally and cannot fault; SSE is part of
        // x86-64.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };

    use super::Write;

    /// Rows of the result one block holds in registers.
    const BLOCK_ROWS: usize = 4;

    /// `a`: its first element and its row and column strides.
    type Left = (*const f32, usize, usize);
    /// `b`: its first element and its row stride.
    type Right = (*const f32, usize);
    /// `c`: its first element and its row stride.
    type Out = (*mut f32, usize);

    /// [`super::product`] on raw pointers: rows in blocks of 4 (then 3, 2 or 1).
    ///
    /// # Safety
    /// AVX2 must be available, and `a` readable at `i · a.1 + l · a.2`, `b` at `l · b.1 + j`,
    /// `c` readable and writable at `i · c.1 + j` for all `i < m`, `l < k`, `j < n`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn product(
        (m, n, k): (usize, usize, usize),
        a: Left,
        b: Right,
        c: Out,
        write: Write,
    ) {
        let mut i = 0;
        while i + BLOCK_ROWS <= m {
            let (a, c) = ((a.0.add(i * a.1), a.1, a.2), (c.0.add(i * c.1), c.1));
            rows::<BLOCK_ROWS>((n, k), a, b, c, write);
            i += BLOCK_ROWS;
        }
        let (a, c) = ((a.0.add(i * a.1), a.1, a.2), (c.0.add(i * c.1), c.1));
        match m - i {
            3 => rows::<3>((n, k), a, b, c, write),
            2 => rows::<2>((n, k), a, b, c, write),
            1 => rows::<1>((n, k), a, b, c, write),
            _ => {}
        }
    }

    /// `R` rows of the result (`a` and `c` at their first row): columns 16 at a time, then 8,
    /// then one by one.
    ///
    /// # Safety
    /// As [`product`], for these `R` rows.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn rows<const R: usize>(
        (n, k): (usize, usize),
        a: Left,
        b: Right,
        c: Out,
        write: Write,
    ) {
        let mut j = 0;
        while j + 16 <= n {
            block::<R, 2>(k, a, (b.0.add(j), b.1), (c.0.add(j), c.1), write);
            j += 16;
        }
        if j + 8 <= n {
            block::<R, 1>(k, a, (b.0.add(j), b.1), (c.0.add(j), c.1), write);
            j += 8;
        }
        for j in j..n {
            for r in 0..R {
                let mut sum = 0.0f32;
                for l in 0..k {
                    sum += *a.0.add(r * a.1 + l * a.2) * *b.0.add(l * b.1 + j);
                }
                let at = c.0.add(r * c.1 + j);
                *at = match write {
                    Write::Set => sum,
                    Write::Add => *at + sum,
                };
            }
        }
    }

    /// An `R × 8V` block of the result (`b` and `c` at its first column), held in registers
    /// over all `k`.
    ///
    /// # Safety
    /// As [`product`], for these rows and columns.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn block<const R: usize, const V: usize>(
        k: usize,
        (a, a_row, a_col): Left,
        (b, b_row): Right,
        (c, c_row): Out,
        write: Write,
    ) {
        let mut acc: [[__m256; V]; R] = [[_mm256_setzero_ps(); V]; R];
        for l in 0..k {
            let b_l = b.add(l * b_row);
            let mut y: [__m256; V] = [_mm256_setzero_ps(); V];
            for (v, y) in y.iter_mut().enumerate() {
                *y = _mm256_loadu_ps(b_l.add(8 * v));
            }
            let a_l = a.add(l * a_col);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_ps(*a_l.add(r * a_row));
                for (s, &y) in acc.iter_mut().zip(&y) {
                    *s = _mm256_add_ps(*s, _mm256_mul_ps(x, y));
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (v, &s) in acc.iter().enumerate() {
                let at = c.add(r * c_row + 8 * v);
                let s = match write {
                    Write::Set => s,
                    Write::Add => _mm256_add_ps(_mm256_loadu_ps(at), s),
                };
                _mm256_storeu_ps(at, s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::spread_values;

    /// The product equals the sum in `f64` to rounding, and the AVX2 kernel's bits equal the
    /// portable loop's, for shapes exercising every block (4 × 16, 4 × 8, the single columns,
    /// 3-, 2- and 1-row tails), `a` read row-major and transposed, `b` and `c` as column blocks
    /// of wider matrices, set and added.
    #[test]
    fn matches_the_portable_loop_bit_for_bit_and_f64_to_rounding() {
        for (m, n, k) in [
            (16, 16, 32),
            (16, 32, 16),
            (1, 1, 1),
            (5, 3, 7),
            (7, 25, 9),
            (6, 40, 4),
            (3, 8, 1),
            (2, 17, 64),
            (4, 0, 3),
            (4, 5, 0),
        ] {
            for (transposed, pad, write) in [
                (false, 0, Write::Set),
                (true, 3, Write::Set),
                (false, 5, Write::Add),
                (true, 0, Write::Add),
            ] {
                let a_values = spread_values(m * k, 3, 2.0);
                let (b_stride, c_stride) = (n + pad, n + 2 * pad);
                let b_values = spread_values(k * b_stride, 5, 2.0);
                let a = if transposed {
                    Strided {
                        values: &a_values,
                        row: 1,
                        col: m,
                    }
                } else {
                    Strided {
                        values: &a_values,
                        row: k,
                        col: 1,
                    }
                };
                let b = Rows {
                    values: &b_values,
                    stride: b_stride,
                };
                let c_start = spread_values(m * c_stride, 7, 1.0);
                let (mut fast, mut slow) = (c_start.clone(), c_start.clone());
                let out = |values| RowsMut {
                    values,
                    stride: c_stride,
                };
                product((m, n, k), a, b, out(&mut fast), write);
                portable((m, n, k), a, b, out(&mut slow), write);
                let case = (m, n, k, transposed, pad, write == Write::Add);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fast), bits(&slow), "{case:?}");
                for i in 0..m {
                    for j in 0..c_stride {
                        let at = i * c_stride + j;
                        let start = c_start[at] as f64;
                        let exact = if j < n {
                            let sum: f64 = (0..k)
                                .map(|l| {
                                    a.values[i * a.row + l * a.col] as f64
                                        * b_values[l * b_stride + j] as f64
                                })
                                .sum();
                            match write {
                                Write::Set => sum,
                                Write::Add => start + sum,
                            }
                        } else {
                            start // columns outside the block are untouched
                        };
                        let got = fast[at] as f64;
                        assert!(
                            (got - exact).abs() <= 1e-5 * (1.0 + exact.abs()),
                            "{case:?} ({i}, {j}): {got} vs {exact}"
                        );
                    }
                }
            }
        }
    }

    /// A slice shorter than the dimensions need is refused before any element is touched.
    #[test]
    #[should_panic(expected = "small product")]
    fn short_slices_are_refused() {
        let a = [1.0f32; 6];
        let mut c = [0.0f32; 4];
        product(
            (2, 2, 4),
            Strided {
                values: &a,
                row: 4,
                col: 1,
            },
            Rows {
                values: &[1.0; 8],
                stride: 2,
            },
            RowsMut {
                values: &mut c,
                stride: 2,
            },
            Write::Set,
        );
    }
}
