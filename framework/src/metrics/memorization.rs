//! Memorization check: are generated cells closer to the training cells than new real
//! cells are?
//!
//! `ratio = mean_i NN(g_i, train) / mean_j NN(h_j, train)` where `NN(c, train)` is the
//! Euclidean distance from cell `c` to its nearest training cell, `g` the generated and
//! `h` the real held-out cells. `ratio ≈ 1`: generated cells are as far from the training
//! set as unseen real cells; `ratio < 1`: generated cells sit closer to training cells than
//! new real cells do (memorization); `ratio > 1`: generated cells are further away (often
//! lower fidelity).

use super::neighbors::nearest_distances;
use super::util::{check_matrix, median};
use super::{MetricsError, Result};
use serde::Serialize;

/// Result of [`memorization_ratio`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemorizationResult {
    /// Mean generated NN distance / mean held-out NN distance.
    pub ratio: f64,
    /// Mean distance from generated cells to their nearest training cell.
    pub mean_nn_generated: f64,
    /// Mean distance from held-out real cells to their nearest training cell.
    pub mean_nn_heldout: f64,
    /// Median generated NN distance.
    pub median_nn_generated: f64,
    /// Median held-out NN distance.
    pub median_nn_heldout: f64,
    /// Fraction of generated cells whose NN distance is below the 5th percentile of the
    /// held-out NN distances (≈ 0.05 when there is no memorization).
    pub frac_generated_below_heldout_p5: f64,
    /// Protocol string, e.g. `memorization_nn_ratio(euclidean, space=.., n_train=.., n_gen=.., n_heldout=..)`.
    pub protocol: String,
}

/// Memorization ratio (module docs) for `train` (`(n_train, d)`), `generated`
/// (`(n_gen, d)`) and real `heldout` (`(n_heldout, d)`) cells, all row-major.
///
/// # Errors
/// [`MetricsError`] on shape mismatch, non-finite values, an empty set, or when every
/// held-out cell coincides with a training cell (mean held-out distance 0).
#[allow(clippy::too_many_arguments)]
pub fn memorization_ratio(
    train: &[f32],
    n_train: usize,
    generated: &[f32],
    n_gen: usize,
    heldout: &[f32],
    n_heldout: usize,
    d: usize,
    space: &str,
) -> Result<MemorizationResult> {
    check_matrix("memorization train", train, n_train, d, 1)?;
    check_matrix("memorization generated", generated, n_gen, d, 1)?;
    check_matrix("memorization heldout", heldout, n_heldout, d, 1)?;
    let mut dg = nearest_distances(generated, n_gen, train, n_train, d)?;
    let mut dh = nearest_distances(heldout, n_heldout, train, n_train, d)?;
    let mg = dg.iter().sum::<f64>() / n_gen as f64;
    let mh = dh.iter().sum::<f64>() / n_heldout as f64;
    if mh <= 0.0 {
        return Err(MetricsError::Undefined(
            "memorization: every held-out cell coincides with a training cell".to_string(),
        ));
    }
    let median_nn_generated = median(&mut dg);
    let median_nn_heldout = median(&mut dh);
    // dh is sorted by median(); 5th percentile by the nearest-rank rule
    let p5 = dh[((0.05 * n_heldout as f64).ceil() as usize).saturating_sub(1)];
    let below = dg.iter().filter(|&&v| v < p5).count() as f64 / n_gen as f64;
    Ok(MemorizationResult {
        ratio: mg / mh,
        mean_nn_generated: mg,
        mean_nn_heldout: mh,
        median_nn_generated,
        median_nn_heldout,
        frac_generated_below_heldout_p5: below,
        protocol: format!(
            "memorization_nn_ratio(euclidean, space={space}, n_train={n_train}, n_gen={n_gen}, n_heldout={n_heldout})"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn copies_of_training_cells_have_ratio_zero() {
        let mut rng = StdRng::seed_from_u64(0);
        let nz = Normal::new(0.0f32, 1.0).expect("n");
        let d = 3;
        let train: Vec<f32> = (0..200 * d).map(|_| nz.sample(&mut rng)).collect();
        let held: Vec<f32> = (0..100 * d).map(|_| nz.sample(&mut rng)).collect();
        let fresh: Vec<f32> = (0..100 * d).map(|_| nz.sample(&mut rng)).collect();
        let copies = train[..100 * d].to_vec();
        let r = memorization_ratio(&train, 200, &copies, 100, &held, 100, d, "input").expect("m");
        assert_eq!(r.ratio, 0.0);
        assert_eq!(r.frac_generated_below_heldout_p5, 1.0);
        let r = memorization_ratio(&train, 200, &fresh, 100, &held, 100, d, "input").expect("m");
        assert!((r.ratio - 1.0).abs() < 0.2, "{r:?}");
    }

    #[test]
    fn by_hand() {
        let train = [0.0f32, 10.0];
        let r = memorization_ratio(&train, 2, &[1.0, 9.0], 2, &[2.0, 6.0], 2, 1, "x").expect("m");
        // generated NN distances {1,1}, held-out {2,4}
        assert!((r.ratio - 1.0 / 3.0).abs() < 1e-12);
    }
}
