//! The two-stage model learns a known conditional distribution: synthetic cells of two types
//! with different mean profiles; generated cells conditioned on each type must reproduce that
//! type's mean profile far better than the other type's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use latentlab::framework::config::ExperimentConfig;
use latentlab::framework::device::device;
use latentlab::framework::experiment::{build_models, fit, fit_with, Models, PreparedData};
use latentlab::framework::pipeline::{decode_latents, generate_latents, GenerateOptions};
use latentlab::framework::plugin::{ConditionColumn, ConditionTable, ExpressionBatch, InputKind};
use latentlab::framework::rng::stream;
use latentlab::framework::train::{Checkpoints, CurvePoint, Silent, Snapshot};
use rand::Rng;

const GENES: usize = 24;

fn profile(label: usize, g: usize) -> f32 {
    if g.is_multiple_of(2) == (label == 0) {
        2.0 + (g as f32 * 0.1)
    } else {
        0.5
    }
}

fn synthetic(n_per_label: usize) -> PreparedData {
    let mut rng = stream(1, "synthetic");
    let mut x = Vec::new();
    let mut codes = Vec::new();
    for i in 0..2 * n_per_label {
        let label = i % 2;
        codes.push(label as u32);
        let shared: f32 = rng.sample(rand_distr::StandardNormal);
        for g in 0..GENES {
            let noise: f32 = rng.sample(rand_distr::StandardNormal);
            x.push(profile(label, g) + 0.3 * noise + 0.2 * shared * (g % 3) as f32);
        }
    }
    let n = 2 * n_per_label;
    let mut table = ConditionTable::default();
    table.columns.insert(
        "cell_type".into(),
        ConditionColumn::Categorical {
            categories: vec!["A".into(), "B".into()],
            codes,
        },
    );
    PreparedData {
        expression: ExpressionBatch {
            x,
            n,
            library_size: vec![1.0; n],
        },
        gene_names: (0..GENES).map(|g| format!("g{g}")).collect(),
        conditions: table,
        input_kind: InputKind::Continuous,
        train_rows: (0..n).filter(|i| i % 5 != 0).collect(),
        validation_rows: (0..n).filter(|i| i % 5 == 0).collect(),
    }
}

const CONFIG: &str = r#"
seed = 3
[data]
path = "unused.h5ad"
[autoencoder]
type = "vae"
latent_dim = 4
hidden = [64, 32]
dropout = 0.0
kl_warmup_steps = 100
zero_inflation = false
[denoiser]
type = "mlp"
width = 64
blocks = 2
time_features = 32
[sampler]
type = "rectified_flow"
steps = 20
[conditioner]
type = "class_embedding"
keys = ["cell_type"]
dim = 16
[train]
autoencoder_steps = 400
denoiser_steps = 800
batch_size = 64
validate_every = 200
"#;

fn trained(config_text: &str) -> (Models, Vec<CurvePoint>) {
    latentlab::plugins::link();
    let config =
        ExperimentConfig::from_str_with_path(config_text, std::path::Path::new("inline.toml"))
            .unwrap();
    let data = synthetic(200);
    let dev = device(0).unwrap();
    let mut models = build_models(
        &config,
        GENES,
        InputKind::Continuous,
        &data.conditions,
        &dev,
    )
    .unwrap();
    let curves = fit(&config, &data, &mut models, &mut Silent).unwrap();
    (models, curves)
}

fn curve(curves: &[CurvePoint], stage: &str, name: &str) -> Vec<f64> {
    curves
        .iter()
        .filter(|c| c.stage == stage && c.name == name)
        .map(|c| c.value)
        .collect()
}

/// Generated cells of each label reproduce that label's mean profile, far better than the other's.
fn assert_recovers_per_label_means(models: &Models, what: &str) {
    let n = 300;
    let samples_for = |label: u32| -> Vec<f32> {
        let mut table = ConditionTable::default();
        table.columns.insert(
            "cell_type".into(),
            ConditionColumn::Categorical {
                categories: vec!["A".into(), "B".into()],
                codes: vec![label; n],
            },
        );
        let options = GenerateOptions {
            steps: 20,
            guidance: 1.0,
            chunk_size: 128,
            attribute_scales: Vec::new(),
        };
        let z = generate_latents(
            models.denoiser.as_ref(),
            models.conditioner.as_deref(),
            models.sampler.as_ref(),
            &table,
            n,
            4,
            options,
            &mut stream(5, "gen"),
            &models.dev,
        )
        .unwrap();
        decode_latents(
            models.autoencoder.as_ref(),
            &models.stats,
            z,
            n,
            &vec![1.0; n],
            None,
            256,
        )
        .unwrap()
    };
    let mean_of = |x: &[f32]| -> Vec<f32> {
        (0..GENES)
            .map(|g| (0..n).map(|i| x[i * GENES + g]).sum::<f32>() / n as f32)
            .collect()
    };
    for label in 0..2u32 {
        let mean = mean_of(&samples_for(label));
        let err_own: f32 = (0..GENES)
            .map(|g| (mean[g] - profile(label as usize, g)).abs())
            .sum::<f32>()
            / GENES as f32;
        let err_other: f32 = (0..GENES)
            .map(|g| (mean[g] - profile(1 - label as usize, g)).abs())
            .sum::<f32>()
            / GENES as f32;
        assert!(
            err_own < 0.25,
            "{what}, label {label}: mean abs error to own profile {err_own}"
        );
        assert!(
            err_other > 4.0 * err_own,
            "{what}, label {label}: own {err_own} vs other {err_other}"
        );
    }
}

#[test]
fn conditional_generation_recovers_per_label_means() {
    let (models, curves) = trained(CONFIG);
    let first = curve(&curves, "denoiser", "train_loss")[0];
    let last_val = *curve(&curves, "denoiser", "validation_loss")
        .last()
        .unwrap();
    assert!(
        last_val < first,
        "denoiser validation loss {last_val} did not drop below the first training loss {first}"
    );
    assert!(curve(&curves, "joint", "train_loss").is_empty());
    assert_recovers_per_label_means(&models, "two stages");
}

/// Joint fine-tuning runs after both stages, logs its training and validation curves (the
/// validation objective is the autoencoder's plus the weighted stage-2 loss on the re-encoded
/// latents), and the fine-tuned model still generates each label's profile.
#[test]
fn joint_fine_tuning_keeps_per_label_means() {
    let (models, curves) = trained(&CONFIG.replace(
        "validate_every = 200",
        "validate_every = 100\njoint_steps = 300\njoint_lr = 3e-4",
    ));
    let joint = curve(&curves, "joint", "train_loss");
    assert_eq!(joint.len(), 300);
    assert!(joint.iter().all(|v| v.is_finite()));
    let validation = curve(&curves, "joint", "validation_loss");
    let denoiser = curve(&curves, "joint", "validation_denoiser_loss");
    assert_eq!((validation.len(), denoiser.len()), (3, 3));
    assert!(
        curve(&curves, "joint", "validation_autoencoder_loss")
            .iter()
            .zip(&denoiser)
            .zip(&validation)
            .all(|((a, d), v)| (a + d - v).abs() < 1e-9 * (1.0 + v.abs())),
        "validation_loss = autoencoder + 1.0 × denoiser"
    );
    assert_recovers_per_label_means(&models, "after joint fine-tuning");
}

/// [`CONFIG`] with `steps` steps per stage, 20 joint steps, validation every 10 and `dropout`.
fn short_config(steps: u64, dropout: &str) -> ExperimentConfig {
    latentlab::plugins::link();
    let text = CONFIG
        .replace(
            "autoencoder_steps = 400",
            &format!("autoencoder_steps = {steps}"),
        )
        .replace("denoiser_steps = 800", &format!("denoiser_steps = {steps}"))
        .replace("dropout = 0.0", dropout)
        .replace(
            "validate_every = 200",
            "validate_every = 10\njoint_steps = 20",
        );
    ExperimentConfig::from_str_with_path(&text, std::path::Path::new("inline.toml")).unwrap()
}

/// Same seed, same machine: two trainings give bit-identical curves and generated latents.
#[test]
fn training_is_reproducible_bit_for_bit() {
    latentlab::plugins::link();
    let config = short_config(40, "dropout = 0.2");
    let data = synthetic(50);
    let once = || {
        let dev = device(7).unwrap();
        let mut models = build_models(
            &config,
            GENES,
            InputKind::Continuous,
            &data.conditions,
            &dev,
        )
        .unwrap();
        let curves = fit(&config, &data, &mut models, &mut Silent).unwrap();
        let z = generate_latents(
            models.denoiser.as_ref(),
            models.conditioner.as_deref(),
            models.sampler.as_ref(),
            &data.conditions.select(&[0, 1, 2]),
            3,
            4,
            GenerateOptions {
                steps: 5,
                guidance: 2.0,
                chunk_size: 8,
                attribute_scales: Vec::new(),
            },
            &mut stream(5, "gen"),
            &dev,
        )
        .unwrap();
        (
            curves.iter().map(|c| c.value.to_bits()).collect::<Vec<_>>(),
            z.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(once(), once());
}

/// Keeps every snapshot in memory; resumes each stage from the given snapshot of that stage.
struct MemoryCheckpoints {
    every: u64,
    saved: Vec<Snapshot>,
    resume_from: Vec<Snapshot>,
}

impl Checkpoints for MemoryCheckpoints {
    fn every(&self) -> u64 {
        self.every
    }
    fn save(&mut self, snapshot: &Snapshot) -> latentlab::framework::Result<()> {
        self.saved.push(snapshot.clone());
        Ok(())
    }
    fn resume(&mut self, stage: &'static str) -> latentlab::framework::Result<Option<Snapshot>> {
        Ok(self.resume_from.iter().find(|s| s.stage == stage).cloned())
    }
}

/// A joint phase interrupted after its snapshot at step 10 continues from it: the resumed run
/// restores both finished stages and the joint weights, logs every joint step exactly once, and
/// its joint steps before the snapshot are the interrupted run's.
#[test]
fn joint_phase_resumes_from_its_snapshot() {
    latentlab::plugins::link();
    let config = short_config(30, "dropout = 0.0");
    let data = synthetic(50);
    let models = || {
        build_models(
            &config,
            GENES,
            InputKind::Continuous,
            &data.conditions,
            &device(0).unwrap(),
        )
        .unwrap()
    };
    let mut first = MemoryCheckpoints {
        every: 10,
        saved: Vec::new(),
        resume_from: Vec::new(),
    };
    let curves = fit_with(&config, &data, &mut models(), &mut Silent, &mut first).unwrap();
    let complete = |stage: &str| {
        first
            .saved
            .iter()
            .find(|s| s.stage == stage && s.complete)
            .cloned()
            .unwrap()
    };
    let mid_joint = first
        .saved
        .iter()
        .find(|s| s.stage == "joint" && s.next_step == 10 && !s.complete)
        .cloned()
        .unwrap();
    let mut second = MemoryCheckpoints {
        every: 10,
        saved: Vec::new(),
        resume_from: vec![complete("autoencoder"), complete("denoiser"), mid_joint],
    };
    let resumed = fit_with(&config, &data, &mut models(), &mut Silent, &mut second).unwrap();
    let joint_steps = |c: &[CurvePoint]| -> Vec<u64> {
        c.iter()
            .filter(|p| p.stage == "joint" && p.name == "train_loss")
            .map(|p| p.step)
            .collect()
    };
    assert_eq!(joint_steps(&resumed), (0..20).collect::<Vec<_>>());
    let before = |c: &[CurvePoint]| -> Vec<u64> {
        c.iter()
            .filter(|p| p.stage == "joint" && p.step < 10)
            .map(|p| p.value.to_bits())
            .collect()
    };
    assert_eq!(before(&resumed), before(&curves));
    assert!(resumed.iter().all(|p| p.value.is_finite()));
    assert!(second
        .saved
        .iter()
        .any(|s| s.stage == "joint" && s.complete && s.next_step == 20));
}
