//! Wasserstein-1 distances: exact 1-D, per component, and sliced.
//!
//! The 1-D distance between two empirical distributions of possibly different sizes is
//! `W₁ = ∫₀¹ |F⁻¹(t) − G⁻¹(t)| dt`, computed exactly by merging the two sorted samples'
//! quantile step functions (same value as `scipy.stats.wasserstein_distance(u, v)`).

use super::util::{check_matrix, check_vec64};
use super::{MetricsError, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::Serialize;

/// Exact 1-D Wasserstein-1 distance between the empirical distributions of `a` and `b`
/// (sizes may differ).
///
/// # Errors
/// [`MetricsError`] if either slice is empty or holds a non-finite value.
pub fn wasserstein_1d(a: &[f64], b: &[f64]) -> Result<f64> {
    check_vec64("wasserstein a", a, 1)?;
    check_vec64("wasserstein b", b, 1)?;
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(|x, y| x.total_cmp(y));
    b.sort_by(|x, y| x.total_cmp(y));
    Ok(w1_sorted(&a, &b))
}

/// W₁ of two sorted non-empty samples by quantile matching.
fn w1_sorted(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len(), b.len());
    let (mut i, mut j) = (0usize, 0usize);
    let mut t = 0.0f64;
    let mut total = 0.0f64;
    while i < n && j < m {
        // next breakpoints (i+1)/n and (j+1)/m compared exactly in integers
        let lhs = (i + 1) * m;
        let rhs = (j + 1) * n;
        let next = if lhs <= rhs {
            (i + 1) as f64 / n as f64
        } else {
            (j + 1) as f64 / m as f64
        };
        total += (next - t) * (a[i] - b[j]).abs();
        t = next;
        if lhs <= rhs {
            i += 1;
        }
        if rhs <= lhs {
            j += 1;
        }
    }
    total
}

/// Result of [`wasserstein_per_component`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WassersteinResult {
    /// W₁ of each of the `d` components (columns).
    pub per_component: Vec<f64>,
    /// Mean of `per_component`.
    pub mean: f64,
    /// Protocol string, e.g. `wasserstein1_per_component(mean over d=50, space=pca50, n_x=.., n_y=..)`.
    pub protocol: String,
}

/// 1-D W₁ between the marginals of each column of `x` (`(nx, d)`) and `y` (`(ny, d)`),
/// and their mean over columns. `space` goes into the protocol string.
///
/// # Errors
/// [`MetricsError`] on shape mismatch, non-finite values or an empty sample.
pub fn wasserstein_per_component(
    x: &[f32],
    nx: usize,
    y: &[f32],
    ny: usize,
    d: usize,
    space: &str,
) -> Result<WassersteinResult> {
    check_matrix("wasserstein x", x, nx, d, 1)?;
    check_matrix("wasserstein y", y, ny, d, 1)?;
    let per_component: Vec<f64> = (0..d)
        .into_par_iter()
        .map(|c| {
            let mut a: Vec<f64> = (0..nx).map(|i| f64::from(x[i * d + c])).collect();
            let mut b: Vec<f64> = (0..ny).map(|i| f64::from(y[i * d + c])).collect();
            a.sort_by(|p, q| p.total_cmp(q));
            b.sort_by(|p, q| p.total_cmp(q));
            w1_sorted(&a, &b)
        })
        .collect();
    let mean = per_component.iter().sum::<f64>() / d as f64;
    Ok(WassersteinResult {
        per_component,
        mean,
        protocol: format!(
            "wasserstein1_per_component(mean over d={d}, space={space}, n_x={nx}, n_y={ny})"
        ),
    })
}

/// Result of [`sliced_wasserstein`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlicedWassersteinResult {
    /// Mean over projections of the 1-D W₁ of the projected samples.
    pub value: f64,
    /// Number of random directions.
    pub n_projections: usize,
    /// Protocol string, e.g. `sliced_wasserstein1(projections=128, seed=0, space=.., n_x=.., n_y=..)`.
    pub protocol: String,
}

/// Sliced Wasserstein-1: mean over `n_projections` random unit directions (isotropic
/// Gaussian normalized, drawn from `StdRng::seed_from_u64(seed)`) of the exact 1-D W₁
/// between the projections of `x` (`(nx, d)`) and `y` (`(ny, d)`).
///
/// # Errors
/// [`MetricsError`] on shape mismatch, non-finite values, an empty sample or
/// `n_projections == 0`.
#[allow(clippy::too_many_arguments)]
pub fn sliced_wasserstein(
    x: &[f32],
    nx: usize,
    y: &[f32],
    ny: usize,
    d: usize,
    n_projections: usize,
    seed: u64,
    space: &str,
) -> Result<SlicedWassersteinResult> {
    check_matrix("sliced wasserstein x", x, nx, d, 1)?;
    check_matrix("sliced wasserstein y", y, ny, d, 1)?;
    if n_projections == 0 {
        return Err(MetricsError::InvalidArgument(
            "sliced wasserstein: n_projections must be > 0".to_string(),
        ));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut dirs: Vec<Vec<f64>> = Vec::with_capacity(n_projections);
    while dirs.len() < n_projections {
        let v: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
        let nrm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if nrm > 1e-12 {
            dirs.push(v.into_iter().map(|a| a / nrm).collect());
        }
    }
    let project = |m: &[f32], n: usize, dir: &[f64]| -> Vec<f64> {
        let mut p: Vec<f64> = (0..n)
            .map(|i| {
                m[i * d..(i + 1) * d]
                    .iter()
                    .zip(dir)
                    .map(|(a, b)| f64::from(*a) * b)
                    .sum()
            })
            .collect();
        p.sort_by(|a, b| a.total_cmp(b));
        p
    };
    let vals: Vec<f64> = dirs
        .par_iter()
        .map(|dir| w1_sorted(&project(x, nx, dir), &project(y, ny, dir)))
        .collect();
    Ok(SlicedWassersteinResult {
        value: vals.iter().sum::<f64>() / n_projections as f64,
        n_projections,
        protocol: format!(
            "sliced_wasserstein1(projections={n_projections}, seed={seed}, space={space}, n_x={nx}, n_y={ny})"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_unequal_sizes() {
        // a = {0, 1}, b = {0}: quantiles 0 on [0, .5), 1 on [.5, 1) vs 0 → 0.5
        assert!((wasserstein_1d(&[0.0, 1.0], &[0.0]).expect("w") - 0.5).abs() < 1e-15);
        // shift by 3 of the same sample → 3
        assert!(
            (wasserstein_1d(&[1.0, 2.0, 7.0], &[4.0, 5.0, 10.0]).expect("w") - 3.0).abs() < 1e-12
        );
    }

    /// scipy.stats.wasserstein_distance reference, see `reference_values.py`.
    #[test]
    fn scipy_reference() {
        let a = [0.0, 1.0, 3.0];
        let b = [5.0, 6.0, 8.0, 0.5];
        assert!((wasserstein_1d(&a, &b).expect("w") - REF_W1).abs() < 1e-12);
    }
    const REF_W1: f64 = 3.5416666666666665;

    #[test]
    fn per_component_and_sliced() {
        let x = [0.0f32, 0.0, 1.0, 1.0, 2.0, 2.0];
        let y = [1.0f32, 0.0, 2.0, 1.0, 3.0, 2.0];
        let r = wasserstein_per_component(&x, 3, &y, 3, 2, "input").expect("w");
        assert!((r.per_component[0] - 1.0).abs() < 1e-12 && r.per_component[1].abs() < 1e-12);
        assert!((r.mean - 0.5).abs() < 1e-12);
        let s = sliced_wasserstein(&x, 3, &x, 3, 2, 16, 0, "input").expect("s");
        assert!(s.value.abs() < 1e-12);
        let s2 = sliced_wasserstein(&x, 3, &y, 3, 2, 16, 0, "input").expect("s");
        assert!(s2.value > 0.0 && s2.value <= 1.0 + 1e-12);
        assert!(wasserstein_1d(&[], &[1.0]).is_err());
    }
}
