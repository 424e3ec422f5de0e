//! The counterfactual protocol (perturbation response): held-out cells in the `source` state are
//! mapped back to noise under their own condition and regenerated in the `target` state; the
//! predictions are compared with real held-out `target` cells, next to the baselines a reviewer
//! asks for (no change, additive mean shift) and a real-vs-real control row.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::CounterfactualConfig;
use crate::data::write_h5ad;
use crate::dataset;
use crate::evaluation::{evaluate_rows, real_control, Evaluation, Projection};
use crate::plugin::{CellSet, EvalContext};
use crate::protocol::{generate_for_rows, generated_cells, write_protocol_report};
use crate::rng::derive_seed;
use crate::run::Run;
use crate::run_evaluation::{cells_of, evaluators};
use crate::{LatentError, Result};

/// Files the protocol wrote next to the report.
#[derive(Debug, Clone)]
pub struct CounterfactualOutputs {
    /// The held-out source cells (usable with `latentlab sample --conditions-from`).
    pub heldout_source: PathBuf,
    /// The predictions (inverted + regenerated under the target condition).
    pub predicted: PathBuf,
    /// Plain conditional samples under the target condition (no inversion), same count.
    pub sampled: PathBuf,
}

fn mean_shift(from: &CellSet, to: &CellSet) -> Vec<f32> {
    to.gene_means()
        .iter()
        .zip(from.gene_means())
        .map(|(t, f)| (t - f) as f32)
        .collect()
}

/// Runs the protocol of `cf` on the run's own validation split and writes the predictions and the
/// report under `out`.
///
/// # Errors
/// Unknown key or values (listing the valid ones), too few held-out cells, samplers that cannot
/// invert, data mismatches.
pub fn evaluate_counterfactual(
    run: &Run,
    cf: &CounterfactualConfig,
    out: &Path,
) -> Result<(Evaluation, CounterfactualOutputs)> {
    let seed = derive_seed(run.config.seed, "evaluate");
    let loaded = dataset::load(&run.config)?;
    let adata = dataset::read(&loaded.path)?;
    let file = loaded.path.display();
    let (categories, codes) =
        adata
            .obs
            .labels_for(&cf.key, &loaded.path, "evaluate.counterfactual.key")?;
    let code_of = |value: &str, field: &str| {
        categories
            .iter()
            .position(|c| c == value)
            .map(|i| i as i32)
            .ok_or_else(|| {
                LatentError::config(
                    "evaluate.counterfactual",
                    field,
                    format!(
                        "a value of obs \"{}\" in {file}: {}",
                        cf.key,
                        categories.join(", ")
                    ),
                    value,
                )
            })
    };
    let (source, target) = (
        code_of(&cf.source, "source")?,
        code_of(&cf.target, "target")?,
    );
    let p = &loaded.prepared;
    let rows_with = |rows: &[usize], code: i32| -> Vec<usize> {
        rows.iter().copied().filter(|&r| codes[r] == code).collect()
    };
    let val_source = rows_with(&p.validation_rows, source);
    let val_target = rows_with(&p.validation_rows, target);
    let train_source = rows_with(&p.train_rows, source);
    let train_target = rows_with(&p.train_rows, target);
    for (rows, what) in [
        (&val_source, "held-out source"),
        (&val_target, "held-out target"),
        (&train_source, "training source"),
        (&train_target, "training target"),
    ] {
        if rows.len() < 2 {
            return Err(LatentError::Evaluation(format!(
                "{file}: only {} {what} cells ({} = {} / {}); raise data.validation_fraction or use more cells",
                rows.len(),
                cf.key,
                cf.source,
                cf.target
            )));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| LatentError::io(out, e))?;
    let outputs = CounterfactualOutputs {
        heldout_source: out.join(format!("heldout_{}.h5ad", cf.source)),
        predicted: out.join(format!("predicted_{}.h5ad", cf.target)),
        sampled: out.join(format!("sampled_{}.h5ad", cf.target)),
    };
    write_h5ad(&outputs.heldout_source, &adata.select_obs(&val_source))?;
    let fixed = BTreeMap::from([(cf.key.clone(), cf.target.clone())]);
    generate_for_rows(
        run,
        &outputs.heldout_source,
        &fixed,
        1,
        true,
        &outputs.predicted,
    )?;
    generate_for_rows(
        run,
        &outputs.heldout_source,
        &fixed,
        1,
        false,
        &outputs.sampled,
    )?;

    let g = run.genes.len();
    let mut train = cells_of(&loaded, &p.train_rows);
    let mut control = cells_of(&loaded, &val_source);
    let mut reference = cells_of(&loaded, &val_target);
    let train_src = cells_of(&loaded, &train_source);
    let train_tgt = cells_of(&loaded, &train_target);
    let mut generated = generated_cells(run, &outputs.predicted)?;
    let mut plain = generated_cells(run, &outputs.sampled)?;
    let shift = mean_shift(&train_src, &train_tgt);
    let mut additive = control.clone();
    for row in additive.x.chunks_exact_mut(g) {
        for (v, s) in row.iter_mut().zip(&shift) {
            *v += s;
        }
    }
    let mut real = real_control(&train_tgt, reference.n, seed);
    for c in [
        &mut control,
        &mut reference,
        &mut generated,
        &mut plain,
        &mut additive,
        &mut real,
    ] {
        c.labels = None;
    }
    let projection = Projection::fit(&train, run.config.evaluate.pca_components, seed)?;
    for c in [
        &mut train,
        &mut control,
        &mut reference,
        &mut generated,
        &mut plain,
        &mut additive,
        &mut real,
    ] {
        projection.project(c)?;
    }
    let candidates = vec![
        (
            format!("generated: {} → {} (inverted)", cf.source, cf.target),
            generated.clone(),
        ),
        (
            format!("generated: sampled as {} (no inversion)", cf.target),
            plain,
        ),
        (format!("control: real training {} cells", cf.target), real),
        (
            format!("baseline: no change ({} cells)", cf.source),
            control.clone(),
        ),
        ("baseline: additive mean shift".to_string(), additive),
    ];
    let evals = evaluators(run)?;
    let ctx = EvalContext {
        train: &train,
        pca_components: projection.k,
        gene_names: &run.genes,
        seed,
        control: Some(&control),
        paired: None,
    };
    let rows = evaluate_rows(&evals, &reference, &candidates, &ctx)?;
    let evaluation = Evaluation {
        rows,
        reference: format!(
            "held-out {} = {} cells of {} ({} cells; predictions start from the {} held-out {} cells)",
            cf.key,
            cf.target,
            file,
            reference.n,
            control.n,
            cf.source
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
        Vec::new(),
        "latentlab counterfactual evaluation",
    )?;
    Ok((evaluation, outputs))
}
