//! 01 — Compose a model from a config: parse the PBMC experiment config, read the data, build
//! every plugin it names, and print what was built (parameter counts by component, the sampler's
//! training process). Nothing is trained.
//!
//! Run: `cargo run --release --example 01-compose-from-config`

use anyhow::Result;
use latentlab::framework::config::ExperimentConfig;
use latentlab::framework::dataset;
use latentlab::framework::device::device;
use latentlab::framework::experiment::build_models;
use latentlab::framework::registry::{catalog, PluginKind};

fn main() -> Result<()> {
    latentlab::plugins::link();
    let config = ExperimentConfig::load(std::path::Path::new("configs/pbmc_vae_flow.toml"))?;
    let data = dataset::load(&config)?;
    let p = &data.prepared;
    println!(
        "{} cells x {} genes ({:?}), {} train / {} validation",
        p.expression.n,
        p.gene_names.len(),
        p.input_kind,
        p.train_rows.len(),
        p.validation_rows.len()
    );
    let models = build_models(
        &config,
        p.gene_names.len(),
        p.input_kind,
        &p.conditions,
        &device(config.seed)?,
    )?;
    println!(
        "autoencoder: {} parameters, latent dim {}",
        models.autoencoder.num_params(),
        models.autoencoder.latent_dim()
    );
    println!("denoiser:    {} parameters", models.denoiser.num_params());
    if let Some(c) = &models.conditioner {
        println!(
            "conditioner: {} parameters, {:?} injection, width {}",
            c.num_params(),
            c.injection(),
            c.dim()
        );
    }
    println!("sampler trains under {:?}", models.process);
    for kind in PluginKind::ALL {
        let names: Vec<_> = catalog()
            .into_iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.name)
            .collect();
        println!("{kind:?} plugins: {}", names.join(", "));
    }
    Ok(())
}
