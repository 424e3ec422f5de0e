//! Every shipped config in `configs/` parses, builds on its data, trains for a few steps and
//! generates finite cells, with a few joint fine-tuning steps wherever the autoencoder trains.
//! (Full-length quality runs are the README's main job.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use latentlab::framework::config::ExperimentConfig;
use latentlab::framework::dataset;
use latentlab::framework::device::device;
use latentlab::framework::experiment::{build_models, fit};
use latentlab::framework::pipeline::{decode_latents, generate_latents, GenerateOptions};
use latentlab::framework::rng::stream;
use latentlab::framework::train::Silent;

#[test]
fn every_shipped_config_trains_a_few_steps_and_samples() {
    latentlab::plugins::link();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(root).unwrap();
    let mut paths: Vec<_> = std::fs::read_dir(root.join("configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 4,
        "expected the shipped configs, found {paths:?}"
    );
    for path in paths {
        let mut config =
            ExperimentConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        config.train.autoencoder_steps = config.train.autoencoder_steps.min(10);
        config.train.denoiser_steps = 10;
        config.train.validate_every = 5;
        if config.train.autoencoder_steps > 0 {
            // Joint fine-tuning works with every trainable autoencoder, sampler and conditioner.
            config.train.joint_steps = 6;
        }
        let data = dataset::load(&config).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let dev = device(0).unwrap();
        let p = &data.prepared;
        let mut models = build_models(
            &config,
            p.gene_names.len(),
            p.input_kind,
            &p.conditions.select(&p.train_rows),
            &dev,
        )
        .unwrap();
        fit(&config, p, &mut models, &mut Silent)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let n = 8;
        let conditions = p.conditions.select(&p.validation_rows[..n]);
        let dim = models.autoencoder.latent_dim();
        let z = generate_latents(
            models.denoiser.as_ref(),
            models.conditioner.as_deref(),
            models.sampler.as_ref(),
            &conditions,
            n,
            dim,
            GenerateOptions {
                steps: 4,
                guidance: 1.5,
                chunk_size: 64,
                attribute_scales: Vec::new(),
            },
            &mut stream(0, "g"),
            &dev,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let x = decode_latents(
            models.autoencoder.as_ref(),
            &models.stats,
            z,
            n,
            &vec![1.0; n],
            Some(&mut stream(1, "o")),
            64,
        )
        .unwrap();
        assert_eq!(x.len(), n * p.gene_names.len());
        assert!(
            x.iter().all(|v| v.is_finite()),
            "{}: non-finite cells",
            path.display()
        );
    }
}
