//! 04 — Stage 1 on its own: train the PBMC VAE, report its reconstruction quality on the held-out
//! validation cells, and draw the latent space (PCA of posterior means) coloured by cell type.
//!
//! Run: `cargo run --release --example 04-autoencoder-latent-plot` (writes `latent_pca.png` in the
//! system temp directory).

use anyhow::Result;
use latentlab::framework::config::ExperimentConfig;
use latentlab::framework::dataset;
use latentlab::framework::device::device;
use latentlab::framework::experiment::{build_models, encode_rows, reconstruction_quality};
use latentlab::framework::metrics::Pca;
use latentlab::framework::parallel::on_worker_thread;
use latentlab::framework::plots::{scatter_overlay, ScatterGroup};
use latentlab::framework::train::{train_autoencoder, Silent};

fn main() -> Result<()> {
    latentlab::plugins::link();
    let mut config = ExperimentConfig::load(std::path::Path::new("configs/pbmc_vae_flow.toml"))?;
    config.train.autoencoder_steps = 800;
    let data = dataset::load(&config)?;
    let p = &data.prepared;
    let mut models = build_models(
        &config,
        p.gene_names.len(),
        p.input_kind,
        &p.conditions,
        &device(config.seed)?,
    )?;
    let train = p.expression.select(&p.train_rows);
    let validation = p.expression.select(&p.validation_rows);
    // `train_autoencoder` is a lower-level step than `train_run`: run it on a rayon worker
    // ourselves, or every parallel kernel would park this main thread on a lock (decision 0025).
    let curves = on_worker_thread(|| {
        train_autoencoder(
            models.autoencoder.as_mut(),
            &train,
            &validation,
            &config.train,
            config.seed,
            &mut Silent,
        )
    })?;
    if let Some(last) = curves.iter().rev().find(|c| c.name == "validation_loss") {
        println!(
            "validation loss after {} steps: {:.3}",
            last.step + 1,
            last.value
        );
    }
    println!(
        "reconstruction (validation): {:?}",
        reconstruction_quality(
            models.autoencoder.as_ref(),
            &p.expression,
            &p.validation_rows
        )?
    );

    let all: Vec<usize> = (0..p.expression.n).collect();
    let z = encode_rows(models.autoencoder.as_ref(), &p.expression, &all, 1024)?;
    let dim = models.autoencoder.latent_dim();
    let pca = Pca::fit(&z, all.len(), dim, 2)?;
    let xy = pca.transform(&z, all.len(), dim)?;
    let labels = data
        .labels
        .clone()
        .unwrap_or_else(|| vec!["cells".into(); all.len()]);
    let mut names: Vec<&String> = labels.iter().collect();
    names.sort();
    names.dedup();
    let groups: Vec<ScatterGroup> = names
        .iter()
        .map(|name| ScatterGroup {
            label: (*name).clone(),
            points: (0..all.len())
                .filter(|&i| &labels[i] == *name)
                .map(|i| (xy[2 * i], xy[2 * i + 1]))
                .collect(),
            color: None,
        })
        .collect();
    let out = std::env::temp_dir().join("latent_pca.png");
    scatter_overlay(
        &out,
        "VAE latent space (PCA of posterior means)",
        &groups,
        "latent PC1",
        "latent PC2",
    )?;
    println!("wrote {}", out.display());
    Ok(())
}
