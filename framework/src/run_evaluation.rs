//! `latentlab evaluate`: compares generated cells with real reference cells of a run (its
//! held-out validation split by default), with control rows and baselines, and writes a report.

use std::path::Path;
use std::str::FromStr;

use crate::data::preprocess::gene_indices;
use crate::data::{log1p, normalize_total, read_any, AnnData, MatrixSource};
use crate::dataset::{self, LoadedData};
use crate::evaluation::{
    evaluate_rows, gaussian_baseline, real_control, subset_label, Evaluation, Projection,
};
use crate::plots::ScatterGroup;
use crate::plugin::{CellSet, EvalContext, Evaluator, EvaluatorConfig};
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
/// the report to `out`. Returns the evaluation.
///
/// # Errors
/// Data mismatches (genes, files), evaluator failures.
pub fn evaluate_run(
    run: &Run,
    generated_path: &Path,
    reference_path: Option<&Path>,
    out: &Path,
) -> Result<Evaluation> {
    let seed = derive_seed(run.config.seed, "evaluate");
    let loaded = dataset::load(&run.config)?;
    if loaded.prepared.gene_names != run.genes {
        return Err(LatentError::Data(format!("{}: genes differ from the run's genes.txt; the training data changed since `latentlab train`", loaded.path.display())));
    }
    let g = run.genes.len();
    let p = &loaded.prepared;
    let cells = |rows: &[usize]| cells_of(&loaded, rows);
    let mut train = cells(&p.train_rows);
    let (mut reference, reference_name) = match reference_path {
        None => (
            cells(&p.validation_rows),
            format!(
                "held-out validation split of {} ({} cells)",
                loaded.path.display(),
                p.validation_rows.len()
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
                    labels: labels_of(&adata, &loaded.label_key),
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
        labels: labels_of(&generated_adata, &loaded.label_key),
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
    let mut extra = latent_plot(run, &loaded, seed)?;
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

/// The stage-1 latents (posterior means / codes) of the validation cells on their first two
/// principal components, coloured by the label column (no plot without labels).
///
/// # Errors
/// Model or PCA errors.
pub fn latent_plot(run: &Run, loaded: &LoadedData, seed: u64) -> Result<Vec<ExtraScatter>> {
    let p = &loaded.prepared;
    let (Some(labels), Some(key)) = (&loaded.labels, &loaded.label_key) else {
        return Ok(Vec::new());
    };
    if p.validation_rows.len() < 3 {
        return Ok(Vec::new());
    }
    let dim = run.models.autoencoder.latent_dim();
    let z = crate::experiment::encode_rows(
        run.models.autoencoder.as_ref(),
        &p.expression,
        &p.validation_rows,
        1024,
    )?;
    let mut latents = CellSet {
        x: z,
        n: p.validation_rows.len(),
        n_genes: dim,
        labels: None,
        pcs: Vec::new(),
    };
    let projection = Projection::fit(&latents, 2, seed)?;
    projection.project(&mut latents)?;
    let k = projection.k;
    let mut names: Vec<&String> = p.validation_rows.iter().map(|&r| &labels[r]).collect();
    names.sort();
    names.dedup();
    let groups = names
        .iter()
        .map(|name| ScatterGroup {
            label: (*name).clone(),
            points: p
                .validation_rows
                .iter()
                .enumerate()
                .filter(|(_, &r)| labels[r] == **name)
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
