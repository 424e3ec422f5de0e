//! Evaluation metrics for comparing generated cells with real cells.
//!
//! Every function takes data as a row-major `&[f32]` slice with an explicit shape
//! `(n, d)` (`n` cells × `d` features, element `(i, j)` at `x[i * d + j]`) and
//! accumulates in `f64`. Invalid shapes, too few cells and non-finite values are
//! reported as [`MetricsError`]; no function panics on user data. Every randomized
//! procedure takes a `seed: u64` and is deterministic given it (`rand::rngs::StdRng`).
//!
//! Metric results that are reported carry a `protocol` string naming exactly how the
//! number was computed (kernel, bandwidths, estimator, space, sample sizes), so a
//! report row can be reproduced from its label.
//!
//! One concept per file:
//! - [`pca`]: principal component analysis (covariance / Gram / randomized subspace route).
//! - [`kernels`] and [`mmd`]: RBF kernels, bandwidth selection, unbiased MMD².
//! - [`energy`]: energy distance.
//! - [`wasserstein`]: 1-D Wasserstein per component and sliced Wasserstein.
//! - [`classifier`]: AUROC, two-sample classifier tests, kNN and multinomial logistic
//!   label classifiers (cell-type fidelity).
//! - [`gene_stats`](mod@gene_stats): per-gene mean / variance / zero fraction, correlations, gene–gene
//!   correlation similarity.
//! - [`qc`]: library size, genes detected, mitochondrial fraction, KS distance.
//! - [`memorization`]: nearest-training-cell distance ratio.
//! - [`neighbors`]: exact brute-force k-nearest neighbours.

pub mod classifier;
pub mod energy;
mod error;
pub mod gene_stats;
pub mod kernels;
mod linalg;
pub mod memorization;
pub mod mmd;
pub mod neighbors;
pub mod pca;
pub mod qc;
pub mod ridge;
mod util;
pub mod wasserstein;

pub use classifier::{
    auroc, label_fidelity, roc_curve, two_sample_auroc, FidelityResult, KnnClassifier,
    LabelClassifier, LogisticRegression, TwoSampleClassifier, TwoSampleConfig, TwoSampleResult,
};
pub use energy::{energy_distance, EnergyResult};
pub use error::MetricsError;
pub use gene_stats::{
    compare_gene_stats, gene_correlation_similarity, gene_stats, pearson, r_squared, spearman,
    CorrSimilarity, GeneStats, GeneStatsComparison, StatAgreement,
};
pub use kernels::{median_heuristic_sigma2, Bandwidth};
pub use memorization::{memorization_ratio, MemorizationResult};
pub use mmd::{mmd2_unbiased, MmdConfig, MmdResult};
pub use neighbors::{knn, KnnResult};
pub use pca::{Pca, PcaMethod};
pub use qc::{genes_detected, ks_distance, library_size, mito_fraction};
pub use ridge::ridge_predict;
pub use util::median;
pub use wasserstein::{
    sliced_wasserstein, wasserstein_1d, wasserstein_per_component, SlicedWassersteinResult,
    WassersteinResult,
};

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, MetricsError>;
