//! How the configured matrix becomes the model's input: gene subset, highly variable genes,
//! library-size normalization and `log1p` ([`PreprocessConfig`]). The choices that need the
//! whole data set (which genes are highly variable, whether the values are counts) are fitted
//! once over row chunks — the whole matrix in memory, or chunks streamed from disk — and the
//! fitted [`Preparation`] is then applied to any chunk of rows, so streamed training sees
//! exactly the cells an in-memory run sees.

use std::path::Path;

use crate::config::PreprocessConfig;
use crate::data::preprocess::{
    gene_indices, non_finite_error, seurat_scores_from, top_scores, GeneMoments, SeuratV3Clipped,
};
use crate::data::{log1p, normalize_total, Matrix};
use crate::plugin::InputKind;
use crate::{LatentError, Result};

/// A fitted preprocessing of one matrix source.
#[derive(Debug, Clone, PartialEq)]
pub struct Preparation {
    /// `preprocess.genes` as column indices of the source matrix (in the listed order).
    subset: Option<Vec<usize>>,
    /// Highly variable genes as column indices after `subset` (sorted).
    variable: Option<Vec<usize>>,
    /// Whether the (subset) values are counts; decides the HVG flavor and its place.
    counts: bool,
    normalize_total: Option<f32>,
    log1p: bool,
    /// Output gene names, in column order.
    pub genes: Vec<String>,
    /// What the prepared values are.
    pub input_kind: InputKind,
}

/// Visits the source matrix as row chunks, in row order: called once per pass over the data
/// with the function each chunk is given to.
pub type ChunkPasses<'a> = dyn FnMut(&mut dyn FnMut(&Matrix) -> Result<()>) -> Result<()> + 'a;

impl Preparation {
    /// Fits `pre` on a source matrix whose columns are `source_genes`, reading it through
    /// `passes` (one pass, two when highly variable genes are chosen on counts). Counts get
    /// Seurat v3 selection on the raw counts before normalization, other input the Seurat
    /// dispersion on the normalized values after it (as scanpy).
    ///
    /// # Errors
    /// NaN/infinite values (counted over the whole matrix), genes of `preprocess.genes`
    /// missing from the source, read errors of `passes`. `file` and `source` name the data in
    /// the messages.
    pub fn fit(
        source_genes: &[String],
        pre: &PreprocessConfig,
        (file, source): (&Path, &str),
        passes: &mut ChunkPasses<'_>,
    ) -> Result<Preparation> {
        let subset = match &pre.genes {
            Some(wanted) => Some(gene_indices(source_genes, wanted, file)?),
            None => None,
        };
        let width = subset.as_ref().map_or(source_genes.len(), Vec::len);
        let wants_variable = pre.highly_variable_genes.is_some_and(|n_top| n_top < width);
        let mut non_finite = 0usize;
        let mut counts = true;
        let mut raw = GeneMoments::new(width);
        let mut normalized = GeneMoments::new(width);
        passes(&mut |chunk| {
            non_finite += chunk.count_non_finite();
            let part = match &subset {
                Some(cols) => chunk.select_cols(cols),
                None => chunk.clone(),
            };
            counts &= part.looks_like_counts();
            if wants_variable {
                raw.add(&part, f64::from);
                let mut t = part;
                if let Some(target) = pre.normalize_total {
                    normalize_total(&mut t, target);
                }
                if pre.log1p {
                    log1p(&mut t);
                }
                normalized.add(&t, |v| f64::from(v).exp_m1());
            }
            Ok(())
        })?;
        if non_finite > 0 {
            return Err(non_finite_error(non_finite, file, source).into());
        }
        let variable = match pre.highly_variable_genes {
            Some(n_top) if wants_variable => {
                let scores = if counts {
                    let mut clipped = SeuratV3Clipped::new(&raw);
                    passes(&mut |chunk| {
                        match &subset {
                            Some(cols) => clipped.add(&chunk.select_cols(cols)),
                            None => clipped.add(chunk),
                        }
                        Ok(())
                    })?;
                    clipped.scores()
                } else {
                    seurat_scores_from(&normalized)
                };
                Some(top_scores(&scores, n_top))
            }
            _ => None,
        };
        let mut genes: Vec<String> = match &subset {
            Some(cols) => cols.iter().map(|&c| source_genes[c].clone()).collect(),
            None => source_genes.to_vec(),
        };
        if let Some(keep) = &variable {
            genes = keep.iter().map(|&c| genes[c].clone()).collect();
        }
        let transformed = pre.normalize_total.is_some() || pre.log1p;
        Ok(Preparation {
            subset,
            variable,
            counts,
            normalize_total: pre.normalize_total,
            log1p: pre.log1p,
            genes,
            input_kind: if counts && !transformed {
                InputKind::Counts
            } else {
                InputKind::Continuous
            },
        })
    }

    /// Prepares a chunk of source rows: returns the prepared matrix and each cell's library
    /// size (row sum over the `preprocess.genes` subset, before gene selection and
    /// normalization).
    pub fn apply(&self, chunk: Matrix) -> (Matrix, Vec<f32>) {
        let mut m = match &self.subset {
            Some(cols) => chunk.select_cols(cols),
            None => chunk,
        };
        let library_size = m.row_sums();
        if self.counts {
            self.select_variable(&mut m);
        }
        if let Some(target) = self.normalize_total {
            normalize_total(&mut m, target);
        }
        if self.log1p {
            log1p(&mut m);
        }
        if !self.counts {
            self.select_variable(&mut m);
        }
        (m, library_size)
    }

    fn select_variable(&self, m: &mut Matrix) {
        if let Some(keep) = &self.variable {
            *m = m.select_cols(keep);
        }
    }
}

/// The one-line error for an empty source matrix.
pub(crate) fn require_cells(rows: usize, cols: usize, file: &Path, source: &str) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(LatentError::Data(format!(
            "{}: {source} is empty ({rows} cells x {cols} genes); point data.path at a file with cells",
            file.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::CsrMatrix;

    fn counts(rows: usize, cols: usize, seed: u64) -> Matrix {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let data: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let rate = 0.2 + (i % cols) as f32 * 0.3;
                if rng.gen::<f32>() < 0.6 {
                    0.0
                } else {
                    (rng.gen::<f32>() * rate * 4.0).floor()
                }
            })
            .collect();
        Matrix::Csr(CsrMatrix::from_dense(rows, cols, &data))
    }

    fn fit_in_chunks(m: &Matrix, pre: &PreprocessConfig, chunk: usize) -> Preparation {
        let genes: Vec<String> = (0..m.shape().1).map(|j| format!("g{j}")).collect();
        let rows = m.shape().0;
        Preparation::fit(&genes, pre, (Path::new("t.h5ad"), "X"), &mut |f| {
            for start in (0..rows).step_by(chunk) {
                let idx: Vec<usize> = (start..(start + chunk).min(rows)).collect();
                f(&m.select_rows(&idx))?;
            }
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn chunked_fit_equals_whole_fit_for_counts_and_log_data() {
        let m = counts(300, 40, 1);
        let mut log_data = m.clone();
        normalize_total(&mut log_data, 1e4);
        log1p(&mut log_data);
        for (input, pre) in [
            (
                &m,
                PreprocessConfig {
                    normalize_total: Some(1e4),
                    log1p: true,
                    highly_variable_genes: Some(12),
                    genes: None,
                },
            ),
            (
                &log_data,
                PreprocessConfig {
                    highly_variable_genes: Some(9),
                    genes: Some((5..35).map(|j| format!("g{j}")).collect()),
                    ..PreprocessConfig::default()
                },
            ),
        ] {
            let whole = fit_in_chunks(input, &pre, 300);
            let chunked = fit_in_chunks(input, &pre, 7);
            assert_eq!(whole, chunked);
            assert_eq!(whole.genes.len(), pre.highly_variable_genes.unwrap());
            // The prepared chunks stacked equal the whole matrix prepared.
            let (all, lib) = whole.apply(input.clone());
            let mut stacked = Vec::new();
            let mut libs = Vec::new();
            for start in (0..300).step_by(64) {
                let idx: Vec<usize> = (start..(start + 64).min(300)).collect();
                let (part, l) = whole.apply(input.select_rows(&idx));
                stacked.extend(part.to_dense());
                libs.extend(l);
            }
            assert_eq!(all.to_dense(), stacked);
            assert_eq!(lib, libs);
        }
    }

    #[test]
    fn the_variable_genes_match_the_in_memory_selection() {
        use crate::data::{highly_variable_genes, HvgFlavor};
        let m = counts(200, 30, 2);
        let pre = PreprocessConfig {
            highly_variable_genes: Some(10),
            ..PreprocessConfig::default()
        };
        let fitted = fit_in_chunks(&m, &pre, 33);
        let expected: Vec<String> = highly_variable_genes(&m, 10, HvgFlavor::SeuratV3)
            .into_iter()
            .map(|j| format!("g{j}"))
            .collect();
        assert_eq!(fitted.genes, expected);
        assert_eq!(fitted.input_kind, InputKind::Counts);
    }

    #[test]
    fn non_finite_values_are_counted_over_all_chunks() {
        let mut m = counts(50, 5, 3).to_dense();
        m[3] = f32::NAN;
        m[240] = f32::INFINITY;
        let m = Matrix::Dense {
            rows: 50,
            cols: 5,
            data: m,
        };
        let genes: Vec<String> = (0..5).map(|j| format!("g{j}")).collect();
        let e = Preparation::fit(
            &genes,
            &PreprocessConfig::default(),
            (Path::new("t.h5ad"), "X"),
            &mut |f| {
                for start in (0..50).step_by(10) {
                    let idx: Vec<usize> = (start..start + 10).collect();
                    f(&m.select_rows(&idx))?;
                }
                Ok(())
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("t.h5ad: X: contains 2 NaN/infinite values"),
            "{e}"
        );
    }
}
