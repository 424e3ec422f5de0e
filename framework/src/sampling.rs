//! Sampling from a trained run: choose conditions, generate latents, decode, package as AnnData.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::Rng;

use crate::data::{AnnData, Column, DataFrame, Matrix, MatrixSource, ObsmEntry, UnsValue};
use crate::dataset::{condition_column, expression_for_genes};
use crate::experiment::encode_rows;
use crate::modality::encode_condition;
use crate::pipeline::{
    generate_latents, generate_latents_from, invert_latents, ChunkedDecoder, GenerateOptions,
};
use crate::plugin::{
    set_members, ConditionColumn, ConditionKind, ConditionSummary, ConditionTable, InputKind,
    SamplerConfig,
};
use crate::rng::stream;
use crate::run::Run;
use crate::{LatentError, Result};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    /// Number of cells (ignored with [`SampleRequest::from`]: one block of `per_row` per row).
    pub n: usize,
    /// Conditions fixed for every cell, `key = value` (`--condition` / `--set`): a category, a
    /// perturbation combination (`A+B`), a number, or comma-separated vector components. Keys not
    /// fixed follow the training proportions (categorical) or come from `from`.
    pub fixed: BTreeMap<String, String>,
    /// Explicit per-cell labels for one key (overrides proportions; e.g. to mirror a reference).
    pub per_cell: Option<(String, Vec<String>)>,
    /// Take per-row conditions (and, to invert, expression) from an `.h5ad` file.
    pub from: Option<ConditionsFrom>,
    /// Sampler steps (None = the sampler's default or `sample.steps`).
    pub steps: Option<usize>,
    /// Guidance scale (None = `sample.guidance`).
    pub guidance: Option<f32>,
    /// Per-attribute guidance scales by condition key (`--cfg-attribute KEY=SCALE`), on top of
    /// `sample.attribute_guidance`; attributes not named take the guidance scale.
    pub attribute_guidance: BTreeMap<String, f32>,
    /// Another sampler type to use with the trained denoiser (must follow the same process).
    pub sampler: Option<String>,
    /// Sampler config fields to override (`solver = heun`, `eta = 1`, …).
    pub sampler_options: BTreeMap<String, String>,
    /// Seed.
    pub seed: u64,
}

/// `--conditions-from`: generate for every row of a file, with that row's conditions.
#[derive(Debug, Clone)]
pub struct ConditionsFrom {
    /// The `.h5ad` file.
    pub path: PathBuf,
    /// Cells generated per row (≥ 1).
    pub per_row: usize,
    /// Start each row from its own latent mapped back to noise under its original conditions
    /// (a per-cell counterfactual when combined with `fixed`).
    pub invert: bool,
    /// Fill genes of the run that the file lacks with zeros instead of failing.
    pub allow_missing_genes: bool,
}

/// Generated cells and what the user should know about them.
#[derive(Debug, Clone)]
pub struct Sampled {
    /// The cells (X dense, obs with conditions and `source_cell`, var = genes, uns provenance).
    pub cells: AnnData,
    /// Warnings (extrapolated condition values, zero-filled genes).
    pub warnings: Vec<String>,
}

/// What [`sample_to_file`] wrote.
#[derive(Debug, Clone)]
pub struct SampledFile {
    /// Cells written.
    pub n_obs: usize,
    /// Genes (or panel features) per cell.
    pub n_vars: usize,
    /// Warnings (extrapolated condition values, zero-filled genes).
    pub warnings: Vec<String>,
}

fn unknown_key_error(run: &Run, key: &str) -> LatentError {
    let known: Vec<&str> = run
        .manifest
        .conditions
        .iter()
        .map(|c| c.key.as_str())
        .collect();
    LatentError::Data(format!(
        "--condition/--set {key}=…: the run is not conditioned on `{key}` (conditions: {})",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    ))
}

/// The code of `value` in a categorical or set column whose categories are `categories`
/// (extended in place by unseen combinations of known set members).
fn category_code(
    summary: &ConditionSummary,
    categories: &mut Vec<String>,
    value: &str,
) -> Result<u32> {
    if let Some(i) = categories.iter().position(|c| c == value) {
        return Ok(i as u32);
    }
    match summary.kind {
        ConditionKind::Set { separator } => {
            let members = summary.members();
            let parts = set_members(value, separator);
            let unknown: Vec<&str> = parts
                .iter()
                .copied()
                .filter(|p| !members.iter().any(|m| m == p))
                .collect();
            if parts.is_empty() || !unknown.is_empty() {
                return Err(LatentError::Data(format!(
                    "unknown perturbation {} in \"{value}\" for condition `{}`; known perturbations: {} (combine them with `{separator}`)",
                    if unknown.is_empty() { "(empty)".to_string() } else { unknown.join(", ") },
                    summary.key,
                    members.join(", ")
                )));
            }
            categories.push(value.to_string());
            Ok((categories.len() - 1) as u32)
        }
        _ => Err(LatentError::Data(format!(
            "unknown value \"{value}\" for condition `{}`; valid values: {}",
            summary.key,
            summary.categories.join(", ")
        ))),
    }
}

fn range_warning(summary: &ConditionSummary, values: &[f32], warnings: &mut Vec<String>) {
    let dim = summary.dim.max(1);
    if summary.min.len() != dim || summary.max.len() != dim {
        return;
    }
    let outside = values
        .chunks_exact(dim)
        .filter(|row| {
            row.iter()
                .enumerate()
                .any(|(j, v)| *v < summary.min[j] || *v > summary.max[j])
        })
        .count();
    if outside > 0 {
        warnings.push(format!(
            "condition `{}`: {outside} value(s) outside the trained range [{}] → the model extrapolates there",
            summary.key,
            summary
                .min
                .iter()
                .zip(&summary.max)
                .map(|(lo, hi)| format!("{lo}, {hi}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
}

/// One value of condition `summary` repeated for `n` cells.
///
/// # Errors
/// Unknown categories or perturbations (listing the known ones), unparsable numbers, wrong
/// vector width.
pub fn fixed_column(
    summary: &ConditionSummary,
    value: &str,
    n: usize,
    warnings: &mut Vec<String>,
) -> Result<ConditionColumn> {
    let key = &summary.key;
    match summary.kind {
        ConditionKind::Modality(ref source) => Err(LatentError::Data(format!(
            "condition `{key}` is each cell's measured {} (another modality); it cannot be set to one value — give the cells with --conditions-from FILE.h5ad",
            source.matrix
        ))),
        ConditionKind::Categorical | ConditionKind::Set { .. } => {
            let mut categories = summary.categories.clone();
            let code = category_code(summary, &mut categories, value)?;
            Ok(ConditionColumn::Categorical {
                categories,
                codes: vec![code; n],
            })
        }
        ConditionKind::Continuous | ConditionKind::Vector => {
            let parsed: Vec<f32> = value
                .split(',')
                .map(|v| v.trim().parse::<f32>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| {
                    LatentError::Data(format!(
                        "condition `{key}` needs {} number(s) (comma-separated), got \"{value}\"",
                        summary.dim
                    ))
                })?;
            if parsed.len() != summary.dim.max(1) || parsed.iter().any(|v| !v.is_finite()) {
                return Err(LatentError::Data(format!(
                    "condition `{key}` needs {} finite number(s), got \"{value}\"",
                    summary.dim
                )));
            }
            range_warning(summary, &parsed, warnings);
            let values: Vec<f32> = (0..n).flat_map(|_| parsed.iter().copied()).collect();
            Ok(if summary.kind == ConditionKind::Continuous {
                ConditionColumn::Continuous(values)
            } else {
                ConditionColumn::Vector {
                    dim: summary.dim,
                    values,
                }
            })
        }
    }
}

/// A column read from another file, re-expressed in the run's category codes.
///
/// # Errors
/// Unknown categories or perturbations, wrong vector width.
pub fn remap_column(
    summary: &ConditionSummary,
    column: ConditionColumn,
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<ConditionColumn> {
    let file = path.display();
    let key = &summary.key;
    match column {
        ConditionColumn::Categorical { categories, codes } => {
            let mut run_categories = summary.categories.clone();
            let map: Vec<u32> = categories
                .iter()
                .map(|c| {
                    category_code(summary, &mut run_categories, c)
                        .map_err(|e| LatentError::Data(format!("{file}: obs \"{key}\": {e}")))
                })
                .collect::<Result<_>>()?;
            Ok(ConditionColumn::Categorical {
                categories: run_categories,
                codes: codes.iter().map(|&c| map[c as usize]).collect(),
            })
        }
        ConditionColumn::Continuous(values) => {
            range_warning(summary, &values, warnings);
            Ok(ConditionColumn::Continuous(values))
        }
        ConditionColumn::Vector { dim, values } => {
            if dim != summary.dim {
                return Err(LatentError::Data(format!(
                    "{file}: obsm \"{key}\" has {dim} columns; the run was trained with {}",
                    summary.dim
                )));
            }
            range_warning(summary, &values, warnings);
            Ok(ConditionColumn::Vector { dim, values })
        }
    }
}

/// Categorical codes drawn with the training proportions.
fn proportional_codes(summary: &ConditionSummary, n: usize, rng: &mut impl Rng) -> Vec<u32> {
    let total: usize = summary.counts.iter().sum();
    (0..n)
        .map(|_| {
            let mut u = rng.gen_range(0..total.max(1));
            summary
                .counts
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
}

/// Builds the per-cell condition table for a request without a source file.
///
/// # Errors
/// Unknown keys or values (listing the valid ones), continuous or vector conditions that need
/// `--set` or `--conditions-from`.
pub fn conditions_for(
    run: &Run,
    request: &SampleRequest,
    rng: &mut impl Rng,
    warnings: &mut Vec<String>,
) -> Result<ConditionTable> {
    for key in request
        .fixed
        .keys()
        .chain(request.per_cell.iter().map(|(k, _)| k))
    {
        if !run.manifest.conditions.iter().any(|c| &c.key == key) {
            return Err(unknown_key_error(run, key));
        }
    }
    let mut table = ConditionTable::default();
    for summary in &run.manifest.conditions {
        let column = if let Some(value) = request.fixed.get(&summary.key) {
            fixed_column(summary, value, request.n, warnings)?
        } else if let Some((_, values)) =
            request.per_cell.as_ref().filter(|(k, _)| *k == summary.key)
        {
            if values.len() != request.n {
                return Err(LatentError::shape(
                    "per-cell conditions",
                    request.n,
                    values.len(),
                ));
            }
            let mut categories = summary.categories.clone();
            let codes = values
                .iter()
                .map(|v| category_code(summary, &mut categories, v))
                .collect::<Result<_>>()?;
            ConditionColumn::Categorical { categories, codes }
        } else {
            match summary.kind {
                ConditionKind::Categorical | ConditionKind::Set { .. } => ConditionColumn::Categorical {
                    categories: summary.categories.clone(),
                    codes: proportional_codes(summary, request.n, rng),
                },
                ConditionKind::Modality(ref source) => {
                    return Err(LatentError::Data(format!(
                        "condition `{}` is each cell's measured {} (another modality); give the cells with --conditions-from FILE.h5ad",
                        summary.key, source.matrix
                    )))
                }
                ConditionKind::Continuous | ConditionKind::Vector => {
                    return Err(LatentError::Data(format!(
                        "condition `{}` is {}; give a value with --condition {}=VALUE or per-cell values with --conditions-from FILE.h5ad",
                        summary.key,
                        if summary.kind == ConditionKind::Continuous { "numeric" } else { "a vector (obsm)" },
                        summary.key
                    )))
                }
            }
        };
        table.columns.insert(summary.key.clone(), column);
    }
    Ok(table)
}

/// Per-row conditions of `adata` for every condition of the run: `(as in the file, with
/// overrides applied)`. Keys in `fixed` need not exist in the file.
///
/// # Errors
/// Missing keys (naming the file and the available ones), unknown categories or perturbations,
/// wrong vector widths, unknown override keys.
pub fn conditions_from_file(
    run: &Run,
    adata: &AnnData,
    path: &Path,
    fixed: &BTreeMap<String, String>,
    need_original: bool,
    allow_missing_genes: bool,
    warnings: &mut Vec<String>,
) -> Result<(ConditionTable, ConditionTable)> {
    for key in fixed.keys() {
        if !run.manifest.conditions.iter().any(|c| &c.key == key) {
            return Err(unknown_key_error(run, key));
        }
    }
    let n = adata.n_obs();
    let mut original = ConditionTable::default();
    let mut target = ConditionTable::default();
    for summary in &run.manifest.conditions {
        let overridden = fixed.get(&summary.key);
        let from_file = if overridden.is_none() || need_original {
            let column = match (&summary.kind, &summary.encoder) {
                (ConditionKind::Modality(source), Some(encoder)) => {
                    let (column, missing) =
                        encode_condition(adata, source, encoder, allow_missing_genes, path)?;
                    if missing > 0 {
                        warnings.push(format!(
                            "{}: {missing} of the {} {} features of condition `{}` missing, filled with zeros",
                            path.display(),
                            encoder.features.len(),
                            source.matrix,
                            summary.key
                        ));
                    }
                    column
                }
                (kind, _) => condition_column(adata, &summary.key, kind, path)?,
            };
            Some(remap_column(summary, column, path, warnings)?)
        } else {
            None
        };
        let new = match overridden {
            Some(value) => fixed_column(summary, value, n, warnings)?,
            None => from_file.clone().ok_or_else(|| {
                LatentError::Data(format!(
                    "{}: condition `{}` missing",
                    path.display(),
                    summary.key
                ))
            })?,
        };
        if let Some(column) = from_file {
            original.columns.insert(summary.key.clone(), column);
        }
        target.columns.insert(summary.key.clone(), new);
    }
    Ok((original, target))
}

/// Builds the sampler for a request: the run's own, or another type (`name`) keeping the training
/// process fields, with sampler config fields overridden by `options` (`solver = heun`,
/// `eta = 1`, `timestep_spacing = leading`; values parsed as JSON where possible, else strings).
///
/// # Errors
/// Unknown sampler type or field, or a process that differs from the training one (with both
/// named).
pub fn switch_sampler(
    run: &Run,
    name: Option<&str>,
    options: &BTreeMap<String, String>,
) -> Result<Box<dyn crate::plugin::LatentSampler>> {
    let original =
        serde_json::to_value(&run.config.sampler).map_err(|e| LatentError::Data(e.to_string()))?;
    let mut fields = serde_json::Map::new();
    match name {
        Some(name) => {
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
        }
        None => {
            if let serde_json::Value::Object(o) = original {
                fields = o;
            }
        }
    }
    for (key, value) in options {
        let parsed = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.clone()));
        fields.insert(key.clone(), parsed);
    }
    let shown = fields
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("?")
        .to_string();
    let config: Box<dyn SamplerConfig> = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| {
            LatentError::config(
                "sample",
                "--sampler/--sampler-option",
                format!(
                    "a registered sampler ({}) and its fields (`latentlab plugins` lists them)",
                    crate::registry::names(crate::registry::PluginKind::Sampler).join(", ")
                ),
                format!("{shown} ({e})"),
            )
        })?;
    let sampler = config.build()?;
    if sampler.process() != run.manifest.process {
        return Err(LatentError::Incompatible(format!(
            "the denoiser was trained under {:?}; sampler `{shown}` follows {:?}; pick a sampler of the same family, schedule and prediction",
            run.manifest.process,
            sampler.process()
        )));
    }
    Ok(sampler)
}

/// Per-attribute guidance scales in the order of `conditioner`'s attributes from `KEY = SCALE`
/// settings (a key names the attribute that covers it); attributes not named take `guidance`.
/// Empty when `settings` is.
///
/// # Errors
/// [`LatentError::Incompatible`] when the conditioner has no separately guided attributes or a
/// key names none of them (listing them); a negative or non-finite scale.
pub fn attribute_scales(
    conditioner: Option<&dyn crate::plugin::Conditioner>,
    settings: &BTreeMap<String, f32>,
    guidance: f32,
) -> Result<Vec<f32>> {
    if settings.is_empty() {
        return Ok(Vec::new());
    }
    let attributes = conditioner.map(|c| c.attributes()).unwrap_or_default();
    if attributes.is_empty() {
        return Err(LatentError::Incompatible(
            "--cfg-attribute needs separately guided attributes: train with a `combined` \
             conditioner and part_drop_prob > 0"
                .into(),
        ));
    }
    let names: Vec<String> = attributes.iter().map(|keys| keys.join("+")).collect();
    for (key, scale) in settings {
        if !attributes.iter().any(|keys| keys.contains(key)) {
            return Err(LatentError::Incompatible(format!(
                "--cfg-attribute {key}: no attribute covers `{key}`; attributes: {}",
                names.join(", ")
            )));
        }
        if !(scale.is_finite() && *scale >= 0.0) {
            return Err(LatentError::Incompatible(format!(
                "--cfg-attribute {key}={scale}: the scale must be finite and ≥ 0"
            )));
        }
    }
    Ok(attributes
        .iter()
        .map(|keys| {
            keys.iter()
                .find_map(|k| settings.get(k).copied())
                .unwrap_or(guidance)
        })
        .collect())
}

/// Generates cells for `request` and returns them as AnnData (X dense, obs with the conditions
/// used and, with `from`, `source_cell`; var = genes; uns provenance) plus warnings.
/// Runs on a rayon pool worker ([`crate::parallel::on_worker_thread`]).
///
/// # Errors
/// Condition, file or sampler errors, model errors.
pub fn sample(run: &Run, request: &SampleRequest) -> Result<Sampled> {
    crate::parallel::on_worker_thread(|| sample_on_worker(run, request))
}

/// [`sample`] on a pool worker (decision 0025).
fn sample_on_worker(run: &Run, request: &SampleRequest) -> Result<Sampled> {
    let (cells, warnings) = with_prepared(run, request, |mut cells, decoder| {
        let (rows, cols) = cells.x.shape();
        let mut x = Vec::with_capacity(rows * cols);
        while decoder.decode_next(&mut x)? {}
        if let Some(key) = panel_key(run) {
            let mut panel = DataFrame::from_index(cells.obs.index.clone());
            for (j, name) in run.genes.iter().enumerate() {
                let values = x.chunks_exact(cols).map(|row| f64::from(row[j])).collect();
                panel.set_column(name.clone(), Column::Float(values));
            }
            cells.obsm.insert(key, ObsmEntry::Frame(panel));
        }
        cells.x = Matrix::Dense {
            rows,
            cols,
            data: x,
        };
        Ok(cells)
    })?;
    Ok(Sampled { cells, warnings })
}

/// Generates cells for `request` like [`sample`] and writes them to `path` as `.h5ad` (the
/// file [`sample`]'s cells would give, byte for byte), decoding them a chunk of
/// `sample.chunk_size` rows at a time straight into the file: memory holds the latents and
/// one chunk of expression, not every generated cell. A run trained on an `obsm` panel
/// (which the file also carries in `obsm`) is written from memory. Runs on a rayon pool
/// worker ([`crate::parallel::on_worker_thread`]); the write is atomic.
///
/// # Errors
/// As [`sample`]; the file cannot be written.
pub fn sample_to_file(run: &Run, request: &SampleRequest, path: &Path) -> Result<SampledFile> {
    crate::parallel::on_worker_thread(|| {
        if panel_key(run).is_some() {
            let sampled = sample_on_worker(run, request)?;
            crate::data::write_h5ad(path, &sampled.cells)?;
            return Ok(SampledFile {
                n_obs: sampled.cells.n_obs(),
                n_vars: sampled.cells.n_vars(),
                warnings: sampled.warnings,
            });
        }
        let ((n_obs, n_vars), warnings) = with_prepared(run, request, |cells, decoder| {
            crate::data::write_h5ad_streamed(path, &cells, |block| {
                if decoder.decode_next(block)? {
                    Ok(())
                } else {
                    Err(LatentError::Data(format!(
                        "{}: internal: the decoder ran out of cells before the file was full",
                        path.display()
                    )))
                }
            })?;
            Ok((cells.n_obs(), cells.n_vars()))
        })?;
        Ok(SampledFile {
            n_obs,
            n_vars,
            warnings,
        })
    })
}

/// Prepares `request` ([`prepare`]) and hands `finish` the cells (`X` an empty placeholder of
/// its shape) and the decoder of their latents, with the sample's observation-noise stream
/// ([`crate::pipeline::decode_latents`]' rows, a chunk at a time); returns what `finish`
/// returns and the sample's warnings.
fn with_prepared<R>(
    run: &Run,
    request: &SampleRequest,
    finish: impl FnOnce(AnnData, &mut ChunkedDecoder<'_>) -> Result<R>,
) -> Result<(R, Vec<String>)> {
    let PreparedSample {
        cells,
        z,
        library,
        warnings,
        chunk_size,
    } = prepare(run, request)?;
    let mut obs_rng = stream(request.seed, "observation");
    let m = &run.models;
    let mut decoder = ChunkedDecoder::new(
        m.autoencoder.as_ref(),
        &m.stats,
        z,
        library.len(),
        &library,
        Some(&mut obs_rng),
        chunk_size,
    );
    Ok((finish(cells, &mut decoder)?, warnings))
}

/// The `obsm` key of a run trained on an `obsm` panel (proteins), where generated cells also
/// carry their values there as a dataframe named like in training.
fn panel_key(run: &Run) -> Option<String> {
    match MatrixSource::from_str(&run.config.data.matrix) {
        Ok(MatrixSource::Obsm(key)) => Some(key),
        _ => None,
    }
}

/// A sample before decoding: the cells with every annotation and `X` an empty dense placeholder
/// of its shape, the standardized latents and library sizes to decode them with.
struct PreparedSample {
    cells: AnnData,
    z: Vec<f32>,
    library: Vec<f32>,
    warnings: Vec<String>,
    chunk_size: usize,
}

/// Chooses conditions and generates the latents of `request`; everything of [`sample`] but the
/// decoding.
fn prepare(run: &Run, request: &SampleRequest) -> Result<PreparedSample> {
    let mut rng = stream(request.seed, "sample");
    let mut warnings = Vec::new();
    let replaced;
    let sampler: &dyn crate::plugin::LatentSampler =
        if request.sampler.is_none() && request.sampler_options.is_empty() {
            run.models.sampler.as_ref()
        } else {
            replaced = switch_sampler(run, request.sampler.as_deref(), &request.sampler_options)?;
            replaced.as_ref()
        };
    let steps = request
        .steps
        .or(run.config.sample.steps)
        .unwrap_or_else(|| run.config.sampler.default_steps());
    let guidance = request.guidance.unwrap_or(run.config.sample.guidance);
    let mut attribute_guidance = run.config.sample.attribute_guidance.clone();
    attribute_guidance.extend(request.attribute_guidance.clone());
    let options = GenerateOptions {
        steps,
        guidance,
        chunk_size: run.config.sample.chunk_size,
        attribute_scales: attribute_scales(
            run.models.conditioner.as_deref(),
            &attribute_guidance,
            guidance,
        )?,
    };
    let m = &run.models;
    let dim = m.autoencoder.latent_dim();
    let libs = &run.manifest.library_sizes;
    let draw_library = |rng: &mut rand::rngs::StdRng| {
        if libs.is_empty() {
            1.0
        } else {
            libs[rng.gen_range(0..libs.len())]
        }
    };
    let (table, z, library, sources) = match &request.from {
        None => {
            let table = conditions_for(run, request, &mut rng, &mut warnings)?;
            let z = generate_latents(
                m.denoiser.as_ref(),
                m.conditioner.as_deref(),
                sampler,
                &table,
                request.n,
                dim,
                options.clone(),
                &mut rng,
                &m.dev,
            )?;
            let library: Vec<f32> = (0..request.n).map(|_| draw_library(&mut rng)).collect();
            (table, z, library, None)
        }
        Some(from) => {
            let adata = crate::dataset::read(&from.path)?;
            if adata.n_obs() == 0 {
                return Err(LatentError::Data(format!(
                    "{}: no cells",
                    from.path.display()
                )));
            }
            let per_row = from.per_row.max(1);
            let (original, target) = conditions_from_file(
                run,
                &adata,
                &from.path,
                &request.fixed,
                from.invert,
                from.allow_missing_genes,
                &mut warnings,
            )?;
            let rows: Vec<usize> = (0..adata.n_obs())
                .flat_map(|i| std::iter::repeat_n(i, per_row))
                .collect();
            let table = target.select(&rows);
            let (start, row_library) = if from.invert {
                let (batch, missing) = expression_for_genes(
                    &adata,
                    &from.path,
                    &run.config.data.matrix,
                    &run.config.data.preprocess,
                    &run.genes,
                    run.manifest.input_kind == InputKind::Counts,
                    from.allow_missing_genes,
                )?;
                if missing > 0 {
                    warnings.push(format!(
                        "{}: {missing} of {} genes missing, filled with zeros",
                        from.path.display(),
                        run.genes.len()
                    ));
                }
                let mut z0 = encode_rows(
                    m.autoencoder.as_ref(),
                    &batch,
                    &(0..batch.n).collect::<Vec<_>>(),
                    options.chunk_size,
                )?;
                m.stats.standardize(&mut z0);
                let noise = invert_latents(
                    m.denoiser.as_ref(),
                    m.conditioner.as_deref(),
                    sampler,
                    &original,
                    &z0,
                    dim,
                    options.clone(),
                    &m.dev,
                )?;
                let start: Vec<f32> = rows
                    .iter()
                    .flat_map(|&r| noise[r * dim..(r + 1) * dim].iter().copied())
                    .collect();
                let library: Vec<f32> = rows.iter().map(|&r| batch.library_size[r]).collect();
                (Some(start), Some(library))
            } else {
                (None, None)
            };
            let z = match &start {
                Some(start) => generate_latents_from(
                    m.denoiser.as_ref(),
                    m.conditioner.as_deref(),
                    sampler,
                    &table,
                    start,
                    dim,
                    options.clone(),
                    &mut rng,
                    &m.dev,
                )?,
                None => generate_latents(
                    m.denoiser.as_ref(),
                    m.conditioner.as_deref(),
                    sampler,
                    &table,
                    rows.len(),
                    dim,
                    options.clone(),
                    &mut rng,
                    &m.dev,
                )?,
            };
            let library = match row_library {
                Some(l) if run.manifest.input_kind == InputKind::Counts => l,
                _ => (0..rows.len()).map(|_| draw_library(&mut rng)).collect(),
            };
            let names: Vec<String> = rows
                .iter()
                .map(|&r| adata.cell_names()[r].clone())
                .collect();
            (table, z, library, Some(names))
        }
    };
    let n = library.len();
    let mut obs = DataFrame::from_index((0..n).map(|i| format!("generated_{i}")).collect());
    let mut obsm = BTreeMap::new();
    for (key, column) in &table.columns {
        match column {
            ConditionColumn::Categorical { categories, codes } => obs.set_column(
                key.clone(),
                Column::Categorical {
                    codes: codes.iter().map(|&c| c as i32).collect(),
                    categories: categories.clone(),
                    ordered: false,
                },
            ),
            ConditionColumn::Continuous(values) => obs.set_column(
                key.clone(),
                Column::Float(values.iter().map(|&v| f64::from(v)).collect()),
            ),
            ConditionColumn::Vector { dim, values } => {
                obsm.insert(
                    key.clone(),
                    ObsmEntry::Array {
                        rows: n,
                        cols: *dim,
                        data: values.clone(),
                    },
                );
            }
        }
    }
    if let Some(names) = sources {
        obs.set_column("source_cell".to_string(), Column::Str(names));
    }
    let var = DataFrame::from_index(run.genes.clone());
    let mut adata = AnnData::new(
        Matrix::Dense {
            rows: n,
            cols: run.genes.len(),
            data: Vec::new(),
        },
        obs,
        var,
    );
    adata.obsm = obsm;
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
    for (key, scale) in &attribute_guidance {
        provenance.insert(
            format!("attribute_guidance.{key}"),
            UnsValue::Float(f64::from(*scale)),
        );
    }
    provenance.insert("seed".to_string(), UnsValue::Int(request.seed as i64));
    if let Some(from) = &request.from {
        provenance.insert(
            "conditions_from".to_string(),
            UnsValue::Str(from.path.display().to_string()),
        );
        provenance.insert("inverted".to_string(), UnsValue::Bool(from.invert));
    }
    for (key, value) in &request.fixed {
        provenance.insert(format!("set.{key}"), UnsValue::Str(value.clone()));
    }
    adata
        .uns
        .insert("latentlab".to_string(), UnsValue::Map(provenance));
    Ok(PreparedSample {
        cells: adata,
        z,
        library,
        warnings,
        chunk_size: options.chunk_size,
    })
}
