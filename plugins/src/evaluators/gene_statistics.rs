//! Gene-level agreement in expression space: per-gene mean, variance and zero fraction of the
//! candidate against real held-out cells (Pearson r and R²), and similarity of gene–gene
//! correlation matrices over the top expressed genes.

use latentlab_framework::metrics::{compare_gene_stats, gene_correlation_similarity, gene_stats};
use latentlab_framework::plugin::{CellSet, EvalContext, Evaluator, EvaluatorConfig, Metric};
use latentlab_framework::{register_plugin, LatentError, Result};
use serde::{Deserialize, Serialize};

/// Config of the `gene_statistics` evaluator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneStatisticsConfig {
    /// Values at or below this count as zero. Default 1e-3 (log-normalized data).
    pub zero_threshold: f32,
    /// Genes (by real mean) in the correlation-similarity check. Default 100.
    pub correlation_genes: usize,
}

impl Default for GeneStatisticsConfig {
    fn default() -> Self {
        Self {
            zero_threshold: 1e-3,
            correlation_genes: 100,
        }
    }
}

#[typetag::serde(name = "gene_statistics")]
impl EvaluatorConfig for GeneStatisticsConfig {
    fn build(&self) -> Result<Box<dyn Evaluator>> {
        if self.correlation_genes < 2 || self.zero_threshold < 0.0 {
            return Err(LatentError::config(
                "evaluator.gene_statistics",
                "correlation_genes/zero_threshold",
                "≥ 2 genes and a non-negative threshold",
                format!("{}/{}", self.correlation_genes, self.zero_threshold),
            ));
        }
        Ok(Box::new(GeneStatistics {
            config: self.clone(),
        }))
    }
}

register_plugin!(
    Evaluator,
    "gene_statistics",
    "Per-gene mean / variance / zero-fraction agreement (Pearson, R²) and gene–gene correlation similarity",
    "type = \"gene_statistics\"\nzero_threshold = 0.001\ncorrelation_genes = 100"
);

/// Gene statistics evaluator.
pub struct GeneStatistics {
    config: GeneStatisticsConfig,
}

impl Evaluator for GeneStatistics {
    fn evaluate(
        &self,
        reference: &CellSet,
        candidate: &CellSet,
        _ctx: &EvalContext<'_>,
    ) -> Result<Vec<Metric>> {
        let err =
            |e: latentlab_framework::metrics::MetricsError| LatentError::Evaluation(e.to_string());
        let g = reference.n_genes;
        let eps = self.config.zero_threshold;
        let real = gene_stats(&reference.x, reference.n, g, eps).map_err(err)?;
        let generated = gene_stats(&candidate.x, candidate.n, g, eps).map_err(err)?;
        let cmp = compare_gene_stats(&real, &generated).map_err(err)?;
        let protocol = |stat: &str, what: &str| {
            format!(
                "{what} of per-gene {stat} (candidate vs real held-out, {g} genes, zero ≤ {eps})"
            )
        };
        let mut out = Vec::new();
        for (stat, agreement) in [
            ("mean", &cmp.mean),
            ("variance", &cmp.variance),
            ("zero_fraction", &cmp.zero_fraction),
        ] {
            out.push(Metric {
                name: format!("gene_{stat}_pearson"),
                value: agreement.pearson.unwrap_or(f64::NAN),
                protocol: protocol(stat, "Pearson r"),
                lower_is_better: false,
            });
            out.push(Metric {
                name: format!("gene_{stat}_r2"),
                value: agreement.r_squared.unwrap_or(f64::NAN),
                protocol: protocol(stat, "R²"),
                lower_is_better: false,
            });
        }
        let zero_error = real
            .zero_fraction
            .iter()
            .zip(&generated.zero_fraction)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / g.max(1) as f64;
        out.push(Metric {
            name: "zero_fraction_mae".into(),
            value: zero_error,
            protocol: protocol("zero fraction", "mean absolute error"),
            lower_is_better: true,
        });
        let top = self.config.correlation_genes.min(g);
        let corr = gene_correlation_similarity(
            &reference.x,
            reference.n,
            &candidate.x,
            candidate.n,
            g,
            top,
        )
        .map_err(err)?;
        out.push(Metric {
            name: "gene_correlation_similarity".into(),
            value: corr.value,
            protocol: corr.protocol,
            lower_is_better: false,
        });
        Ok(out)
    }
}
