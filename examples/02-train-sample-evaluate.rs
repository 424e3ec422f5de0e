//! 02 — Train, sample and evaluate from Rust (what `latentlab run` does), with small step counts:
//! train both stages on the PBMC cells, sample 200 CD14+ monocytes with guidance 2, and evaluate
//! them against the held-out validation split.
//!
//! Run: `cargo run --release --example 02-train-sample-evaluate`

use std::collections::BTreeMap;

use anyhow::Result;
use latentlab::framework::config::ExperimentConfig;
use latentlab::framework::data::write_h5ad;
use latentlab::framework::device::device;
use latentlab::framework::run::load;
use latentlab::framework::run_evaluation::evaluate_run;
use latentlab::framework::sampling::{sample, SampleRequest};
use latentlab::framework::train::Silent;
use latentlab::framework::train_run::train_run;

fn main() -> Result<()> {
    latentlab::plugins::link();
    let mut config = ExperimentConfig::load(std::path::Path::new("configs/pbmc_vae_flow.toml"))?;
    config.train.autoencoder_steps = 300;
    config.train.denoiser_steps = 300;
    let out = std::env::temp_dir().join("latentlab-example-02");
    let manifest = train_run(&config, &out.join("run"), true, &mut Silent)?;
    println!("final losses: {:?}", manifest.final_losses);
    let run = load(&out.join("run"), &device(0)?)?;
    let fixed = BTreeMap::from([("bulk_labels".to_string(), "CD14+ Monocyte".to_string())]);
    let cells = sample(
        &run,
        &SampleRequest {
            n: 200,
            fixed,
            per_cell: None,
            from: None,
            steps: Some(20),
            guidance: Some(2.0),
            attribute_guidance: Default::default(),
            sampler: None,
            sampler_options: BTreeMap::new(),
            seed: 1,
        },
    )?
    .cells;
    let path = out.join("monocytes.h5ad");
    write_h5ad(&path, &cells)?;
    let evaluation = evaluate_run(&run, &path, None, &out.join("report"))?;
    println!(
        "{}",
        latentlab::framework::report::markdown_table(&evaluation)
    );
    println!("report in {}", out.join("report").display());
    Ok(())
}
