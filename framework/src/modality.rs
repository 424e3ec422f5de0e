//! Another measured modality of the same cells as a condition (the RNA of an RNA → protein
//! model): a matrix of the data file, preprocessed, projected on principal components fitted on
//! the training cells (a linear stage-1 encoder). The projection travels in the run's condition
//! summary, so cells of another file are encoded the same way, their features matched by name.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::PreprocessConfig;
use crate::data::AnnData;
use crate::dataset::{expression_for_genes, select_matrix};
use crate::metrics::pca::Pca;
use crate::plugin::ConditionColumn;
use crate::{LatentError, Result};

/// Where a modality condition comes from and how it is encoded (declared by a conditioner).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModalitySource {
    /// Matrix of the data file: `"X"`, `"raw"`, `"layers/<name>"` or `"obsm/<key>"`.
    /// Default `"X"`.
    pub matrix: String,
    /// Preprocessing of that matrix (normalization, log1p, highly variable genes, gene list).
    /// Default none.
    pub preprocess: PreprocessConfig,
    /// Principal components kept (capped by training cells − 1 and features). Default 20.
    pub components: usize,
}

impl Default for ModalitySource {
    fn default() -> Self {
        Self {
            matrix: "X".into(),
            preprocess: PreprocessConfig::default(),
            components: 20,
        }
    }
}

/// The fitted linear encoder of a modality: feature names, centre and principal axes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModalityEncoder {
    /// Features (genes) in the order the encoder expects, after preprocessing.
    pub features: Vec<String>,
    /// Per-feature training mean.
    pub center: Vec<f32>,
    /// Number of components.
    pub components: usize,
    /// `(components, features)` row-major principal axes.
    pub axes: Vec<f32>,
    /// Share of the training variance each component explains.
    pub explained_variance_ratio: Vec<f32>,
}

impl ModalityEncoder {
    /// Fits `components` principal axes on rows `rows` of the row-major `(n, features.len())`
    /// matrix `x` (capped by `rows.len() − 1` and the number of features).
    ///
    /// # Errors
    /// Fewer than 3 training rows, no features, or a PCA failure.
    pub fn fit(
        x: &[f32],
        features: Vec<String>,
        rows: &[usize],
        components: usize,
    ) -> Result<Self> {
        let d = features.len();
        if d == 0 || rows.len() < 3 {
            return Err(LatentError::Data(format!(
                "a modality condition needs at least 3 training cells and 1 feature (got {} cells, {d} features)",
                rows.len()
            )));
        }
        let k = components.clamp(1, (rows.len() - 1).min(d));
        let train: Vec<f32> = rows
            .iter()
            .flat_map(|&r| x[r * d..(r + 1) * d].iter().copied())
            .collect();
        let pca = Pca::fit(&train, rows.len(), d, k)
            .map_err(|e| LatentError::Data(format!("modality encoder: {e}")))?;
        Ok(Self {
            features,
            center: pca.mean().iter().map(|&v| v as f32).collect(),
            components: k,
            axes: pca.components().iter().map(|&v| v as f32).collect(),
            explained_variance_ratio: pca
                .explained_variance_ratio()
                .iter()
                .map(|&v| v as f32)
                .collect(),
        })
    }

    /// Projects the row-major `(n, features)` matrix `x`: `(n, components)` scores.
    pub fn project(&self, x: &[f32]) -> Vec<f32> {
        let d = self.features.len();
        let k = self.components;
        let mut out = Vec::with_capacity(x.len() / d.max(1) * k);
        let mut centred = vec![0.0f32; d];
        for row in x.chunks_exact(d) {
            for ((c, v), m) in centred.iter_mut().zip(row).zip(&self.center) {
                *c = v - m;
            }
            for axis in self.axes.chunks_exact(d) {
                out.push(axis.iter().zip(&centred).map(|(a, c)| a * c).sum());
            }
        }
        out
    }
}

/// Reads and preprocesses the modality of the training file, fits the encoder on `train_rows`
/// and encodes every cell.
///
/// # Errors
/// Missing matrix, non-finite values, too few cells.
pub fn fit_condition(
    adata: &AnnData,
    source: &ModalitySource,
    train_rows: &[usize],
    path: &Path,
) -> Result<(ConditionColumn, ModalityEncoder)> {
    let (matrix, features, _, _) = select_matrix(adata, &source.matrix, &source.preprocess, path)?;
    let x = matrix.to_dense();
    let encoder = ModalityEncoder::fit(&x, features, train_rows, source.components)?;
    let values = encoder.project(&x);
    Ok((
        ConditionColumn::Vector {
            dim: encoder.components,
            values,
        },
        encoder,
    ))
}

/// Encodes the cells of another file with a run's encoder: the same matrix and normalization,
/// features matched by name. Returns the column and how many features were missing.
///
/// # Errors
/// Missing matrix or features (naming how many; `allow_missing` fills them with zeros).
pub fn encode_condition(
    adata: &AnnData,
    source: &ModalitySource,
    encoder: &ModalityEncoder,
    allow_missing: bool,
    path: &Path,
) -> Result<(ConditionColumn, usize)> {
    let (batch, missing) = expression_for_genes(
        adata,
        path,
        &source.matrix,
        &source.preprocess,
        &encoder.features,
        false,
        allow_missing,
    )?;
    Ok((
        ConditionColumn::Vector {
            dim: encoder.components,
            values: encoder.project(&batch.x),
        },
        missing,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_recovers_a_rank_one_signal() {
        // Rows = t · (1, 2, 0) + centre (5, 5, 5): one component, scores ∝ t.
        let ts = [-2.0f32, -1.0, 0.0, 1.0, 2.0];
        let x: Vec<f32> = ts
            .iter()
            .flat_map(|&t| [5.0 + t, 5.0 + 2.0 * t, 5.0])
            .collect();
        let names = vec!["a".into(), "b".into(), "c".into()];
        let enc = ModalityEncoder::fit(&x, names, &[0, 1, 2, 3, 4], 1).unwrap();
        assert_eq!(enc.components, 1);
        assert!((enc.center[1] - 5.0).abs() < 1e-5);
        let scores = enc.project(&x);
        let norm = 5.0f32.sqrt();
        for (s, t) in scores.iter().zip(ts) {
            assert!((s.abs() - (t * norm).abs()).abs() < 1e-4, "{s} vs {t}");
        }
        assert!((enc.explained_variance_ratio[0] - 1.0).abs() < 1e-5);
    }

    /// The training path (select matrix, HVG, fit) and the sampling path (genes matched by name)
    /// give the same scores for the same cells of the shipped CITE-seq file; a file without the
    /// genes is refused unless missing genes are allowed.
    #[test]
    fn training_and_sampling_encodings_agree_on_shipped_cite_seq() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/cite_pbmc_10k/cells.h5ad"
        ));
        let adata = crate::dataset::read(path).unwrap();
        let source = ModalitySource {
            matrix: "X".into(),
            preprocess: PreprocessConfig {
                normalize_total: Some(1e4),
                log1p: true,
                highly_variable_genes: Some(300),
                genes: None,
            },
            components: 8,
        };
        let train: Vec<usize> = (0..150).collect();
        let (fitted, encoder) = fit_condition(&adata, &source, &train, path).unwrap();
        assert_eq!(encoder.features.len(), 300);
        assert_eq!(encoder.components, 8);
        let (encoded, missing) = encode_condition(&adata, &source, &encoder, false, path).unwrap();
        assert_eq!(missing, 0);
        let (ConditionColumn::Vector { values: a, dim }, ConditionColumn::Vector { values: b, .. }) =
            (&fitted, &encoded)
        else {
            panic!("vector columns expected");
        };
        assert_eq!(*dim, 8);
        assert_eq!(a.len(), 200 * 8);
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "scores differ by {worst}");
        // The first component carries real structure: its scores vary across cells.
        let first: Vec<f32> = a.iter().step_by(8).copied().collect();
        let spread = first.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v))
            - first.iter().fold(f32::INFINITY, |m, v| m.min(*v));
        assert!(spread > 1.0, "first component spread {spread}");
        let mut renamed = encoder.clone();
        renamed
            .features
            .iter_mut()
            .for_each(|f| f.push_str("_other"));
        let err = encode_condition(&adata, &source, &renamed, false, path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--allow-missing-genes"), "{err}");
    }

    #[test]
    fn components_capped_by_cells() {
        let x: Vec<f32> = (0..4 * 6).map(|i| ((i * 7) % 11) as f32).collect();
        let names = (0..6).map(|i| format!("g{i}")).collect();
        let enc = ModalityEncoder::fit(&x, names, &[0, 1, 2, 3], 50).unwrap();
        assert_eq!(enc.components, 3);
        assert_eq!(enc.project(&x).len(), 4 * 3);
        assert!(ModalityEncoder::fit(&x, vec!["a".into()], &[0, 1], 2).is_err());
    }
}
