//! Distribution distances in PCA space (PCA fit on real training cells): unbiased RBF MMD²
//! (multi-scale median heuristic), energy distance, and mean 1-D Wasserstein over components.

use latentlab_framework::metrics::{
    energy_distance, mmd2_unbiased, sliced_wasserstein, wasserstein_per_component, Bandwidth,
    MmdConfig,
};
use latentlab_framework::plugin::{CellSet, EvalContext, Evaluator, EvaluatorConfig, Metric};
use latentlab_framework::{register_plugin, LatentError, Result};
use serde::{Deserialize, Serialize};

/// Config of the `distribution` evaluator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributionConfig {
    /// Bandwidth multipliers of the median-heuristic σ summed in the MMD kernel. Default [0.5, 1, 2].
    pub mmd_scales: Vec<f64>,
}

impl Default for DistributionConfig {
    fn default() -> Self {
        Self {
            mmd_scales: vec![0.5, 1.0, 2.0],
        }
    }
}

#[typetag::serde(name = "distribution")]
impl EvaluatorConfig for DistributionConfig {
    fn build(&self) -> Result<Box<dyn Evaluator>> {
        if self.mmd_scales.is_empty() || self.mmd_scales.iter().any(|s| *s <= 0.0) {
            return Err(LatentError::config(
                "evaluator.distribution",
                "mmd_scales",
                "a non-empty list of positive factors",
                format!("{:?}", self.mmd_scales),
            ));
        }
        Ok(Box::new(Distribution {
            config: self.clone(),
        }))
    }
}

register_plugin!(
    Evaluator,
    "distribution",
    "MMD² (unbiased, multi-scale RBF), energy distance and per-component Wasserstein on PCs of real training cells",
    "type = \"distribution\"\nmmd_scales = [0.5, 1.0, 2.0]"
);

/// Distribution distances evaluator.
pub struct Distribution {
    config: DistributionConfig,
}

fn metrics_error(e: impl std::fmt::Display) -> LatentError {
    LatentError::Evaluation(e.to_string())
}

impl Evaluator for Distribution {
    fn evaluate(
        &self,
        reference: &CellSet,
        candidate: &CellSet,
        ctx: &EvalContext<'_>,
    ) -> Result<Vec<Metric>> {
        let k = ctx.pca_components;
        let space = format!("pca{k}(train)");
        let mmd = mmd2_unbiased(
            &reference.pcs,
            reference.n,
            &candidate.pcs,
            candidate.n,
            k,
            &MmdConfig {
                bandwidth: Bandwidth::MultiScaleMedian {
                    factors: self.config.mmd_scales.clone(),
                },
                median_max_points: 1000,
                seed: ctx.seed,
                space: space.clone(),
            },
        )
        .map_err(metrics_error)?;
        let energy = energy_distance(
            &reference.pcs,
            reference.n,
            &candidate.pcs,
            candidate.n,
            k,
            &space,
        )
        .map_err(metrics_error)?;
        let w = wasserstein_per_component(
            &reference.pcs,
            reference.n,
            &candidate.pcs,
            candidate.n,
            k,
            &space,
        )
        .map_err(metrics_error)?;
        let sliced = sliced_wasserstein(
            &reference.pcs,
            reference.n,
            &candidate.pcs,
            candidate.n,
            k,
            128,
            ctx.seed,
            &space,
        )
        .map_err(metrics_error)?;
        Ok(vec![
            Metric {
                name: "mmd2_rbf".into(),
                value: mmd.mmd2,
                protocol: mmd.protocol,
                lower_is_better: true,
            },
            Metric {
                name: "energy_distance".into(),
                value: energy.energy,
                protocol: energy.protocol,
                lower_is_better: true,
            },
            Metric {
                name: "wasserstein_pc_mean".into(),
                value: w.mean,
                protocol: w.protocol,
                lower_is_better: true,
            },
            Metric {
                name: "sliced_wasserstein".into(),
                value: sliced.value,
                protocol: sliced.protocol,
                lower_is_better: true,
            },
        ])
    }
}
