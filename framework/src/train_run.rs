//! `latentlab train`: data → both stages → run directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::config::ExperimentConfig;
use crate::dataset;
use crate::device::device;
use crate::experiment::{build_models, condition_summaries, fit_with, reconstruction_quality};
use crate::plugin::InputKind;
use crate::resume::ResumeDir;
use crate::rng::derive_seed;
use crate::run::{genes_digest, save, sha256_hex, Manifest, RunContents, Split};
use crate::train::{autoencoder_validation_terms, curves_csv, Progress};
use crate::{LatentError, Result};

/// Trains the experiment of `config` and writes the run directory `out`.
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
    if out.exists() && !overwrite {
        return Err(LatentError::Checkpoint {
            path: out.into(),
            message: "already exists; choose another --out or pass --overwrite".into(),
        });
    }
    let start = Instant::now();
    let loaded = dataset::load(config)?;
    let p = &loaded.prepared;
    let dev = device(derive_seed(config.seed, "device"))?;
    let train_table = p.conditions.select(&p.train_rows);
    let mut models = build_models(config, p.gene_names.len(), p.input_kind, &train_table, &dev)?;
    let load_s = start.elapsed().as_secs_f64();
    let file_bytes = std::fs::read(&loaded.path).unwrap_or_default();
    let data_sha256 = sha256_hex(&file_bytes);
    let mut snapshots = ResumeDir::open(
        out,
        config,
        &data_sha256,
        config.train.checkpoint_every,
        resume,
    )?;
    let t = Instant::now();
    let curves = match fit_with(config, p, &mut models, progress, &mut snapshots) {
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
    let mut reconstruction = reconstruction_quality(
        models.autoencoder.as_ref(),
        &p.expression,
        &p.validation_rows,
    )?;
    if !p.validation_rows.is_empty() && config.train.autoencoder_steps > 0 {
        // Held-out loss terms: `validation_reconstruction` is the held-out negative
        // log-likelihood per cell for likelihood models (NB/ZINB: counts).
        let terms = autoencoder_validation_terms(
            models.autoencoder.as_mut(),
            &p.expression.select(&p.validation_rows),
            config.train.batch_size,
            derive_seed(config.seed, "reconstruction"),
        )?;
        for (name, value) in terms {
            reconstruction.insert(format!("validation_{name}"), value);
        }
    }
    let libs: Vec<f32> = p
        .train_rows
        .iter()
        .take(10_000)
        .map(|&r| p.expression.library_size[r])
        .collect();
    let manifest = Manifest {
        crate_version: env!("CARGO_PKG_VERSION").into(),
        seed: config.seed,
        data_path: loaded.path.clone(),
        data_sha256,
        genes_sha256: genes_digest(&p.gene_names),
        n_cells: p.expression.n,
        n_train: p.train_rows.len(),
        n_validation: p.validation_rows.len(),
        input_kind: p.input_kind,
        process: models.process.clone(),
        label_key: loaded.label_key.clone(),
        conditions: condition_summaries(config, &train_table)
            .into_values()
            .collect(),
        library_sizes: if p.input_kind == InputKind::Counts {
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
    let split = Split {
        train: p
            .train_rows
            .iter()
            .map(|&r| loaded.cell_names[r].clone())
            .collect(),
        validation: p
            .validation_rows
            .iter()
            .map(|&r| loaded.cell_names[r].clone())
            .collect(),
    };
    let csv = curves_csv(&curves);
    save(
        out,
        &RunContents {
            config,
            models: &models,
            genes: &p.gene_names,
            manifest: &manifest,
            curves_csv: &csv,
            split: &split,
        },
        overwrite,
    )?;
    snapshots.remove()?;
    Ok(manifest)
}
