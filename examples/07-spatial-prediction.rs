//! 07 — Spatial expression from coordinates: train on Visium spots with 20% held out, predict each
//! held-out spot from its coordinates (10 samples each) beside nearest-spot, ridge and mean
//! baselines, then generate expression at a new coordinate that no spot occupies.
//!
//! Run: `cargo run --release --example 07-spatial-prediction`

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use latentlab::framework::config::ExperimentConfig;
use latentlab::framework::device::device;
use latentlab::framework::prediction::evaluate_prediction;
use latentlab::framework::report::markdown_table;
use latentlab::framework::run::load;
use latentlab::framework::sampling::{sample, SampleRequest};
use latentlab::framework::train::Silent;
use latentlab::framework::train_run::train_run;

fn main() -> Result<()> {
    latentlab::plugins::link();
    let config = ExperimentConfig::load(std::path::Path::new("configs/visium_spatial.toml"))?;
    let protocol = config
        .evaluate
        .prediction
        .clone()
        .ok_or_else(|| anyhow!("the config names no [evaluate.prediction]"))?;
    let out = std::env::temp_dir().join("latentlab-example-07");
    train_run(&config, &out.join("run"), true, &mut Silent)?;
    let run = load(&out.join("run"), &device(0)?)?;
    let (evaluation, _) = evaluate_prediction(&run, &protocol, &out)?;
    println!("{}", markdown_table(&evaluation));

    // A coordinate between spots: the condition is a vector, given as comma-separated numbers.
    let summary = run
        .manifest
        .conditions
        .iter()
        .find(|c| c.key == "spatial")
        .ok_or_else(|| anyhow!("the run is not conditioned on obsm[\"spatial\"]"))?;
    let centre: Vec<String> = summary.mean.iter().map(|m| m.to_string()).collect();
    let request = SampleRequest {
        n: 50,
        fixed: BTreeMap::from([("spatial".to_string(), centre.join(","))]),
        per_cell: None,
        from: None,
        steps: None,
        guidance: None,
        attribute_guidance: Default::default(),
        sampler: None,
        sampler_options: BTreeMap::new(),
        seed: 0,
    };
    let x = sample(&run, &request)?.cells.x.to_dense();
    let g = run.genes.len();
    let mut mean: Vec<(f32, &str)> = (0..g)
        .map(|j| {
            (
                (0..50).map(|i| x[i * g + j]).sum::<f32>() / 50.0,
                run.genes[j].as_str(),
            )
        })
        .collect();
    mean.sort_by(|a, b| b.0.total_cmp(&a.0));
    let top: Vec<String> = mean
        .iter()
        .take(8)
        .map(|(v, gene)| format!("{gene} {v:.2}"))
        .collect();
    println!(
        "highest predicted genes at the tissue centre ({}): {}",
        centre.join(", "),
        top.join(", ")
    );
    Ok(())
}
