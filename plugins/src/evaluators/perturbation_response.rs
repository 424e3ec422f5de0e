//! Perturbation response of counterfactual predictions (the metrics of CPA, scGen and GEARS
//! papers), computed on the model's expression scale (e.g. log-normalized): with the control cells
//! `C` the prediction started from, the true perturbed cells `R` and the predicted cells `P`,
//! the true change is `mean(R) − mean(C)` and the predicted change `mean(P) − mean(C)` per gene.
//!
//! Reported: Pearson r of predicted vs true change over all genes and over the top-`k` genes by
//! absolute true change ("DE genes"); the share of those genes whose change has the right sign;
//! R² (squared Pearson) of the predicted vs true mean expression on those genes; and the mean
//! absolute error of the change on them. A constant prediction (e.g. the no-change baseline) has
//! an undefined correlation, reported as 0. Without control cells (plain generation) the
//! evaluator reports nothing.

use latentlab_framework::metrics::gene_stats::pearson;
use latentlab_framework::plugin::{CellSet, EvalContext, Evaluator, EvaluatorConfig, Metric};
use latentlab_framework::{register_plugin, LatentError, Result};
use serde::{Deserialize, Serialize};

/// Config of the `perturbation_response` evaluator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerturbationResponseConfig {
    /// Number of top differentially expressed genes (by absolute true mean change). Default 20.
    pub top_genes: usize,
}

impl Default for PerturbationResponseConfig {
    fn default() -> Self {
        Self { top_genes: 20 }
    }
}

#[typetag::serde(name = "perturbation_response")]
impl EvaluatorConfig for PerturbationResponseConfig {
    fn build(&self) -> Result<Box<dyn Evaluator>> {
        if self.top_genes < 2 {
            return Err(LatentError::config(
                "evaluator.perturbation_response",
                "top_genes",
                "≥ 2",
                self.top_genes,
            ));
        }
        Ok(Box::new(PerturbationResponse {
            config: self.clone(),
        }))
    }
}

register_plugin!(
    Evaluator,
    "perturbation_response",
    "Counterfactual perturbation response: predicted vs true mean change (Pearson, all and top-DE genes), direction accuracy, R² of means on DE genes",
    "type = \"perturbation_response\"\ntop_genes = 20"
);

/// Perturbation response evaluator.
pub struct PerturbationResponse {
    config: PerturbationResponseConfig,
}

fn r_or_zero(a: &[f64], b: &[f64]) -> f64 {
    pearson(a, b).unwrap_or(0.0)
}

/// The metrics, given per-gene means of control, reference and candidate cells.
pub fn response_metrics(
    control: &[f64],
    reference: &[f64],
    candidate: &[f64],
    top: usize,
) -> [f64; 5] {
    let truth: Vec<f64> = reference.iter().zip(control).map(|(r, c)| r - c).collect();
    let pred: Vec<f64> = candidate.iter().zip(control).map(|(p, c)| p - c).collect();
    let mut order: Vec<usize> = (0..truth.len()).collect();
    order.sort_by(|&a, &b| truth[b].abs().total_cmp(&truth[a].abs()));
    order.truncate(top.min(truth.len()));
    let pick = |v: &[f64]| order.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    let (t, p) = (pick(&truth), pick(&pred));
    let direction = t
        .iter()
        .zip(&p)
        .filter(|(a, b)| a.signum() == b.signum() && **b != 0.0)
        .count() as f64
        / t.len().max(1) as f64;
    let r2 = r_or_zero(&pick(reference), &pick(candidate)).powi(2);
    let mae = t.iter().zip(&p).map(|(a, b)| (a - b).abs()).sum::<f64>() / t.len().max(1) as f64;
    [
        r_or_zero(&pred, &truth),
        r_or_zero(&p, &t),
        direction,
        r2,
        mae,
    ]
}

impl Evaluator for PerturbationResponse {
    fn evaluate(
        &self,
        reference: &CellSet,
        candidate: &CellSet,
        ctx: &EvalContext<'_>,
    ) -> Result<Vec<Metric>> {
        let Some(control) = ctx.control else {
            return Ok(Vec::new());
        };
        let g = reference.n_genes;
        if candidate.n_genes != g
            || control.n_genes != g
            || reference.n == 0
            || candidate.n == 0
            || control.n == 0
        {
            return Err(LatentError::Evaluation(format!(
                "perturbation_response: need non-empty control, reference and candidate cells over the same {g} genes"
            )));
        }
        let k = self.config.top_genes.min(g);
        let [r_all, r_top, direction, r2, mae] = response_metrics(
            &control.gene_means(),
            &reference.gene_means(),
            &candidate.gene_means(),
            k,
        );
        let setting = format!(
            "{} control, {} true perturbed, {} predicted cells; model expression scale",
            control.n, reference.n, candidate.n
        );
        let metric = |name: &str, value: f64, protocol: String, lower: bool| Metric {
            name: name.into(),
            value,
            protocol,
            lower_is_better: lower,
        };
        Ok(vec![
            metric("delta_pearson_all", r_all, format!("Pearson r of predicted vs true mean change over all {g} genes ({setting}); 0 when the prediction is constant"), false),
            metric("delta_pearson_top_de", r_top, format!("Pearson r of predicted vs true mean change over the top {k} genes by |true change| ({setting})"), false),
            metric("direction_accuracy_top_de", direction, format!("share of the top {k} DE genes whose predicted change has the true sign ({setting}); no change counts as wrong"), false),
            metric("mean_r2_top_de", r2, format!("R² (squared Pearson) of predicted vs true mean expression on the top {k} DE genes ({setting})"), false),
            metric("delta_mae_top_de", mae, format!("mean absolute error of the mean change on the top {k} DE genes ({setting})"), true),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_no_change_and_reversed_predictions() {
        let control = [1.0, 1.0, 1.0, 1.0];
        let truth = [3.0, 0.0, 1.5, 1.0];
        let perfect = response_metrics(&control, &truth, &truth, 3);
        assert!((perfect[0] - 1.0).abs() < 1e-12 && (perfect[1] - 1.0).abs() < 1e-12);
        assert_eq!(perfect[2], 1.0);
        assert!(perfect[4].abs() < 1e-12);
        let none = response_metrics(&control, &truth, &control, 3);
        assert_eq!((none[0], none[1], none[2]), (0.0, 0.0, 0.0));
        // Top-3 genes by |change| are 0 (+2), 1 (−1), 2 (+0.5); MAE = (2 + 1 + 0.5) / 3.
        assert!((none[4] - 3.5 / 3.0).abs() < 1e-12);
        let reversed: Vec<f64> = truth
            .iter()
            .zip(&control)
            .map(|(t, c)| 2.0 * c - t)
            .collect();
        let rev = response_metrics(&control, &truth, &reversed, 3);
        assert!((rev[0] + 1.0).abs() < 1e-12);
        assert_eq!(rev[2], 0.0);
    }
}
