//! Standard single-cell preprocessing: library-size normalization, `log1p`, highly variable
//! gene (HVG) selection, gene subsetting, count detection.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::DataError;
use super::matrix::Matrix;

/// Total counts per cell (row sums).
pub fn library_sizes(m: &Matrix) -> Vec<f32> {
    m.row_sums()
}

/// Scale every cell to total `target_sum` (scanpy `normalize_total`). Cells with zero total
/// are left at zero.
pub fn normalize_total(m: &mut Matrix, target_sum: f32) {
    let factors: Vec<f32> = library_sizes(m)
        .into_iter()
        .map(|s| if s > 0.0 { target_sum / s } else { 1.0 })
        .collect();
    m.scale_rows(&factors);
}

/// Natural `ln(1 + x)` of every value (zeros stay zero, so CSR stays sparse).
pub fn log1p(m: &mut Matrix) {
    m.map_values(f32::ln_1p);
}

/// Which HVG method to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HvgFlavor {
    /// scanpy `flavor="seurat"`: on log-normalized data; dispersion (variance/mean of
    /// `expm1(x)`) z-scored within 20 equal-width bins of log mean expression.
    #[default]
    Seurat,
    /// scanpy `flavor="seurat_v3"`: on raw counts; variance of counts standardized by a
    /// local quadratic (loess, span 0.3) fit of log variance on log mean, values clipped at
    /// `mean + sqrt(n_cells) * sd`.
    SeuratV3,
}

/// Per-gene running sums of `f(x)` and `f(x)²` over cells, accumulated chunk by chunk (rows in
/// order), so that a matrix streamed in row chunks gives the same moments as the whole matrix.
#[derive(Debug, Clone)]
pub struct GeneMoments {
    cells: usize,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
}

impl GeneMoments {
    /// Empty sums over `genes` genes.
    pub fn new(genes: usize) -> Self {
        GeneMoments {
            cells: 0,
            sum: vec![0.0; genes],
            sum_sq: vec![0.0; genes],
        }
    }

    /// Adds the rows of `m` (same number of columns), transformed by `f` with `f(0) = 0`.
    pub fn add(&mut self, m: &Matrix, f: impl Fn(f32) -> f64) {
        let (n, g) = m.shape();
        self.cells += n;
        let (s, s2) = (&mut self.sum, &mut self.sum_sq);
        match m {
            Matrix::Dense { data, .. } => {
                for row in data.chunks(g.max(1)) {
                    for (j, &v) in row.iter().enumerate() {
                        let x = f(v);
                        s[j] += x;
                        s2[j] += x * x;
                    }
                }
            }
            Matrix::Csr(c) => {
                for (&j, &v) in c.indices.iter().zip(&c.data) {
                    let x = f(v);
                    s[j as usize] += x;
                    s2[j as usize] += x * x;
                }
            }
        }
    }

    /// Cells added so far.
    pub fn cells(&self) -> usize {
        self.cells
    }

    /// Per-gene mean and sample variance (ddof = 1; 0 for fewer than two cells).
    pub fn mean_var(&self) -> (Vec<f64>, Vec<f64>) {
        let n = self.cells;
        let nf = n as f64;
        let mean: Vec<f64> = self.sum.iter().map(|x| x / nf.max(1.0)).collect();
        let var = self
            .sum_sq
            .iter()
            .zip(&mean)
            .map(|(q, mu)| {
                if n > 1 {
                    ((q - nf * mu * mu) / (nf - 1.0)).max(0.0)
                } else {
                    0.0
                }
            })
            .collect();
        (mean, var)
    }
}

/// The `n_top` most variable genes, as sorted column indices (all genes if `n_top` ≥ the
/// number of genes). Ties and undefined scores (constant genes) rank last, by index.
pub fn highly_variable_genes(m: &Matrix, n_top: usize, flavor: HvgFlavor) -> Vec<usize> {
    let g = m.shape().1;
    if n_top >= g {
        return (0..g).collect();
    }
    let score = match flavor {
        HvgFlavor::Seurat => seurat_scores(m),
        HvgFlavor::SeuratV3 => seurat_v3_scores(m),
    };
    top_scores(&score, n_top)
}

/// The `n_top` highest `score`s' indices, sorted; NaN scores rank last, ties by index.
pub fn top_scores(score: &[f64], n_top: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (score[a], score[b]);
        match (x.is_nan(), y.is_nan()) {
            (true, true) => a.cmp(&b),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => y.total_cmp(&x).then(a.cmp(&b)),
        }
    });
    let mut top: Vec<usize> = order.into_iter().take(n_top).collect();
    top.sort_unstable();
    top
}

/// Normalized dispersion per gene (scanpy `seurat` flavor); NaN for genes with zero mean
/// or zero dispersion.
pub fn seurat_scores(m: &Matrix) -> Vec<f64> {
    let mut moments = GeneMoments::new(m.shape().1);
    moments.add(m, |v| f64::from(v).exp_m1());
    seurat_scores_from(&moments)
}

/// [`seurat_scores`] from the moments of `expm1(x)` of the log-normalized values.
pub fn seurat_scores_from(expm1_moments: &GeneMoments) -> Vec<f64> {
    let (mean, var) = expm1_moments.mean_var();
    let g = mean.len();
    let mut disp = vec![f64::NAN; g];
    let mut logmean = vec![0f64; g];
    for j in 0..g {
        let mu = if mean[j] == 0.0 { 1e-12 } else { mean[j] };
        let d = var[j] / mu;
        disp[j] = if d == 0.0 { f64::NAN } else { d.ln() };
        logmean[j] = mean[j].ln_1p();
    }
    // 20 equal-width bins over the range of log mean (pandas.cut semantics).
    const BINS: usize = 20;
    let lo = logmean.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = logmean.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let width = (hi - lo) / BINS as f64;
    let bin: Vec<usize> = logmean
        .iter()
        .map(|&x| {
            if width > 0.0 {
                (((x - lo) / width).ceil() as usize).clamp(1, BINS) - 1
            } else {
                0
            }
        })
        .collect();
    let mut sum = [0f64; BINS];
    let mut sum2 = [0f64; BINS];
    let mut cnt = [0usize; BINS];
    for j in 0..g {
        if disp[j].is_finite() {
            sum[bin[j]] += disp[j];
            sum2[bin[j]] += disp[j] * disp[j];
            cnt[bin[j]] += 1;
        }
    }
    (0..g)
        .map(|j| {
            let b = bin[j];
            let k = cnt[b] as f64;
            if !disp[j].is_finite() || cnt[b] == 0 {
                return f64::NAN;
            }
            let mu = sum[b] / k;
            if cnt[b] == 1 {
                // scanpy: a gene alone in its bin gets normalized dispersion 1.
                return 1.0;
            }
            let sd = ((sum2[b] - k * mu * mu) / (k - 1.0)).max(0.0).sqrt();
            if sd > 0.0 {
                (disp[j] - mu) / sd
            } else {
                0.0
            }
        })
        .collect()
}

/// Standardized clipped variance per gene (scanpy `seurat_v3` flavor, single batch); NaN
/// for constant genes.
pub fn seurat_v3_scores(m: &Matrix) -> Vec<f64> {
    let mut moments = GeneMoments::new(m.shape().1);
    moments.add(m, f64::from);
    let mut clipped = SeuratV3Clipped::new(&moments);
    clipped.add(m);
    clipped.scores()
}

/// The second pass of [`seurat_v3_scores`] over the counts, chunk by chunk: sums of the values
/// clipped at `mean + sqrt(n_cells) * fitted sd`, with the fit from the first pass's moments.
#[derive(Debug, Clone)]
pub struct SeuratV3Clipped {
    cells: usize,
    mean: Vec<f64>,
    reg_sd: Vec<f64>,
    clip: Vec<f64>,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
}

impl SeuratV3Clipped {
    /// Fits the mean–variance trend (loess, span 0.3) on the counts' `moments`.
    pub fn new(moments: &GeneMoments) -> Self {
        let n = moments.cells();
        let (mean, var) = moments.mean_var();
        let g = mean.len();
        let fit_idx: Vec<usize> = (0..g).filter(|&j| var[j] > 0.0).collect();
        let xs: Vec<f64> = fit_idx.iter().map(|&j| mean[j].log10()).collect();
        let ys: Vec<f64> = fit_idx.iter().map(|&j| var[j].log10()).collect();
        let fitted = loess(&xs, &ys, 0.3);
        let mut reg_sd = vec![f64::NAN; g];
        for (k, &j) in fit_idx.iter().enumerate() {
            reg_sd[j] = 10f64.powf(fitted[k]).sqrt();
        }
        let nf = n as f64;
        let clip: Vec<f64> = (0..g).map(|j| mean[j] + reg_sd[j] * nf.sqrt()).collect();
        SeuratV3Clipped {
            cells: n,
            mean,
            reg_sd,
            clip,
            sum: vec![0.0; g],
            sum_sq: vec![0.0; g],
        }
    }

    /// Adds the clipped values of the count rows in `m` (zeros contribute 0).
    pub fn add(&mut self, m: &Matrix) {
        let g = m.shape().1;
        let (clip, s, s2) = (&self.clip, &mut self.sum, &mut self.sum_sq);
        let mut add = |j: usize, v: f32| {
            let x = f64::from(v).min(clip[j]);
            s[j] += x;
            s2[j] += x * x;
        };
        match m {
            Matrix::Dense { data, .. } => {
                for row in data.chunks(g.max(1)) {
                    for (j, &v) in row.iter().enumerate() {
                        add(j, v);
                    }
                }
            }
            Matrix::Csr(c) => {
                for (&j, &v) in c.indices.iter().zip(&c.data) {
                    add(j as usize, v);
                }
            }
        }
    }

    /// The standardized clipped variance per gene (NaN for constant genes).
    pub fn scores(&self) -> Vec<f64> {
        let n = self.cells;
        let nf = n as f64;
        (0..self.mean.len())
            .map(|j| {
                let sd = self.reg_sd[j];
                if !(sd.is_finite() && sd > 0.0) || n < 2 {
                    return f64::NAN;
                }
                let mu = self.mean[j];
                (nf * mu * mu + self.sum_sq[j] - 2.0 * mu * self.sum[j]) / ((nf - 1.0) * sd * sd)
            })
            .collect()
    }
}

/// Local quadratic regression (loess, tricube weights, `span` fraction of points as
/// neighbours) evaluated at every `xs`.
fn loess(xs: &[f64], ys: &[f64], span: f64) -> Vec<f64> {
    let n = xs.len();
    if n == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let sx: Vec<f64> = order.iter().map(|&i| xs[i]).collect();
    let sy: Vec<f64> = order.iter().map(|&i| ys[i]).collect();
    let k = ((span * n as f64).ceil() as usize).clamp(3.min(n), n);
    let mut out = vec![0f64; n];
    let mut lo = 0usize;
    for (pos, &x0) in sx.iter().enumerate() {
        // Slide the window [lo, lo + k) to hold the k nearest neighbours of x0.
        while lo + k < n && x0 - sx[lo] > sx[lo + k] - x0 {
            lo += 1;
        }
        let hi = lo + k;
        let dmax = (x0 - sx[lo]).abs().max((sx[hi - 1] - x0).abs()) * 1.0001 + 1e-12;
        // Weighted least squares for y = a + b t + c t², t = x - x0.
        let mut m = [[0f64; 3]; 3];
        let mut r = [0f64; 3];
        for i in lo..hi {
            let t = sx[i] - x0;
            let u = (t.abs() / dmax).min(1.0);
            let w = (1.0 - u * u * u).powi(3);
            let p = [1.0, t, t * t];
            for a in 0..3 {
                r[a] += w * p[a] * sy[i];
                for b in 0..3 {
                    m[a][b] += w * p[a] * p[b];
                }
            }
        }
        let fit = solve3(m, r).map(|c| c[0]).or_else(|| {
            // Degenerate window (e.g. repeated x): fall back to the weighted mean.
            (m[0][0] > 0.0).then(|| r[0] / m[0][0])
        });
        out[order[pos]] = fit.unwrap_or(sy[pos]);
    }
    out
}

fn solve3(mut m: [[f64; 3]; 3], mut r: [f64; 3]) -> Option<[f64; 3]> {
    for c in 0..3 {
        let p = (c..3).max_by(|&a, &b| m[a][c].abs().total_cmp(&m[b][c].abs()))?;
        if m[p][c].abs() < 1e-12 {
            return None;
        }
        m.swap(c, p);
        r.swap(c, p);
        for row in 0..3 {
            if row != c {
                let f = m[row][c] / m[c][c];
                let pivot = m[c];
                for (x, p) in m[row].iter_mut().zip(pivot).skip(c) {
                    *x -= f * p;
                }
                r[row] -= f * r[c];
            }
        }
    }
    Some([r[0] / m[0][0], r[1] / m[1][1], r[2] / m[2][2]])
}

/// Column indices of `wanted` genes within `genes`, in the order of `wanted`.
///
/// # Errors
/// [`DataError::Missing`] naming up to 20 absent genes (and how many), with the fix.
pub fn gene_indices(
    genes: &[String],
    wanted: &[String],
    file: &Path,
) -> Result<Vec<usize>, DataError> {
    let pos: std::collections::HashMap<&str, usize> = genes
        .iter()
        .enumerate()
        .map(|(i, g)| (g.as_str(), i))
        .collect();
    let mut out = Vec::with_capacity(wanted.len());
    let mut missing = Vec::new();
    for w in wanted {
        match pos.get(w.as_str()) {
            Some(&i) => out.push(i),
            None => missing.push(w.clone()),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(DataError::missing(
            file,
            format!("{} of {} requested genes", missing.len(), wanted.len()),
            Vec::new(),
            format!(
                "these genes are absent from the var index: {}{}; use the same gene identifiers (symbols vs Ensembl ids) as the model/gene list",
                missing.iter().take(20).cloned().collect::<Vec<_>>().join(", "),
                if missing.len() > 20 { ", ..." } else { "" }
            ),
        ))
    }
}

/// Refuse a count likelihood (NB, ZINB, Poisson) on a matrix that is not integer counts.
///
/// # Errors
/// [`DataError::Invalid`] naming the matrix source and the fix (use a counts layer or a
/// Gaussian likelihood).
pub fn require_counts(
    m: &Matrix,
    file: &Path,
    source: &str,
    likelihood: &str,
) -> Result<(), DataError> {
    if m.looks_like_counts() {
        return Ok(());
    }
    let example = m
        .values()
        .iter()
        .find(|v| !(v.is_finite() && **v >= 0.0 && (**v - v.round()).abs() < 1e-3))
        .copied()
        .unwrap_or(f32::NAN);
    Err(DataError::invalid(
        file,
        source,
        format!("holds non-integer or negative values (e.g. {example}), not raw counts, so the {likelihood} likelihood does not apply"),
        "point the matrix source at raw counts (e.g. \"layers/counts\" or \"raw\") or use a Gaussian likelihood",
    ))
}

/// Refuse a matrix with NaN or infinite values.
///
/// # Errors
/// [`DataError::Invalid`] giving the count of bad values.
pub fn require_finite(m: &Matrix, file: &Path, source: &str) -> Result<(), DataError> {
    match m.count_non_finite() {
        0 => Ok(()),
        bad => Err(non_finite_error(bad, file, source)),
    }
}

/// The error for `count` NaN/infinite values in the matrix `source` of `file`.
pub fn non_finite_error(count: usize, file: &Path, source: &str) -> DataError {
    DataError::invalid(
        file,
        source,
        format!("contains {count} NaN/infinite values"),
        "remove or impute them before training (e.g. in Python `adata.X = np.nan_to_num(adata.X)`)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::matrix::CsrMatrix;

    fn counts() -> Matrix {
        // [[1, 0, 3], [0, 0, 0], [2, 2, 0]]
        Matrix::Csr(CsrMatrix {
            rows: 3,
            cols: 3,
            indptr: vec![0, 2, 2, 4],
            indices: vec![0, 2, 0, 1],
            data: vec![1.0, 3.0, 2.0, 2.0],
        })
    }

    #[test]
    fn normalize_and_log_by_hand() {
        let mut m = counts();
        assert_eq!(library_sizes(&m), vec![4.0, 0.0, 4.0]);
        normalize_total(&mut m, 1e4);
        assert_eq!(
            m.to_dense(),
            vec![2500.0, 0.0, 7500.0, 0.0, 0.0, 0.0, 5000.0, 5000.0, 0.0]
        );
        log1p(&mut m);
        let d = m.to_dense();
        assert!((d[0] - 7.824_446).abs() < 1e-4, "{}", d[0]); // ln(2501)
        assert!((d[2] - 8.922_792).abs() < 1e-4, "{}", d[2]); // ln(7501)
        assert_eq!(d[1], 0.0);
        // Dense gives the same numbers.
        let mut dm = Matrix::Dense {
            rows: 3,
            cols: 3,
            data: counts().to_dense(),
        };
        normalize_total(&mut dm, 1e4);
        log1p(&mut dm);
        assert_eq!(dm.to_dense(), d);
    }

    #[test]
    fn hvg_returns_n_distinct_sorted() {
        let a = crate::data::read_h5ad(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/pbmc68k_reduced/train.h5ad"
        )))
        .unwrap();
        for (m, flavor) in [
            (&a.x, HvgFlavor::Seurat),
            (a.layers.get("counts").unwrap(), HvgFlavor::SeuratV3),
        ] {
            let top = highly_variable_genes(m, 200, flavor);
            assert_eq!(top.len(), 200);
            assert!(top.windows(2).all(|w| w[0] < w[1]));
            assert!(*top.last().unwrap() < 765);
        }
        assert_eq!(
            highly_variable_genes(&counts(), 10, HvgFlavor::Seurat),
            vec![0, 1, 2]
        );
        // Reference: scanpy 1.11 `highly_variable_genes(flavor="seurat")` on this file gives
        // dispersions_norm C1QB 5.0767, LYPD2 4.8739, MZB1 4.6977 (top 3), and the same 200
        // genes; `flavor="seurat_v3"` on layers["counts"] ranks genes 206, 178, 736 first
        // (variances_norm 11.56, 10.39, 9.56) and agrees on 199 of 200 genes.
        let s = seurat_scores(&a.x);
        for (gene, want) in [("C1QB", 5.0767), ("LYPD2", 4.8739), ("MZB1", 4.6977)] {
            let j = a.gene_names().iter().position(|g| g == gene).unwrap();
            assert!((s[j] - want).abs() < 1e-3, "{gene}: {} vs {want}", s[j]);
        }
        let v3 = seurat_v3_scores(&a.layers["counts"]);
        let mut order: Vec<usize> = (0..v3.len()).collect();
        order.sort_by(|&x, &y| v3[y].total_cmp(&v3[x]));
        assert_eq!(&order[..3], &[206, 178, 736]);
    }

    #[test]
    fn seurat_v3_ranks_overdispersed_gene_first() {
        use rand::{Rng, SeedableRng};
        // 500 cells; 300 Poisson genes with means log-spread over 0.1..20, gene 300 bursty
        // (mean 1.5 but all of it in 5% of cells), gene 301 constant.
        let (n, g) = (500, 302);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut poisson = |lambda: f64| -> f32 {
            let (l, mut k, mut p) = ((-lambda).exp(), 0u32, 1.0f64);
            loop {
                p *= rng.gen::<f64>();
                if p <= l {
                    return k as f32;
                }
                k += 1;
            }
        };
        let mut d = vec![0f32; n * g];
        for i in 0..n {
            for j in 0..300 {
                let lambda = 0.1 * (200f64).powf(j as f64 / 299.0);
                d[i * g + j] = poisson(lambda);
            }
            d[i * g + 300] = if i % 20 == 0 { 30.0 } else { 0.0 };
            d[i * g + 301] = 2.0;
        }
        let m = Matrix::Dense {
            rows: n,
            cols: g,
            data: d,
        };
        let s = seurat_v3_scores(&m);
        assert!(s[301].is_nan());
        assert_eq!(highly_variable_genes(&m, 1, HvgFlavor::SeuratV3), vec![300]);
        // Poisson genes sit near standardized variance 1.
        let mut poisson_scores: Vec<f64> = s[..300].to_vec();
        poisson_scores.sort_by(f64::total_cmp);
        let median = poisson_scores[150];
        assert!((0.7..1.3).contains(&median), "median {median}");
        let csr = Matrix::Csr(m.to_csr());
        let s2 = seurat_v3_scores(&csr);
        for (a, b) in s.iter().zip(&s2) {
            assert!((a - b).abs() < 1e-9 || (a.is_nan() && b.is_nan()));
        }
    }

    #[test]
    fn counts_and_finite_checks() {
        let p = Path::new("f.h5ad");
        assert!(require_counts(&counts(), p, "X", "nb").is_ok());
        let mut m = counts();
        log1p(&mut m);
        let e = require_counts(&m, p, "X", "zinb").unwrap_err().to_string();
        assert!(e.starts_with("f.h5ad: X: holds non-integer"), "{e}");
        m.values_mut()[0] = f32::INFINITY;
        assert!(require_finite(&m, p, "X")
            .unwrap_err()
            .to_string()
            .contains("1 NaN/infinite"));
        let genes: Vec<String> = vec!["A".into(), "B".into()];
        assert_eq!(gene_indices(&genes, &["B".into()], p).unwrap(), vec![1]);
        assert!(gene_indices(&genes, &["C".into()], p).is_err());
    }
}
