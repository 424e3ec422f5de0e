//! The evaluation driver: projects every cell set on a PCA fit on real training cells, then runs
//! every evaluator on the candidate rows *and* on control rows computed in the same run:
//! real vs real (training cells of the same size), a per-label Gaussian in PCA space, and decoded
//! prior samples of the autoencoder (stage 1 without stage 2).

use std::collections::BTreeMap;

use rand::Rng;
use serde::Serialize;

use crate::metrics::Pca;
use crate::plugin::{CellSet, EvalContext, Evaluator, Metric};
use crate::rng::{fill_normal, stream};
use crate::{LatentError, Result};

/// One row of the results table.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluationRow {
    /// `generated`, `control: real training cells`, `baseline: per-label gaussian`, ...
    pub name: String,
    /// Number of cells in the candidate set.
    pub n: usize,
    /// Metrics by evaluator.
    pub metrics: Vec<Metric>,
}

impl EvaluationRow {
    /// Value of a metric by name.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }
}

/// Results of one evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Rows: candidates first, then controls and baselines.
    pub rows: Vec<EvaluationRow>,
    /// Reference description.
    pub reference: String,
    /// PCA components used.
    pub pca_components: usize,
    /// Per-label rows for the first candidate (label → metrics), labels with enough cells.
    pub per_label: BTreeMap<String, Vec<Metric>>,
}

/// A fitted PCA wrapper with the projection used everywhere.
pub struct Projection {
    pca: Pca,
    /// Number of components.
    pub k: usize,
}

impl Projection {
    /// Fits on real training cells.
    ///
    /// # Errors
    /// [`LatentError::Evaluation`] for too few cells.
    pub fn fit(train: &CellSet, k: usize, seed: u64) -> Result<Self> {
        let k = k.min(train.n.saturating_sub(1)).min(train.n_genes).max(1);
        let pca = Pca::fit_with(&train.x, train.n, train.n_genes, k, None, seed)
            .map_err(|e| LatentError::Evaluation(e.to_string()))?;
        Ok(Self { pca, k })
    }
    /// Projects a cell set, filling its `pcs`.
    ///
    /// # Errors
    /// Shape errors.
    pub fn project(&self, cells: &mut CellSet) -> Result<()> {
        cells.pcs = self
            .pca
            .transform(&cells.x, cells.n, cells.n_genes)
            .map_err(|e| LatentError::Evaluation(e.to_string()))?;
        Ok(())
    }
    /// Maps PCA scores `(n, k)` back to gene space.
    pub fn inverse(&self, scores: &[f32], n: usize) -> Vec<f32> {
        let d = self.pca.n_features();
        let comps = self.pca.components();
        let mean = self.pca.mean();
        let mut out = vec![0.0f32; n * d];
        for i in 0..n {
            for j in 0..d {
                let mut v = mean[j];
                for c in 0..self.k {
                    v += scores[i * self.k + c] as f64 * comps[c * d + j];
                }
                out[i * d + j] = v as f32;
            }
        }
        out
    }
}

/// The per-label Gaussian baseline: for each label of `labels`, a Gaussian with the mean and full
/// covariance of that label's training cells in PCA space (diagonal fallback for labels with too
/// few cells), sampled and mapped back to gene space.
///
/// # Errors
/// Shape errors.
pub fn gaussian_baseline(
    train: &CellSet,
    projection: &Projection,
    labels: &[String],
    seed: u64,
) -> Result<CellSet> {
    let k = projection.k;
    let mut rng = stream(seed, "baseline.gaussian");
    let train_labels = train
        .labels
        .clone()
        .unwrap_or_else(|| vec![String::new(); train.n]);
    let mut scores = vec![0.0f32; labels.len() * k];
    let mut cache: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for (i, label) in labels.iter().enumerate() {
        let (mean, chol) = cache.entry(label.as_str()).or_insert_with(|| {
            let mut rows: Vec<usize> = (0..train.n)
                .filter(|&r| train_labels[r] == *label)
                .collect();
            if rows.is_empty() {
                rows = (0..train.n).collect();
            }
            gaussian_fit(&train.pcs, &rows, k)
        });
        let mut z = vec![0.0f32; k];
        fill_normal(&mut rng, &mut z);
        for a in 0..k {
            let mut v = mean[a];
            for b in 0..=a {
                v += chol[a * k + b] * z[b] as f64;
            }
            scores[i * k + a] = v as f32;
        }
    }
    let x = projection.inverse(&scores, labels.len());
    Ok(CellSet {
        x,
        n: labels.len(),
        n_genes: train.n_genes,
        labels: Some(labels.to_vec()),
        pcs: scores,
    })
}

/// A Gaussian in PCA space whose mean is interpolated linearly between the means of `lo` and
/// `hi` (`(1 − w)·mean(lo) + w·mean(hi)`) and whose covariance is the pooled within-group
/// covariance of both; `n` draws mapped back to gene space. `lo` and `hi` need their `pcs`.
///
/// # Errors
/// Shape errors; fewer than 2 cells in a group.
pub fn interpolated_gaussian_baseline(
    lo: &CellSet,
    hi: &CellSet,
    w: f64,
    projection: &Projection,
    n: usize,
    seed: u64,
) -> Result<CellSet> {
    let k = projection.k;
    if lo.n < 2 || hi.n < 2 || lo.pcs.len() != lo.n * k || hi.pcs.len() != hi.n * k {
        return Err(LatentError::Evaluation(
            "interpolated Gaussian baseline: need ≥ 2 projected cells on each side".into(),
        ));
    }
    let group_mean = |c: &CellSet| -> Vec<f64> {
        let mut m = vec![0.0f64; k];
        for row in c.pcs.chunks_exact(k) {
            for (a, &v) in m.iter_mut().zip(row) {
                *a += f64::from(v) / c.n as f64;
            }
        }
        m
    };
    let (m_lo, m_hi) = (group_mean(lo), group_mean(hi));
    let mut centred = Vec::with_capacity((lo.n + hi.n) * k);
    for (c, m) in [(lo, &m_lo), (hi, &m_hi)] {
        for row in c.pcs.chunks_exact(k) {
            centred.extend(
                row.iter()
                    .zip(m.iter())
                    .map(|(v, m)| (f64::from(*v) - m) as f32),
            );
        }
    }
    let rows: Vec<usize> = (0..lo.n + hi.n).collect();
    let (_, chol) = gaussian_fit(&centred, &rows, k);
    let mean: Vec<f64> = m_lo
        .iter()
        .zip(&m_hi)
        .map(|(a, b)| (1.0 - w) * a + w * b)
        .collect();
    let mut rng = stream(seed, "baseline.interpolated");
    let mut scores = vec![0.0f32; n * k];
    for i in 0..n {
        let mut z = vec![0.0f32; k];
        fill_normal(&mut rng, &mut z);
        for a in 0..k {
            let mut v = mean[a];
            for b in 0..=a {
                v += chol[a * k + b] * f64::from(z[b]);
            }
            scores[i * k + a] = v as f32;
        }
    }
    Ok(CellSet {
        x: projection.inverse(&scores, n),
        n,
        n_genes: lo.n_genes,
        labels: None,
        pcs: scores,
    })
}

/// Mean and lower Cholesky factor of the covariance of `rows` (shrunk towards its diagonal so it
/// stays positive definite for small groups).
fn gaussian_fit(pcs: &[f32], rows: &[usize], k: usize) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() as f64;
    let mut mean = vec![0.0; k];
    for &r in rows {
        for a in 0..k {
            mean[a] += pcs[r * k + a] as f64 / n;
        }
    }
    let mut cov = vec![0.0; k * k];
    for &r in rows {
        for a in 0..k {
            for b in 0..k {
                cov[a * k + b] += (pcs[r * k + a] as f64 - mean[a])
                    * (pcs[r * k + b] as f64 - mean[b])
                    / (n - 1.0).max(1.0);
            }
        }
    }
    let shrink = if rows.len() > 2 * k { 0.05 } else { 0.5 };
    for a in 0..k {
        for b in 0..k {
            if a != b {
                cov[a * k + b] *= 1.0 - shrink;
            }
        }
        cov[a * k + a] = cov[a * k + a].max(1e-6);
    }
    let mut l = vec![0.0; k * k];
    for a in 0..k {
        for b in 0..=a {
            let mut s = cov[a * k + b];
            for c in 0..b {
                s -= l[a * k + c] * l[b * k + c];
            }
            l[a * k + b] = if a == b {
                s.max(1e-9).sqrt()
            } else {
                s / l[b * k + b]
            };
        }
    }
    (mean, l)
}

/// A random subset of `n` training cells (the real-vs-real floor).
pub fn real_control(train: &CellSet, n: usize, seed: u64) -> CellSet {
    let mut rng = stream(seed, "control.real");
    let mut rows: Vec<usize> = (0..train.n).collect();
    for i in (1..rows.len()).rev() {
        let j = rng.gen_range(0..=i);
        rows.swap(i, j);
    }
    rows.truncate(n.min(train.n));
    let g = train.n_genes;
    let k = train.pcs.len().checked_div(train.n).unwrap_or(0);
    CellSet {
        x: rows
            .iter()
            .flat_map(|&r| train.x[r * g..(r + 1) * g].iter().copied())
            .collect(),
        n: rows.len(),
        n_genes: g,
        labels: train
            .labels
            .as_ref()
            .map(|l| rows.iter().map(|&r| l[r].clone()).collect()),
        pcs: rows
            .iter()
            .flat_map(|&r| train.pcs[r * k..(r + 1) * k].iter().copied())
            .collect(),
    }
}

/// Runs every evaluator on every candidate against `reference`.
///
/// # Errors
/// The first evaluator failure, naming the row.
pub fn evaluate_rows(
    evaluators: &[(String, Box<dyn Evaluator>)],
    reference: &CellSet,
    candidates: &[(String, CellSet)],
    ctx: &EvalContext<'_>,
) -> Result<Vec<EvaluationRow>> {
    let mut rows = Vec::new();
    for (name, cells) in candidates {
        let mut metrics = Vec::new();
        for (eval_name, e) in evaluators {
            let m = e.evaluate(reference, cells, ctx).map_err(|err| {
                LatentError::Evaluation(format!("evaluator `{eval_name}` on row `{name}`: {err}"))
            })?;
            metrics.extend(m);
        }
        rows.push(EvaluationRow {
            name: name.clone(),
            n: cells.n,
            metrics,
        });
    }
    Ok(rows)
}

/// Restricts a cell set to rows whose label is `label`.
pub fn subset_label(cells: &CellSet, label: &str) -> Option<CellSet> {
    let labels = cells.labels.as_ref()?;
    let rows: Vec<usize> = (0..cells.n).filter(|&i| labels[i] == label).collect();
    let g = cells.n_genes;
    let k = cells.pcs.len().checked_div(cells.n).unwrap_or(0);
    Some(CellSet {
        x: rows
            .iter()
            .flat_map(|&r| cells.x[r * g..(r + 1) * g].iter().copied())
            .collect(),
        n: rows.len(),
        n_genes: g,
        labels: Some(rows.iter().map(|&r| labels[r].clone()).collect()),
        pcs: rows
            .iter()
            .flat_map(|&r| cells.pcs[r * k..(r + 1) * k].iter().copied())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cell_set;

    #[test]
    fn interpolated_gaussian_mean_lies_between_the_groups() {
        let mut lo = cell_set(200, 1, 0.0, 4);
        let mut hi = cell_set(200, 2, 2.0, 4);
        let mut both = lo.clone();
        both.x.extend_from_slice(&hi.x);
        both.n += hi.n;
        let projection = Projection::fit(&both, 4, 0).unwrap();
        projection.project(&mut lo).unwrap();
        projection.project(&mut hi).unwrap();
        let mid = interpolated_gaussian_baseline(&lo, &hi, 0.25, &projection, 2000, 3).unwrap();
        let g = mid.n_genes;
        let mean = |c: &CellSet| -> f64 {
            c.x.iter().map(|&v| f64::from(v)).sum::<f64>() / (c.n * g) as f64
        };
        let expected = 0.75 * mean(&lo) + 0.25 * mean(&hi);
        assert!(
            (mean(&mid) - expected).abs() < 0.05,
            "{} vs {expected}",
            mean(&mid)
        );
    }
}
