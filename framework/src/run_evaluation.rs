//! `latentlab evaluate`: compares generated cells with real reference cells of a run (its
//! held-out validation split by default), with control rows and baselines, and writes a report.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::cells::TrainingCells;
use crate::config::ExperimentConfig;
use crate::streaming::{capped_subset, load_streamed};

use crate::data::preprocess::gene_indices;
use crate::data::{log1p, normalize_total, read_any, AnnData, MatrixSource};
use crate::dataset::{self, LoadedData};
use crate::evaluation::{
    evaluate_rows, gaussian_baseline, real_control, subset_label, Evaluation, Projection,
};
use crate::plots::ScatterGroup;
use crate::plugin::{CellSet, EvalContext, Evaluator, EvaluatorConfig, ExpressionBatch};
use crate::registry::{names, PluginKind};
use crate::report::{write_report, ExtraScatter, Figures};
use crate::rng::{derive_seed, stream};
use crate::run::Run;
use crate::{LatentError, Result};

/// Builds the evaluators named in the config, or every registered one with defaults.
///
/// # Errors
/// Invalid evaluator configs.
pub fn evaluators(run: &Run) -> Result<Vec<(String, Box<dyn Evaluator>)>> {
    let configs: Vec<Box<dyn EvaluatorConfig>> = if run.config.evaluate.evaluators.is_empty() {
        names(PluginKind::Evaluator)
            .into_iter()
            .map(|n| {
                serde_json::from_value::<Box<dyn EvaluatorConfig>>(serde_json::json!({ "type": n }))
                    .map_err(|e| LatentError::Evaluation(format!("evaluator {n}: {e}")))
            })
            .collect::<Result<_>>()?
    } else {
        run.config
            .evaluate
            .evaluators
            .iter()
            .map(|c| {
                serde_json::from_value(
                    serde_json::to_value(c).map_err(|e| LatentError::Evaluation(e.to_string()))?,
                )
                .map_err(|e| LatentError::Evaluation(e.to_string()))
            })
            .collect::<Result<_>>()?
    };
    configs
        .iter()
        .map(|c| Ok((c.typetag_name().to_string(), c.build()?)))
        .collect()
}

/// Expression of `adata` on the run's genes and scale: the configured matrix, genes matched by
/// name, then the run's normalization.
///
/// # Errors
/// Missing genes (how many and which), missing matrix source.
pub fn like_run(
    adata: &AnnData,
    run: &Run,
    path: &Path,
    already_model_scale: bool,
) -> Result<Vec<f32>> {
    let source = if already_model_scale {
        MatrixSource::X
    } else {
        MatrixSource::from_str(&run.config.data.matrix).map_err(LatentError::Data)?
    };
    let m = adata.matrix(&source, path)?;
    let genes = adata.gene_names_for(&source);
    let idx = gene_indices(&genes, &run.genes, path).map_err(|e| {
        LatentError::Data(format!("{e} (gene mismatch between the run and this file)"))
    })?;
    let mut m = m.select_cols(&idx);
    if !already_model_scale {
        if let Some(t) = run.config.data.preprocess.normalize_total {
            normalize_total(&mut m, t);
        }
        if run.config.data.preprocess.log1p {
            log1p(&mut m);
        }
    }
    if !m.is_finite() {
        return Err(LatentError::Data(format!(
            "{}: contains NaN/infinite values",
            path.display()
        )));
    }
    Ok(m.to_dense())
}

fn labels_of(adata: &AnnData, key: &Option<String>) -> Option<Vec<String>> {
    let key = key.as_ref()?;
    let (cats, codes) = adata.obs.labels(key, Path::new("")).ok()?;
    Some(
        codes
            .iter()
            .map(|&c| {
                if c < 0 {
                    "NA".into()
                } else {
                    cats[c as usize].clone()
                }
            })
            .collect(),
    )
}

/// The model-scale expression and labels of `rows` of a loaded data set.
pub fn cells_of(loaded: &LoadedData, rows: &[usize]) -> CellSet {
    let p = &loaded.prepared;
    let g = p.gene_names.len();
    CellSet {
        x: rows
            .iter()
            .flat_map(|&r| p.expression.x[r * g..(r + 1) * g].iter().copied())
            .collect(),
        n: rows.len(),
        n_genes: g,
        labels: loaded
            .labels
            .as_ref()
            .map(|l| rows.iter().map(|&r| l[r].clone()).collect()),
        pcs: Vec::new(),
    }
}

/// Evaluates generated cells against the run's validation split (or `reference`) and writes
/// the report to `out`. Returns the evaluation. Runs on a rayon pool worker
/// ([`crate::parallel::on_worker_thread`]).
///
/// # Errors
/// Data mismatches (genes, files), evaluator failures.
pub fn evaluate_run(
    run: &Run,
    generated_path: &Path,
    reference_path: Option<&Path>,
    out: &Path,
) -> Result<Evaluation> {
    crate::parallel::on_worker_thread(|| {
        evaluate_on_worker(run, generated_path, reference_path, out)
    })
}

/// [`evaluate_run`] on a pool worker (decision 0025).
fn evaluate_on_worker(
    run: &Run,
    generated_path: &Path,
    reference_path: Option<&Path>,
    out: &Path,
) -> Result<Evaluation> {
    let seed = derive_seed(run.config.seed, "evaluate");
    let real = real_cells(&run.config)?;
    if real.genes != run.genes {
        return Err(LatentError::Data(format!("{}: genes differ from the run's genes.txt; the training data changed since `latentlab train`", real.path.display())));
    }
    let g = run.genes.len();
    let mut train = real.train.clone();
    let (mut reference, reference_name) = match reference_path {
        None => (
            real.validation.clone(),
            format!(
                "held-out validation split of {} ({} cells{})",
                real.path.display(),
                real.validation.n,
                if real.sampled {
                    ", a seeded sample of it: data.streaming.max_validation_cells"
                } else {
                    ""
                }
            ),
        ),
        Some(path) => {
            let adata = read_any(path)?;
            let x = like_run(&adata, run, path, false)?;
            let n = adata.n_obs();
            (
                CellSet {
                    x,
                    n,
                    n_genes: g,
                    labels: labels_of(&adata, &real.label_key),
                    pcs: Vec::new(),
                },
                format!("{} ({n} cells)", path.display()),
            )
        }
    };
    let generated_adata = read_any(generated_path)?;
    let gx = like_run(&generated_adata, run, generated_path, true)?;
    let mut generated = CellSet {
        x: gx,
        n: generated_adata.n_obs(),
        n_genes: g,
        labels: labels_of(&generated_adata, &real.label_key),
        pcs: Vec::new(),
    };
    if generated.n < 2 || reference.n < 2 {
        return Err(LatentError::Evaluation(
            "need at least 2 generated and 2 reference cells".into(),
        ));
    }
    let projection = Projection::fit(&train, run.config.evaluate.pca_components, seed)?;
    projection.project(&mut train)?;
    projection.project(&mut reference)?;
    projection.project(&mut generated)?;

    let control = real_control(&train, reference.n, seed);
    let baseline_labels = generated
        .labels
        .clone()
        .or_else(|| reference.labels.clone())
        .unwrap_or_else(|| vec![String::new(); generated.n]);
    let gaussian = gaussian_baseline(&train, &projection, &baseline_labels, seed)?;
    let mut candidates = vec![
        ("generated".to_string(), generated.clone()),
        ("control: real training cells".to_string(), control),
        ("baseline: per-label gaussian (PCA)".to_string(), gaussian),
    ];
    let mut prior_rng = stream(seed, "baseline.prior");
    if let Some(z) = run
        .models
        .autoencoder
        .prior_sample(generated.n, &mut prior_rng)
    {
        let libs = vec![run.manifest.library_sizes.first().copied().unwrap_or(1.0); generated.n];
        let mut z = z;
        run.models.stats.standardize(&mut z);
        let x = crate::pipeline::decode_latents(
            run.models.autoencoder.as_ref(),
            &run.models.stats,
            z,
            generated.n,
            &libs,
            Some(&mut prior_rng),
            4096,
        )?;
        let mut prior = CellSet {
            x,
            n: generated.n,
            n_genes: g,
            labels: generated.labels.clone(),
            pcs: Vec::new(),
        };
        projection.project(&mut prior)?;
        candidates.push(("baseline: autoencoder prior decoded".to_string(), prior));
    }
    let evals = evaluators(run)?;
    let ctx = EvalContext {
        train: &train,
        pca_components: projection.k,
        gene_names: &run.genes,
        seed,
        control: None,
        paired: None,
    };
    let rows = evaluate_rows(&evals, &reference, &candidates, &ctx)?;

    let mut per_label = std::collections::BTreeMap::new();
    if let Some(labels) = &reference.labels {
        let mut unique: Vec<&String> = labels.iter().collect();
        unique.sort();
        unique.dedup();
        let distribution: Vec<_> = evals
            .iter()
            .filter(|(n, _)| n == "distribution" || n == "two_sample_classifier")
            .collect();
        for label in unique {
            let (Some(r), Some(gen)) = (
                subset_label(&reference, label),
                subset_label(&generated, label),
            ) else {
                continue;
            };
            if r.n < 10 || gen.n < 10 {
                continue;
            }
            let mut metrics = Vec::new();
            for (_, e) in &distribution {
                if let Ok(m) = e.evaluate(&r, &gen, &ctx) {
                    metrics.extend(
                        m.into_iter()
                            .filter(|m| m.name == "mmd2_rbf" || m.name == "knn_auroc"),
                    );
                }
            }
            per_label.insert(label.clone(), metrics);
        }
    }
    let evaluation = Evaluation {
        rows,
        reference: reference_name,
        pca_components: projection.k,
        per_label,
    };
    let mut extra = latent_plot(
        run,
        &real.validation_expression,
        real.validation
            .labels
            .as_deref()
            .zip(real.label_key.as_deref()),
        seed,
    )?;
    extra.push(mean_variance_plot(&reference, &generated)?);
    let curves = std::fs::read_to_string(run.dir.join("curves.csv")).ok();
    write_report(
        out,
        &evaluation,
        &Figures {
            reference: &reference,
            generated: &generated,
            curves_csv: curves.as_deref(),
            extra,
            seed,
        },
        "latentlab evaluation",
    )?;
    Ok(evaluation)
}

/// The stage-1 latents (posterior means / codes) of the validation `cells` on their first two
/// principal components, coloured by their `(labels, label key)` (no plot without labels).
///
/// # Errors
/// Model or PCA errors.
pub fn latent_plot(
    run: &Run,
    cells: &ExpressionBatch,
    labels: Option<(&[String], &str)>,
    seed: u64,
) -> Result<Vec<ExtraScatter>> {
    let Some((labels, key)) = labels else {
        return Ok(Vec::new());
    };
    if cells.n < 3 {
        return Ok(Vec::new());
    }
    let dim = run.models.autoencoder.latent_dim();
    let z = cells.encode(run.models.autoencoder.as_ref())?;
    let mut latents = CellSet {
        x: z,
        n: cells.n,
        n_genes: dim,
        labels: None,
        pcs: Vec::new(),
    };
    let projection = Projection::fit(&latents, 2, seed)?;
    projection.project(&mut latents)?;
    let k = projection.k;
    let mut names: Vec<&String> = labels.iter().collect();
    names.sort();
    names.dedup();
    let groups = names
        .iter()
        .map(|name| ScatterGroup {
            label: (*name).clone(),
            points: labels
                .iter()
                .enumerate()
                .filter(|(_, l)| *l == *name)
                .map(|(i, _)| (latents.pcs[i * k], latents.pcs[i * k + k.min(2) - 1]))
                .collect(),
            color: None,
        })
        .collect();
    Ok(vec![ExtraScatter {
        stem: "latent_pca_by_label".into(),
        caption: format!(
            "Stage-1 latents of the validation cells (PCA of the {dim}-d codes) coloured by {key}"
        ),
        groups,
        axes: ("latent PC1".into(), "latent PC2".into()),
    }])
}

/// The real cells an evaluation of a run compares with, at model scale.
#[derive(Debug, Clone)]
pub struct RealCells {
    /// Training cells (PCA fit, controls, baselines): all of them, or with
    /// `[data.streaming]` a seeded sample of at most `max_validation_cells`.
    pub train: CellSet,
    /// The held-out validation split (with streaming: the capped subset training validated on).
    pub validation: CellSet,
    /// The same validation cells as the autoencoder consumes them.
    pub validation_expression: ExpressionBatch,
    /// Whether the cells are samples of the splits (streaming with more cells than the cap).
    pub sampled: bool,
    /// The label column, if any.
    pub label_key: Option<String>,
    /// The data file.
    pub path: PathBuf,
    /// Gene names after preprocessing.
    pub genes: Vec<String>,
}

/// A label column's key and per-cell labels.
pub type LabelColumn = (String, Vec<String>);

/// How many validation cells [`real_cells`] gives and, with a label column, `(label key,
/// their labels)`, without reading the expression matrix when streaming.
///
/// # Errors
/// Data errors, as for training.
pub fn validation_labels(config: &ExperimentConfig) -> Result<(usize, Option<LabelColumn>)> {
    let (key, labels, rows) = match &config.data.streaming {
        Some(streaming) => {
            let path = &config.data.path;
            let adata = crate::data::read_h5ad_annotations(path)?;
            let a = dataset::annotate(config, &adata, path)?;
            let rows = capped_subset(
                &a.validation_rows,
                streaming.max_validation_cells,
                derive_seed(config.seed, "streaming.validation"),
            );
            (a.label_key, a.labels, rows)
        }
        None => {
            let loaded = dataset::load(config)?;
            (
                loaded.label_key,
                loaded.labels,
                loaded.prepared.validation_rows,
            )
        }
    };
    let labelled = key
        .zip(labels)
        .map(|(k, l)| (k, rows.iter().map(|&r| l[r].clone()).collect()));
    Ok((rows.len(), labelled))
}

/// Loads the training and validation cells of the data in `config` for evaluation, streaming
/// only the sampled rows from disk when the config has `[data.streaming]`.
///
/// # Errors
/// Data errors, as for training.
pub fn real_cells(config: &ExperimentConfig) -> Result<RealCells> {
    let to_cells = |batch: &ExpressionBatch, labels: Option<Vec<String>>| CellSet {
        x: batch.x.clone(),
        n: batch.n,
        n_genes: batch.n_genes(),
        labels,
        pcs: Vec::new(),
    };
    if let Some(streaming) = &config.data.streaming {
        let s = load_streamed(config)?;
        let a = &s.annotations;
        let train_rows = capped_subset(
            &a.train_rows,
            streaming.max_validation_cells,
            derive_seed(config.seed, "streaming.evaluation_train"),
        );
        let labels_at = |rows: &[usize]| {
            a.labels
                .as_ref()
                .map(|l| rows.iter().map(|&r| l[r].clone()).collect())
        };
        let train = s.train.read_rows(&train_rows)?;
        return Ok(RealCells {
            train: to_cells(&train, labels_at(&train_rows)),
            validation: to_cells(&s.validation, labels_at(&s.validation_rows)),
            sampled: s.validation_rows.len() < a.validation_rows.len()
                || train_rows.len() < a.train_rows.len(),
            validation_expression: s.validation,
            label_key: a.label_key.clone(),
            path: s.path,
            genes: s.gene_names,
        });
    }
    let loaded = dataset::load(config)?;
    let p = &loaded.prepared;
    let validation_expression = p.expression.select(&p.validation_rows);
    Ok(RealCells {
        train: cells_of(&loaded, &p.train_rows),
        validation: cells_of(&loaded, &p.validation_rows),
        validation_expression,
        sampled: false,
        label_key: loaded.label_key.clone(),
        genes: p.gene_names.clone(),
        path: loaded.path,
    })
}

/// Per-gene mean–variance relationship, real reference vs generated (log1p of both axes).
///
/// # Errors
/// Shape errors.
pub fn mean_variance_plot(reference: &CellSet, generated: &CellSet) -> Result<ExtraScatter> {
    let err = |e: crate::metrics::MetricsError| LatentError::Evaluation(e.to_string());
    let g = reference.n_genes;
    let points = |c: &CellSet| -> Result<Vec<(f32, f32)>> {
        let s = crate::metrics::gene_stats(&c.x, c.n, g, 1e-3).map_err(err)?;
        Ok(s.mean
            .iter()
            .zip(&s.variance)
            .map(|(m, v)| (m.max(0.0).ln_1p() as f32, v.max(0.0).ln_1p() as f32))
            .collect())
    };
    Ok(ExtraScatter {
        stem: "mean_variance".into(),
        caption: "Per-gene mean vs variance (log1p), real reference (grey) and generated (red)"
            .into(),
        groups: vec![
            ScatterGroup {
                label: "real (reference)".into(),
                points: points(reference)?,
                color: Some([120, 120, 120]),
            },
            ScatterGroup {
                label: "generated".into(),
                points: points(generated)?,
                color: Some([214, 39, 40]),
            },
        ],
        axes: ("log1p(mean)".into(), "log1p(variance)".into()),
    })
}
