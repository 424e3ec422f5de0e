//! Memorization check: mean distance (PCs) from each candidate cell to its nearest real training
//! cell divided by the same for real held-out cells. ≈ 1 means candidates are as novel as new real
//! cells; well below 1 means they copy training cells.

use latentlab_framework::metrics::memorization_ratio;
use latentlab_framework::plugin::{CellSet, EvalContext, Evaluator, EvaluatorConfig, Metric};
use latentlab_framework::{register_plugin, LatentError, Result};
use serde::{Deserialize, Serialize};

/// Config of the `memorization` evaluator (no options).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorizationConfig {}

#[typetag::serde(name = "memorization")]
impl EvaluatorConfig for MemorizationConfig {
    fn build(&self) -> Result<Box<dyn Evaluator>> {
        Ok(Box::new(Memorization))
    }
}

register_plugin!(
    Evaluator,
    "memorization",
    "Nearest-training-cell distance of candidates relative to real held-out cells (≥ 0.9 is healthy)",
    "type = \"memorization\""
);

/// Memorization evaluator.
pub struct Memorization;

impl Evaluator for Memorization {
    fn evaluate(
        &self,
        reference: &CellSet,
        candidate: &CellSet,
        ctx: &EvalContext<'_>,
    ) -> Result<Vec<Metric>> {
        let k = ctx.pca_components;
        let r = memorization_ratio(
            &ctx.train.pcs,
            ctx.train.n,
            &candidate.pcs,
            candidate.n,
            &reference.pcs,
            reference.n,
            k,
            &format!("pca{k}(train)"),
        )
        .map_err(|e| LatentError::Evaluation(e.to_string()))?;
        Ok(vec![Metric {
            name: "memorization_ratio".into(),
            value: r.ratio,
            protocol: r.protocol,
            lower_is_better: false,
        }])
    }
}
