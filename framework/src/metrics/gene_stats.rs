//! Per-gene summary statistics and their agreement between real and generated cells.
//!
//! - [`gene_stats`]: per-gene mean, sample variance (denominator `n − 1`) and zero fraction
//!   (fraction of cells with value `<= zero_eps`).
//! - [`pearson`], [`spearman`] (average ranks for ties), [`r_squared`]
//!   (`1 − SS_res / SS_tot` with the real values as reference).
//! - [`compare_gene_stats`]: those three agreement scores for mean, variance and zero
//!   fraction.
//! - [`gene_correlation_similarity`]: Pearson between the upper triangles of the gene–gene
//!   correlation matrices of both sets over the top-N genes by real mean expression.

use super::util::{average_ranks, check_matrix, check_vec64};
use super::{MetricsError, Result};
use rayon::prelude::*;
use serde::Serialize;

/// Per-gene statistics of one set of cells; every vector has length `d`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneStats {
    /// Mean of each gene.
    pub mean: Vec<f64>,
    /// Sample variance (denominator `n − 1`) of each gene.
    pub variance: Vec<f64>,
    /// Fraction of cells with value `<= zero_eps` for each gene.
    pub zero_fraction: Vec<f64>,
}

/// Per-gene mean, variance and zero fraction of `x` (`(n, d)` row-major); a value counts as
/// zero when `<= zero_eps` (use e.g. `1e-8` for counts or log1p data).
///
/// # Errors
/// [`MetricsError`] on shape mismatch, non-finite values, or `n < 2`.
pub fn gene_stats(x: &[f32], n: usize, d: usize, zero_eps: f32) -> Result<GeneStats> {
    check_matrix("gene stats x", x, n, d, 2)?;
    let mut mean = vec![0.0f64; d];
    let mut zeros = vec![0usize; d];
    for row in x.chunks_exact(d) {
        for ((m, z), v) in mean.iter_mut().zip(zeros.iter_mut()).zip(row) {
            *m += f64::from(*v);
            if *v <= zero_eps {
                *z += 1;
            }
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut variance = vec![0.0f64; d];
    for row in x.chunks_exact(d) {
        for ((s, v), m) in variance.iter_mut().zip(row).zip(&mean) {
            let t = f64::from(*v) - m;
            *s += t * t;
        }
    }
    variance.iter_mut().for_each(|s| *s /= n as f64 - 1.0);
    Ok(GeneStats {
        mean,
        variance,
        zero_fraction: zeros.iter().map(|&z| z as f64 / n as f64).collect(),
    })
}

fn check_pair(what: &str, a: &[f64], b: &[f64]) -> Result<()> {
    if a.len() != b.len() {
        return Err(MetricsError::Shape {
            what: what.to_string(),
            detail: format!("lengths {} and {} differ", a.len(), b.len()),
        });
    }
    check_vec64(what, a, 2)?;
    check_vec64(what, b, 2)
}

fn pearson_unchecked(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (p, q) = (x - ma, y - mb);
        sab += p * q;
        saa += p * p;
        sbb += q * q;
    }
    if saa <= 0.0 || sbb <= 0.0 {
        None
    } else {
        Some((sab / (saa.sqrt() * sbb.sqrt())).clamp(-1.0, 1.0))
    }
}

/// Pearson correlation of two equal-length vectors.
///
/// # Errors
/// [`MetricsError`] on length mismatch, fewer than 2 values, non-finite values, or a
/// constant vector (undefined correlation).
pub fn pearson(a: &[f64], b: &[f64]) -> Result<f64> {
    check_pair("pearson", a, b)?;
    pearson_unchecked(a, b)
        .ok_or_else(|| MetricsError::Undefined("pearson: a vector is constant".to_string()))
}

/// Spearman rank correlation (Pearson of average ranks, ties averaged).
///
/// # Errors
/// As [`pearson`].
pub fn spearman(a: &[f64], b: &[f64]) -> Result<f64> {
    check_pair("spearman", a, b)?;
    pearson_unchecked(&average_ranks(a), &average_ranks(b))
        .ok_or_else(|| MetricsError::Undefined("spearman: a vector is constant".to_string()))
}

/// Coefficient of determination of `predicted` against the reference `real`:
/// `1 − Σ(real − predicted)² / Σ(real − mean(real))²` (can be negative).
///
/// # Errors
/// As [`pearson`]; undefined when `real` is constant.
pub fn r_squared(real: &[f64], predicted: &[f64]) -> Result<f64> {
    check_pair("r_squared", real, predicted)?;
    let m = real.iter().sum::<f64>() / real.len() as f64;
    let ss_tot: f64 = real.iter().map(|r| (r - m) * (r - m)).sum();
    let ss_res: f64 = real
        .iter()
        .zip(predicted)
        .map(|(r, p)| (r - p) * (r - p))
        .sum();
    if ss_tot <= 0.0 {
        return Err(MetricsError::Undefined(
            "r_squared: real values are constant".to_string(),
        ));
    }
    Ok(1.0 - ss_res / ss_tot)
}

/// Agreement of one per-gene statistic between real and generated cells. `None` where the
/// score is undefined (a constant vector).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatAgreement {
    /// Pearson correlation across genes.
    pub pearson: Option<f64>,
    /// Spearman correlation across genes.
    pub spearman: Option<f64>,
    /// R² of generated against real.
    pub r_squared: Option<f64>,
}

impl StatAgreement {
    fn of(real: &[f64], generated: &[f64]) -> Result<Self> {
        check_pair("gene statistic", real, generated)?;
        Ok(StatAgreement {
            pearson: pearson(real, generated).ok(),
            spearman: spearman(real, generated).ok(),
            r_squared: r_squared(real, generated).ok(),
        })
    }
}

/// Agreement of per-gene mean, variance and zero fraction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneStatsComparison {
    /// Per-gene mean agreement.
    pub mean: StatAgreement,
    /// Per-gene variance agreement.
    pub variance: StatAgreement,
    /// Per-gene zero-fraction agreement.
    pub zero_fraction: StatAgreement,
}

/// Compares real and generated [`GeneStats`] gene by gene.
///
/// # Errors
/// [`MetricsError`] if the gene counts differ, are < 2, or a value is non-finite.
pub fn compare_gene_stats(real: &GeneStats, generated: &GeneStats) -> Result<GeneStatsComparison> {
    Ok(GeneStatsComparison {
        mean: StatAgreement::of(&real.mean, &generated.mean)?,
        variance: StatAgreement::of(&real.variance, &generated.variance)?,
        zero_fraction: StatAgreement::of(&real.zero_fraction, &generated.zero_fraction)?,
    })
}

/// Result of [`gene_correlation_similarity`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorrSimilarity {
    /// Pearson correlation between the upper triangles (diagonal excluded) of the two
    /// gene–gene correlation matrices.
    pub value: f64,
    /// Mean absolute difference between the two upper triangles.
    pub mean_abs_diff: f64,
    /// The gene indices used (top-N by real mean, descending).
    pub genes: Vec<usize>,
    /// Protocol string, e.g. `gene_corr_similarity(top_n=100 by real mean, pearson of upper triangles)`.
    pub protocol: String,
}

/// Gene–gene Pearson correlation matrix (row-major `g × g`) over the selected columns.
/// Genes with zero variance get correlation 0 with every other gene.
fn corr_matrix(x: &[f32], n: usize, d: usize, genes: &[usize]) -> Vec<f64> {
    let g = genes.len();
    let mut cols = vec![0.0f64; g * n];
    for (k, &j) in genes.iter().enumerate() {
        let col = &mut cols[k * n..(k + 1) * n];
        for (i, c) in col.iter_mut().enumerate() {
            *c = f64::from(x[i * d + j]);
        }
        let m = col.iter().sum::<f64>() / n as f64;
        col.iter_mut().for_each(|v| *v -= m);
        let nrm = col.iter().map(|v| v * v).sum::<f64>().sqrt();
        if nrm > 0.0 {
            col.iter_mut().for_each(|v| *v /= nrm);
        }
    }
    let mut c = vec![0.0f64; g * g];
    c.par_chunks_mut(g).enumerate().for_each(|(a, row)| {
        let ca = &cols[a * n..(a + 1) * n];
        for (b, r) in row.iter_mut().enumerate() {
            *r = ca
                .iter()
                .zip(&cols[b * n..(b + 1) * n])
                .map(|(p, q)| p * q)
                .sum();
        }
    });
    c
}

/// Gene–gene correlation similarity between `real` (`(n_real, d)`) and `generated`
/// (`(n_gen, d)`): choose the `top_n` genes with the highest real mean (ties: lower index),
/// compute both Pearson correlation matrices over them (zero-variance genes get correlation
/// 0), and return the Pearson correlation between the two upper triangles.
///
/// # Errors
/// [`MetricsError`] on shape mismatch, non-finite values, fewer than 2 cells in a set,
/// `top_n < 3` or `top_n > d`, or when an upper triangle is constant.
pub fn gene_correlation_similarity(
    real: &[f32],
    n_real: usize,
    generated: &[f32],
    n_gen: usize,
    d: usize,
    top_n: usize,
) -> Result<CorrSimilarity> {
    check_matrix("gene correlation real", real, n_real, d, 2)?;
    check_matrix("gene correlation generated", generated, n_gen, d, 2)?;
    if top_n < 3 || top_n > d {
        return Err(MetricsError::InvalidArgument(format!(
            "gene correlation: top_n={top_n} must be in 3..=d={d}"
        )));
    }
    let stats = gene_stats(real, n_real, d, 0.0)?;
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| stats.mean[b].total_cmp(&stats.mean[a]).then(a.cmp(&b)));
    order.truncate(top_n);
    let cr = corr_matrix(real, n_real, d, &order);
    let cg = corr_matrix(generated, n_gen, d, &order);
    let mut ur = Vec::with_capacity(top_n * (top_n - 1) / 2);
    let mut ug = Vec::with_capacity(ur.capacity());
    for a in 0..top_n {
        for b in a + 1..top_n {
            ur.push(cr[a * top_n + b]);
            ug.push(cg[a * top_n + b]);
        }
    }
    let mean_abs_diff =
        ur.iter().zip(&ug).map(|(a, b)| (a - b).abs()).sum::<f64>() / ur.len() as f64;
    let value = pearson_unchecked(&ur, &ug).ok_or_else(|| {
        MetricsError::Undefined("gene correlation: an upper triangle is constant".to_string())
    })?;
    Ok(CorrSimilarity {
        value,
        mean_abs_diff,
        genes: order,
        protocol: format!(
            "gene_corr_similarity(top_n={top_n} by real mean, pearson of upper triangles, n_real={n_real}, n_gen={n_gen})"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_by_hand() {
        let x = [0.0f32, 1.0, 2.0, 0.0, 4.0, 5.0];
        let s = gene_stats(&x, 3, 2, 1e-8).expect("stats");
        assert_eq!(s.mean, vec![2.0, 2.0]);
        assert_eq!(s.variance, vec![4.0, 7.0]);
        assert!((s.zero_fraction[0] - 1.0 / 3.0).abs() < 1e-15);
        assert!((s.zero_fraction[1] - 1.0 / 3.0).abs() < 1e-15);
    }

    /// scipy references, see reference_values.py.
    #[test]
    fn correlations_reference() {
        let a = [1.0, 2.0, 2.0, 3.0, 5.0, 4.0];
        let b = [2.0, 1.0, 4.0, 4.0, 6.0, 3.0];
        assert!((spearman(&a, &b).expect("s") - 0.6617647058823529).abs() < 1e-12);
        assert!((pearson(&a, &b).expect("p") - 0.7241648401566202).abs() < 1e-12);
        assert!(pearson(&a, &[1.0; 6]).is_err());
        assert!((r_squared(&a, &a).expect("r2") - 1.0).abs() < 1e-15);
        // predicting the mean gives R² = 0
        let m = a.iter().sum::<f64>() / 6.0;
        assert!(r_squared(&a, &[m; 6]).expect("r2").abs() < 1e-12);
        let cmp = compare_gene_stats(
            &GeneStats {
                mean: a.to_vec(),
                variance: a.to_vec(),
                zero_fraction: vec![0.0; 6],
            },
            &GeneStats {
                mean: a.to_vec(),
                variance: b.to_vec(),
                zero_fraction: vec![0.0; 6],
            },
        )
        .expect("cmp");
        assert_eq!(cmp.mean.pearson, Some(1.0));
        assert_eq!(cmp.zero_fraction.pearson, None);
    }

    #[test]
    fn corr_similarity_identical_is_one() {
        // 3 genes: g1 = 2*g0, g2 independent-ish
        let mut x = vec![];
        for i in 0..20 {
            let v = i as f32;
            x.extend_from_slice(&[v + 10.0, 2.0 * v + 20.0, ((i * 7) % 5) as f32, 30.0 - v]);
        }
        let r = gene_correlation_similarity(&x, 20, &x, 20, 4, 4).expect("cs");
        assert!((r.value - 1.0).abs() < 1e-12);
        assert_eq!(r.mean_abs_diff, 0.0);
        assert!(gene_correlation_similarity(&x, 20, &x, 20, 4, 5).is_err());
    }
}
