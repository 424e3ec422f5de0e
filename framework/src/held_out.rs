//! The held-out-condition protocol (time course, unseen dose, …): cells with
//! `data.hold_out.key ∈ values` are never trained on; the model generates cells with their
//! conditions, which are compared with one random half of the held-out cells, beside the other
//! half (the real-vs-real floor) and the baselines a reviewer asks for: the cells of the nearest
//! observed values below and above, both pooled, and a Gaussian whose mean is interpolated
//! linearly between them (numeric keys).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::HoldOutConfig;
use crate::data::{write_h5ad, Column};
use crate::dataset;
use crate::evaluation::{
    evaluate_rows, interpolated_gaussian_baseline, real_control, Evaluation, Projection,
};
use crate::plots::ScatterGroup;
use crate::plugin::{CellSet, ConditionColumn, EvalContext};
use crate::protocol::{generate_for_rows, generated_cells, write_protocol_report};
use crate::report::ExtraScatter;
use crate::rng::{derive_seed, stream};
use crate::run::Run;
use crate::run_evaluation::{cells_of, evaluators};
use crate::sampling::{sample, SampleRequest};
use crate::{LatentError, Result};

/// Files the protocol wrote next to the report.
#[derive(Debug, Clone)]
pub struct HeldOutOutputs {
    /// The held-out cells whose conditions were used for generation.
    pub conditions: PathBuf,
    /// The generated cells.
    pub generated: PathBuf,
}

/// Runs the protocol for the run's `data.hold_out` and writes generated cells and the report
/// under `out`.
///
/// # Errors
/// A run not conditioned on the held-out key, too few held-out cells, data mismatches.
pub fn evaluate_held_out(
    run: &Run,
    hold: &HoldOutConfig,
    out: &Path,
) -> Result<(Evaluation, HeldOutOutputs)> {
    let seed = derive_seed(run.config.seed, "evaluate");
    if !run.manifest.conditions.iter().any(|c| c.key == hold.key) {
        return Err(LatentError::Evaluation(format!(
            "data.hold_out.key `{}` is not a condition of the run; condition on it so the model can generate the held-out value",
            hold.key
        )));
    }
    let loaded = dataset::load(&run.config)?;
    let adata = dataset::read(&loaded.path)?;
    let held = &loaded.held_out_rows;
    if held.len() < 4 {
        return Err(LatentError::Evaluation(format!(
            "{}: only {} held-out cells; need ≥ 4 to split them into reference and floor",
            loaded.path.display(),
            held.len()
        )));
    }
    // Random halves: the reference, and the real-vs-real floor whose conditions drive generation.
    let mut shuffled = held.clone();
    let mut rng = stream(seed, "held_out.split");
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rand::Rng::gen_range(&mut rng, 0..=i));
    }
    let (reference_rows, floor_rows) = shuffled.split_at(shuffled.len() / 2);
    std::fs::create_dir_all(out).map_err(|e| LatentError::io(out, e))?;
    let outputs = HeldOutOutputs {
        conditions: out.join("heldout_conditions.h5ad"),
        generated: out.join("generated.h5ad"),
    };
    write_h5ad(&outputs.conditions, &adata.select_obs(floor_rows))?;
    generate_for_rows(
        run,
        &outputs.conditions,
        &BTreeMap::new(),
        1,
        false,
        &outputs.generated,
    )?;

    let p = &loaded.prepared;
    let observed: Vec<usize> = p
        .train_rows
        .iter()
        .chain(&p.validation_rows)
        .copied()
        .collect();
    let mut train = cells_of(&loaded, &p.train_rows);
    let mut reference = cells_of(&loaded, reference_rows);
    let mut floor = cells_of(&loaded, floor_rows);
    let mut generated = generated_cells(run, &outputs.generated)?;
    let projection = Projection::fit(&train, run.config.evaluate.pca_components, seed)?;
    for c in [&mut train, &mut reference, &mut floor, &mut generated] {
        c.labels = None;
        projection.project(c)?;
    }
    let mut candidates = vec![
        (
            format!("generated at held-out {}", hold.key),
            generated.clone(),
        ),
        (
            "control: other half of the held-out cells".to_string(),
            floor.clone(),
        ),
    ];
    // Neighbouring observed values (numeric keys).
    let numeric = match adata.obs.column(&hold.key) {
        Some(Column::Float(v)) => Some(v.clone()),
        Some(Column::Int(v)) => Some(v.iter().map(|&x| x as f64).collect()),
        _ => None,
    };
    if let Some(values) = numeric {
        let target = held.iter().map(|&r| values[r]).sum::<f64>() / held.len() as f64;
        let below = observed
            .iter()
            .map(|&r| values[r])
            .filter(|&v| v < target)
            .fold(f64::NEG_INFINITY, f64::max);
        let above = observed
            .iter()
            .map(|&r| values[r])
            .filter(|&v| v > target)
            .fold(f64::INFINITY, f64::min);
        let group = |value: f64| -> Vec<usize> {
            observed
                .iter()
                .copied()
                .filter(|&r| (values[r] - value).abs() < 1e-9)
                .collect()
        };
        let n = floor.n;
        let mut sides = Vec::new();
        for value in [below, above] {
            if value.is_finite() {
                let mut cells = cells_of(&loaded, &group(value));
                cells.labels = None;
                projection.project(&mut cells)?;
                candidates.push((
                    format!("baseline: nearest observed {} = {value}", hold.key),
                    real_control(&cells, n, derive_seed(seed, &format!("near{value}"))),
                ));
                sides.push((value, cells));
            }
        }
        if let [(lo_v, lo), (hi_v, hi)] = sides.as_slice() {
            let mut pooled_rows = group(*lo_v);
            pooled_rows.extend(group(*hi_v));
            let mut pooled = cells_of(&loaded, &pooled_rows);
            pooled.labels = None;
            projection.project(&mut pooled)?;
            candidates.push((
                format!("baseline: {} = {lo_v} and {hi_v} pooled", hold.key),
                real_control(&pooled, n, derive_seed(seed, "pooled")),
            ));
            let w = (target - lo_v) / (hi_v - lo_v);
            candidates.push((
                "baseline: Gaussian, linearly interpolated mean (PCA)".to_string(),
                interpolated_gaussian_baseline(lo, hi, w, &projection, n, seed)?,
            ));
        }
    }
    let extra = time_grid_plots(run, hold, &loaded, &observed, &projection)?;
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
    let evaluation = Evaluation {
        rows,
        reference: format!(
            "half of the held-out cells ({} = {}) of {} ({} cells; never trained on)",
            hold.key,
            hold.values.join(", "),
            loaded.path.display(),
            reference.n
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
        "latentlab held-out condition evaluation",
    )?;
    Ok((evaluation, outputs))
}

/// PCA maps of real observed cells coloured by their value of the held-out key, and of cells
/// generated along an even grid of values spanning the training range (numeric keys whose run has
/// no other condition that needs per-cell values; otherwise no plots).
fn time_grid_plots(
    run: &Run,
    hold: &HoldOutConfig,
    loaded: &dataset::LoadedData,
    observed: &[usize],
    projection: &Projection,
) -> Result<Vec<ExtraScatter>> {
    let Some(summary) = run.manifest.conditions.iter().find(|c| c.key == hold.key) else {
        return Ok(Vec::new());
    };
    let (Some(&lo), Some(&hi)) = (summary.min.first(), summary.max.first()) else {
        return Ok(Vec::new());
    };
    let Some(ConditionColumn::Continuous(values)) =
        loaded.prepared.conditions.columns.get(&hold.key)
    else {
        return Ok(Vec::new());
    };
    let pc = |c: &CellSet| -> Vec<(f32, f32)> {
        let k = projection.k;
        (0..c.n)
            .map(|i| (c.pcs[i * k], c.pcs[i * k + k.min(2) - 1]))
            .collect()
    };
    let mut distinct: Vec<f32> = observed.iter().map(|&r| values[r]).collect();
    distinct.sort_by(f32::total_cmp);
    distinct.dedup();
    let mut real_groups = Vec::new();
    for v in distinct.iter().take(20) {
        let rows: Vec<usize> = observed
            .iter()
            .copied()
            .filter(|&r| values[r] == *v)
            .collect();
        let mut cells = cells_of(loaded, &rows);
        projection.project(&mut cells)?;
        real_groups.push(ScatterGroup {
            label: format!("real {} = {v}", hold.key),
            points: pc(&cells),
            color: None,
        });
    }
    let mut generated_groups = Vec::new();
    let steps = 7;
    for i in 0..steps {
        let v = lo + (hi - lo) * i as f32 / (steps - 1) as f32;
        let request = SampleRequest {
            n: 40,
            fixed: BTreeMap::from([(hold.key.clone(), v.to_string())]),
            per_cell: None,
            from: None,
            steps: None,
            guidance: None,
            attribute_guidance: Default::default(),
            sampler: None,
            sampler_options: BTreeMap::new(),
            seed: run.config.seed,
        };
        let Ok(sampled) = sample(run, &request) else {
            return Ok(Vec::new());
        };
        let mut cells = CellSet {
            x: sampled.cells.x.to_dense(),
            n: 40,
            n_genes: run.genes.len(),
            labels: None,
            pcs: Vec::new(),
        };
        projection.project(&mut cells)?;
        generated_groups.push(ScatterGroup {
            label: format!("generated {} = {v:.1}", hold.key),
            points: pc(&cells),
            color: None,
        });
    }
    let axes = ("PC1".to_string(), "PC2".to_string());
    Ok(vec![
        ExtraScatter {
            stem: "time_grid_real".into(),
            caption: format!(
                "Real observed cells by {} (PCA of training cells; held-out value absent)",
                hold.key
            ),
            groups: real_groups,
            axes: axes.clone(),
        },
        ExtraScatter {
            stem: "time_grid_generated".into(),
            caption: format!(
                "Cells generated along a grid of {} values over the training range",
                hold.key
            ),
            groups: generated_groups,
            axes,
        },
    ])
}
