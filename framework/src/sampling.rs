//! Sampling from a trained run: choose conditions, generate latents, decode, package as AnnData.

use std::collections::BTreeMap;

use rand::Rng;

use crate::data::{AnnData, Column, DataFrame, Matrix, UnsValue};
use crate::pipeline::{decode_latents, generate_latents, GenerateOptions};
use crate::plugin::{ConditionColumn, ConditionKind, ConditionTable, SamplerConfig};
use crate::rng::stream;
use crate::run::Run;
use crate::{LatentError, Result};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    /// Number of cells.
    pub n: usize,
    /// Fixed categorical conditions `key = value` (other categorical keys follow the training
    /// proportions).
    pub fixed: BTreeMap<String, String>,
    /// Explicit per-cell labels for one key (overrides proportions; e.g. to mirror a reference).
    pub per_cell: Option<(String, Vec<String>)>,
    /// Sampler steps (None = the sampler's default or `sample.steps`).
    pub steps: Option<usize>,
    /// Guidance scale (None = `sample.guidance`).
    pub guidance: Option<f32>,
    /// Another sampler type to use with the trained denoiser (must follow the same process).
    pub sampler: Option<String>,
    /// Seed.
    pub seed: u64,
}

/// Builds the per-cell condition table for a request.
///
/// # Errors
/// Unknown keys or values (listing the valid ones), non-categorical conditions that need
/// `--conditions-from`.
pub fn conditions_for(
    run: &Run,
    request: &SampleRequest,
    rng: &mut impl Rng,
) -> Result<ConditionTable> {
    let mut table = ConditionTable::default();
    let known: Vec<&str> = run
        .manifest
        .conditions
        .iter()
        .map(|c| c.key.as_str())
        .collect();
    for key in request
        .fixed
        .keys()
        .chain(request.per_cell.iter().map(|(k, _)| k))
    {
        if !known.contains(&key.as_str()) {
            return Err(LatentError::Data(format!(
                "--condition {key}=…: the run is not conditioned on `{key}` (conditions: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    for meta in &run.manifest.conditions {
        let column = match meta.kind {
            ConditionKind::Categorical => {
                let code_of = |value: &str| {
                    meta.categories
                        .iter()
                        .position(|c| c == value)
                        .map(|i| i as u32)
                        .ok_or_else(|| {
                            LatentError::Data(format!(
                                "unknown value \"{value}\" for condition `{}`; valid values: {}",
                                meta.key,
                                meta.categories.join(", ")
                            ))
                        })
                };
                let codes: Vec<u32> = if let Some(value) = request.fixed.get(&meta.key) {
                    vec![code_of(value)?; request.n]
                } else if let Some((_, values)) =
                    request.per_cell.as_ref().filter(|(k, _)| *k == meta.key)
                {
                    if values.len() != request.n {
                        return Err(LatentError::shape(
                            "per-cell conditions",
                            request.n,
                            values.len(),
                        ));
                    }
                    values.iter().map(|v| code_of(v)).collect::<Result<_>>()?
                } else {
                    let total: usize = meta.counts.iter().sum();
                    (0..request.n)
                        .map(|_| {
                            let mut u = rng.gen_range(0..total.max(1));
                            meta.counts
                                .iter()
                                .position(|&c| {
                                    if u < c {
                                        true
                                    } else {
                                        u -= c;
                                        false
                                    }
                                })
                                .unwrap_or(0) as u32
                        })
                        .collect()
                };
                ConditionColumn::Categorical {
                    categories: meta.categories.clone(),
                    codes,
                }
            }
            ConditionKind::Continuous | ConditionKind::Vector => {
                return Err(LatentError::Data(format!(
                    "condition `{}` is {:?}; give per-cell values with --conditions-from FILE.h5ad",
                    meta.key, meta.kind
                )))
            }
        };
        table.columns.insert(meta.key.clone(), column);
    }
    Ok(table)
}

/// Builds another sampler for the trained denoiser, keeping the training process fields.
///
/// # Errors
/// Unknown sampler type, or a process that differs from the training one (with both named).
pub fn switch_sampler(run: &Run, name: &str) -> Result<Box<dyn crate::plugin::LatentSampler>> {
    let original =
        serde_json::to_value(&run.config.sampler).map_err(|e| LatentError::Data(e.to_string()))?;
    let mut fields = serde_json::Map::new();
    fields.insert("type".into(), serde_json::Value::String(name.to_string()));
    for key in [
        "train_steps",
        "schedule",
        "beta_start",
        "beta_end",
        "prediction",
        "timestep_spacing",
    ] {
        if let Some(v) = original.get(key) {
            fields.insert(key.into(), v.clone());
        }
    }
    let config: Box<dyn SamplerConfig> = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| {
            LatentError::config(
                "sample",
                "--sampler",
                format!(
                    "a registered sampler ({})",
                    crate::registry::names(crate::registry::PluginKind::Sampler).join(", ")
                ),
                format!("{name} ({e})"),
            )
        })?;
    let sampler = config.build()?;
    if sampler.process() != run.manifest.process {
        return Err(LatentError::Incompatible(format!(
            "the denoiser was trained under {:?}; sampler `{name}` follows {:?}; pick a sampler of the same family, schedule and prediction",
            run.manifest.process,
            sampler.process()
        )));
    }
    Ok(sampler)
}

/// Generates cells for `request` and returns them as AnnData (X dense, obs with the conditions
/// used, var = genes, uns provenance).
///
/// # Errors
/// Condition or sampler errors, model errors.
pub fn sample(run: &Run, request: &SampleRequest) -> Result<AnnData> {
    let mut rng = stream(request.seed, "sample");
    let table = conditions_for(run, request, &mut rng)?;
    let replaced;
    let sampler: &dyn crate::plugin::LatentSampler = match &request.sampler {
        Some(name) => {
            replaced = switch_sampler(run, name)?;
            replaced.as_ref()
        }
        None => run.models.sampler.as_ref(),
    };
    let steps = request
        .steps
        .or(run.config.sample.steps)
        .unwrap_or_else(|| run.config.sampler.default_steps());
    let guidance = request.guidance.unwrap_or(run.config.sample.guidance);
    let options = GenerateOptions {
        steps,
        guidance,
        chunk_size: run.config.sample.chunk_size,
    };
    let m = &run.models;
    let dim = m.autoencoder.latent_dim();
    let z = generate_latents(
        m.denoiser.as_ref(),
        m.conditioner.as_deref(),
        sampler,
        &table,
        request.n,
        dim,
        options,
        &mut rng,
        &m.dev,
    )?;
    let libs = &run.manifest.library_sizes;
    let library: Vec<f32> = (0..request.n)
        .map(|_| {
            if libs.is_empty() {
                1.0
            } else {
                libs[rng.gen_range(0..libs.len())]
            }
        })
        .collect();
    let mut obs_rng = stream(request.seed, "observation");
    let x = decode_latents(
        m.autoencoder.as_ref(),
        &m.stats,
        z,
        request.n,
        &library,
        Some(&mut obs_rng),
        options.chunk_size,
    )?;
    let mut obs = DataFrame::from_index((0..request.n).map(|i| format!("generated_{i}")).collect());
    for (key, column) in &table.columns {
        if let ConditionColumn::Categorical { categories, codes } = column {
            obs.set_column(
                key.clone(),
                Column::Categorical {
                    codes: codes.iter().map(|&c| c as i32).collect(),
                    categories: categories.clone(),
                    ordered: false,
                },
            );
        }
    }
    let var = DataFrame::from_index(run.genes.clone());
    let mut adata = AnnData::new(
        Matrix::Dense {
            rows: request.n,
            cols: run.genes.len(),
            data: x,
        },
        obs,
        var,
    );
    let mut provenance = BTreeMap::new();
    provenance.insert(
        "generator".to_string(),
        UnsValue::Str(format!("latentlab {}", env!("CARGO_PKG_VERSION"))),
    );
    provenance.insert(
        "run".to_string(),
        UnsValue::Str(run.dir.display().to_string()),
    );
    provenance.insert(
        "sampler".to_string(),
        UnsValue::Str(
            request
                .sampler
                .clone()
                .unwrap_or_else(|| format!("{:?}", run.manifest.process.family)),
        ),
    );
    provenance.insert("steps".to_string(), UnsValue::Int(steps as i64));
    provenance.insert("guidance".to_string(), UnsValue::Float(guidance as f64));
    provenance.insert("seed".to_string(), UnsValue::Int(request.seed as i64));
    adata
        .uns
        .insert("latentlab".to_string(), UnsValue::Map(provenance));
    Ok(adata)
}
