//! Stage-2 sampler properties, checked through the registry's configs: ᾱ strictly decreasing,
//! time grids strictly ordered and in range for every spacing and step count, DDIM with eta = 0
//! deterministic, DDIM with eta = 1 reproducing DDPM's sample statistics under the exact model of
//! a Gaussian data distribution, and every sampler reproducible for a fixed seed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use latentlab::framework::diffusion::Diffusion;
use latentlab::framework::plugin::{LatentSampler, Prediction, SamplerConfig};
use latentlab::framework::rng::{fill_normal, stream};
use latentlab::framework::schedules::BetaSchedule;
use proptest::prelude::*;

fn sampler(json: serde_json::Value) -> Box<dyn LatentSampler> {
    latentlab::plugins::link();
    let cfg: Box<dyn SamplerConfig> = serde_json::from_value(json).unwrap();
    cfg.build().unwrap()
}

const SCHEDULES: [&str; 3] = ["linear", "scaled_linear", "cosine"];
const SPACINGS: [&str; 3] = ["leading", "trailing", "linspace"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn alpha_bar_strictly_decreasing_in_unit_interval(schedule in 0usize..3, steps in 2usize..2000) {
        let s: BetaSchedule = serde_json::from_value(serde_json::json!(SCHEDULES[schedule])).unwrap();
        let a = s.alphas_cumprod(steps, 1e-4, 0.02).unwrap();
        prop_assert!(a.iter().all(|&v| v > 0.0 && v <= 1.0));
        prop_assert!(a.windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn time_grids_strictly_ordered_in_range(spacing in 0usize..3, train in 10usize..1000, frac in 0.0f64..1.0) {
        let steps = 1 + (frac * (train - 1) as f64) as usize;
        for json in [
            serde_json::json!({"type": "ddim", "train_steps": train, "steps": 1, "timestep_spacing": SPACINGS[spacing]}),
            serde_json::json!({"type": "ddpm", "train_steps": train, "steps": 1, "timestep_spacing": SPACINGS[spacing]}),
            serde_json::json!({"type": "rectified_flow"}),
        ] {
            let grid = sampler(json.clone()).time_grid(steps).unwrap();
            prop_assert_eq!(grid.len(), steps + 1, "{}", json);
            prop_assert!(grid.windows(2).all(|w| w[1] < w[0]), "{} {:?}", json, grid);
            prop_assert!(grid[0] <= 1.0 && grid[0] > 0.0 && *grid.last().unwrap() == 0.0);
        }
        let too_many = sampler(serde_json::json!({"type": "ddim", "train_steps": train, "steps": 1}));
        prop_assert!(too_many.time_grid(train + 1).is_err());
    }
}

/// The exact ε-prediction for data x0 ~ N(mu, s²) under z_t = √ᾱ x0 + √(1−ᾱ) ε:
/// E[ε | z_t] = √(1−ᾱ) (z_t − √ᾱ mu) / (ᾱ s² + 1 − ᾱ).
fn exact_epsilon(
    diffusion: &Diffusion,
    mu: f64,
    s: f64,
) -> impl FnMut(&[f32], f32) -> latentlab::framework::Result<Vec<f32>> + '_ {
    move |z: &[f32], t: f32| {
        let a = diffusion.alpha_bar(t);
        Ok(z.iter()
            .map(|&v| {
                ((1.0 - a).sqrt() * (f64::from(v) - a.sqrt() * mu) / (a * s * s + 1.0 - a)) as f32
            })
            .collect())
    }
}

fn moments(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let v = x.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / n;
    (m, v.sqrt())
}

fn run_all(
    s: &dyn LatentSampler,
    diffusion: &Diffusion,
    steps: usize,
    n: usize,
    seed: u64,
) -> Vec<f32> {
    let (mu, sd) = (1.5, 0.5);
    let mut rng = stream(seed, "property");
    let mut z = vec![0.0f32; n];
    fill_normal(&mut rng, &mut z);
    let grid = s.time_grid(steps).unwrap();
    let mut model = exact_epsilon(diffusion, mu, sd);
    for w in grid.windows(2) {
        z = s.step(&mut model, &z, w[0], w[1], &mut rng).unwrap();
    }
    z
}

#[test]
fn ddim_eta_one_matches_ddpm_statistics_and_eta_zero_is_deterministic() {
    // T = 1000 so that ᾱ_T ≈ 4e-5: the reverse process starts from (almost) pure noise.
    let train = 1000;
    let diffusion =
        Diffusion::new(BetaSchedule::Linear, train, 1e-4, 0.02, Prediction::Epsilon).unwrap();
    let common = |kind: &str, eta: f32| {
        sampler(
            serde_json::json!({"type": kind, "train_steps": train, "schedule": "linear", "eta": eta}),
        )
    };
    let ddpm =
        sampler(serde_json::json!({"type": "ddpm", "train_steps": train, "schedule": "linear"}));
    let ddim1 = common("ddim", 1.0);
    let n = 4000;
    let (m_ddpm, s_ddpm) = moments(&run_all(ddpm.as_ref(), &diffusion, train, n, 1));
    let (m_ddim, s_ddim) = moments(&run_all(ddim1.as_ref(), &diffusion, train, n, 2));
    // Both recover N(1.5, 0.5²) and agree with each other (standard error of the mean ≈ 0.007).
    for (m, s, who) in [(m_ddpm, s_ddpm, "ddpm"), (m_ddim, s_ddim, "ddim eta=1")] {
        assert!(
            (m - 1.5).abs() < 0.04 && (s - 0.5).abs() < 0.04,
            "{who}: mean {m}, std {s}"
        );
    }
    assert!((m_ddpm - m_ddim).abs() < 0.04 && (s_ddpm - s_ddim).abs() < 0.04);

    let ddim0 = common("ddim", 0.0);
    let a = run_all(ddim0.as_ref(), &diffusion, 50, 200, 3);
    let mut rng = stream(99, "other");
    let mut z = vec![0.0f32; 200];
    fill_normal(&mut stream(3, "property"), &mut z);
    let grid = ddim0.time_grid(50).unwrap();
    let mut model = exact_epsilon(&diffusion, 1.5, 0.5);
    for w in grid.windows(2) {
        z = ddim0.step(&mut model, &z, w[0], w[1], &mut rng).unwrap();
    }
    assert_eq!(a, z, "eta = 0 must not use the random stream");
    let (m, s) = moments(&a);
    assert!(
        (m - 1.5).abs() < 0.1 && (s - 0.5).abs() < 0.1,
        "ddim eta=0 50 steps: {m} {s}"
    );
}

#[test]
fn every_registered_sampler_is_reproducible_for_a_fixed_seed() {
    latentlab::plugins::link();
    let diffusion =
        Diffusion::new(BetaSchedule::Cosine, 1000, 1e-4, 0.02, Prediction::Epsilon).unwrap();
    for entry in
        latentlab::framework::registry::of_kind(latentlab::framework::registry::PluginKind::Sampler)
    {
        let cfg: Box<dyn SamplerConfig> = toml::from_str(entry.example).unwrap();
        let s = cfg.build().unwrap();
        let a = run_all(s.as_ref(), &diffusion, 10, 64, 7);
        let b = run_all(s.as_ref(), &diffusion, 10, 64, 7);
        assert_eq!(a, b, "{}: same seed, different samples", entry.name);
        assert!(a.iter().all(|v| v.is_finite()), "{}", entry.name);
    }
}
