//! Two-sample classifier test: how well can a classifier tell candidate cells from real held-out
//! cells? Cross-validated AUROC on held-out folds (0.5 = indistinguishable, 1 = fully separable),
//! with a kNN and an L2 logistic classifier on PCs of real training cells.

use latentlab_framework::metrics::classifier::LogisticConfig;
use latentlab_framework::metrics::{two_sample_auroc, TwoSampleClassifier, TwoSampleConfig};
use latentlab_framework::plugin::{CellSet, EvalContext, Evaluator, EvaluatorConfig, Metric};
use latentlab_framework::{register_plugin, LatentError, Result};
use serde::{Deserialize, Serialize};

/// Config of the `two_sample_classifier` evaluator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwoSampleClassifierConfig {
    /// Neighbours of the kNN classifier. Default 10.
    pub k: usize,
    /// Cross-validation folds. Default 5.
    pub folds: usize,
    /// L2 penalty λ of the logistic classifier (objective: mean cross-entropy + λ/2 ‖W‖²). Default 1e-3.
    pub l2: f64,
}

impl Default for TwoSampleClassifierConfig {
    fn default() -> Self {
        Self {
            k: 10,
            folds: 5,
            l2: 1.0,
        }
    }
}

#[typetag::serde(name = "two_sample_classifier")]
impl EvaluatorConfig for TwoSampleClassifierConfig {
    fn build(&self) -> Result<Box<dyn Evaluator>> {
        if self.k == 0 || self.folds < 2 || self.l2 < 0.0 {
            return Err(LatentError::config(
                "evaluator.two_sample_classifier",
                "k/folds/l2",
                "k ≥ 1, folds ≥ 2, l2 ≥ 0",
                format!("{}/{}/{}", self.k, self.folds, self.l2),
            ));
        }
        Ok(Box::new(TwoSample {
            config: self.clone(),
        }))
    }
}

register_plugin!(
    Evaluator,
    "two_sample_classifier",
    "Cross-validated kNN and logistic two-sample classifier AUROC on PCs (0.5 = indistinguishable from real)",
    "type = \"two_sample_classifier\"\nk = 10\nfolds = 5\nl2 = 0.001"
);

/// Two-sample classifier evaluator.
pub struct TwoSample {
    config: TwoSampleClassifierConfig,
}

impl Evaluator for TwoSample {
    fn evaluate(
        &self,
        reference: &CellSet,
        candidate: &CellSet,
        ctx: &EvalContext<'_>,
    ) -> Result<Vec<Metric>> {
        let k = ctx.pca_components;
        let space = format!("pca{k}(train)");
        let run = |classifier: TwoSampleClassifier, name: &str| -> Result<Metric> {
            let config = TwoSampleConfig {
                classifier,
                folds: self.config.folds,
                seed: ctx.seed,
                space: space.clone(),
            };
            let r = two_sample_auroc(
                &reference.pcs,
                reference.n,
                &candidate.pcs,
                candidate.n,
                k,
                &config,
            )
            .map_err(|e| LatentError::Evaluation(e.to_string()))?;
            Ok(Metric {
                name: name.into(),
                value: r.auroc,
                protocol: r.protocol,
                lower_is_better: true,
            })
        };
        Ok(vec![
            run(TwoSampleClassifier::Knn { k: self.config.k }, "knn_auroc")?,
            run(
                TwoSampleClassifier::Logistic(LogisticConfig {
                    l2: self.config.l2,
                    ..Default::default()
                }),
                "logistic_auroc",
            )?,
        ])
    }
}
