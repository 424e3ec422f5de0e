//! Cell-type fidelity: a classifier trained on real training cells (multinomial logistic on PCs)
//! predicts the label of each candidate cell; accuracy against the label the cell carries (the
//! conditioned label for generated cells, the true label for real cells).

use latentlab_framework::metrics::classifier::LogisticConfig;
use latentlab_framework::metrics::{label_fidelity, LabelClassifier};
use latentlab_framework::plugin::{CellSet, EvalContext, Evaluator, EvaluatorConfig, Metric};
use latentlab_framework::{register_plugin, LatentError, Result};
use serde::{Deserialize, Serialize};

/// Config of the `label_fidelity` evaluator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelFidelityConfig {
    /// L2 penalty λ of the logistic classifier (objective: mean cross-entropy + λ/2 ‖W‖²). Default 1e-3.
    pub l2: f64,
}

impl Default for LabelFidelityConfig {
    fn default() -> Self {
        Self { l2: 1e-3 }
    }
}

#[typetag::serde(name = "label_fidelity")]
impl EvaluatorConfig for LabelFidelityConfig {
    fn build(&self) -> Result<Box<dyn Evaluator>> {
        if self.l2 < 0.0 {
            return Err(LatentError::config(
                "evaluator.label_fidelity",
                "l2",
                "≥ 0",
                self.l2,
            ));
        }
        Ok(Box::new(LabelFidelity {
            config: self.clone(),
        }))
    }
}

register_plugin!(
    Evaluator,
    "label_fidelity",
    "Accuracy of a real-trained cell-type classifier on candidate cells against their (conditioned) labels",
    "type = \"label_fidelity\"\nl2 = 0.001"
);

/// Label fidelity evaluator.
pub struct LabelFidelity {
    config: LabelFidelityConfig,
}

impl Evaluator for LabelFidelity {
    fn evaluate(
        &self,
        reference: &CellSet,
        candidate: &CellSet,
        ctx: &EvalContext<'_>,
    ) -> Result<Vec<Metric>> {
        let Some(train_labels) = &ctx.train.labels else {
            return Ok(Vec::new());
        };
        let mut categories: Vec<&String> = train_labels.iter().collect();
        categories.sort();
        categories.dedup();
        let index = |l: &String| categories.binary_search(&l).ok();
        let train_idx: Vec<usize> = train_labels.iter().map(|l| index(l).unwrap_or(0)).collect();
        let k = ctx.pca_components;
        let space = format!("pca{k}(train)");
        let classifier = LabelClassifier::Logistic(LogisticConfig {
            l2: self.config.l2,
            ..Default::default()
        });
        let accuracy = |cells: &CellSet| -> Result<Option<(f64, String)>> {
            let Some(labels) = &cells.labels else {
                return Ok(None);
            };
            let mut rows = Vec::new();
            let mut idx = Vec::new();
            for (i, l) in labels.iter().enumerate() {
                if let Some(c) = index(l) {
                    rows.push(i);
                    idx.push(c);
                }
            }
            if rows.is_empty() {
                return Ok(None);
            }
            let pcs: Vec<f32> = rows
                .iter()
                .flat_map(|&r| cells.pcs[r * k..(r + 1) * k].iter().copied())
                .collect();
            let r = label_fidelity(
                &ctx.train.pcs,
                ctx.train.n,
                &train_idx,
                &pcs,
                rows.len(),
                &idx,
                k,
                &classifier,
                &space,
            )
            .map_err(|e| LatentError::Evaluation(e.to_string()))?;
            Ok(Some((r.accuracy, r.protocol)))
        };
        let Some((acc, protocol)) = accuracy(candidate)? else {
            return Ok(Vec::new());
        };
        let mut out = vec![Metric {
            name: "label_accuracy".into(),
            value: acc,
            protocol,
            lower_is_better: false,
        }];
        if let Some((real_acc, _)) = accuracy(reference)? {
            out.push(Metric {
                name: "label_accuracy_ratio".into(),
                value: if real_acc > 0.0 { acc / real_acc } else { f64::NAN },
                protocol: format!("label_accuracy of this row / the same classifier's accuracy on real held-out cells ({real_acc:.4})"),
                lower_is_better: false,
            });
        }
        Ok(out)
    }
}
