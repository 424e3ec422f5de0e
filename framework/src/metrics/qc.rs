//! Per-cell quality-control statistics and the two-sample Kolmogorov–Smirnov distance.

use super::util::{check_matrix, check_vec64};
use super::{MetricsError, Result};

/// Library size (sum over genes) of each cell of `x` (`(n, d)` row-major); length `n`.
///
/// # Errors
/// [`MetricsError`] on shape mismatch or non-finite values.
pub fn library_size(x: &[f32], n: usize, d: usize) -> Result<Vec<f64>> {
    check_matrix("library size x", x, n, d, 0)?;
    Ok(x.chunks_exact(d)
        .map(|r| r.iter().map(|v| f64::from(*v)).sum())
        .collect())
}

/// Number of genes with value `> eps` in each cell of `x` (`(n, d)`); length `n`.
///
/// # Errors
/// [`MetricsError`] on shape mismatch or non-finite values.
pub fn genes_detected(x: &[f32], n: usize, d: usize, eps: f32) -> Result<Vec<f64>> {
    check_matrix("genes detected x", x, n, d, 0)?;
    Ok(x.chunks_exact(d)
        .map(|r| r.iter().filter(|v| **v > eps).count() as f64)
        .collect())
}

/// Mitochondrial fraction of each cell: sum over genes with `mito_mask[j] == true` divided
/// by the library size (0 for a cell with library size `<= 0`). Expects non-negative
/// expression (counts or normalized counts); length `n`.
///
/// # Errors
/// [`MetricsError`] on shape mismatch, a mask length `!= d`, or non-finite values.
pub fn mito_fraction(x: &[f32], n: usize, d: usize, mito_mask: &[bool]) -> Result<Vec<f64>> {
    check_matrix("mito fraction x", x, n, d, 0)?;
    if mito_mask.len() != d {
        return Err(MetricsError::Shape {
            what: "mito mask".to_string(),
            detail: format!("len {} != d {d}", mito_mask.len()),
        });
    }
    Ok(x.chunks_exact(d)
        .map(|r| {
            let (mut tot, mut mt) = (0.0f64, 0.0f64);
            for (v, m) in r.iter().zip(mito_mask) {
                tot += f64::from(*v);
                if *m {
                    mt += f64::from(*v);
                }
            }
            if tot > 0.0 {
                mt / tot
            } else {
                0.0
            }
        })
        .collect())
}

/// Two-sample Kolmogorov–Smirnov statistic `sup_t |F_a(t) − F_b(t)|` of the empirical
/// CDFs (ties handled by evaluating after all equal values; same as
/// `scipy.stats.ks_2samp(a, b).statistic`).
///
/// # Errors
/// [`MetricsError`] if either slice is empty or has a non-finite value.
pub fn ks_distance(a: &[f64], b: &[f64]) -> Result<f64> {
    check_vec64("ks a", a, 1)?;
    check_vec64("ks b", b, 1)?;
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(|x, y| x.total_cmp(y));
    b.sort_by(|x, y| x.total_cmp(y));
    let (n, m) = (a.len(), b.len());
    let (mut i, mut j) = (0, 0);
    let mut best = 0.0f64;
    while i < n || j < m {
        let t = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.min(*y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => break,
        };
        while i < n && a[i] <= t {
            i += 1;
        }
        while j < m && b[j] <= t {
            j += 1;
        }
        best = best.max((i as f64 / n as f64 - j as f64 / m as f64).abs());
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qc_by_hand() {
        let x = [1.0f32, 0.0, 3.0, 0.0, 0.0, 0.0];
        assert_eq!(library_size(&x, 2, 3).expect("l"), vec![4.0, 0.0]);
        assert_eq!(genes_detected(&x, 2, 3, 0.0).expect("g"), vec![2.0, 0.0]);
        assert_eq!(
            mito_fraction(&x, 2, 3, &[false, false, true]).expect("m"),
            vec![0.75, 0.0]
        );
        assert!(mito_fraction(&x, 2, 3, &[true]).is_err());
    }

    #[test]
    fn ks_reference_and_identity() {
        let a = [1.0, 2.0, 2.0, 3.0, 7.0];
        let b = [2.0, 2.0, 4.0, 5.0];
        assert!((ks_distance(&a, &b).expect("ks") - 0.3).abs() < 1e-12);
        assert_eq!(ks_distance(&a, &a).expect("ks"), 0.0);
        assert_eq!(ks_distance(&[0.0], &[1.0]).expect("ks"), 1.0);
        assert!(ks_distance(&[], &[1.0]).is_err());
    }
}
