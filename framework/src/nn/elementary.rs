//! `e^x` and `ln x` for the CPU kernels' inner loops: branch-free (selects, no calls), so a loop
//! over slices compiled by [`super::vectorized`] runs them 8 or 16 lanes at a time, where
//! libm's `expf` / `logf` are one call per element (together ~4 % of the README job's training
//! samples inside the hurdle-Gaussian loss, ~6 % of a sampling run's inside SiLU).

/// `e^x` to within 2 ulp (about `f32::MIN_POSITIVE` below −87.3, `+∞` above 88.7): Cephes' `expf`
/// (range reduction by `ln 2` in two parts, a degree-6 polynomial, the power of two assembled
/// in the exponent bits).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.336_55, 88.722_83);
    // Round to nearest by adding and subtracting 1.5 · 2²³ (no `round` call without SSE4.1).
    const ROUNDER: f32 = 12_582_912.0;
    let n = (x * LOG2_E + ROUNDER) - ROUNDER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // `n` lies in [-126, 128]: at 128 (x near the top) the scale overflows to +∞ as `expf` does.
    e * power_of_two(n)
}

/// `2ⁿ` for a whole number `n`, as the bits `(n + 127).clamp(0, 255) << 23` (0 below −127, +∞
/// from 128). The biased exponent lands in the low mantissa bits of `biased + 2²³` and is
/// shifted into the exponent field: no float-to-integer conversion, whose saturating form
/// (`as i32`) has no AVX2 instruction and kept `exp`'s loops partly scalar (a SiLU loop runs
/// 1.8 times as fast without it).
#[inline(always)]
fn power_of_two(n: f32) -> f32 {
    let biased = (n + 127.0).clamp(0.0, 255.0);
    f32::from_bits((biased + 8_388_608.0).to_bits() << 23)
}

/// `ln x` for a positive, normal, finite `x` to within 2 ulp: Cephes' `logf` (`x = m · 2ᵉ` with
/// `m` in `[√½, √2)` read from the bits, `ln m` by a degree-9 polynomial in `m − 1`, `e · ln 2`
/// added in two parts). Zero, negative, subnormal and non-finite inputs give meaningless
/// values; callers pass values bounded away from them (`1 + e^{−|l|}` in `[1, 2]`).
#[inline(always)]
pub(crate) fn ln(x: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let bits = x.to_bits();
    // x = m · 2^e with m in [½, 1): the exponent field gives e, the mantissa with exponent −1 m.
    let e = ((bits >> 23) & 0xff) as i32 - 126;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    let below = m < SQRT_HALF;
    let f = if below { m + m - 1.0 } else { m - 1.0 };
    let e = (if below { e - 1 } else { e }) as f32;
    let z = f * f;
    let mut p = 7.037_683_6e-2;
    for c in [
        -1.151_461e-1,
        1.167_699_87e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_5e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ] {
        p = p * f + c;
    }
    let y = p * f * z + LN2_LO * e - 0.5 * z;
    f + y + LN2_HI * e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulp(a: f32, b: f32) -> i64 {
        (a.to_bits() as i64 - b.to_bits() as i64).abs()
    }

    #[test]
    fn power_of_two_equals_the_integer_built_one() {
        for n in -200..=200 {
            let from_integer = f32::from_bits(((n + 127).clamp(0, 255) as u32) << 23);
            assert_eq!(
                power_of_two(n as f32).to_bits(),
                from_integer.to_bits(),
                "2^{n}"
            );
        }
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, libm) = (exp(x), x.exp());
            assert!(ulp(ours, libm) <= 2, "exp({x}) = {ours}, libm {libm}");
            x += 0.001_37;
        }
        assert!(exp(-200.0) <= f32::MIN_POSITIVE * 1.001);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(100.0).is_infinite());
    }

    /// Over the whole normal range (by factors of 1.0007) and densely over `[1, 2]` (the
    /// hurdle loss's `1 + e^{−|l|}`), against the correctly rounded value from `f64`.
    #[test]
    fn ln_is_within_two_ulp_of_the_exact_value() {
        let check = |x: f32| {
            let exact = (f64::from(x)).ln() as f32;
            assert!(ulp(ln(x), exact) <= 2, "ln({x}) = {}, exact {exact}", ln(x));
        };
        let mut x = f32::MIN_POSITIVE;
        while x < f32::MAX / 1.001 {
            check(x);
            x *= 1.000_7;
        }
        for i in 0..=1 << 20 {
            check(1.0 + i as f32 / (1 << 20) as f32);
        }
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(std::f32::consts::E), 1.0);
    }
}
