//! Evaluation of generated cells against real cells; each evaluator is a plugin.

use serde::{Deserialize, Serialize};

use crate::Result;

/// A set of cells in gene space, with optional labels.
#[derive(Debug, Clone)]
pub struct CellSet {
    /// Row-major `(n, n_genes)` expression on the scale the model generates (e.g. log-normalized).
    pub x: Vec<f32>,
    /// Number of cells.
    pub n: usize,
    /// Number of genes.
    pub n_genes: usize,
    /// Per-cell label (conditioned or true label), if any.
    pub labels: Option<Vec<String>>,
    /// Projection on the PCA fit on real training cells, row-major `(n, k)` (filled by the
    /// evaluation driver).
    pub pcs: Vec<f32>,
}

impl CellSet {
    /// Mean expression of each gene over the cells (`n_genes` values; zeros when empty).
    pub fn gene_means(&self) -> Vec<f64> {
        let g = self.n_genes;
        let mut m = vec![0.0f64; g];
        if g == 0 {
            return m;
        }
        for row in self.x.chunks_exact(g) {
            for (a, &v) in m.iter_mut().zip(row) {
                *a += f64::from(v);
            }
        }
        let n = self.n.max(1) as f64;
        m.iter().map(|v| v / n).collect()
    }
}

/// Shared inputs of one evaluation run.
pub struct EvalContext<'a> {
    /// Real training cells (PCA and classifiers are fit on them), with their `pcs`.
    pub train: &'a CellSet,
    /// Number of PCA components (width of every `pcs`).
    pub pca_components: usize,
    /// Gene names (for mitochondrial genes and per-gene reports).
    pub gene_names: &'a [String],
    /// Seed for any randomness.
    pub seed: u64,
    /// For counterfactual predictions (perturbation response): the unperturbed cells the
    /// prediction started from, so evaluators can compare predicted and true changes.
    pub control: Option<&'a CellSet>,
    /// For per-row predictions: candidate rows come in blocks of this many samples, block `i`
    /// predicting reference row `i` (`None` when the sets are unpaired).
    pub paired: Option<usize>,
}

/// One named number with the exact protocol that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Short name (`mmd2_rbf`, `knn_auroc`, ...).
    pub name: String,
    /// Value.
    pub value: f64,
    /// How it was computed (space, kernel, bandwidths, folds, n).
    pub protocol: String,
    /// Whether smaller values are better.
    pub lower_is_better: bool,
}

/// Compares a candidate set with a reference set of real cells.
pub trait Evaluator: Send + Sync {
    /// Metrics of `candidate` against `reference` (real held-out cells).
    ///
    /// # Errors
    /// Invalid shapes or too few cells.
    fn evaluate(
        &self,
        reference: &CellSet,
        candidate: &CellSet,
        ctx: &EvalContext<'_>,
    ) -> Result<Vec<Metric>>;
}

/// Serializable description of an evaluator.
#[typetag::serde(tag = "type")]
pub trait EvaluatorConfig: std::fmt::Debug + Send + Sync {
    /// Validates and builds.
    ///
    /// # Errors
    /// [`crate::LatentError::InvalidConfig`].
    fn build(&self) -> Result<Box<dyn Evaluator>>;
}
