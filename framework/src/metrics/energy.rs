//! Energy distance (Székely & Rizzo).
//!
//! `ED(X, Y) = 2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖` with Euclidean norms, estimated by the
//! **V-statistic**: every expectation is the mean over all ordered pairs, including the
//! zero `i = i'` terms for the within-sample means. This is non-negative, matches
//! `dcor.energy_distance` and, in 1-D, equals `scipy.stats.energy_distance(u, v)²`.
//! Cost `O((m + n)² d)`: squared distances come from blocked f64 matrix products
//! (`‖a‖² + ‖b‖² − 2 a·b`, see `util::pairwise_sq_dist_row_sums`), parallel over rows;
//! within-sample sums visit each unordered pair once (the distance is symmetric).

use super::util::{check_matrix, pairwise_sq_dist_row_sums};
use super::Result;
use serde::Serialize;

/// Result of [`energy_distance`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnergyResult {
    /// The energy distance (V-statistic).
    pub energy: f64,
    /// Mean cross distance `E‖X − Y‖`.
    pub mean_cross: f64,
    /// Mean within-`X` distance `E‖X − X'‖` (V-statistic).
    pub mean_within_x: f64,
    /// Mean within-`Y` distance `E‖Y − Y'‖` (V-statistic).
    pub mean_within_y: f64,
    /// Protocol string, e.g. `energy_distance(euclidean, V-statistic, space=pca50, n_x=.., n_y=..)`.
    pub protocol: String,
}

fn mean_dist(a: &[f32], na: usize, b: &[f32], nb: usize, d: usize) -> f64 {
    let partial = pairwise_sq_dist_row_sums(a, na, b, nb, d, false, f64::sqrt);
    partial.iter().sum::<f64>() / (na as f64 * nb as f64)
}

/// Within-sample mean over all `n²` ordered pairs (V-statistic, zero diagonal included):
/// the distance is symmetric, so each unordered pair `i < j` is computed once and counted
/// twice.
fn mean_dist_within(a: &[f32], n: usize, d: usize) -> f64 {
    let partial = pairwise_sq_dist_row_sums(a, n, a, n, d, true, f64::sqrt);
    2.0 * partial.iter().sum::<f64>() / (n as f64 * n as f64)
}

/// Energy distance between `x` (`(nx, d)` row-major) and `y` (`(ny, d)` row-major); `space`
/// is copied into the protocol string.
///
/// # Errors
/// [`crate::metrics::MetricsError`] on shape mismatch, non-finite values or an empty sample.
pub fn energy_distance(
    x: &[f32],
    nx: usize,
    y: &[f32],
    ny: usize,
    d: usize,
    space: &str,
) -> Result<EnergyResult> {
    check_matrix("energy x", x, nx, d, 1)?;
    check_matrix("energy y", y, ny, d, 1)?;
    let mean_cross = mean_dist(x, nx, y, ny, d);
    let mean_within_x = mean_dist_within(x, nx, d);
    let mean_within_y = mean_dist_within(y, ny, d);
    Ok(EnergyResult {
        energy: (2.0 * mean_cross - mean_within_x - mean_within_y).max(0.0),
        mean_cross,
        mean_within_x,
        mean_within_y,
        protocol: format!(
            "energy_distance(euclidean, V-statistic, space={space}, n_x={nx}, n_y={ny})"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_1d() {
        // x = {0, 1}, y = {2}: E|X-Y| = 1.5, E|X-X'| = (0+1+1+0)/4 = 0.5, E|Y-Y'| = 0
        let r = energy_distance(&[0.0, 1.0], 2, &[2.0], 1, 1, "input").expect("e");
        assert!((r.energy - 2.5).abs() < 1e-12);
    }

    /// Reference from `reference_values.py` (numpy / scipy).
    #[test]
    fn numpy_reference_2d() {
        let x = [0.0f32, 0.0, 1.0, 0.5, -1.0, 2.0, 0.3, -0.7];
        let y = [2.0f32, 1.0, 1.5, -0.5, 3.0, 0.0];
        let r = energy_distance(&x, 4, &y, 3, 2, "input").expect("e");
        assert!((r.energy - REF_ENERGY_2D).abs() < 1e-6, "{}", r.energy);
    }
    const REF_ENERGY_2D: f64 = 2.3902626923599932;

    #[test]
    fn identical_is_zero() {
        let x = [0.0f32, 1.0, 5.0, 2.0];
        let r = energy_distance(&x, 2, &x, 2, 2, "input").expect("e");
        assert!(r.energy.abs() < 1e-12);
    }
}
