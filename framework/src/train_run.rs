//! `latentlab train`: data → both stages → run directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cells::TrainingCells;
use crate::config::ExperimentConfig;
use crate::dataset;
use crate::dataset::Annotations;
use crate::device::device;
use crate::experiment::{
    build_models, condition_summaries, fit_cells, reconstruction_quality, FitData,
};
use crate::plugin::{ConditionTable, ExpressionBatch, InputKind};
use crate::resume::ResumeDir;
use crate::rng::derive_seed;
use crate::run::{file_sha256, genes_digest, save, Manifest, RunContents, Split};
use crate::streaming::{load_streamed, StreamedCells};
use crate::train::{autoencoder_validation_terms, curves_csv, Progress};
use crate::{LatentError, Result};

/// Trains the experiment of `config` and writes the run directory `out`. Runs on a rayon pool
/// worker ([`crate::parallel::on_worker_thread`]).
///
/// # Errors
/// Config, data and training errors; nothing is written on failure.
pub fn train_run(
    config: &ExperimentConfig,
    out: &Path,
    overwrite: bool,
    progress: &mut dyn Progress,
) -> Result<Manifest> {
    train_run_with(config, out, overwrite, false, progress)
}

/// [`train_run`] that keeps resumable snapshots in `<out>.resume/` while training (every
/// `train.checkpoint_every` steps) and, with `resume`, continues an interrupted training of the
/// same config and data from its latest snapshot. The snapshots are removed when the run is
/// written or training fails.
///
/// # Errors
/// As [`train_run`]; nothing to resume, or a changed config or data file.
pub fn train_run_with(
    config: &ExperimentConfig,
    out: &Path,
    overwrite: bool,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<Manifest> {
    crate::parallel::on_worker_thread(|| train_on_worker(config, out, overwrite, resume, progress))
}

/// [`train_run_with`] on a pool worker (decision 0025).
fn train_on_worker(
    config: &ExperimentConfig,
    out: &Path,
    overwrite: bool,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<Manifest> {
    if out.exists() && !overwrite {
        return Err(LatentError::Checkpoint {
            path: out.into(),
            message: "already exists; choose another --out or pass --overwrite".into(),
        });
    }
    let start = Instant::now();
    let data = TrainingData::load(config)?;
    let dev = device(derive_seed(config.seed, "device"))?;
    let mut models = build_models(
        config,
        data.gene_names.len(),
        data.input_kind,
        &data.train_conditions,
        &dev,
    )?;
    let load_s = start.elapsed().as_secs_f64();
    let data_sha256 = file_sha256(&data.path);
    let mut snapshots = ResumeDir::open(
        out,
        config,
        &data_sha256,
        config.train.checkpoint_every,
        resume,
    )?;
    let t = Instant::now();
    let fit_data = FitData {
        train: data.train(),
        validation: &data.validation,
        train_conditions: &data.train_conditions,
        validation_conditions: &data.validation_conditions,
        n_genes: data.gene_names.len(),
        input_kind: data.input_kind,
    };
    let curves = match fit_cells(config, &fit_data, &mut models, progress, &mut snapshots) {
        Ok(curves) => curves,
        Err(e) => {
            snapshots.remove()?;
            return Err(e);
        }
    };
    let fit_s = t.elapsed().as_secs_f64();
    let mut final_losses = BTreeMap::new();
    for c in &curves {
        final_losses.insert(format!("{}.{}", c.stage, c.name), c.value);
    }
    let validation = &data.validation;
    let all_validation: Vec<usize> = (0..validation.n).collect();
    let mut reconstruction =
        reconstruction_quality(models.autoencoder.as_ref(), validation, &all_validation)?;
    if validation.n > 0 && config.train.autoencoder_steps > 0 {
        // Held-out loss terms: `validation_reconstruction` is the held-out negative
        // log-likelihood per cell for likelihood models (NB/ZINB: counts).
        let terms = autoencoder_validation_terms(
            models.autoencoder.as_mut(),
            validation,
            config.train.batch_size,
            derive_seed(config.seed, "reconstruction"),
        )?;
        for (name, value) in terms {
            reconstruction.insert(format!("validation_{name}"), value);
        }
    }
    let libs = data.train().head(10_000)?.library_size;
    let manifest = Manifest {
        crate_version: env!("CARGO_PKG_VERSION").into(),
        seed: config.seed,
        data_path: data.path.clone(),
        data_sha256,
        genes_sha256: genes_digest(&data.gene_names),
        n_cells: data.cell_names.len(),
        n_train: data.annotations.train_rows.len(),
        n_validation: data.annotations.validation_rows.len(),
        input_kind: data.input_kind,
        process: models.process.clone(),
        label_key: data.annotations.label_key.clone(),
        conditions: condition_summaries(config, &data.train_conditions)
            .into_values()
            .collect(),
        library_sizes: if data.input_kind == InputKind::Counts {
            libs
        } else {
            Vec::new()
        },
        final_losses,
        reconstruction,
        timings_s: [("load".to_string(), load_s), ("fit".to_string(), fit_s)]
            .into_iter()
            .collect(),
    };
    let names = |rows: &[usize]| rows.iter().map(|&r| data.cell_names[r].clone()).collect();
    let split = Split {
        train: names(&data.annotations.train_rows),
        validation: names(&data.annotations.validation_rows),
    };
    let csv = curves_csv(&curves);
    save(
        out,
        &RunContents {
            config,
            models: &models,
            genes: &data.gene_names,
            manifest: &manifest,
            curves_csv: &csv,
            split: &split,
        },
        overwrite,
    )?;
    snapshots.remove()?;
    Ok(manifest)
}

/// The training run's data, in memory or streamed (`[data.streaming]`).
struct TrainingData {
    cells: Cells,
    validation: ExpressionBatch,
    train_conditions: ConditionTable,
    validation_conditions: ConditionTable,
    annotations: Annotations,
    cell_names: Vec<String>,
    gene_names: Vec<String>,
    input_kind: InputKind,
    path: PathBuf,
}

enum Cells {
    InMemory(ExpressionBatch),
    Streamed(Box<StreamedCells>),
}

impl TrainingData {
    fn load(config: &ExperimentConfig) -> Result<TrainingData> {
        if config.data.streaming.is_some() {
            let s = load_streamed(config)?;
            let validation_conditions = s.annotations.conditions.select(&s.validation_rows);
            return Ok(TrainingData {
                train_conditions: s.annotations.conditions.select(&s.annotations.train_rows),
                validation_conditions,
                cells: Cells::Streamed(Box::new(s.train)),
                validation: s.validation,
                annotations: s.annotations,
                cell_names: s.cell_names,
                gene_names: s.gene_names,
                input_kind: s.input_kind,
                path: s.path,
            });
        }
        let loaded = dataset::load(config)?;
        let p = loaded.prepared;
        Ok(TrainingData {
            cells: Cells::InMemory(p.expression.select(&p.train_rows)),
            validation: p.expression.select(&p.validation_rows),
            train_conditions: p.conditions.select(&p.train_rows),
            validation_conditions: p.conditions.select(&p.validation_rows),
            annotations: Annotations {
                label_key: loaded.label_key,
                labels: loaded.labels,
                train_rows: p.train_rows,
                validation_rows: p.validation_rows,
                held_out_rows: loaded.held_out_rows,
                conditions: p.conditions,
            },
            cell_names: loaded.cell_names,
            gene_names: p.gene_names,
            input_kind: p.input_kind,
            path: loaded.path,
        })
    }

    fn train(&self) -> &dyn TrainingCells {
        match &self.cells {
            Cells::InMemory(cells) => cells,
            Cells::Streamed(cells) => cells.as_ref(),
        }
    }
}
