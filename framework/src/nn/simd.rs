//! The compute-bound CPU loops (GELU, SiLU, row normalization, the attention kernel, the dropout
//! mask) compiled a second time with AVX2 (or AVX-512) enabled and chosen at run time: the crate is built for baseline x86-64
//! (SSE2, four lanes) so that it runs on every such CPU, which left those loops at half the
//! width the CPUs we run on have. Only the instruction width changes: Rust never fuses a product
//! and a sum on its own, and every sum keeps its order, so both versions compute the same bits.

#![allow(unsafe_code)] // calling the AVX2 compilation once the CPU is known to have AVX2

/// Runs `f`, compiled with AVX2 enabled where the CPU has it (`f`'s body and what it inlines;
/// call it inside rayon tasks, around the per-row loops, not around the tasks).
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: `with_avx2` requires AVX2, which this CPU has (checked just above).
        return unsafe { with_avx2(f) };
    }
    f()
}

/// [`vectorized`] for integer loops on 64-bit lanes (the dropout mask's hash): compiled with
/// AVX-512 (F, DQ, VL) where the CPU has it, whose 64-bit lane products AVX2 lacks (the mask
/// runs 2.5 times as fast), else with AVX2. Integer arithmetic is exact, so every version gives
/// the same bits.
#[inline(always)]
pub(crate) fn vectorized_with_64_bit_products<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512vl")
    {
        // SAFETY: `with_avx512` requires these features, which this CPU has (checked above).
        return unsafe { with_avx512(f) };
    }
    vectorized(f)
}

/// `f()` in a function compiled with AVX-512 F/DQ/VL (and AVX2), into which `f` is inlined.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512dq,avx512vl")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `f()` in a function compiled with AVX2, into which `f` (a single-use closure) is inlined.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::elementary::exp;

    /// The loop shapes of the kernels (GELU's `exp`-based tanh, a SiLU, a row normalization's
    /// sums, clamps and maxima) compute the same bits whether compiled for AVX2 or baseline.
    #[inline(always)]
    fn kernel_like(x: &[f32]) -> Vec<f32> {
        let mean = x.iter().sum::<f32>() / x.len() as f32;
        x.iter()
            .map(|&v| {
                let u = 0.797_884_6 * (v + 0.044_715 * v * v * v);
                let tanh = 1.0 - 2.0 / (1.0 + exp(2.0 * u));
                let silu = v / (1.0 + exp(-v));
                0.5 * v * (1.0 + tanh) + silu * (v - mean) + v.max(0.25) * v.clamp(-1.0, 1.0)
            })
            .collect()
    }

    #[test]
    fn avx2_and_baseline_compute_the_same_bits() {
        let x = crate::testing::spread_values(4099, 3, 12.0);
        let baseline = kernel_like(&x);
        let dispatched = vectorized(
            #[inline(always)]
            || kernel_like(&x),
        );
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&baseline), bits(&dispatched));
    }
}
