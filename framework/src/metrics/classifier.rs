//! Classifier-based metrics.
//!
//! - [`auroc`]: area under the ROC curve via the Mann–Whitney U statistic, ties counted ½.
//! - [`two_sample_auroc`]: the classifier two-sample test. Real cells get label 0, generated
//!   cells label 1; stratified `k`-fold cross-validation (folds drawn with the seed); every
//!   cell is scored by a classifier trained on the other folds; the reported AUROC is over
//!   all out-of-fold scores (per-fold AUROCs are reported too). 0.5 = indistinguishable,
//!   1.0 = perfectly separable.
//! - Multi-class label classifiers trained on real cells ([`KnnClassifier`],
//!   [`LogisticRegression`]) and [`label_fidelity`]: accuracy of such a classifier on
//!   generated cells against the labels they were conditioned on.
//!
//! kNN works on the features as given (use it in PCA space); logistic regression
//! standardizes each feature with the training mean / standard deviation (features with
//! zero variance get scale 1).

use super::neighbors::knn;
use super::util::{average_ranks, check_matrix, check_vec64};
use super::{MetricsError, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::Serialize;

/// AUROC of `scores` for the binary `labels` (`true` = positive), computed as
/// `(R₊ − n₊(n₊+1)/2) / (n₊ n₋)` with `R₊` the sum of the positives' average ranks — tied
/// scores count ½ (Mann–Whitney).
///
/// # Errors
/// [`MetricsError`] if lengths differ, a score is non-finite, or either class is empty.
pub fn auroc(scores: &[f64], labels: &[bool]) -> Result<f64> {
    if scores.len() != labels.len() {
        return Err(MetricsError::Shape {
            what: "auroc".to_string(),
            detail: format!("{} scores but {} labels", scores.len(), labels.len()),
        });
    }
    check_vec64("auroc scores", scores, 0)?;
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Err(MetricsError::TooFew {
            what: "auroc: cells of each class".to_string(),
            got: n_pos.min(n_neg),
            need: 1,
        });
    }
    let ranks = average_ranks(scores);
    let r_pos: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, &l)| l)
        .map(|(r, _)| r)
        .sum();
    let (p, q) = (n_pos as f64, n_neg as f64);
    Ok((r_pos - p * (p + 1.0) / 2.0) / (p * q))
}

/// Per-feature standardization fitted on training rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Standardizer {
    mean: Vec<f64>,
    scale: Vec<f64>,
}

impl Standardizer {
    fn fit(x: &[f32], n: usize, d: usize) -> Self {
        let mut mean = vec![0.0; d];
        for row in x.chunks_exact(d) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += f64::from(*v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut var = vec![0.0; d];
        for row in x.chunks_exact(d) {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                let t = f64::from(*v) - m;
                *s += t * t;
            }
        }
        let scale = var
            .iter()
            .map(|s| {
                let sd = (s / n as f64).sqrt();
                if sd > 1e-12 {
                    sd
                } else {
                    1.0
                }
            })
            .collect();
        Standardizer { mean, scale }
    }

    /// Standardized rows with an appended constant 1 (bias), row length `d + 1`.
    fn apply_aug(&self, x: &[f32], d: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(x.len() / d * (d + 1));
        for row in x.chunks_exact(d) {
            for ((v, m), s) in row.iter().zip(&self.mean).zip(&self.scale) {
                out.push((f64::from(*v) - m) / s);
            }
            out.push(1.0);
        }
        out
    }
}

/// Hyper-parameters of [`LogisticRegression`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogisticConfig {
    /// L2 penalty λ on the weights (not the biases); objective is
    /// `mean cross-entropy + (λ/2) ‖W‖²` on standardized features. Default `1e-3`.
    pub l2: f64,
    /// Maximum accelerated-gradient iterations. Default 500.
    pub max_iter: usize,
    /// Stop when the largest absolute gradient entry is below this. Default `1e-5`.
    pub tol: f64,
}

impl Default for LogisticConfig {
    fn default() -> Self {
        LogisticConfig {
            l2: 1e-3,
            max_iter: 500,
            tol: 1e-5,
        }
    }
}

/// Multinomial (softmax) logistic regression with L2 penalty on standardized features,
/// fitted by Nesterov-accelerated gradient descent with adaptive restart and step `1/L`,
/// `L = ½ λ_max(Z̃ᵀZ̃/n) + λ` (`Z̃` = standardized features plus a bias column, `λ_max`
/// estimated by 50 power iterations and inflated by 10 %). Deterministic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogisticRegression {
    std: Standardizer,
    /// Row-major `(n_classes, d + 1)`; last column is the bias.
    weights: Vec<f64>,
    n_classes: usize,
    d: usize,
    iterations: usize,
}

fn check_labels(labels: &[usize], n: usize, n_classes: usize) -> Result<()> {
    if labels.len() != n {
        return Err(MetricsError::Shape {
            what: "labels".to_string(),
            detail: format!("{} labels for {n} rows", labels.len()),
        });
    }
    if let Some(bad) = labels.iter().find(|&&l| l >= n_classes) {
        return Err(MetricsError::InvalidArgument(format!(
            "label {bad} >= n_classes {n_classes}"
        )));
    }
    Ok(())
}

fn softmax_in_place(z: &mut [f64]) {
    let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for v in z.iter_mut() {
        *v = (*v - mx).exp();
        s += *v;
    }
    z.iter_mut().for_each(|v| *v /= s);
}

impl LogisticRegression {
    /// Fits on `x` (`(n, d)` row-major) with class labels in `0..n_classes`.
    ///
    /// # Errors
    /// [`MetricsError`] on shape mismatch, non-finite values, a label `>= n_classes`,
    /// fewer than 2 distinct classes present, or a negative / non-finite `l2`.
    pub fn fit(
        x: &[f32],
        n: usize,
        d: usize,
        labels: &[usize],
        n_classes: usize,
        config: &LogisticConfig,
    ) -> Result<Self> {
        check_matrix("logistic regression x", x, n, d, 2)?;
        check_labels(labels, n, n_classes)?;
        if !(config.l2.is_finite() && config.l2 >= 0.0) {
            return Err(MetricsError::InvalidArgument(format!(
                "logistic regression: l2={} must be finite and >= 0",
                config.l2
            )));
        }
        let mut present = vec![false; n_classes];
        labels.iter().for_each(|&l| present[l] = true);
        if present.iter().filter(|&&p| p).count() < 2 {
            return Err(MetricsError::InvalidArgument(
                "logistic regression needs at least 2 distinct classes".to_string(),
            ));
        }
        let std = Standardizer::fit(x, n, d);
        let z = std.apply_aug(x, d);
        let da = d + 1;
        let c = n_classes;
        // power iteration for λ_max(Z̃ᵀZ̃/n)
        let mut v = vec![1.0 / (da as f64).sqrt(); da];
        let mut lam = 0.0;
        for _ in 0..50 {
            let mut w = vec![0.0; da];
            for row in z.chunks_exact(da) {
                let s: f64 = row.iter().zip(&v).map(|(a, b)| a * b).sum();
                for (wi, a) in w.iter_mut().zip(row) {
                    *wi += s * a;
                }
            }
            w.iter_mut().for_each(|a| *a /= n as f64);
            let nrm = w.iter().map(|a| a * a).sum::<f64>().sqrt();
            lam = nrm;
            if nrm <= 0.0 {
                break;
            }
            v = w.into_iter().map(|a| a / nrm).collect();
        }
        let lips = 0.5 * lam * 1.1 + config.l2;
        let step = 1.0 / lips.max(1e-12);
        let grad = |w: &[f64]| -> Vec<f64> {
            const CHUNK: usize = 512;
            let parts: Vec<Vec<f64>> = z
                .par_chunks(CHUNK * da)
                .enumerate()
                .map(|(ci, zs)| {
                    let mut g = vec![0.0; c * da];
                    let mut p = vec![0.0; c];
                    for (ri, row) in zs.chunks_exact(da).enumerate() {
                        for (k, pk) in p.iter_mut().enumerate() {
                            *pk = w[k * da..(k + 1) * da]
                                .iter()
                                .zip(row)
                                .map(|(a, b)| a * b)
                                .sum();
                        }
                        softmax_in_place(&mut p);
                        p[labels[ci * CHUNK + ri]] -= 1.0;
                        for (k, pk) in p.iter().enumerate() {
                            for (gv, a) in g[k * da..(k + 1) * da].iter_mut().zip(row) {
                                *gv += pk * a;
                            }
                        }
                    }
                    g
                })
                .collect();
            let mut g = vec![0.0; c * da];
            for part in parts {
                g.iter_mut().zip(part).for_each(|(a, b)| *a += b);
            }
            for k in 0..c {
                for j in 0..da {
                    g[k * da + j] /= n as f64;
                    if j < d {
                        g[k * da + j] += config.l2 * w[k * da + j];
                    }
                }
            }
            g
        };
        let mut w = vec![0.0; c * da];
        let mut w_prev = w.clone();
        let mut t = 1.0f64;
        let mut iterations = 0;
        for it in 0..config.max_iter {
            iterations = it + 1;
            let t_next = 0.5 * (1.0 + (1.0 + 4.0 * t * t).sqrt());
            let beta = (t - 1.0) / t_next;
            let y: Vec<f64> = w
                .iter()
                .zip(&w_prev)
                .map(|(a, b)| a + beta * (a - b))
                .collect();
            let g = grad(&y);
            let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let w_new: Vec<f64> = y.iter().zip(&g).map(|(a, b)| a - step * b).collect();
            // gradient-based adaptive restart (O'Donoghue & Candès)
            let restart: f64 = g
                .iter()
                .zip(w_new.iter().zip(&w))
                .map(|(gv, (a, b))| gv * (a - b))
                .sum();
            w_prev = std::mem::replace(&mut w, w_new);
            t = if restart > 0.0 { 1.0 } else { t_next };
            if gmax < config.tol {
                break;
            }
        }
        Ok(LogisticRegression {
            std,
            weights: w,
            n_classes,
            d,
            iterations,
        })
    }

    /// Class probabilities for `x` (`(n, d)` row-major): row-major `(n, n_classes)`.
    ///
    /// # Errors
    /// [`MetricsError`] on shape mismatch (including a `d` different from training) or
    /// non-finite values.
    pub fn predict_proba(&self, x: &[f32], n: usize, d: usize) -> Result<Vec<f64>> {
        check_matrix("logistic regression predict x", x, n, d, 0)?;
        if d != self.d {
            return Err(MetricsError::Shape {
                what: "logistic regression predict x".to_string(),
                detail: format!("d={d} but fitted with d={}", self.d),
            });
        }
        let z = self.std.apply_aug(x, d);
        let da = d + 1;
        let c = self.n_classes;
        let mut out = vec![0.0; n * c];
        out.par_chunks_mut(c)
            .zip(z.par_chunks_exact(da))
            .for_each(|(p, row)| {
                for (k, pk) in p.iter_mut().enumerate() {
                    *pk = self.weights[k * da..(k + 1) * da]
                        .iter()
                        .zip(row)
                        .map(|(a, b)| a * b)
                        .sum();
                }
                softmax_in_place(p);
            });
        Ok(out)
    }

    /// Most probable class of each row of `x` (`(n, d)`); ties go to the smaller class.
    ///
    /// # Errors
    /// As [`LogisticRegression::predict_proba`].
    pub fn predict(&self, x: &[f32], n: usize, d: usize) -> Result<Vec<usize>> {
        let p = self.predict_proba(x, n, d)?;
        Ok(p.chunks_exact(self.n_classes)
            .map(|row| {
                let mut best = 0;
                for (k, v) in row.iter().enumerate() {
                    if *v > row[best] {
                        best = k;
                    }
                }
                best
            })
            .collect())
    }

    /// Number of optimizer iterations used.
    pub fn iterations(&self) -> usize {
        self.iterations
    }
}

/// k-nearest-neighbour classifier (exact, squared Euclidean on the given features).
#[derive(Debug, Clone, PartialEq)]
pub struct KnnClassifier {
    x: Vec<f32>,
    n: usize,
    d: usize,
    labels: Vec<usize>,
    n_classes: usize,
    k: usize,
}

impl KnnClassifier {
    /// Stores the training set `x` (`(n, d)` row-major) with labels in `0..n_classes`.
    ///
    /// # Errors
    /// [`MetricsError`] on shape mismatch, non-finite values, a label `>= n_classes`,
    /// `k == 0` or `k > n`.
    pub fn fit(
        x: &[f32],
        n: usize,
        d: usize,
        labels: &[usize],
        n_classes: usize,
        k: usize,
    ) -> Result<Self> {
        check_matrix("knn classifier x", x, n, d, 1)?;
        check_labels(labels, n, n_classes)?;
        if k == 0 || k > n {
            return Err(MetricsError::InvalidArgument(format!(
                "knn classifier: k={k} must be in 1..=n={n}"
            )));
        }
        Ok(KnnClassifier {
            x: x.to_vec(),
            n,
            d,
            labels: labels.to_vec(),
            n_classes,
            k,
        })
    }

    fn neighbours(&self, x: &[f32], n: usize, d: usize) -> Result<super::KnnResult> {
        if d != self.d {
            return Err(MetricsError::Shape {
                what: "knn classifier predict x".to_string(),
                detail: format!("d={d} but fitted with d={}", self.d),
            });
        }
        knn(x, n, &self.x, self.n, d, self.k)
    }

    /// Majority vote among the `k` nearest training rows for each row of `x` (`(n, d)`).
    /// Ties go to the tied class with the smallest summed squared distance, then the
    /// smaller class index.
    ///
    /// # Errors
    /// [`MetricsError`] on shape mismatch or non-finite values.
    pub fn predict(&self, x: &[f32], n: usize, d: usize) -> Result<Vec<usize>> {
        let r = self.neighbours(x, n, d)?;
        Ok((0..n)
            .map(|i| {
                let mut votes = vec![0usize; self.n_classes];
                let mut dist = vec![0.0f64; self.n_classes];
                for (&j, &s) in r.neighbors(i).iter().zip(r.sq_distances(i)) {
                    votes[self.labels[j]] += 1;
                    dist[self.labels[j]] += s;
                }
                let mut best = 0;
                for c in 1..self.n_classes {
                    if votes[c] > votes[best] || (votes[c] == votes[best] && dist[c] < dist[best]) {
                        best = c;
                    }
                }
                best
            })
            .collect())
    }

    /// Fraction of the `k` nearest training rows that carry label `class`, per row of `x`.
    ///
    /// # Errors
    /// [`MetricsError`] on shape mismatch or non-finite values.
    pub fn class_fraction(&self, x: &[f32], n: usize, d: usize, class: usize) -> Result<Vec<f64>> {
        let r = self.neighbours(x, n, d)?;
        Ok((0..n)
            .map(|i| {
                r.neighbors(i)
                    .iter()
                    .filter(|&&j| self.labels[j] == class)
                    .count() as f64
                    / self.k as f64
            })
            .collect())
    }
}

/// ROC curve of `scores` for the positive class (`labels[i] = true`): `(FPR, TPR)` points from
/// (0, 0) to (1, 1), one per distinct threshold (tied scores move both rates at once, so the
/// trapezoidal area equals [`auroc`] with ties counted ½).
///
/// # Errors
/// [`MetricsError`] for non-finite scores, a length mismatch or a missing class.
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Result<Vec<(f64, f64)>> {
    if scores.len() != labels.len() {
        return Err(MetricsError::Shape {
            what: "roc_curve".to_string(),
            detail: format!("{} scores but {} labels", scores.len(), labels.len()),
        });
    }
    check_vec64("roc scores", scores, 0)?;
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(MetricsError::InvalidArgument(
            "roc_curve: needs cells of each class".to_string(),
        ));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0usize, 0usize);
    for (pos, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_tie = order
            .get(pos + 1)
            .is_none_or(|&next| scores[next] != scores[i]);
        if last_of_tie {
            points.push((fp as f64 / negatives as f64, tp as f64 / positives as f64));
        }
    }
    Ok(points)
}

/// Classifier used by [`two_sample_auroc`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum TwoSampleClassifier {
    /// kNN; score = fraction of the `k` neighbours (in the training folds) that are
    /// generated cells.
    Knn {
        /// Number of neighbours.
        k: usize,
    },
    /// L2 logistic regression on standardized features; score = P(generated).
    Logistic(LogisticConfig),
}

impl TwoSampleClassifier {
    fn name(&self) -> String {
        match self {
            TwoSampleClassifier::Knn { k } => format!("knn(k={k})"),
            TwoSampleClassifier::Logistic(c) => format!("logistic(l2={})", c.l2),
        }
    }
}

/// Configuration of [`two_sample_auroc`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TwoSampleConfig {
    /// The classifier (default kNN with k = 10).
    pub classifier: TwoSampleClassifier,
    /// Number of stratified cross-validation folds, >= 2 (default 5).
    pub folds: usize,
    /// Seed of the fold assignment (default 0).
    pub seed: u64,
    /// Name of the feature space for the protocol string (default `"input"`).
    pub space: String,
}

impl Default for TwoSampleConfig {
    fn default() -> Self {
        TwoSampleConfig {
            classifier: TwoSampleClassifier::Knn { k: 10 },
            folds: 5,
            seed: 0,
            space: "input".to_string(),
        }
    }
}

/// Result of [`two_sample_auroc`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TwoSampleResult {
    /// AUROC over all out-of-fold scores (0.5 = indistinguishable).
    pub auroc: f64,
    /// AUROC within each held-out fold.
    pub fold_aurocs: Vec<f64>,
    /// ROC curve of the out-of-fold scores, `(false positive rate, true positive rate)` from
    /// (0, 0) to (1, 1) (see [`roc_curve`]).
    pub roc: Vec<(f64, f64)>,
    /// Real cells.
    pub n_real: usize,
    /// Generated cells.
    pub n_generated: usize,
    /// Protocol string, e.g.
    /// `c2st_auroc(knn(k=10), folds=5, stratified, seed=0, space=pca50, n_real=.., n_gen=..)`.
    pub protocol: String,
}

/// Stratified fold id for each of `n` cells of one class (`position % folds` after a seeded
/// shuffle).
fn fold_ids(n: usize, folds: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let mut f = vec![0; n];
    for (pos, &i) in order.iter().enumerate() {
        f[i] = pos % folds;
    }
    f
}

/// Classifier two-sample test AUROC between `real` (`(n_real, d)`) and `generated`
/// (`(n_gen, d)`), with stratified `folds`-fold cross-validation (see module docs).
///
/// # Errors
/// [`MetricsError`] on shape mismatch, non-finite values, `folds < 2`, fewer than `folds`
/// cells in either sample, or an invalid classifier parameter (kNN `k` larger than a
/// training split).
pub fn two_sample_auroc(
    real: &[f32],
    n_real: usize,
    generated: &[f32],
    n_gen: usize,
    d: usize,
    config: &TwoSampleConfig,
) -> Result<TwoSampleResult> {
    let folds = config.folds;
    if folds < 2 {
        return Err(MetricsError::InvalidArgument(
            "two-sample classifier: folds must be >= 2".to_string(),
        ));
    }
    check_matrix("two-sample real", real, n_real, d, folds)?;
    check_matrix("two-sample generated", generated, n_gen, d, folds)?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let fr = fold_ids(n_real, folds, &mut rng);
    let fg = fold_ids(n_gen, folds, &mut rng);
    let n = n_real + n_gen;
    let row = |i: usize| -> &[f32] {
        if i < n_real {
            &real[i * d..(i + 1) * d]
        } else {
            &generated[(i - n_real) * d..(i - n_real + 1) * d]
        }
    };
    let fold_of = |i: usize| if i < n_real { fr[i] } else { fg[i - n_real] };
    let mut scores = vec![0.0f64; n];
    let labels: Vec<bool> = (0..n).map(|i| i >= n_real).collect();
    let mut fold_aurocs = Vec::with_capacity(folds);
    for f in 0..folds {
        let (mut tr_x, mut tr_y, mut te_x, mut te_idx) = (vec![], vec![], vec![], vec![]);
        for i in 0..n {
            if fold_of(i) == f {
                te_x.extend_from_slice(row(i));
                te_idx.push(i);
            } else {
                tr_x.extend_from_slice(row(i));
                tr_y.push(usize::from(i >= n_real));
            }
        }
        let (ntr, nte) = (tr_y.len(), te_idx.len());
        let s = match &config.classifier {
            TwoSampleClassifier::Knn { k } => {
                KnnClassifier::fit(&tr_x, ntr, d, &tr_y, 2, *k)?.class_fraction(&te_x, nte, d, 1)?
            }
            TwoSampleClassifier::Logistic(c) => {
                let m = LogisticRegression::fit(&tr_x, ntr, d, &tr_y, 2, c)?;
                m.predict_proba(&te_x, nte, d)?
                    .chunks_exact(2)
                    .map(|p| p[1])
                    .collect()
            }
        };
        let fl: Vec<bool> = te_idx.iter().map(|&i| labels[i]).collect();
        fold_aurocs.push(auroc(&s, &fl)?);
        for (&i, v) in te_idx.iter().zip(s) {
            scores[i] = v;
        }
    }
    Ok(TwoSampleResult {
        auroc: auroc(&scores, &labels)?,
        roc: roc_curve(&scores, &labels)?,
        fold_aurocs,
        n_real,
        n_generated: n_gen,
        protocol: format!(
            "c2st_auroc({}, folds={folds}, stratified, seed={}, space={}, n_real={n_real}, n_gen={n_gen})",
            config.classifier.name(),
            config.seed,
            config.space
        ),
    })
}

/// Label classifier used by [`label_fidelity`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum LabelClassifier {
    /// kNN majority vote with `k` neighbours.
    Knn {
        /// Number of neighbours.
        k: usize,
    },
    /// Multinomial logistic regression.
    Logistic(LogisticConfig),
}

/// Result of [`label_fidelity`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FidelityResult {
    /// Fraction of generated cells whose predicted label equals the conditioning label.
    pub accuracy: f64,
    /// Per class `c` (index = label): accuracy on generated cells conditioned on `c`,
    /// `None` if there are none.
    pub per_class_accuracy: Vec<Option<f64>>,
    /// Generated cells per class.
    pub per_class_count: Vec<usize>,
    /// Protocol string, e.g. `label_fidelity(knn(k=15) trained on real n=.., space=.., n_gen=..)`.
    pub protocol: String,
}

/// Trains `classifier` on real cells (`(n_real, d)`, labels `real_labels`) and reports its
/// accuracy on generated cells (`(n_gen, d)`) against the labels they were conditioned on
/// (`gen_labels`). Labels are `0..n_classes` with `n_classes = 1 + max label` over both
/// sets. Passing real held-out cells as "generated" gives the control row.
///
/// # Errors
/// [`MetricsError`] on shape mismatch, non-finite values, label-count mismatch, an empty
/// generated set, or classifier errors (e.g. fewer than 2 classes among real cells).
#[allow(clippy::too_many_arguments)]
pub fn label_fidelity(
    real: &[f32],
    n_real: usize,
    real_labels: &[usize],
    generated: &[f32],
    n_gen: usize,
    gen_labels: &[usize],
    d: usize,
    classifier: &LabelClassifier,
    space: &str,
) -> Result<FidelityResult> {
    check_matrix("fidelity generated", generated, n_gen, d, 1)?;
    let n_classes = 1 + real_labels
        .iter()
        .chain(gen_labels)
        .copied()
        .max()
        .unwrap_or(0);
    check_labels(gen_labels, n_gen, n_classes)?;
    let (pred, name) = match classifier {
        LabelClassifier::Knn { k } => (
            KnnClassifier::fit(real, n_real, d, real_labels, n_classes, *k)?
                .predict(generated, n_gen, d)?,
            format!("knn(k={k})"),
        ),
        LabelClassifier::Logistic(c) => (
            LogisticRegression::fit(real, n_real, d, real_labels, n_classes, c)?
                .predict(generated, n_gen, d)?,
            format!("multinomial_logistic(l2={})", c.l2),
        ),
    };
    let mut hit = vec![0usize; n_classes];
    let mut cnt = vec![0usize; n_classes];
    for (p, t) in pred.iter().zip(gen_labels) {
        cnt[*t] += 1;
        if p == t {
            hit[*t] += 1;
        }
    }
    let total_hit: usize = hit.iter().sum();
    Ok(FidelityResult {
        accuracy: total_hit as f64 / n_gen as f64,
        per_class_accuracy: hit
            .iter()
            .zip(&cnt)
            .map(|(h, c)| (*c > 0).then(|| *h as f64 / *c as f64))
            .collect(),
        per_class_count: cnt,
        protocol: format!(
            "label_fidelity({name} trained on real n={n_real}, space={space}, n_gen={n_gen})"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn roc_curve_by_hand_and_area_equals_auroc() {
        let roc = roc_curve(&[0.9, 0.8, 0.7, 0.6], &[true, false, true, false]).unwrap();
        assert_eq!(
            roc,
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        // With ties, the trapezoidal area matches the Mann–Whitney AUROC.
        let scores = [0.3, 0.3, 0.9, 0.1, 0.3, 0.5, 0.5, 0.0];
        let labels = [true, false, true, false, true, false, true, false];
        let roc = roc_curve(&scores, &labels).unwrap();
        let area: f64 = roc
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
            .sum();
        assert!((area - auroc(&scores, &labels).unwrap()).abs() < 1e-12);
        assert_eq!(roc.last(), Some(&(1.0, 1.0)));
        assert!(roc_curve(&[0.1, 0.2], &[true, true]).is_err());
    }

    #[test]
    fn auroc_reference_with_ties() {
        // scipy.stats.mannwhitneyu reference, see reference_values.py
        let scores = [0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.9];
        let labels = [false, false, true, true, true, false, true];
        assert!((auroc(&scores, &labels).expect("auc") - 0.75).abs() < 1e-12);
        assert_eq!(auroc(&[1.0, 1.0], &[true, false]).expect("auc"), 0.5);
        assert_eq!(auroc(&[0.0, 1.0], &[false, true]).expect("auc"), 1.0);
        assert!(auroc(&[0.0, 1.0], &[true, true]).is_err());
        assert!(auroc(&[f64::NAN, 1.0], &[true, false]).is_err());
    }

    fn gaussian(n: usize, d: usize, shift: f32, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let nz = Normal::new(0.0f32, 1.0).expect("normal");
        (0..n * d).map(|_| nz.sample(&mut rng) + shift).collect()
    }

    #[test]
    fn two_sample_identical_and_separated() {
        let (n, d) = (400, 4);
        let a = gaussian(n, d, 0.0, 1);
        let b = gaussian(n, d, 0.0, 2);
        let far = gaussian(n, d, 4.0, 3);
        for clf in [
            TwoSampleClassifier::Knn { k: 10 },
            TwoSampleClassifier::Logistic(LogisticConfig::default()),
        ] {
            let cfg = TwoSampleConfig {
                classifier: clf,
                ..TwoSampleConfig::default()
            };
            let same = two_sample_auroc(&a, n, &b, n, d, &cfg).expect("c2st");
            assert!(
                (same.auroc - 0.5).abs() < 0.07,
                "{}: {}",
                same.protocol,
                same.auroc
            );
            let sep = two_sample_auroc(&a, n, &far, n, d, &cfg).expect("c2st");
            assert!(sep.auroc > 0.99, "{}: {}", sep.protocol, sep.auroc);
            assert_eq!(sep.fold_aurocs.len(), 5);
            // determinism
            let again = two_sample_auroc(&a, n, &b, n, d, &cfg).expect("c2st");
            assert_eq!(same, again);
        }
    }

    #[test]
    fn multiclass_classifiers_and_fidelity() {
        // three well separated clusters in 2-D
        let centers = [(0.0f32, 0.0f32), (6.0, 0.0), (0.0, 6.0)];
        let mut rng = StdRng::seed_from_u64(5);
        let nz = Normal::new(0.0f32, 1.0).expect("normal");
        let mut make = |per: usize| {
            let mut x = vec![];
            let mut y = vec![];
            for (c, (cx, cy)) in centers.iter().enumerate() {
                for _ in 0..per {
                    x.push(cx + nz.sample(&mut rng));
                    x.push(cy + nz.sample(&mut rng));
                    y.push(c);
                }
            }
            (x, y)
        };
        let (xr, yr) = make(100);
        let (xg, yg) = make(50);
        let lr =
            LogisticRegression::fit(&xr, 300, 2, &yr, 3, &LogisticConfig::default()).expect("fit");
        let acc = lr
            .predict(&xg, 150, 2)
            .expect("pred")
            .iter()
            .zip(&yg)
            .filter(|(a, b)| a == b)
            .count();
        assert!(acc >= 145, "logistic acc {acc}/150");
        let f = label_fidelity(
            &xr,
            300,
            &yr,
            &xg,
            150,
            &yg,
            2,
            &LabelClassifier::Knn { k: 15 },
            "input",
        )
        .expect("fid");
        assert!(f.accuracy > 0.95, "{f:?}");
        // wrong conditioning labels → low accuracy
        let shifted: Vec<usize> = yg.iter().map(|l| (l + 1) % 3).collect();
        let f = label_fidelity(
            &xr,
            300,
            &yr,
            &xg,
            150,
            &shifted,
            2,
            &LabelClassifier::Logistic(LogisticConfig::default()),
            "input",
        )
        .expect("fid");
        assert!(f.accuracy < 0.05, "{f:?}");
        assert_eq!(f.per_class_count, vec![50, 50, 50]);
    }

    #[test]
    fn logistic_matches_known_optimum_1d() {
        // Separable-ish symmetric data: optimum bias is 0 by symmetry; weight > 0.
        let x = [-2.0f32, -1.0, 1.0, 2.0, -0.5, 0.5];
        let y = [0, 0, 1, 1, 1, 0];
        let m = LogisticRegression::fit(
            &x,
            6,
            1,
            &y,
            2,
            &LogisticConfig {
                l2: 0.1,
                max_iter: 5000,
                tol: 1e-10,
            },
        )
        .expect("fit");
        let p = m.predict_proba(&[0.0], 1, 1).expect("p");
        assert!((p[0] - 0.5).abs() < 1e-6, "{p:?}");
        let p = m.predict_proba(&[2.0], 1, 1).expect("p");
        assert!(p[1] > 0.6);
    }
}
