//! Per-row prediction quality (spatial expression at held-out spots, a protein panel from RNA):
//! each reference row has `K` predicted samples (candidate rows in blocks of `K`). The mean of
//! each block is the point prediction: per-feature Pearson r across rows (mean over features that
//! vary), per-row Pearson r across features (mean), Spearman of the per-feature version, and RMSE.
//! With `K ≥ 5` samples per row, calibration: the share of true values inside each row's
//! 10–90% sample interval (0.8 when calibrated), which no point-prediction baseline gives.
//! Unpaired evaluations (plain generation) get no metrics.

use latentlab_framework::metrics::gene_stats::{pearson, spearman};
use latentlab_framework::plugin::{CellSet, EvalContext, Evaluator, EvaluatorConfig, Metric};
use latentlab_framework::{register_plugin, LatentError, Result};
use serde::{Deserialize, Serialize};

/// Config of the `paired_prediction` evaluator.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PairedPredictionConfig {}

#[typetag::serde(name = "paired_prediction")]
impl EvaluatorConfig for PairedPredictionConfig {
    fn build(&self) -> Result<Box<dyn Evaluator>> {
        Ok(Box::new(PairedPrediction))
    }
}

register_plugin!(
    Evaluator,
    "paired_prediction",
    "Per-row predictions vs truth: per-feature and per-row Pearson, Spearman, RMSE, and calibration of the 10–90% sample interval",
    "type = \"paired_prediction\""
);

/// Paired prediction evaluator.
pub struct PairedPrediction;

/// Point predictions (block means) and, per value, the 10% and 90% sample quantiles.
fn summarize_blocks(candidate: &CellSet, k: usize) -> (Vec<f64>, Vec<(f64, f64)>) {
    let g = candidate.n_genes;
    let rows = candidate.n / k;
    let mut mean = vec![0.0f64; rows * g];
    let mut interval = vec![(0.0f64, 0.0f64); rows * g];
    let mut samples = vec![0.0f64; k];
    for i in 0..rows {
        for j in 0..g {
            for (s, slot) in samples.iter_mut().enumerate() {
                *slot = f64::from(candidate.x[(i * k + s) * g + j]);
            }
            mean[i * g + j] = samples.iter().sum::<f64>() / k as f64;
            samples.sort_by(f64::total_cmp);
            let q = |p: f64| {
                let pos = p * (k - 1) as f64;
                let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
                samples[lo] + (samples[hi] - samples[lo]) * (pos - lo as f64)
            };
            interval[i * g + j] = (q(0.1), q(0.9));
        }
    }
    (mean, interval)
}

/// Mean Pearson (and Spearman) over columns with variation in both vectors, and mean per-row Pearson.
fn agreement(truth: &[f64], pred: &[f64], rows: usize, g: usize) -> (f64, f64, f64, usize) {
    let (mut per_feature, mut per_feature_s, mut used) = (0.0, 0.0, 0usize);
    for j in 0..g {
        let t: Vec<f64> = (0..rows).map(|i| truth[i * g + j]).collect();
        let p: Vec<f64> = (0..rows).map(|i| pred[i * g + j]).collect();
        if let (Ok(r), Ok(s)) = (pearson(&t, &p), spearman(&t, &p)) {
            per_feature += r;
            per_feature_s += s;
            used += 1;
        }
    }
    let mut per_row = 0.0;
    let mut row_used = 0usize;
    for i in 0..rows {
        if let Ok(r) = pearson(&truth[i * g..(i + 1) * g], &pred[i * g..(i + 1) * g]) {
            per_row += r;
            row_used += 1;
        }
    }
    (
        per_feature / used.max(1) as f64,
        per_feature_s / used.max(1) as f64,
        per_row / row_used.max(1) as f64,
        used,
    )
}

impl Evaluator for PairedPrediction {
    fn evaluate(
        &self,
        reference: &CellSet,
        candidate: &CellSet,
        ctx: &EvalContext<'_>,
    ) -> Result<Vec<Metric>> {
        let Some(k) = ctx.paired else {
            return Ok(Vec::new());
        };
        let g = reference.n_genes;
        if k == 0 || candidate.n != reference.n * k || candidate.n_genes != g || reference.n < 2 {
            return Err(LatentError::Evaluation(format!(
                "paired_prediction: {} candidate rows for {} reference rows in blocks of {k} (need ≥ 2 rows, same {g} features)",
                candidate.n, reference.n
            )));
        }
        let rows = reference.n;
        let truth: Vec<f64> = reference.x.iter().map(|&v| f64::from(v)).collect();
        let (pred, interval) = summarize_blocks(candidate, k);
        let (r_feature, s_feature, r_row, used) = agreement(&truth, &pred, rows, g);
        let rmse = (truth
            .iter()
            .zip(&pred)
            .map(|(t, p)| (t - p) * (t - p))
            .sum::<f64>()
            / truth.len() as f64)
            .sqrt();
        let setting = format!("{rows} held-out rows, {k} sample(s) per row averaged");
        let metric = |name: &str, value: f64, protocol: String, lower: bool| Metric {
            name: name.into(),
            value,
            protocol,
            lower_is_better: lower,
        };
        let mut out = vec![
            metric("per_feature_pearson", r_feature, format!("mean over {used} varying features of Pearson r across rows, prediction vs truth ({setting})"), false),
            metric("per_feature_spearman", s_feature, format!("mean over {used} varying features of Spearman ρ across rows ({setting})"), false),
            metric("per_row_pearson", r_row, format!("mean over rows of Pearson r across {g} features ({setting})"), false),
            metric("rmse", rmse, format!("root mean squared error over all rows and features ({setting})"), true),
        ];
        if k >= 5 {
            let inside = truth
                .iter()
                .zip(&interval)
                .filter(|(t, (lo, hi))| *t >= lo && *t <= hi)
                .count() as f64
                / truth.len() as f64;
            out.push(metric("interval_coverage_80", inside, format!("share of true values inside the row's 10–90% interval of {k} samples (0.8 = calibrated)"), false));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_means_quantiles_and_perfect_agreement() {
        let candidate = CellSet {
            x: (0..10).map(|v| v as f32).collect(),
            n: 10,
            n_genes: 1,
            labels: None,
            pcs: vec![],
        };
        let (mean, interval) = summarize_blocks(&candidate, 5);
        assert_eq!(mean, vec![2.0, 7.0]);
        assert!((interval[0].0 - 0.4).abs() < 1e-12 && (interval[0].1 - 3.6).abs() < 1e-12);
        let truth = [1.0, 2.0, 3.0, 4.0, 2.0, 9.0];
        let (rf, sf, rr, used) = agreement(&truth, &truth, 3, 2);
        assert_eq!(used, 2);
        assert!((rf - 1.0).abs() < 1e-12 && (sf - 1.0).abs() < 1e-12 && (rr - 1.0).abs() < 1e-12);
    }
}
