//! Composes the plugins named in an [`ExperimentConfig`] and fits both stages:
//! stage 1 → encode all cells → standardize latents → stage 2.

use std::collections::BTreeMap;

use crate::cells::TrainingCells;
use crate::config::ExperimentConfig;
use crate::device::Dev;
use crate::joint::{check_supported, train_jointly_with, JointData, JointModels};
use crate::pipeline::LatentStats;
use crate::plugin::{
    summarize, Autoencoder, AutoencoderContext, ConditionSummary, ConditionTable, Conditioner,
    ConditionerContext, Denoiser, DenoiserContext, ExpressionBatch, InputKind, LatentSampler,
    TrainingProcess,
};
use crate::rng::derive_seed;
use crate::train::{
    train_autoencoder_with, train_denoiser_with, Checkpoints, CurvePoint, LatentData,
    NoCheckpoints, Progress, Stage2,
};
use crate::{LatentError, Result};

/// Cells ready for training: expression after preprocessing, conditions and the split.
#[derive(Debug, Clone)]
pub struct PreparedData {
    /// All cells `(n, n_genes)` as the autoencoder consumes them.
    pub expression: ExpressionBatch,
    /// Gene names, in column order.
    pub gene_names: Vec<String>,
    /// Per-cell conditions for every source the conditioner declares.
    pub conditions: ConditionTable,
    /// Whether the expression is counts.
    pub input_kind: InputKind,
    /// Training rows.
    pub train_rows: Vec<usize>,
    /// Validation rows.
    pub validation_rows: Vec<usize>,
}

/// The built (possibly trained) plugins of one experiment.
pub struct Models {
    /// Stage 1.
    pub autoencoder: Box<dyn Autoencoder>,
    /// Stage-2 network.
    pub denoiser: Box<dyn Denoiser>,
    /// Condition encoder.
    pub conditioner: Option<Box<dyn Conditioner>>,
    /// Stage-2 process.
    pub sampler: Box<dyn LatentSampler>,
    /// Standardization of the latents.
    pub stats: LatentStats,
    /// The process the denoiser was trained under.
    pub process: TrainingProcess,
    /// Device.
    pub dev: Dev,
}

/// Builds every plugin of `config` for data with `n_genes` genes and the training cells'
/// condition table (categories and ranges are summarized from it).
///
/// # Errors
/// Invalid configs or incompatible combinations, named by plugin and field.
pub fn build_models(
    config: &ExperimentConfig,
    n_genes: usize,
    input_kind: InputKind,
    table: &ConditionTable,
    dev: &Dev,
) -> Result<Models> {
    build_models_from_summaries(
        config,
        n_genes,
        input_kind,
        &condition_summaries(config, table),
        dev,
    )
}

/// Summaries of the training cells' conditions under the kinds the configured conditioner declares.
pub fn condition_summaries(
    config: &ExperimentConfig,
    table: &ConditionTable,
) -> BTreeMap<String, ConditionSummary> {
    let sources = config
        .conditioner
        .as_ref()
        .map(|c| c.sources())
        .unwrap_or_default();
    summarize(table, &sources)
}

/// [`build_models`] from stored condition summaries (loading a run).
///
/// # Errors
/// Invalid configs or incompatible combinations, named by plugin and field.
pub fn build_models_from_summaries(
    config: &ExperimentConfig,
    n_genes: usize,
    input_kind: InputKind,
    conditions: &BTreeMap<String, ConditionSummary>,
    dev: &Dev,
) -> Result<Models> {
    let autoencoder = config.autoencoder.build(&AutoencoderContext {
        n_genes,
        input: input_kind,
        seed: derive_seed(config.seed, "autoencoder"),
        dev: dev.clone(),
    })?;
    let conditioner = match &config.conditioner {
        Some(c) => Some(c.build(&ConditionerContext {
            conditions: conditions.clone(),
            seed: derive_seed(config.seed, "conditioner"),
            dev: dev.clone(),
        })?),
        None => None,
    };
    let condition = conditioner.as_ref().map(|c| (c.dim(), c.injection()));
    let denoiser = config.denoiser.build(&DenoiserContext {
        latent_dim: autoencoder.latent_dim(),
        condition,
        seed: derive_seed(config.seed, "denoiser"),
        dev: dev.clone(),
    })?;
    let sampler = config.sampler.build()?;
    let dim = autoencoder.latent_dim();
    Ok(Models {
        process: sampler.process(),
        autoencoder,
        denoiser,
        conditioner,
        sampler,
        stats: LatentStats::identity(dim),
        dev: dev.clone(),
    })
}

/// Encodes all `rows` of `data` in chunks.
///
/// # Errors
/// Model errors.
pub fn encode_rows(
    autoencoder: &dyn Autoencoder,
    data: &ExpressionBatch,
    rows: &[usize],
    chunk: usize,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(rows.len() * autoencoder.latent_dim());
    for c in rows.chunks(chunk.max(1)) {
        out.extend(autoencoder.encode(&data.select(c))?);
    }
    Ok(out)
}

/// Trains both stages. Returns the training curves.
///
/// # Errors
/// Training failures (non-finite loss with its step), shape errors.
pub fn fit(
    config: &ExperimentConfig,
    data: &PreparedData,
    models: &mut Models,
    progress: &mut dyn Progress,
) -> Result<Vec<CurvePoint>> {
    fit_with(config, data, models, progress, &mut NoCheckpoints)
}

/// [`fit`] with snapshots left in (and resumed from) `checkpoints`.
///
/// # Errors
/// As [`fit`]; snapshot I/O errors.
pub fn fit_with(
    config: &ExperimentConfig,
    data: &PreparedData,
    models: &mut Models,
    progress: &mut dyn Progress,
    checkpoints: &mut dyn Checkpoints,
) -> Result<Vec<CurvePoint>> {
    let train = data.expression.select(&data.train_rows);
    let validation = data.expression.select(&data.validation_rows);
    let train_conditions = data.conditions.select(&data.train_rows);
    let validation_conditions = data.conditions.select(&data.validation_rows);
    fit_cells(
        config,
        &FitData {
            train: &train,
            validation: &validation,
            train_conditions: &train_conditions,
            validation_conditions: &validation_conditions,
            n_genes: data.gene_names.len(),
            input_kind: data.input_kind,
        },
        models,
        progress,
        checkpoints,
    )
}

/// The cells both stages train and validate on: the training cells from any source (in memory
/// or streamed), the validation cells in memory, and their conditions (row-aligned).
pub struct FitData<'a> {
    /// Training cells.
    pub train: &'a dyn TrainingCells,
    /// Validation cells.
    pub validation: &'a ExpressionBatch,
    /// Conditions of the training cells, in training order.
    pub train_conditions: &'a ConditionTable,
    /// Conditions of the validation cells.
    pub validation_conditions: &'a ConditionTable,
    /// Genes per cell.
    pub n_genes: usize,
    /// What the expression values are.
    pub input_kind: InputKind,
}

/// [`fit_with`] on cells from any [`TrainingCells`] source: stage 1 → encode every training
/// cell → standardize the latents → stage 2 → optional joint fine-tuning.
///
/// # Errors
/// As [`fit_with`]; read errors of a streamed source.
pub fn fit_cells(
    config: &ExperimentConfig,
    data: &FitData<'_>,
    models: &mut Models,
    progress: &mut dyn Progress,
    checkpoints: &mut dyn Checkpoints,
) -> Result<Vec<CurvePoint>> {
    if data.train.is_empty() {
        return Err(LatentError::Data("no training cells after the split; provide more cells or lower data.validation_fraction".into()));
    }
    if config.train.joint_steps > 0 {
        // On a throwaway copy with its own device, so the check draws nothing from the streams
        // (dropout masks) that train the stages: runs with and without a joint phase share them.
        let mut copy = config.autoencoder.build(&AutoencoderContext {
            n_genes: data.n_genes,
            input: data.input_kind,
            seed: 0,
            dev: crate::device::device(0)?,
        })?;
        check_supported(copy.as_mut(), models.sampler.as_ref(), &data.train.head(2)?)?;
    }
    let mut curves = train_autoencoder_with(
        models.autoencoder.as_mut(),
        data.train,
        data.validation,
        &config.train,
        derive_seed(config.seed, "stage1"),
        progress,
        checkpoints,
    )?;

    let dim = models.autoencoder.latent_dim();
    let mut z_train = data.train.encode(models.autoencoder.as_ref())?;
    let mut z_val = data.validation.encode(models.autoencoder.as_ref())?;
    let n_train = data.train.len();
    models.stats = LatentStats::fit(&z_train, n_train, dim);
    models.stats.standardize(&mut z_train);
    models.stats.standardize(&mut z_val);
    let train_latents = LatentData {
        z: z_train,
        n: n_train,
        dim,
        conditions: data.train_conditions.clone(),
    };
    let val_latents = LatentData {
        z: z_val,
        n: data.validation.n,
        dim,
        conditions: data.validation_conditions.clone(),
    };
    let drop_prob = config.conditioner.as_ref().map_or(0.0, |c| c.drop_prob());
    let mut stage = Stage2 {
        denoiser: models.denoiser.as_mut(),
        conditioner: models.conditioner.as_deref_mut(),
    };
    let stage2_curves = train_denoiser_with(
        &mut stage,
        models.sampler.as_ref(),
        &train_latents,
        &val_latents,
        drop_prob,
        (&config.train, derive_seed(config.seed, "stage2")),
        &models.dev,
        progress,
        checkpoints,
    )?;
    curves.extend(stage2_curves);
    drop((train_latents, val_latents));
    curves.extend(train_jointly_with(
        &mut JointModels {
            autoencoder: models.autoencoder.as_mut(),
            stage,
        },
        models.sampler.as_ref(),
        &models.stats,
        (
            JointData {
                cells: data.train,
                conditions: data.train_conditions,
            },
            JointData {
                cells: data.validation,
                conditions: data.validation_conditions,
            },
        ),
        drop_prob,
        (&config.train, derive_seed(config.seed, "joint")),
        &models.dev,
        progress,
        checkpoints,
    )?);
    Ok(curves)
}

/// Reconstruction quality of the trained autoencoder on `rows` (the validation split):
/// Pearson r of per-gene means and variances between cells and their reconstructions
/// (`decode_mean(encode(x))`), the mean per-cell Pearson r, and the mean squared error.
///
/// # Errors
/// Model errors.
pub fn reconstruction_quality(
    autoencoder: &dyn Autoencoder,
    data: &ExpressionBatch,
    rows: &[usize],
) -> Result<std::collections::BTreeMap<String, f64>> {
    let mut out = std::collections::BTreeMap::new();
    if rows.len() < 2 {
        return Ok(out);
    }
    let cells = data.select(rows);
    let g = cells.n_genes();
    let z = encode_rows(autoencoder, data, rows, 1024)?;
    let x_hat = autoencoder.decode_mean(&z, rows.len(), &cells.library_size)?;
    let err = |e: crate::metrics::MetricsError| LatentError::Evaluation(e.to_string());
    let real = crate::metrics::gene_stats(&cells.x, cells.n, g, 1e-3).map_err(err)?;
    let rec = crate::metrics::gene_stats(&x_hat, cells.n, g, 1e-3).map_err(err)?;
    if let Ok(r) = crate::metrics::pearson(&real.mean, &rec.mean) {
        out.insert("gene_mean_pearson".into(), r);
    }
    if let Ok(r) = crate::metrics::pearson(&real.variance, &rec.variance) {
        out.insert("gene_variance_pearson".into(), r);
    }
    let per_cell: Vec<f64> = (0..cells.n)
        .filter_map(|i| {
            let a: Vec<f64> = cells.x[i * g..(i + 1) * g]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let b: Vec<f64> = x_hat[i * g..(i + 1) * g]
                .iter()
                .map(|&v| v as f64)
                .collect();
            crate::metrics::pearson(&a, &b).ok()
        })
        .collect();
    if !per_cell.is_empty() {
        out.insert(
            "cell_pearson_mean".into(),
            per_cell.iter().sum::<f64>() / per_cell.len() as f64,
        );
    }
    let mse = cells
        .x
        .iter()
        .zip(&x_hat)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        / cells.x.len().max(1) as f64;
    out.insert("mse".into(), mse);
    Ok(out)
}
