//! Reference-shape benchmarks (DESIGN.md §8), named like the PyTorch peer's `bench_torch.py` so the
//! two print comparable `{"rates": {case: {"1": rate, "2": rate}}}` JSON.

use std::collections::BTreeMap;
use std::time::Instant;

use latentlab_framework::device::{device, host_values, tensor2, Dev};
use latentlab_framework::evaluation::{evaluate_rows, Projection};
use latentlab_framework::metrics::median;
use latentlab_framework::nn::{linear_macs, Init, Linear};
use latentlab_framework::pipeline::{
    decode_latents, generate_latents, GenerateOptions, LatentStats,
};
use latentlab_framework::plugin::{
    summarize, AutoencoderConfig, AutoencoderContext, CellSet, ConditionColumn, ConditionTable,
    ConditionerConfig, ConditionerContext, DenoiserConfig, DenoiserContext, EvalContext,
    ExpressionBatch, InputKind, SamplerConfig,
};
use latentlab_framework::rng::stream;
use latentlab_framework::train::{denoiser_gradients, LatentData, Stage2};
use latentlab_framework::{LatentError, Result};
use rand::Rng;

/// Shapes of the yardstick.
#[derive(Debug, Clone, Copy)]
pub struct BenchShapes {
    /// Cells per training batch.
    pub batch: usize,
    /// Genes.
    pub genes: usize,
    /// Latent width.
    pub latent: usize,
    /// Cells generated in the sampling case.
    pub cells: usize,
    /// Sampling steps.
    pub steps: usize,
    /// Seconds per measurement.
    pub min_seconds: f64,
    /// Measurements per case and thread count (the median is the reported rate).
    pub repeats: usize,
    /// Fraction of non-zero values in the `vae_counts_step` case's input.
    pub counts_density: f64,
}

impl Default for BenchShapes {
    fn default() -> Self {
        Self {
            batch: 256,
            genes: 2000,
            latent: 64,
            cells: 10_000,
            steps: 50,
            min_seconds: 2.0,
            repeats: 1,
            counts_density: 0.15,
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| LatentError::ConfigParse {
        path: "bench".into(),
        message: e.to_string(),
    })
}

/// Units per second of `repeats` (at least one) measurements, each calling `f` at least twice
/// and until `min_seconds` passed, after one warm-up call.
fn rate(
    min_seconds: f64,
    repeats: usize,
    units: f64,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    f()?;
    (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            let mut calls = 0u64;
            while calls < 2 || start.elapsed().as_secs_f64() < min_seconds {
                f()?;
                calls += 1;
            }
            Ok(calls as f64 * units / start.elapsed().as_secs_f64())
        })
        .collect()
}

fn conditions(n: usize, seed: u64) -> ConditionTable {
    let mut rng = stream(seed, "bench.labels");
    let mut t = ConditionTable::default();
    t.columns.insert(
        "label".into(),
        ConditionColumn::Categorical {
            categories: (0..10).map(|i| format!("c{i}")).collect(),
            codes: (0..n).map(|_| rng.gen_range(0..10)).collect(),
        },
    );
    t
}

/// One case's rate and, for training steps, the nominal floating-point operations per unit
/// (`3 × 2 × batch ×` linear multiply-accumulates: forward, input and weight gradients).
#[derive(Debug, Clone)]
struct Measured {
    /// Units per second of each measurement (at least one).
    rates: Vec<f64>,
    flops_per_unit: Option<f64>,
}

/// Nominal operations of one training step on `batch` rows of a model with `macs` linear
/// multiply-accumulates per row.
fn step_flops(batch: usize, macs: usize) -> Option<f64> {
    Some(3.0 * 2.0 * batch as f64 * macs as f64)
}

/// The VAE training step on `batch × genes` inputs: uniform values in `[0, 3)` (`vae_step`, the
/// peer's input), or with `counts_density` set, expression-like values — `log1p` of counts 1–20
/// in that fraction of the entries, zeros elsewhere (`vae_counts_step`: real data's sparsity,
/// which the first layer's products skip).
fn vae_step(shapes: &BenchShapes, counts_density: Option<f64>, dev: &Dev) -> Result<Measured> {
    let cfg: Box<dyn AutoencoderConfig> = parse(&format!(
        "type = \"vae\"\nlatent_dim = {}\nhidden = [512, 256]\nlayer_norm = false\ndropout = 0.0\nzero_inflation = false",
        shapes.latent
    ))?;
    let mut model = cfg.build(&AutoencoderContext {
        n_genes: shapes.genes,
        input: InputKind::Continuous,
        seed: 0,
        dev: dev.clone(),
    })?;
    let mut rng = stream(0, "bench.vae");
    let x: Vec<f32> = (0..shapes.batch * shapes.genes)
        .map(|_| match counts_density {
            None => rng.gen::<f32>() * 3.0,
            Some(d) if rng.gen::<f64>() < d => (rng.gen_range(1..=20) as f32).ln_1p(),
            Some(_) => 0.0,
        })
        .collect();
    let batch = ExpressionBatch {
        x,
        n: shapes.batch,
        library_size: vec![1.0; shapes.batch],
    };
    let flops_per_unit = step_flops(shapes.batch, linear_macs(&*model));
    let mut opt = latentlab_framework::optim::AdamW::new(Default::default())?;
    let rates = rate(shapes.min_seconds, shapes.repeats, 1.0, || {
        let loss = model.loss(&batch, 1000, &mut rng)?;
        let (_, grads) = latentlab_framework::optim::NamedGradients::backward(
            loss.total,
            &*model,
            "autoencoder",
        )?;
        opt.apply(&mut *model, "autoencoder", &grads, 1e-3)
    })?;
    Ok(Measured {
        rates,
        flops_per_unit,
    })
}

/// The reference MLP denoiser (width 512, 4 adaLN-Zero blocks, like the peer's).
const MLP_DENOISER: &str =
    "type = \"mlp\"\nwidth = 512\nblocks = 4\nexpansion = 1\ntime_features = 128";
/// The small DiT of the `dit_step` case: 16 tokens of 4 latent values, width 128, 4 blocks of
/// 4 heads, MLP ratio 4 (`benches/torch_dit.py` is the same network in PyTorch).
const DIT_DENOISER: &str = "type = \"dit\"\npatch_size = 4\nwidth = 128\nblocks = 4\nheads = 4\nmlp_ratio = 4\ntime_features = 128";

/// One rectified-flow training step (AdamW) of `denoiser` on `dim` inputs with class
/// conditioning (10 classes, adaLN, 10 % label dropout) of width `cond_dim`.
fn denoiser_step(
    shapes: &BenchShapes,
    denoiser: &str,
    cond_dim: usize,
    dim: usize,
    dev: &Dev,
) -> Result<Measured> {
    let den_cfg: Box<dyn DenoiserConfig> = parse(denoiser)?;
    let cond_cfg: Box<dyn ConditionerConfig> = parse(&format!("type = \"class_embedding\"\nkeys = [\"label\"]\ndim = {cond_dim}\ninjection = \"adaln\"\ndrop_prob = 0.1"))?;
    let sampler = parse::<Box<dyn SamplerConfig>>("type = \"rectified_flow\"")?.build()?;
    let table = conditions(shapes.batch, 1);
    let mut conditioner = cond_cfg.build(&ConditionerContext {
        conditions: summarize(&table, &[]),
        seed: 0,
        dev: dev.clone(),
    })?;
    let mut denoiser = den_cfg.build(&DenoiserContext {
        latent_dim: dim,
        condition: Some((cond_dim, conditioner.injection())),
        seed: 0,
        dev: dev.clone(),
    })?;
    let mut rng = stream(0, "bench.denoiser");
    let z: Vec<f32> = (0..shapes.batch * dim)
        .map(|_| rng.sample(rand_distr::StandardNormal))
        .collect();
    let data = LatentData {
        z,
        n: shapes.batch,
        dim,
        conditions: table,
    };
    let rows: Vec<usize> = (0..shapes.batch).collect();
    let mut opt = latentlab_framework::optim::AdamW::new(Default::default())?;
    let flops_per_unit = step_flops(
        shapes.batch,
        linear_macs(&*denoiser) + linear_macs(&*conditioner),
    );
    let rates = rate(shapes.min_seconds, shapes.repeats, 1.0, || {
        let mut stage = Stage2 {
            denoiser: denoiser.as_mut(),
            conditioner: Some(conditioner.as_mut()),
        };
        // The shards a default `train` config gives at this thread count.
        let (_, grads) = denoiser_gradients(
            &stage,
            sampler.as_ref(),
            &data,
            (&rows, None),
            0.1,
            &mut rng,
            dev,
        )?;
        opt.apply(&mut stage, "", &grads, 1e-3)
    })?;
    Ok(Measured {
        rates,
        flops_per_unit,
    })
}

/// The matrix-product peak the training rates are compared with: a 1024 × 1024 input through a
/// 1024 → 1024 [`Linear`] (the models' own product path; PyTorch's peer times `torch.mm` of two
/// 1024² matrices), GFLOP/s at the current thread count.
fn sgemm_peak(shapes: &BenchShapes, dev: &Dev) -> Result<f64> {
    const N: usize = 1024;
    let mut rng = stream(0, "bench.sgemm");
    let layer = Linear::new(dev, N, N, Init::KaimingUniform, &mut rng)?;
    let values: Vec<f32> = (0..N * N).map(|_| rng.gen::<f32>() - 0.5).collect();
    let x = tensor2(dev, &values, N, N)?;
    let calls_per_second = rate(shapes.min_seconds, shapes.repeats, 1.0, || {
        // Reading the values makes a GPU finish the product (on the CPU it borrows them).
        let y = layer.forward(x.clone())?;
        std::hint::black_box(host_values(&y).len());
        Ok(())
    })?;
    Ok(median(&mut calls_per_second.clone()) * 2.0 * (N * N * N) as f64 / 1e9)
}

fn sampling(shapes: &BenchShapes, dim: usize, decode: bool, dev: &Dev) -> Result<Measured> {
    let den_cfg: Box<dyn DenoiserConfig> = parse(MLP_DENOISER)?;
    let cond_cfg: Box<dyn ConditionerConfig> =
        parse("type = \"class_embedding\"\nkeys = [\"label\"]\ndim = 512\ninjection = \"adaln\"")?;
    let sampler = parse::<Box<dyn SamplerConfig>>("type = \"rectified_flow\"")?.build()?;
    let table = conditions(shapes.cells, 2);
    let conditioner = cond_cfg.build(&ConditionerContext {
        conditions: summarize(&table, &[]),
        seed: 0,
        dev: dev.clone(),
    })?;
    let denoiser = den_cfg.build(&DenoiserContext {
        latent_dim: dim,
        condition: Some((512, conditioner.injection())),
        seed: 0,
        dev: dev.clone(),
    })?;
    let vae_cfg: Box<dyn AutoencoderConfig> = parse(&format!(
        "type = \"vae\"\nlatent_dim = {}\nhidden = [512, 256]\nlayer_norm = false\ndropout = 0.0\nzero_inflation = false",
        shapes.latent
    ))?;
    let vae = vae_cfg.build(&AutoencoderContext {
        n_genes: shapes.genes,
        input: InputKind::Continuous,
        seed: 0,
        dev: dev.clone(),
    })?;
    let options = GenerateOptions {
        steps: shapes.steps,
        guidance: 1.0,
        chunk_size: 1024,
        attribute_scales: Vec::new(),
    };
    let identity = LatentStats::identity(dim);
    let libraries = vec![1.0; shapes.cells];
    let mut rng = stream(0, "bench.sampling");
    // One measurement generates all cells; use a shorter budget (each call is long).
    let rates = rate(0.0, shapes.repeats, shapes.cells as f64, || {
        let z = generate_latents(
            denoiser.as_ref(),
            Some(conditioner.as_ref()),
            sampler.as_ref(),
            &table,
            shapes.cells,
            dim,
            options.clone(),
            &mut rng,
            dev,
        )?;
        if decode {
            let x = decode_latents(
                vae.as_ref(),
                &identity,
                z,
                shapes.cells,
                &libraries,
                None,
                options.chunk_size,
            )?;
            std::hint::black_box(x.len());
        }
        Ok(())
    })?;
    Ok(Measured {
        rates,
        flops_per_unit: None,
    })
}

/// Synthetic cells: 10 clusters of gene means (log-normal), Gaussian noise clipped at 0,
/// labels `c0..c9`; `shift` is added to every cluster mean.
fn synthetic_cells(n: usize, genes: usize, seed: u64, shift: f32) -> CellSet {
    let mut centres_rng = stream(0, "bench.evaluation.centres");
    let centres: Vec<f32> = (0..10 * genes)
        .map(|_| (centres_rng.sample::<f32, _>(rand_distr::StandardNormal) - 1.0).exp())
        .collect();
    let mut rng = stream(seed, "bench.evaluation.cells");
    let mut x = Vec::with_capacity(n * genes);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % 10;
        labels.push(format!("c{c}"));
        for g in 0..genes {
            let noise: f32 = rng.sample(rand_distr::StandardNormal);
            x.push((centres[c * genes + g] + shift + 0.5 * noise).max(0.0));
        }
    }
    CellSet {
        x,
        n,
        n_genes: genes,
        labels: Some(labels),
        pcs: Vec::new(),
    }
}

/// One full evaluation of `shapes.cells` generated vs as many reference cells × `shapes.genes`
/// (PCA on as many training cells, every registered evaluator on the generated row and on a
/// real-vs-real control row): evaluations per second (the inverse is the time of one).
fn evaluation(shapes: &BenchShapes) -> Result<f64> {
    let n = shapes.cells;
    let mut train = synthetic_cells(n, shapes.genes, 1, 0.0);
    let mut reference = synthetic_cells(n, shapes.genes, 2, 0.0);
    let mut generated = synthetic_cells(n, shapes.genes, 3, 0.02);
    let mut control = synthetic_cells(n, shapes.genes, 4, 0.0);
    let gene_names: Vec<String> = (0..shapes.genes).map(|g| format!("G{g}")).collect();
    let evaluators: Vec<(String, Box<dyn latentlab_framework::plugin::Evaluator>)> =
        latentlab_framework::registry::names(latentlab_framework::registry::PluginKind::Evaluator)
            .into_iter()
            .map(|name| {
                let config: Box<dyn latentlab_framework::plugin::EvaluatorConfig> =
                    parse(&format!("type = \"{name}\""))?;
                Ok((name.to_string(), config.build()?))
            })
            .collect::<Result<_>>()?;
    let start = Instant::now();
    let projection = Projection::fit(&train, 50, 0)?;
    for cells in [&mut train, &mut reference, &mut generated, &mut control] {
        projection.project(cells)?;
    }
    let ctx = EvalContext {
        train: &train,
        pca_components: projection.k,
        gene_names: &gene_names,
        seed: 0,
        control: None,
        paired: None,
    };
    eprintln!(
        "evaluation: PCA fit + projections {:.1}s",
        start.elapsed().as_secs_f64()
    );
    let candidates = [
        ("generated".to_string(), generated),
        ("control".to_string(), control),
    ];
    for evaluator in evaluators {
        let t = Instant::now();
        let rows = evaluate_rows(
            std::slice::from_ref(&evaluator),
            &reference,
            &candidates,
            &ctx,
        )?;
        if rows.len() != 2 {
            return Err(LatentError::Evaluation(
                "evaluation bench: rows missing".into(),
            ));
        }
        eprintln!(
            "evaluation: {} {:.1}s",
            evaluator.0,
            t.elapsed().as_secs_f64()
        );
        // full-precision values, so speed work can check that results are unchanged
        for row in &rows {
            for m in &row.metrics {
                eprintln!("evaluation:   {}.{} = {:?}", row.name, m.name, m.value);
            }
        }
    }
    Ok(1.0 / start.elapsed().as_secs_f64())
}

/// What [`run`] measured, keyed by case and thread count (as strings, for the JSON).
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// `{case: {threads: steps/s or cells/s}}` (the peer's shape).
    pub rates: BTreeMap<String, BTreeMap<String, f64>>,
    /// `{case: {threads: GFLOP/s}}` for the training steps (nominal linear-layer work).
    pub gflops: BTreeMap<String, BTreeMap<String, f64>>,
    /// `{threads: GFLOP/s}` of a 1024³ matrix product, measured when a case reports GFLOP/s.
    pub sgemm_peak: BTreeMap<String, f64>,
    /// `{case: {threads: [rate, …]}}`: every measurement whose median is in `rates`, when
    /// [`BenchShapes::repeats`] is above one (`evaluation` is timed once and not listed).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub repeats: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
}

/// Runs every case at each thread count.
///
/// # Errors
/// Model or thread-pool errors.
pub fn run(shapes: &BenchShapes, threads: &[usize], cases: &[String]) -> Result<Report> {
    let dev = device(0)?;
    let mut report = Report::default();
    for &t in threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .map_err(|e| LatentError::Incompatible(e.to_string()))?;
        for case in cases {
            let measured = pool.install(|| match case.as_str() {
                "vae_step" => vae_step(shapes, None, &dev),
                "vae_counts_step" => vae_step(shapes, Some(shapes.counts_density), &dev),
                "latent_denoiser_step" => {
                    denoiser_step(shapes, MLP_DENOISER, 512, shapes.latent, &dev)
                }
                "gene_denoiser_step" => {
                    denoiser_step(shapes, MLP_DENOISER, 512, shapes.genes, &dev)
                }
                // Its layers see tokens (16 per cell), not cells: the per-row count would not
                // be its work, so no GFLOP/s.
                "dit_step" => denoiser_step(shapes, DIT_DENOISER, 128, shapes.latent, &dev)
                    .map(|m| Measured { flops_per_unit: None, ..m }),
                "latent_sampling" => sampling(shapes, shapes.latent, true, &dev),
                "gene_sampling" => sampling(shapes, shapes.genes, false, &dev),
                "evaluation" => evaluation(shapes).map(|rate| Measured { rates: vec![rate], flops_per_unit: None }),
                other => Err(LatentError::config("bench", "--case", "vae_step, vae_counts_step, latent_denoiser_step, gene_denoiser_step, dit_step, latent_sampling, gene_sampling, evaluation", other)),
            })?;
            let rate = median(&mut measured.rates.clone());
            report
                .rates
                .entry(case.clone())
                .or_default()
                .insert(t.to_string(), rate);
            if measured.rates.len() > 1 {
                report
                    .repeats
                    .entry(case.clone())
                    .or_default()
                    .insert(t.to_string(), measured.rates);
            }
            if let Some(flops) = measured.flops_per_unit {
                report
                    .gflops
                    .entry(case.clone())
                    .or_default()
                    .insert(t.to_string(), rate * flops / 1e9);
            }
        }
        if !report.gflops.is_empty() {
            let peak = pool.install(|| sgemm_peak(shapes, &dev))?;
            report.sgemm_peak.insert(t.to_string(), peak);
        }
    }
    Ok(report)
}
