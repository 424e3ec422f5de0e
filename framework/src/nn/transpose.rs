//! A cache-blocked matrix transpose for the CPU kernels: `gemm` reads a weight's transpose
//! (the input gradient `g Wᵀ`) through a strided view by gathering it one element at a time
//! into its packing buffer, which costs up to a third of the product on the weights of the
//! reference MLPs; a transposed copy made 8 × 8 blocks at a time with vector shuffles is read
//! contiguously instead (decision 0027).

#![allow(unsafe_code)] // AVX2 shuffles once the CPU is known to have AVX2

/// Side of the square tiles the blocks are visited in: a tile's source rows and destination
/// rows (32 × 32 floats, 4 KiB each) stay in the first-level cache while its 16 blocks move.
const TILE: usize = 32;

/// The transpose `(cols, rows)`, row-major, of the row-major `(rows, cols)` matrix `src`.
///
/// # Panics
/// When `src` does not hold `rows · cols` values (a caller's bug, not user input).
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(
        src.len(),
        rows * cols,
        "transpose: {rows} × {cols} values expected"
    );
    let mut dst = vec![0.0; rows * cols];
    let (block_rows, block_cols) = (rows / 8 * 8, cols / 8 * 8);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked above); `blocks_avx2` touches only whole 8 × 8
        // blocks inside `block_rows × block_cols`, which lie inside both matrices.
        unsafe { blocks_avx2(src, rows, cols, &mut dst, block_rows, block_cols) };
        edges(src, rows, cols, &mut dst, block_rows, block_cols);
        return dst;
    }
    edges(src, rows, cols, &mut dst, 0, 0);
    dst
}

/// The elements outside the top-left `block_rows × block_cols` corner, one at a time.
fn edges(
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    block_rows: usize,
    block_cols: usize,
) {
    for r in 0..rows {
        let first = if r < block_rows { block_cols } else { 0 };
        for c in first..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// The 8 × 8 blocks of the top-left `block_rows × block_cols` corner (multiples of 8), tile by
/// tile.
///
/// # Safety
/// The CPU has AVX2; `block_rows ≤ rows`, `block_cols ≤ cols`, both multiples of 8, and `src`,
/// `dst` hold `rows · cols` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn blocks_avx2(
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    block_rows: usize,
    block_cols: usize,
) {
    for r0 in (0..block_rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(block_rows);
        for c0 in (0..block_cols).step_by(TILE) {
            let c1 = (c0 + TILE).min(block_cols);
            for c in (c0..c1).step_by(8) {
                for r in (r0..r1).step_by(8) {
                    // SAFETY: rows r..r + 8 and columns c..c + 8 lie inside the matrices.
                    unsafe {
                        block_avx2(
                            src.as_ptr().add(r * cols + c),
                            cols,
                            dst.as_mut_ptr().add(c * rows + r),
                            rows,
                        );
                    }
                }
            }
        }
    }
}

/// Transposes the 8 × 8 block at `src` (rows `src_stride` apart) into `dst` (rows
/// `dst_stride` apart).
///
/// # Safety
/// The CPU has AVX2; 8 rows of 8 values at both pointers are valid.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn block_avx2(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees 8 rows of 8 values at `src` and `dst`.
    unsafe {
        // Macros, not closures: the intrinsics must inline into this AVX2 function.
        macro_rules! row {
            ($i:expr) => {
                _mm256_loadu_ps(src.add($i * src_stride))
            };
        }
        let (r0, r1, r2, r3) = (row!(0), row!(1), row!(2), row!(3));
        let (r4, r5, r6, r7) = (row!(4), row!(5), row!(6), row!(7));
        // Pairs of rows interleaved, then pairs of pairs: each 128-bit half of `s_i` holds
        // four values of one column.
        let t0 = _mm256_unpacklo_ps(r0, r1);
        let t1 = _mm256_unpackhi_ps(r0, r1);
        let t2 = _mm256_unpacklo_ps(r2, r3);
        let t3 = _mm256_unpackhi_ps(r2, r3);
        let t4 = _mm256_unpacklo_ps(r4, r5);
        let t5 = _mm256_unpackhi_ps(r4, r5);
        let t6 = _mm256_unpacklo_ps(r6, r7);
        let t7 = _mm256_unpackhi_ps(r6, r7);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        macro_rules! out {
            ($i:expr, $v:expr) => {
                _mm256_storeu_ps(dst.add($i * dst_stride), $v)
            };
        }
        out!(0, _mm256_permute2f128_ps::<0x20>(s0, s4));
        out!(1, _mm256_permute2f128_ps::<0x20>(s1, s5));
        out!(2, _mm256_permute2f128_ps::<0x20>(s2, s6));
        out!(3, _mm256_permute2f128_ps::<0x20>(s3, s7));
        out!(4, _mm256_permute2f128_ps::<0x31>(s0, s4));
        out!(5, _mm256_permute2f128_ps::<0x31>(s1, s5));
        out!(6, _mm256_permute2f128_ps::<0x31>(s2, s6));
        out!(7, _mm256_permute2f128_ps::<0x31>(s3, s7));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape class (whole blocks, partial tiles, ragged edges, a single row or column)
    /// moves every element to its transposed place; the portable path agrees.
    #[test]
    fn transposes_every_shape() {
        for (rows, cols) in [
            (8, 8),
            (64, 32),
            (37, 70),
            (300, 45),
            (1, 5),
            (5, 1),
            (0, 4),
            (765, 256),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = transpose(&src, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        src[r * cols + c],
                        "{rows} × {cols} at {r}, {c}"
                    );
                }
            }
            let mut portable = vec![0.0; rows * cols];
            edges(&src, rows, cols, &mut portable, 0, 0);
            assert_eq!(portable, t, "{rows} × {cols}");
        }
    }
}
