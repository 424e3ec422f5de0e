//! The per-row prediction protocol (spatial expression at held-out spots, …): each held-out
//! validation row is generated `K` times from its own conditions and the sample mean is compared
//! with the row's measured values, beside kNN regression in condition space, ridge regression on
//! the condition features and the training mean (see [`crate::config::PredictionConfig`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::PredictionConfig;
use crate::data::write_h5ad;
use crate::dataset;
use crate::evaluation::{evaluate_rows, Evaluation, Projection};
use crate::metrics::{knn, ridge_predict};
use crate::plugin::{
    CellSet, ConditionColumn, ConditionKind, ConditionSummary, ConditionTable, EvalContext,
};
use crate::protocol::{generate_for_rows, generated_cells, write_protocol_report};
use crate::report::{binned_groups, ExtraScatter};
use crate::rng::derive_seed;
use crate::run::Run;
use crate::run_evaluation::{cells_of, evaluators};
use crate::{LatentError, Result};

/// Numeric features of conditions for the regression baselines: categories one-hot, numbers and
/// vectors standardized with the training statistics; principal-component scores of another
/// modality centred and divided by the first component's spread (keeping the PCA geometry, as
/// kNN on a PCA usually does). Returns `(features, width)`.
pub fn condition_features(
    table: &ConditionTable,
    summaries: &[ConditionSummary],
) -> (Vec<f32>, usize) {
    let n = table.len();
    let mut width = 0;
    let mut blocks: Vec<(usize, Vec<f32>)> = Vec::new();
    for s in summaries {
        let Some(column) = table.columns.get(&s.key) else {
            continue;
        };
        let block = match column {
            ConditionColumn::Categorical { categories, codes } => {
                let w = s.categories.len();
                let mut b = vec![0.0f32; n * w];
                for (i, &c) in codes.iter().enumerate() {
                    if let Some(j) = categories
                        .get(c as usize)
                        .and_then(|name| s.categories.iter().position(|x| x == name))
                    {
                        b[i * w + j] = 1.0;
                    }
                }
                (w, b)
            }
            ConditionColumn::Continuous(values) => (1, standardize(values, 1, s)),
            ConditionColumn::Vector { dim, values } => match s.kind {
                ConditionKind::Modality(_) => {
                    let spread = s.std.first().copied().unwrap_or(1.0).max(1e-6);
                    let scaled = values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (v - s.mean.get(i % dim).copied().unwrap_or(0.0)) / spread)
                        .collect();
                    (*dim, scaled)
                }
                _ => (*dim, standardize(values, *dim, s)),
            },
        };
        width += block.0;
        blocks.push(block);
    }
    let mut out = vec![0.0f32; n * width];
    let mut offset = 0;
    for (w, b) in blocks {
        for i in 0..n {
            out[i * width + offset..i * width + offset + w].copy_from_slice(&b[i * w..(i + 1) * w]);
        }
        offset += w;
    }
    (out, width)
}

fn standardize(values: &[f32], dim: usize, s: &ConditionSummary) -> Vec<f32> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let j = i % dim.max(1);
            let mean = s.mean.get(j).copied().unwrap_or(0.0);
            let std = s.std.get(j).copied().unwrap_or(1.0).max(1e-6);
            (v - mean) / std
        })
        .collect()
}

/// Files the protocol wrote next to the report.
#[derive(Debug, Clone)]
pub struct PredictionOutputs {
    /// The held-out rows (their conditions drive generation).
    pub heldout: PathBuf,
    /// The generated samples (`samples_per_row` per held-out row, `obs["source_cell"]`).
    pub predicted: PathBuf,
}

/// Runs the protocol on the run's validation split and writes predictions and the report under
/// `out`.
///
/// # Errors
/// Invalid settings, a run without conditions, too few rows, data mismatches.
pub fn evaluate_prediction(
    run: &Run,
    cfg: &PredictionConfig,
    out: &Path,
) -> Result<(Evaluation, PredictionOutputs)> {
    let seed = derive_seed(run.config.seed, "evaluate");
    if cfg.samples_per_row == 0 || cfg.neighbors == 0 {
        return Err(LatentError::config(
            "evaluate.prediction",
            "samples_per_row/neighbors",
            "≥ 1",
            format!("{}/{}", cfg.samples_per_row, cfg.neighbors),
        ));
    }
    if run.manifest.conditions.is_empty() {
        return Err(LatentError::Evaluation(
            "evaluate.prediction needs a conditioned run: rows are predicted from their conditions"
                .into(),
        ));
    }
    let loaded = dataset::load(&run.config)?;
    let adata = dataset::read(&loaded.path)?;
    let p = &loaded.prepared;
    if p.validation_rows.len() < 2 || p.train_rows.len() < cfg.neighbors {
        return Err(LatentError::Evaluation(format!(
            "{}: {} held-out and {} training rows; need ≥ 2 held-out and ≥ {} training rows",
            loaded.path.display(),
            p.validation_rows.len(),
            p.train_rows.len(),
            cfg.neighbors
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| LatentError::io(out, e))?;
    let outputs = PredictionOutputs {
        heldout: out.join("heldout.h5ad"),
        predicted: out.join("predicted.h5ad"),
    };
    write_h5ad(&outputs.heldout, &adata.select_obs(&p.validation_rows))?;
    let k = cfg.samples_per_row;
    generate_for_rows(
        run,
        &outputs.heldout,
        &BTreeMap::new(),
        k,
        false,
        &outputs.predicted,
    )?;

    let g = run.genes.len();
    let mut train = cells_of(&loaded, &p.train_rows);
    let mut reference = cells_of(&loaded, &p.validation_rows);
    let mut generated = generated_cells(run, &outputs.predicted)?;
    // Baselines from the condition features.
    let (f_train, width) = condition_features(
        &p.conditions.select(&p.train_rows),
        &run.manifest.conditions,
    );
    let (f_held, _) = condition_features(
        &p.conditions.select(&p.validation_rows),
        &run.manifest.conditions,
    );
    let (n_train, n_held) = (p.train_rows.len(), p.validation_rows.len());
    let neighbours = knn(&f_held, n_held, &f_train, n_train, width, cfg.neighbors)
        .map_err(|e| LatentError::Evaluation(e.to_string()))?;
    let mut knn_x = vec![0.0f32; n_held * g];
    for i in 0..n_held {
        for &j in neighbours.neighbors(i) {
            for c in 0..g {
                knn_x[i * g + c] += train.x[j * g + c] / cfg.neighbors as f32;
            }
        }
    }
    let ridge_x = ridge_predict(
        &f_train,
        &train.x,
        n_train,
        width,
        g,
        &f_held,
        cfg.ridge_lambda,
    )
    .map_err(|e| LatentError::Evaluation(e.to_string()))?;
    let mean: Vec<f32> = train.gene_means().iter().map(|&m| m as f32).collect();
    let set = |x: Vec<f32>| CellSet {
        x,
        n: n_held,
        n_genes: g,
        labels: None,
        pcs: Vec::new(),
    };
    let mut baselines = vec![
        (
            format!(
                "baseline: mean of {} nearest training rows (condition space)",
                cfg.neighbors
            ),
            set(knn_x),
        ),
        (
            format!(
                "baseline: ridge regression on condition features (λ = {})",
                cfg.ridge_lambda
            ),
            set(ridge_x),
        ),
        (
            "baseline: training mean".to_string(),
            set(mean.repeat(n_held)),
        ),
    ];
    let projection = Projection::fit(&train, run.config.evaluate.pca_components, seed)?;
    for c in [&mut train, &mut reference, &mut generated] {
        c.labels = None;
        projection.project(c)?;
    }
    for (_, c) in &mut baselines {
        projection.project(c)?;
    }
    let extra = tissue_maps(run, &loaded, &train, &reference, &generated, k)?;
    let evals = evaluators(run)?;
    let ctx_for = |paired: usize| EvalContext {
        train: &train,
        pca_components: projection.k,
        gene_names: &run.genes,
        seed,
        control: None,
        paired: Some(paired),
    };
    let mut rows = evaluate_rows(
        &evals,
        &reference,
        &[(
            format!("generated: mean of {k} samples per row"),
            generated.clone(),
        )],
        &ctx_for(k),
    )?;
    rows.extend(evaluate_rows(&evals, &reference, &baselines, &ctx_for(1))?);
    let evaluation = Evaluation {
        rows,
        reference: format!(
            "measured values of the {n_held} held-out validation rows of {}",
            loaded.path.display()
        ),
        pca_components: projection.k,
        per_label: BTreeMap::new(),
    };
    write_protocol_report(
        run,
        out,
        &evaluation,
        &reference,
        &generated,
        extra,
        "latentlab per-row prediction evaluation",
    )?;
    Ok((evaluation, outputs))
}

/// For runs conditioned on 2-D coordinates: maps of the three most variable held-out genes over
/// the coordinates, measured at every spot, and with the held-out spots replaced by the model's
/// mean prediction (5 quantile colour bins each).
fn tissue_maps(
    run: &Run,
    loaded: &dataset::LoadedData,
    train: &CellSet,
    reference: &CellSet,
    generated: &CellSet,
    k: usize,
) -> Result<Vec<ExtraScatter>> {
    let p = &loaded.prepared;
    let coordinates = |key: &String| {
        run.manifest
            .conditions
            .iter()
            .any(|s| &s.key == key && s.kind == ConditionKind::Vector)
    };
    let Some((key, values)) = p.conditions.columns.iter().find_map(|(key, c)| match c {
        ConditionColumn::Vector { dim: 2, values } if coordinates(key) => Some((key, values)),
        _ => None,
    }) else {
        return Ok(Vec::new());
    };
    let g = reference.n_genes;
    let coords = |rows: &[usize]| -> Vec<(f32, f32)> {
        rows.iter()
            .map(|&r| (values[2 * r], -values[2 * r + 1]))
            .collect()
    };
    let mut variance: Vec<(usize, f32)> = (0..g)
        .map(|j| {
            let col: Vec<f32> = (0..reference.n).map(|i| reference.x[i * g + j]).collect();
            let m = col.iter().sum::<f32>() / col.len() as f32;
            (j, col.iter().map(|v| (v - m).powi(2)).sum::<f32>())
        })
        .collect();
    variance.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut points = coords(&p.train_rows);
    points.extend(coords(&p.validation_rows));
    let mut out = Vec::new();
    for &(j, _) in variance.iter().take(3) {
        let gene = &p.gene_names[j];
        let mut measured: Vec<f32> = (0..train.n).map(|i| train.x[i * g + j]).collect();
        let mut predicted = measured.clone();
        measured.extend((0..reference.n).map(|i| reference.x[i * g + j]));
        predicted.extend((0..reference.n).map(|i| {
            (0..k)
                .map(|s| generated.x[(i * k + s) * g + j])
                .sum::<f32>()
                / k as f32
        }));
        let axes = (format!("{key} x"), format!("{key} y (flipped)"));
        out.push(ExtraScatter {
            stem: format!("tissue_{j}_measured"),
            caption: format!("{gene}: measured expression at every spot"),
            groups: binned_groups(&points, &measured, gene),
            axes: axes.clone(),
        });
        out.push(ExtraScatter {
            stem: format!("tissue_{j}_predicted"),
            caption: format!("{gene}: training spots measured, {} held-out spots predicted (mean of {k} samples)", reference.n),
            groups: binned_groups(&points, &predicted, gene),
            axes,
        });
    }
    Ok(out)
}
