//! 08 — RNA → protein: train a protein-panel model conditioned on each cell's RNA (CITE-seq, 20%
//! of the cells held out), compare its per-cell predictions with kNN on the RNA PCA, ridge
//! regression and the training mean, then print a few held-out cells' measured proteins beside
//! the mean and 10–90 % interval of 20 generated panels.
//!
//! Run: `cargo run --release --example 08-rna-to-protein`

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use latentlab::framework::config::ExperimentConfig;
use latentlab::framework::data::{read_h5ad, MatrixSource};
use latentlab::framework::device::device;
use latentlab::framework::prediction::evaluate_prediction;
use latentlab::framework::report::markdown_table;
use latentlab::framework::run::load;
use latentlab::framework::sampling::{sample, ConditionsFrom, SampleRequest};
use latentlab::framework::train::Silent;
use latentlab::framework::train_run::train_run;

fn main() -> Result<()> {
    latentlab::plugins::link();
    let config = ExperimentConfig::load(std::path::Path::new("configs/cite_rna_to_protein.toml"))?;
    let protocol = config
        .evaluate
        .prediction
        .clone()
        .ok_or_else(|| anyhow!("the config names no [evaluate.prediction]"))?;
    let out = std::env::temp_dir().join("latentlab-example-08");
    train_run(&config, &out.join("run"), true, &mut Silent)?;
    let run = load(&out.join("run"), &device(0)?)?;
    let encoder = run
        .manifest
        .conditions
        .iter()
        .find_map(|c| c.encoder.as_ref())
        .ok_or_else(|| anyhow!("the run has no modality condition"))?;
    println!(
        "RNA encoder: {} genes → {} components explaining {:.1}% of the training variance",
        encoder.features.len(),
        encoder.components,
        100.0 * encoder.explained_variance_ratio.iter().sum::<f32>()
    );
    let (evaluation, files) = evaluate_prediction(&run, &protocol, &out)?;
    println!("{}", markdown_table(&evaluation));

    // The same prediction as a user would ask for it: 20 panels per held-out cell.
    let k = 20;
    let request = SampleRequest {
        n: 0,
        fixed: BTreeMap::new(),
        per_cell: None,
        from: Some(ConditionsFrom {
            path: files.heldout.clone(),
            per_row: k,
            invert: false,
            allow_missing_genes: false,
        }),
        steps: None,
        guidance: None,
        attribute_guidance: BTreeMap::new(),
        sampler: None,
        sampler_options: BTreeMap::new(),
        seed: 1,
    };
    let generated = sample(&run, &request)?.cells.x.to_dense();
    let heldout = read_h5ad(&files.heldout)?;
    let measured = heldout
        .matrix(
            &MatrixSource::Obsm("protein_expression".into()),
            &files.heldout,
        )?
        .to_dense();
    let p = run.genes.len();
    for cell in 0..3 {
        println!("held-out cell {}:", heldout.cell_names()[cell]);
        for (j, protein) in run.genes.iter().enumerate() {
            let mut draws: Vec<f32> = (0..k).map(|s| generated[(cell * k + s) * p + j]).collect();
            draws.sort_by(f32::total_cmp);
            let mean = draws.iter().sum::<f32>() / k as f32;
            println!(
                "  {protein:<16} measured {:>5.2}  predicted {mean:>5.2}  [{:.2}, {:.2}]",
                measured[cell * p + j].ln_1p(),
                draws[k / 10],
                draws[k - 1 - k / 10]
            );
        }
    }
    Ok(())
}
