//! Steps shared by the application protocols (counterfactual, held-out condition, per-row
//! prediction): generate from a file's rows into another file, read generated cells back on the
//! model's scale, and write the report.

use std::collections::BTreeMap;
use std::path::Path;

use crate::data::{read_any, write_h5ad};
use crate::evaluation::Evaluation;
use crate::plugin::CellSet;
use crate::report::{write_report, ExtraScatter, Figures};
use crate::run::Run;
use crate::run_evaluation::like_run;
use crate::sampling::{sample, ConditionsFrom, SampleRequest};
use crate::Result;

/// Generates `per_row` cells for every row of `rows_file` (its conditions, with `fixed`
/// overrides; inverted from the row's own latent when `invert`) and writes them to `out_file`.
///
/// # Errors
/// Condition, sampler and file errors.
pub fn generate_for_rows(
    run: &Run,
    rows_file: &Path,
    fixed: &BTreeMap<String, String>,
    per_row: usize,
    invert: bool,
    out_file: &Path,
) -> Result<()> {
    let request = SampleRequest {
        n: 0,
        fixed: fixed.clone(),
        per_cell: None,
        from: Some(ConditionsFrom {
            path: rows_file.to_path_buf(),
            per_row,
            invert,
            allow_missing_genes: false,
        }),
        steps: None,
        guidance: None,
        attribute_guidance: Default::default(),
        sampler: None,
        sampler_options: BTreeMap::new(),
        seed: run.config.seed,
    };
    write_h5ad(out_file, &sample(run, &request)?.cells)?;
    Ok(())
}

/// Generated cells written by [`generate_for_rows`], read back on the model's scale (no labels,
/// no PCs yet).
///
/// # Errors
/// File errors, gene mismatches.
pub fn generated_cells(run: &Run, path: &Path) -> Result<CellSet> {
    let a = read_any(path)?;
    Ok(CellSet {
        x: like_run(&a, run, path, true)?,
        n: a.n_obs(),
        n_genes: run.genes.len(),
        labels: None,
        pcs: Vec::new(),
    })
}

/// Writes the protocol's report (tables, plots of `reference` vs `generated`, the protocol's
/// `extra` plots, the run's training curves) to `out/report`.
///
/// # Errors
/// File errors.
pub fn write_protocol_report(
    run: &Run,
    out: &Path,
    evaluation: &Evaluation,
    reference: &CellSet,
    generated: &CellSet,
    extra: Vec<ExtraScatter>,
    title: &str,
) -> Result<()> {
    let curves = std::fs::read_to_string(run.dir.join("curves.csv")).ok();
    write_report(
        &out.join("report"),
        evaluation,
        &Figures {
            reference,
            generated,
            curves_csv: curves.as_deref(),
            extra,
            seed: crate::rng::derive_seed(run.config.seed, "evaluate"),
        },
        title,
    )
}
