//! Biological QC distributions compared by two-sample KS distance: per-cell total expression
//! ("library size" on the modelled scale), genes detected, and the mitochondrial fraction when
//! MT- genes are present.

use latentlab_framework::metrics::{genes_detected, ks_distance, library_size, mito_fraction};
use latentlab_framework::plugin::{CellSet, EvalContext, Evaluator, EvaluatorConfig, Metric};
use latentlab_framework::{register_plugin, LatentError, Result};
use serde::{Deserialize, Serialize};

/// Config of the `quality_control` evaluator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityControlConfig {
    /// Values above this count as detected. Default 1e-3.
    pub detection_threshold: f32,
    /// Gene-name prefix of mitochondrial genes (case-insensitive). Default "MT-".
    pub mito_prefix: String,
}

impl Default for QualityControlConfig {
    fn default() -> Self {
        Self {
            detection_threshold: 1e-3,
            mito_prefix: "MT-".into(),
        }
    }
}

#[typetag::serde(name = "quality_control")]
impl EvaluatorConfig for QualityControlConfig {
    fn build(&self) -> Result<Box<dyn Evaluator>> {
        if self.detection_threshold < 0.0 {
            return Err(LatentError::config(
                "evaluator.quality_control",
                "detection_threshold",
                "≥ 0",
                self.detection_threshold,
            ));
        }
        Ok(Box::new(QualityControl {
            config: self.clone(),
        }))
    }
}

register_plugin!(
    Evaluator,
    "quality_control",
    "KS distance of library size, genes detected and mitochondrial fraction distributions",
    "type = \"quality_control\"\ndetection_threshold = 0.001\nmito_prefix = \"MT-\""
);

/// QC evaluator.
pub struct QualityControl {
    config: QualityControlConfig,
}

impl Evaluator for QualityControl {
    fn evaluate(
        &self,
        reference: &CellSet,
        candidate: &CellSet,
        ctx: &EvalContext<'_>,
    ) -> Result<Vec<Metric>> {
        let err =
            |e: latentlab_framework::metrics::MetricsError| LatentError::Evaluation(e.to_string());
        let g = reference.n_genes;
        let eps = self.config.detection_threshold;
        let lib = ks_distance(
            &library_size(&reference.x, reference.n, g).map_err(err)?,
            &library_size(&candidate.x, candidate.n, g).map_err(err)?,
        )
        .map_err(err)?;
        let det = ks_distance(
            &genes_detected(&reference.x, reference.n, g, eps).map_err(err)?,
            &genes_detected(&candidate.x, candidate.n, g, eps).map_err(err)?,
        )
        .map_err(err)?;
        let mut out = vec![
            Metric {
                name: "ks_library_size".into(),
                value: lib,
                protocol: "two-sample KS of per-cell row sums (model scale)".into(),
                lower_is_better: true,
            },
            Metric {
                name: "ks_genes_detected".into(),
                value: det,
                protocol: format!("two-sample KS of genes > {eps} per cell"),
                lower_is_better: true,
            },
        ];
        let prefix = self.config.mito_prefix.to_lowercase();
        let mask: Vec<bool> = ctx
            .gene_names
            .iter()
            .map(|n| n.to_lowercase().starts_with(&prefix))
            .collect();
        if mask.iter().any(|&m| m) && mask.len() == g {
            let a = mito_fraction(&reference.x, reference.n, g, &mask).map_err(err)?;
            let b = mito_fraction(&candidate.x, candidate.n, g, &mask).map_err(err)?;
            out.push(Metric {
                name: "ks_mito_fraction".into(),
                value: ks_distance(&a, &b).map_err(err)?,
                protocol: format!(
                    "two-sample KS of the {} mitochondrial genes' share",
                    mask.iter().filter(|&&m| m).count()
                ),
                lower_is_better: true,
            });
        }
        Ok(out)
    }
}
