//! RBF kernels and bandwidth selection.
//!
//! The Gaussian (RBF) kernel used throughout is
//! `k_σ(a, b) = exp(−‖a − b‖² / (2 σ²))`; a multi-bandwidth kernel is the **sum**
//! `Σ_s k_{σ_s}(a, b)` over the listed bandwidths.
//!
//! **Median heuristic (exact definition):** pool the rows of both samples, take a seeded
//! uniform subsample of at most `max_points` pooled rows (all rows if fewer), and set
//! `σ² = median{‖p_i − p_j‖² : i < j}` over that subsample (even count: mean of the two
//! middle values). If that median is 0 (more than half the pairs are duplicates) the mean
//! of the pairwise squared distances is used instead; if that is also 0 the heuristic is
//! undefined and an error is returned.

use super::util::{check_matrix, median, pairwise_sq_dist_row_sums, sq_dist, subsample_indices};
use super::{MetricsError, Result};
use rayon::prelude::*;
use serde::Serialize;

/// How the RBF bandwidth(s) are chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Bandwidth {
    /// One bandwidth, `σ² =` median of pooled pairwise squared distances (module docs).
    MedianHeuristic,
    /// Several bandwidths `σ_s = f_s · σ_median` for each factor `f_s` (the kernel is their
    /// sum). [`Bandwidth::multi_scale`] gives factors `{0.5, 1, 2}`.
    MultiScaleMedian {
        /// Multiplicative factors applied to the median-heuristic σ (not σ²).
        factors: Vec<f64>,
    },
    /// Fixed bandwidths σ (the kernel is their sum).
    Fixed {
        /// The σ values (each finite and > 0).
        sigmas: Vec<f64>,
    },
}

impl Bandwidth {
    /// The default multi-scale choice: `σ_median × {0.5, 1, 2}`.
    pub fn multi_scale() -> Self {
        Bandwidth::MultiScaleMedian {
            factors: vec![0.5, 1.0, 2.0],
        }
    }

    /// Short name used in protocol strings, e.g. `median_heuristic` or
    /// `multiscale_median(x0.5,x1,x2)`.
    pub fn name(&self) -> String {
        match self {
            Bandwidth::MedianHeuristic => "median_heuristic".to_string(),
            Bandwidth::MultiScaleMedian { factors } => format!(
                "multiscale_median({})",
                factors
                    .iter()
                    .map(|f| format!("x{f}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Bandwidth::Fixed { .. } => "fixed".to_string(),
        }
    }
}

impl Default for Bandwidth {
    fn default() -> Self {
        Bandwidth::multi_scale()
    }
}

/// Median-heuristic `σ²` on the pooled rows of `x` (`(nx, d)`) and `y` (`(ny, d)`), using a
/// seeded subsample of at most `max_points` pooled rows (see module docs for the exact
/// definition and the zero-median fallback).
///
/// # Errors
/// [`MetricsError`] on shape mismatch, non-finite values, fewer than 2 pooled rows,
/// `max_points < 2`, or when all subsampled rows are identical.
pub fn median_heuristic_sigma2(
    x: &[f32],
    nx: usize,
    y: &[f32],
    ny: usize,
    d: usize,
    max_points: usize,
    seed: u64,
) -> Result<f64> {
    check_matrix("median heuristic x", x, nx, d, 0)?;
    check_matrix("median heuristic y", y, ny, d, 0)?;
    if nx + ny < 2 {
        return Err(MetricsError::TooFew {
            what: "median heuristic pooled sample".to_string(),
            got: nx + ny,
            need: 2,
        });
    }
    if max_points < 2 {
        return Err(MetricsError::InvalidArgument(
            "median heuristic: max_points must be >= 2".to_string(),
        ));
    }
    let idx = subsample_indices(nx + ny, max_points, seed);
    let mut pooled = Vec::with_capacity(idx.len() * d);
    for &i in &idx {
        if i < nx {
            pooled.extend_from_slice(&x[i * d..(i + 1) * d]);
        } else {
            let j = i - nx;
            pooled.extend_from_slice(&y[j * d..(j + 1) * d]);
        }
    }
    let m = idx.len();
    let rows: Vec<Vec<f64>> = (0..m)
        .into_par_iter()
        .map(|i| {
            let a = &pooled[i * d..(i + 1) * d];
            (i + 1..m)
                .map(|j| sq_dist(a, &pooled[j * d..(j + 1) * d]))
                .collect()
        })
        .collect();
    let mut all: Vec<f64> = rows.into_iter().flatten().collect();
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    let med = median(&mut all);
    if med > 0.0 {
        Ok(med)
    } else if mean > 0.0 {
        Ok(mean)
    } else {
        Err(MetricsError::Undefined(
            "median heuristic: all pooled rows are identical".to_string(),
        ))
    }
}

/// Resolves a [`Bandwidth`] to concrete σ values.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resolve_sigmas(
    bandwidth: &Bandwidth,
    x: &[f32],
    nx: usize,
    y: &[f32],
    ny: usize,
    d: usize,
    max_points: usize,
    seed: u64,
) -> Result<Vec<f64>> {
    let sigmas = match bandwidth {
        Bandwidth::Fixed { sigmas } => sigmas.clone(),
        Bandwidth::MedianHeuristic => {
            vec![median_heuristic_sigma2(x, nx, y, ny, d, max_points, seed)?.sqrt()]
        }
        Bandwidth::MultiScaleMedian { factors } => {
            let s = median_heuristic_sigma2(x, nx, y, ny, d, max_points, seed)?.sqrt();
            factors.iter().map(|f| f * s).collect()
        }
    };
    if sigmas.is_empty() || sigmas.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(MetricsError::InvalidArgument(format!(
            "bandwidths must be a non-empty list of finite positive values, got {sigmas:?}"
        )));
    }
    Ok(sigmas)
}

/// One term of [`RbfSum`].
#[derive(Debug, Clone, Copy)]
enum RbfTerm {
    /// `exp(sq · base)^r`: the coefficient is exactly `r · base`.
    Power(i32),
    /// `exp(sq · c)` evaluated directly.
    Direct(f64),
}

/// `e^r` for `r ≥ 1` by binary exponentiation (for a power of two: repeated squaring).
#[inline]
fn pow_int(e: f64, r: i32) -> f64 {
    let (mut acc, mut b, mut r) = (1.0, e, r);
    while r > 0 {
        if r & 1 == 1 {
            acc *= b;
        }
        r >>= 1;
        if r > 0 {
            b *= b;
        }
    }
    acc
}

/// Sum of RBF kernels `Σ_s exp(sq · c_s)` for coefficients `c_s = −1/(2σ_s²)`, summed in
/// the order given.
///
/// A coefficient that is exactly an integer multiple `r ≤ 64` of the smallest-magnitude one
/// (`base`) is evaluated as `exp(sq · base)^r` instead of its own `exp`: with bandwidth
/// factors that differ by powers of two (the default `{0.5, 1, 2}`) one `exp` per pair
/// serves all three terms. The argument `sq · c_s = r · (sq · base)` is then the same number,
/// so the term differs from its own `exp` only by rounding (at most about `r + 1` units in
/// the last place).
#[derive(Debug, Clone)]
pub(crate) struct RbfSum {
    base: f64,
    terms: Vec<RbfTerm>,
}

impl RbfSum {
    /// Plans the sum for the coefficients `neg_inv_two_sigma2` (each `−1/(2σ²)`).
    pub(crate) fn new(neg_inv_two_sigma2: &[f64]) -> Self {
        let base = neg_inv_two_sigma2
            .iter()
            .copied()
            .filter(|c| c.is_finite() && *c != 0.0)
            .min_by(|a, b| a.abs().total_cmp(&b.abs()))
            .unwrap_or(0.0);
        let terms = neg_inv_two_sigma2
            .iter()
            .map(|&c| {
                let r = c / base;
                if base != 0.0 && r.fract() == 0.0 && (1.0..=64.0).contains(&r) && r * base == c {
                    RbfTerm::Power(r as i32)
                } else {
                    RbfTerm::Direct(c)
                }
            })
            .collect();
        RbfSum { base, terms }
    }

    /// `Σ_s exp(sq · c_s)`.
    #[inline]
    pub(crate) fn eval(&self, sq: f64) -> f64 {
        let e = (sq * self.base).exp();
        self.terms
            .iter()
            .map(|t| match *t {
                RbfTerm::Power(1) => e,
                RbfTerm::Power(r) => pow_int(e, r),
                RbfTerm::Direct(c) => (sq * c).exp(),
            })
            .sum()
    }
}

/// `Σ_{i<j} k(a_i, a_j)` within one `(n, d)` sample (deterministic parallel sum; squared
/// distances from blocked matrix products, see [`pairwise_sq_dist_row_sums`]).
pub(crate) fn within_sum(a: &[f32], n: usize, d: usize, coef: &[f64]) -> f64 {
    let rbf = RbfSum::new(coef);
    let partial = pairwise_sq_dist_row_sums(a, n, a, n, d, true, |sq| rbf.eval(sq));
    partial.iter().sum()
}

/// `Σ_{i,j} k(a_i, b_j)` between two samples (deterministic parallel sum; squared distances
/// from blocked matrix products, see [`pairwise_sq_dist_row_sums`]).
pub(crate) fn cross_sum(a: &[f32], na: usize, b: &[f32], nb: usize, d: usize, coef: &[f64]) -> f64 {
    let rbf = RbfSum::new(coef);
    let partial = pairwise_sq_dist_row_sums(a, na, b, nb, d, false, |sq| rbf.eval(sq));
    partial.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbf_sum_matches_direct_exponentials() {
        let s = 1.7f64;
        // default factors {0.5, 1, 2} (powers 16, 4, 1 of the widest), plus a non-multiple
        for factors in [vec![0.5, 1.0, 2.0], vec![1.0], vec![0.7, 1.0, 3.0]] {
            let coef: Vec<f64> = factors
                .iter()
                .map(|f| -1.0 / (2.0 * (f * s) * (f * s)))
                .collect();
            let rbf = RbfSum::new(&coef);
            for sq in [0.0, 1e-9, 0.3, 2.0, 17.5, 300.0, 5e4] {
                let direct: f64 = coef.iter().map(|c| (sq * c).exp()).sum();
                let got = rbf.eval(sq);
                assert!(
                    (got - direct).abs() <= 1e-14 * direct.max(f64::MIN_POSITIVE),
                    "{factors:?} sq={sq}: {got} vs {direct}"
                );
            }
        }
        assert!(matches!(
            RbfSum::new(&[-2.0, -0.5, -0.125]).terms[..],
            [RbfTerm::Power(16), RbfTerm::Power(4), RbfTerm::Power(1)]
        ));
    }

    #[test]
    fn median_heuristic_by_hand() {
        // pooled 1-D points {0, 1, 3}: squared distances {1, 9, 4} → median 4.
        let s2 = median_heuristic_sigma2(&[0.0, 1.0], 2, &[3.0], 1, 1, 1000, 0).expect("mh");
        assert_eq!(s2, 4.0);
        // four points {0,0,0,1}: sq dists {0,0,0,1,1,1} → median 0.5
        let s2 = median_heuristic_sigma2(&[0.0, 0.0], 2, &[0.0, 1.0], 2, 1, 1000, 0).expect("mh");
        assert_eq!(s2, 0.5);
        assert!(median_heuristic_sigma2(&[1.0, 1.0], 2, &[1.0], 1, 1, 1000, 0).is_err());
    }
}
