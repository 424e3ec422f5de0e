//! 09 — A sampler plugin defined outside the crate, in this file: `flow_sde`, a stochastic
//! sampler for denoisers trained by `rectified_flow`. It integrates the reverse SDE that shares
//! the flow's marginals, `dz = [v + γ ε̂] dt + sqrt(2γt |dt|) ξ` from t = 1 to 0, where
//! `ε̂ = z + (1 − t) v` is the noise the velocity implies and γ ("churn") sets how much noise is
//! re-injected (γ = 0 is the Euler ODE). Because it declares the same training process as
//! `rectified_flow`, `latentlab sample --sampler flow_sde` accepts any rectified-flow run; here we
//! train a short PBMC run and compare the ODE with two churn levels on the held-out cells.
//!
//! Run: `cargo run --release --example 09-out-of-tree-sampler`

use std::collections::BTreeMap;

use anyhow::Result;
use latentlab::framework::config::ExperimentConfig;
use latentlab::framework::data::write_h5ad;
use latentlab::framework::device::device;
use latentlab::framework::plugin::{
    LatentSampler, ModelFn, Prediction, SamplerConfig, TrainingPair, TrainingProcess,
};
use latentlab::framework::run::load;
use latentlab::framework::run_evaluation::evaluate_run;
use latentlab::framework::sampling::{sample, SampleRequest};
use latentlab::framework::train::Silent;
use latentlab::framework::train_run::train_run;
use latentlab::framework::{register_plugin, LatentError};
use rand::{Rng, RngCore};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// Config of the `flow_sde` sampler.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowSdeConfig {
    /// Steps when sampling. Default 50.
    pub steps: usize,
    /// Noise re-injection γ ≥ 0 (0 = deterministic Euler). Default 1.0.
    pub churn: f32,
}

impl Default for FlowSdeConfig {
    fn default() -> Self {
        Self {
            steps: 50,
            churn: 1.0,
        }
    }
}

#[typetag::serde(name = "flow_sde")]
impl SamplerConfig for FlowSdeConfig {
    fn default_steps(&self) -> usize {
        self.steps
    }
    fn build(&self) -> latentlab::framework::Result<Box<dyn LatentSampler>> {
        if self.steps == 0 {
            return Err(LatentError::config(
                "sampler.flow_sde",
                "steps",
                "at least 1",
                0,
            ));
        }
        if !(self.churn >= 0.0 && self.churn.is_finite()) {
            return Err(LatentError::config(
                "sampler.flow_sde",
                "churn",
                "a finite value ≥ 0",
                self.churn,
            ));
        }
        Ok(Box::new(FlowSde { churn: self.churn }))
    }
}

register_plugin!(
    Sampler,
    "flow_sde",
    "Stochastic (reverse-SDE) sampler for rectified-flow denoisers; churn = noise re-injection",
    "type = \"flow_sde\"\nsteps = 50\nchurn = 1.0"
);

/// The process (weight-free).
pub struct FlowSde {
    churn: f32,
}

impl LatentSampler for FlowSde {
    fn process(&self) -> TrainingProcess {
        // The same process as `rectified_flow`, so its denoisers are accepted.
        TrainingProcess {
            family: "flow".into(),
            schedule: "linear_interpolant".into(),
            train_steps: 0,
            prediction: Prediction::Velocity,
        }
    }
    fn sample_time(&self, rng: &mut dyn RngCore) -> f32 {
        rng.gen::<f32>()
    }
    fn training_pair(
        &self,
        z0: &[f32],
        noise: &[f32],
        t: &[f32],
        dim: usize,
    ) -> latentlab::framework::Result<TrainingPair> {
        if z0.len() != t.len() * dim || noise.len() != z0.len() {
            return Err(LatentError::shape("flow_sde", t.len() * dim, z0.len()));
        }
        let mut noisy = vec![0.0; z0.len()];
        let mut target = vec![0.0; z0.len()];
        for (i, (x, e)) in z0.iter().zip(noise).enumerate() {
            let ti = t[i / dim];
            noisy[i] = (1.0 - ti) * x + ti * e;
            target[i] = e - x;
        }
        Ok(TrainingPair {
            noisy,
            target,
            model_time: t.to_vec(),
        })
    }
    fn time_grid(&self, steps: usize) -> latentlab::framework::Result<Vec<f32>> {
        if steps == 0 {
            return Err(LatentError::config("sample", "steps", "at least 1", 0));
        }
        Ok((0..=steps).map(|i| 1.0 - i as f32 / steps as f32).collect())
    }
    fn step(
        &self,
        model: &mut ModelFn<'_>,
        z: &[f32],
        t: f32,
        t_next: f32,
        rng: &mut dyn RngCore,
    ) -> latentlab::framework::Result<Vec<f32>> {
        let v = model(z, t)?;
        let dt = t_next - t;
        // The last step lands on the data: no noise there.
        let (gamma, spread) = if t_next <= 0.0 {
            (0.0, 0.0)
        } else {
            (self.churn, (2.0 * self.churn * t * dt.abs()).sqrt())
        };
        Ok(z.iter()
            .zip(&v)
            .map(|(z, v)| {
                let eps = z + (1.0 - t) * v;
                let xi: f32 = rng.sample(StandardNormal);
                z + (v + gamma * eps) * dt + spread * xi
            })
            .collect())
    }
}

fn main() -> Result<()> {
    latentlab::plugins::link();
    let mut config = ExperimentConfig::load(std::path::Path::new("configs/pbmc_vae_flow.toml"))?;
    config.train.autoencoder_steps = 600;
    config.train.denoiser_steps = 600;
    let out = std::env::temp_dir().join("latentlab-example-09");
    let manifest = train_run(&config, &out.join("run"), true, &mut Silent)?;
    let run = load(&out.join("run"), &device(0)?)?;
    for (name, sampler, churn) in [
        ("rectified_flow (Euler ODE)", None, None),
        ("flow_sde churn 0.5", Some("flow_sde"), Some("0.5")),
        ("flow_sde churn 2.0", Some("flow_sde"), Some("2.0")),
    ] {
        let options: BTreeMap<String, String> = churn
            .map(|c| BTreeMap::from([("churn".to_string(), c.to_string())]))
            .unwrap_or_default();
        let cells = sample(
            &run,
            &SampleRequest {
                n: manifest.n_validation,
                fixed: BTreeMap::new(),
                per_cell: None,
                from: None,
                steps: Some(30),
                guidance: None,
                attribute_guidance: Default::default(),
                sampler: sampler.map(str::to_string),
                sampler_options: options,
                seed: 3,
            },
        )?
        .cells;
        let path = out.join(format!(
            "{}.h5ad",
            name.split(' ').next().unwrap_or("cells")
        ));
        write_h5ad(&path, &cells)?;
        let evaluation = evaluate_run(&run, &path, None, &out.join("report"))?;
        let generated = evaluation
            .rows
            .iter()
            .find(|r| r.name.starts_with("generated"))
            .map(|r| {
                r.metrics
                    .iter()
                    .filter(|m| m.name == "mmd2_rbf" || m.name == "knn_auroc")
                    .map(|m| format!("{} {:.4}", m.name, m.value))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        println!("{name}: {generated}");
    }
    Ok(())
}
