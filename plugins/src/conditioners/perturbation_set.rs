//! Perturbations as sets (CPA / GEARS style): each perturbation name gets a learned embedding, a
//! combination such as `IFNB+TNF` is the pooled (sum or mean) embedding of its members, the
//! control is the empty set, and an optional dose column scales each member by
//! `log1p(dose) / log1p(max training dose)`. Combinations never seen in training are expressible
//! as long as their members were seen. A learned base vector is added to every non-null row; the
//! classifier-free-guidance null is a separate learned vector.

use dfdx::prelude::*;
use latentlab_framework::device::{tensor2, Taped, Tensor1, Tensor2, TrainTape};
use latentlab_framework::nn::NullEmbedding;
use latentlab_framework::plugin::{
    set_members, ConditionColumn, ConditionEmbedding, ConditionKind, ConditionTable, Conditioner,
    ConditionerConfig, ConditionerContext, Injection,
};
use latentlab_framework::rng::{fill_normal, stream};
use latentlab_framework::{parameters, register_plugin, LatentError, Result};
use serde::{Deserialize, Serialize};

/// How the members of a combination are pooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SetPooling {
    /// Sum of member embeddings (additive effects).
    #[default]
    Sum,
    /// Mean of member embeddings.
    Mean,
}

/// Config of the `perturbation_set` conditioner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerturbationSetConfig {
    /// Categorical obs column with the perturbation of each cell (e.g. `condition`). Required.
    pub key: String,
    /// Separator between the members of a combination. Default `+`.
    pub separator: char,
    /// Values meaning "no perturbation" (the empty set). Default `["ctrl", "control"]`.
    pub control: Vec<String>,
    /// Optional numeric obs column with the dose. Default none (dose 1).
    pub dose_key: Option<String>,
    /// Embedding width. Default 64.
    pub dim: usize,
    /// Pooling over members. Default `sum`.
    pub pooling: SetPooling,
    /// How the denoiser injects the embedding. Default `adaln`.
    pub injection: Injection,
    /// Probability of the null (unconditional) embedding while training. Default 0.1.
    pub drop_prob: f32,
}

impl Default for PerturbationSetConfig {
    fn default() -> Self {
        Self {
            key: String::new(),
            separator: '+',
            control: vec!["ctrl".into(), "control".into()],
            dose_key: None,
            dim: 64,
            pooling: SetPooling::Sum,
            injection: Injection::Adaln,
            drop_prob: 0.1,
        }
    }
}

const PLUGIN: &str = "conditioner.perturbation_set";

#[typetag::serde(name = "perturbation_set")]
impl ConditionerConfig for PerturbationSetConfig {
    fn sources(&self) -> Vec<(String, ConditionKind)> {
        let mut out = vec![(
            self.key.clone(),
            ConditionKind::Set {
                separator: self.separator,
            },
        )];
        if let Some(dose) = &self.dose_key {
            out.push((dose.clone(), ConditionKind::Continuous));
        }
        out
    }
    fn drop_prob(&self) -> f32 {
        self.drop_prob
    }
    fn build(&self, ctx: &ConditionerContext) -> Result<Box<dyn Conditioner>> {
        if self.key.is_empty() {
            return Err(LatentError::config(
                PLUGIN,
                "key",
                "a categorical obs column",
                "\"\"",
            ));
        }
        if self.dim == 0 {
            return Err(LatentError::config(PLUGIN, "dim", "> 0", 0));
        }
        if !(0.0..1.0).contains(&self.drop_prob) {
            return Err(LatentError::config(
                PLUGIN,
                "drop_prob",
                "a value in [0, 1)",
                self.drop_prob,
            ));
        }
        let summary = ctx.conditions.get(&self.key).ok_or_else(|| {
            LatentError::config(
                PLUGIN,
                "key",
                "an obs column present in the data",
                &self.key,
            )
        })?;
        let members: Vec<String> = summary
            .members()
            .into_iter()
            .filter(|m| !self.control.contains(m))
            .collect();
        if members.is_empty() {
            return Err(LatentError::config(
                PLUGIN,
                "control",
                "at least one perturbation besides the control values",
                format!("only {:?} in `{}`", summary.categories, self.key),
            ));
        }
        let max_dose = match &self.dose_key {
            Some(dose) => {
                let s = ctx.conditions.get(dose).ok_or_else(|| {
                    LatentError::config(
                        PLUGIN,
                        "dose_key",
                        "a numeric obs column present in the data",
                        dose,
                    )
                })?;
                let max = s.max.first().copied().unwrap_or(0.0);
                if s.min.first().copied().unwrap_or(0.0) < 0.0 || max <= 0.0 {
                    return Err(LatentError::config(
                        PLUGIN,
                        "dose_key",
                        "doses ≥ 0 with a positive maximum",
                        dose,
                    ));
                }
                max
            }
            None => 1.0,
        };
        let mut rng = stream(ctx.seed, PLUGIN);
        let mut values = vec![0.0f32; members.len() * self.dim];
        fill_normal(&mut rng, &mut values);
        Ok(Box::new(PerturbationSet {
            config: self.clone(),
            embeddings: tensor2(&ctx.dev, &values, members.len(), self.dim)?,
            base: ctx.dev.zeros_like(&(self.dim,)),
            null: NullEmbedding::new(&ctx.dev, self.dim),
            members,
            max_dose,
        }))
    }
}

register_plugin!(
    Conditioner,
    "perturbation_set",
    "Perturbations as sets: learned embedding per perturbation, combinations pooled (sum/mean), optional dose, unseen combinations of seen perturbations expressible",
    "type = \"perturbation_set\"\nkey = \"condition\"\nseparator = \"+\"\ncontrol = [\"ctrl\"]\ndim = 32\npooling = \"sum\"\ninjection = \"adaln\"\ndrop_prob = 0.1"
);

/// Learned perturbation embeddings.
pub struct PerturbationSet {
    config: PerturbationSetConfig,
    /// `(members, dim)`.
    embeddings: Tensor2,
    /// Added to every non-null row (the control state).
    base: Tensor1,
    null: NullEmbedding,
    members: Vec<String>,
    max_dose: f32,
}
parameters!(PerturbationSet {
    embeddings,
    base,
    null
});

impl PerturbationSet {
    /// Row-major `(batch, members)` pooling weights.
    fn weights(&self, batch: &ConditionTable, rows: usize) -> Result<Vec<f32>> {
        let key = &self.config.key;
        let Some(ConditionColumn::Categorical { categories, codes }) = batch.columns.get(key)
        else {
            return Err(LatentError::Data(format!(
                "condition `{key}` is missing from the batch; it must be a categorical obs column"
            )));
        };
        if codes.len() != rows {
            return Err(LatentError::shape("perturbation_set", rows, codes.len()));
        }
        let doses: Option<&Vec<f32>> = match &self.config.dose_key {
            Some(d) => match batch.columns.get(d) {
                Some(ConditionColumn::Continuous(v)) if v.len() == rows => Some(v),
                _ => {
                    return Err(LatentError::Data(format!(
                        "dose `{d}` is missing from the batch; it must be a numeric obs column"
                    )))
                }
            },
            None => None,
        };
        let m = self.members.len();
        // Member indices per category, resolved once.
        let per_category: Vec<Vec<usize>> = categories
            .iter()
            .map(|c| {
                set_members(c, self.config.separator)
                    .into_iter()
                    .filter(|p| !self.config.control.iter().any(|ctrl| ctrl == p))
                    .map(|p| {
                        self.members.iter().position(|x| x == p).ok_or_else(|| {
                            LatentError::Data(format!(
                                "unknown perturbation \"{p}\" in `{key}`; known: {}",
                                self.members.join(", ")
                            ))
                        })
                    })
                    .collect::<Result<Vec<usize>>>()
            })
            .collect::<Result<_>>()?;
        let mut w = vec![0.0f32; rows * m];
        for (i, &code) in codes.iter().enumerate() {
            let idx = per_category.get(code as usize).ok_or_else(|| {
                LatentError::shape("perturbation_set code", categories.len(), code)
            })?;
            let scale = match doses {
                Some(d) => (d[i].max(0.0)).ln_1p() / self.max_dose.ln_1p(),
                None => 1.0,
            };
            let norm = match self.config.pooling {
                SetPooling::Sum => 1.0,
                SetPooling::Mean => 1.0 / idx.len().max(1) as f32,
            };
            for &j in idx {
                w[i * m + j] += scale * norm;
            }
        }
        Ok(w)
    }

    fn run<T: Taped>(
        &self,
        batch: &ConditionTable,
        null: &[bool],
    ) -> Result<ConditionEmbedding<T>> {
        let rows = null.len();
        let w = self.weights(batch, rows)?;
        let dev = self.embeddings.device().clone();
        let w = tensor2(&dev, &w, rows, self.members.len())?;
        let pooled = w.retaped::<T>().matmul(self.embeddings.retaped::<T>());
        let base = self
            .base
            .retaped::<T>()
            .broadcast_like::<_, Axis<0>>(&(rows, self.config.dim));
        Ok(ConditionEmbedding {
            vector: self.null.apply(pooled + base, null)?,
        })
    }
}

impl Conditioner for PerturbationSet {
    fn dim(&self) -> usize {
        self.config.dim
    }
    fn injection(&self) -> Injection {
        self.config.injection
    }
    fn embed_train(
        &self,
        batch: &ConditionTable,
        null: &[bool],
        _rng: &mut dyn rand::RngCore,
    ) -> Result<ConditionEmbedding<TrainTape>> {
        self.run(batch, null)
    }
    fn embed(&self, batch: &ConditionTable, null: &[bool]) -> Result<ConditionEmbedding<NoneTape>> {
        self.run(batch, null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latentlab_framework::plugin::summarize;
    use latentlab_framework::testing::test_device;

    fn table(values: &[&str], categories: &[&str]) -> ConditionTable {
        let mut t = ConditionTable::default();
        t.columns.insert(
            "p".into(),
            ConditionColumn::Categorical {
                categories: categories.iter().map(|c| c.to_string()).collect(),
                codes: values
                    .iter()
                    .map(|v| categories.iter().position(|c| c == v).unwrap() as u32)
                    .collect(),
            },
        );
        t
    }

    #[test]
    fn combination_is_the_sum_of_its_members_and_control_is_the_base() {
        let cfg = PerturbationSetConfig {
            key: "p".into(),
            control: vec!["ctrl".into()],
            dim: 4,
            ..Default::default()
        };
        let train = table(&["ctrl", "A", "B", "A+B"], &["ctrl", "A", "B", "A+B"]);
        let ctx = ConditionerContext {
            conditions: summarize(&train, &cfg.sources()),
            seed: 1,
            dev: test_device().unwrap(),
        };
        let c = cfg.build(&ctx).unwrap();
        // An unseen combination ("B+A" spelled differently, plus a new category list).
        let query = table(&["ctrl", "A", "B", "B+A"], &["ctrl", "A", "B", "B+A"]);
        let e = c.embed(&query, &[false; 4]).unwrap().vector.as_vec();
        for k in 0..4 {
            let (ctrl, a, b, ab) = (e[k], e[4 + k], e[8 + k], e[12 + k]);
            assert!(
                (ab - (a + b - ctrl)).abs() < 1e-5,
                "sum pooling: {ab} vs {a}+{b}-{ctrl}"
            );
        }
        let unknown = table(&["C"], &["C"]);
        let err = c.embed(&unknown, &[false]).err().unwrap().to_string();
        assert!(
            err.contains("unknown perturbation \"C\"") && err.contains("A, B"),
            "{err}"
        );
    }

    #[test]
    fn only_control_is_refused() {
        let cfg = PerturbationSetConfig {
            key: "p".into(),
            control: vec!["ctrl".into()],
            ..Default::default()
        };
        let train = table(&["ctrl"], &["ctrl"]);
        let ctx = ConditionerContext {
            conditions: summarize(&train, &cfg.sources()),
            seed: 1,
            dev: test_device().unwrap(),
        };
        assert!(cfg.build(&ctx).is_err());
    }
}
