//! 06 — A time course as a continuous condition: train on myoblast differentiation with the 48 h
//! cells held out (Trapnell et al. 2014), evaluate the generated 48 h cells against the real ones
//! beside nearest-time and interpolation baselines, then sample along a grid of times and print
//! how the most time-dependent genes change.
//!
//! Run: `cargo run --release --example 06-time-course-grid`

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use latentlab::framework::config::ExperimentConfig;
use latentlab::framework::device::device;
use latentlab::framework::held_out::evaluate_held_out;
use latentlab::framework::report::markdown_table;
use latentlab::framework::run::load;
use latentlab::framework::sampling::{sample, SampleRequest};
use latentlab::framework::train::Silent;
use latentlab::framework::train_run::train_run;

fn main() -> Result<()> {
    latentlab::plugins::link();
    let config = ExperimentConfig::load(std::path::Path::new("configs/hsmm_time_course.toml"))?;
    let hold = config
        .data
        .hold_out
        .clone()
        .ok_or_else(|| anyhow!("the config names no [data.hold_out]"))?;
    let out = std::env::temp_dir().join("latentlab-example-06");
    train_run(&config, &out.join("run"), true, &mut Silent)?;
    let run = load(&out.join("run"), &device(0)?)?;
    let (evaluation, _) = evaluate_held_out(&run, &hold, &out)?;
    println!("{}", markdown_table(&evaluation));

    // Mean expression of 200 generated cells at each time of a grid.
    let g = run.genes.len();
    let n = 200;
    let times = [0.0f32, 12.0, 24.0, 36.0, 48.0, 60.0, 72.0];
    let mut means = Vec::new();
    for t in times {
        let request = SampleRequest {
            n,
            fixed: BTreeMap::from([(hold.key.clone(), t.to_string())]),
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
        means.push(
            (0..g)
                .map(|j| (0..n).map(|i| x[i * g + j]).sum::<f32>() / n as f32)
                .collect::<Vec<f32>>(),
        );
    }
    // The genes whose generated mean changes most between 0 h and 72 h.
    let mut order: Vec<usize> = (0..g).collect();
    let span = |j: usize| (means[times.len() - 1][j] - means[0][j]).abs();
    order.sort_by(|&a, &b| span(b).total_cmp(&span(a)));
    println!("mean log1p(FPKM) of generated cells by {}:", hold.key);
    println!(
        "{:>20} {}",
        "gene",
        times.map(|t| format!("{t:>6}")).join("")
    );
    for &j in order.iter().take(8) {
        let row: String = means.iter().map(|m| format!("{:>6.2}", m[j])).collect();
        println!("{:>20} {row}", run.genes[j]);
    }
    Ok(())
}
