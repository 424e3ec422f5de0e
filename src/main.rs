//! The `latentlab` command line: train, sample, evaluate, run (all three), plugins, inspect.

/// mimalloc keeps freed pages for reuse: every training step allocates the same multi-MiB
/// buffers, which the system allocator returns to the OS and page-faults back in (decision 0011).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (the v3 sources libmimalloc-sys 0.1.49
/// builds; its default of 1,000 ms, which a test checks, pins the index).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed pages to the OS. By default it purges them after a delay,
/// so a training or sampling loop page-faults its multi-MiB activations back in at every step,
/// and with transparent huge pages each fault zeroes 2 MiB (6,000–8,000 faults, ~9 % of the
/// latent denoiser's step at 2 threads). Peak memory is unchanged: freed pages are reused.
fn keep_freed_pages() {
    #[allow(unsafe_code)]
    // SAFETY: sets one process-wide integer option of the allocator; no pointers are involved
    // and mimalloc reads options atomically, so any time is valid.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
}

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use latentlab::framework::config::ExperimentConfig;
use latentlab::framework::counterfactual::evaluate_counterfactual;
use latentlab::framework::data::{read_any, summarize, write_h5ad};
use latentlab::framework::device::device;
use latentlab::framework::held_out::evaluate_held_out;
use latentlab::framework::prediction::evaluate_prediction;
use latentlab::framework::registry::{catalog, PluginKind};
use latentlab::framework::run::{load, Run};
use latentlab::framework::run_evaluation::evaluate_run;
use latentlab::framework::sampling::{sample, sample_to_file, ConditionsFrom, SampleRequest};
use latentlab::framework::train::Progress;
use latentlab::framework::train_run::train_run_with;

/// Latent generative models for single-cell omics: an autoencoder compresses expression, a
/// diffusion or flow sampler generates in its latent space. Everything is chosen in one config.
#[derive(Parser)]
#[command(name = "latentlab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train both stages from a config and write a run directory.
    Train {
        /// Experiment config (TOML or JSON).
        #[arg(long)]
        config: PathBuf,
        /// Run directory to create.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing run directory.
        #[arg(long)]
        overwrite: bool,
        /// Continue an interrupted training of the same config and data from its latest snapshot
        /// (kept in `<run>.resume/` every `train.checkpoint_every` steps).
        #[arg(long)]
        resume: bool,
    },
    /// Generate cells from a trained run into an .h5ad file.
    Sample(SampleArgs),
    /// Compare generated cells with real cells and write a report (metrics.json, report.md/html, plots).
    Evaluate {
        /// Run directory from `latentlab train`.
        #[arg(long)]
        run: PathBuf,
        /// Generated cells (.h5ad from `latentlab sample`).
        #[arg(long)]
        generated: PathBuf,
        /// Real reference cells (default: the run's held-out validation split).
        #[arg(long)]
        reference: Option<PathBuf>,
        /// Report directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Train, sample as many cells as the validation split (with its labels), evaluate, report.
    Run {
        /// Experiment config.
        #[arg(long)]
        config: PathBuf,
        /// Output directory (run in OUT/run, cells in OUT/generated.h5ad, report in OUT/report).
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing output directory's run.
        #[arg(long)]
        overwrite: bool,
        /// Continue an interrupted training of the same config and data from its latest snapshot
        /// (kept in `<run>.resume/` every `train.checkpoint_every` steps).
        #[arg(long)]
        resume: bool,
    },
    /// List registered plugins with a summary and an example config.
    Plugins {
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Time the reference cases (DESIGN.md §8) at 1 and 2 threads; names match bench_torch.py.
    Bench {
        /// Print `{"rates": {case: {threads: rate}}}` JSON.
        #[arg(long)]
        json: bool,
        /// Cases to run (default: all).
        #[arg(long = "case")]
        cases: Vec<String>,
        /// Thread counts.
        #[arg(long, default_values_t = vec![1, 2])]
        threads: Vec<usize>,
        /// Seconds per training-step measurement.
        #[arg(long, default_value_t = 2.0)]
        min_seconds: f64,
        /// Timed measurements per case and thread count, after one warm-up; the median is
        /// reported and, above 1, every measurement under `repeats` in the JSON
        /// (`bench_torch.py` reports the median of its `--repeats`, 5 by default; the
        /// `evaluation` case is timed once).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        repeats: u32,
        /// Genes (VAE input, gene-space denoiser width, decoded width).
        #[arg(long, default_value_t = 2000)]
        genes: usize,
        /// Latent width of the latent cases.
        #[arg(long, default_value_t = 64)]
        latent: usize,
        /// Cells generated by the sampling cases.
        #[arg(long, default_value_t = 10_000)]
        cells: usize,
        /// Sampler steps of the sampling cases.
        #[arg(long, default_value_t = 50)]
        steps: usize,
        /// Fraction of non-zero input values in `vae_counts_step` (expression data: 0.05–0.35).
        #[arg(long, default_value_t = 0.15, value_parser = parse_fraction)]
        counts_density: f64,
    },
    /// Describe a data file: cells, genes, encoding, counts vs log-normalized, obs/var/obsm.
    Inspect {
        /// .h5ad file, 10x MTX folder, 10x .h5 or CSV/TSV.
        file: PathBuf,
    },
    /// Convert a Space Ranger output folder (10x HDF5 matrix + spatial/tissue positions) into an
    /// .h5ad with obsm["spatial"] (pixel coordinates of in-tissue spots).
    ImportVisium {
        /// Space Ranger output folder (with filtered_feature_bc_matrix.h5 and spatial/).
        dir: PathBuf,
        /// Output .h5ad.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct SampleArgs {
    /// Run directory from `latentlab train`.
    #[arg(long)]
    run: PathBuf,
    /// Number of cells (without --conditions-from).
    #[arg(long, required_unless_present = "conditions_from")]
    n: Option<usize>,
    /// Fix a condition for every cell, e.g. `--condition bulk_labels="CD14+ Monocyte"`,
    /// `--condition Hours=48`, `--condition perturbation=IFNB+TNF` (repeatable).
    #[arg(long = "condition", value_name = "KEY=VALUE")]
    conditions: Vec<String>,
    /// Generate for every row of this .h5ad with that row's conditions (obs columns, obsm keys).
    #[arg(long, value_name = "FILE.h5ad")]
    conditions_from: Option<PathBuf>,
    /// Override one condition for every row of --conditions-from (e.g. `condition=stim`); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "conditions_from")]
    set: Vec<String>,
    /// Cells generated per row of --conditions-from.
    #[arg(long, default_value_t = 1, requires = "conditions_from")]
    per_row: usize,
    /// Start each row from its own latent mapped back to noise under its original conditions
    /// (deterministic samplers only), then generate under the new ones: a per-cell counterfactual.
    #[arg(long, requires = "conditions_from")]
    invert: bool,
    /// With --invert: fill genes of the run that the file lacks with zeros instead of failing.
    #[arg(long, requires = "invert")]
    allow_missing_genes: bool,
    /// Classifier-free guidance scale (1 = plain conditional).
    #[arg(long)]
    cfg: Option<f32>,
    /// Guidance scale of one attribute, named by a condition key, e.g.
    /// `--cfg-attribute perturbation=3` (repeatable; needs a `combined` conditioner trained with
    /// part_drop_prob > 0; attributes not named take --cfg).
    #[arg(long = "cfg-attribute", value_name = "KEY=SCALE")]
    cfg_attribute: Vec<String>,
    /// Sampler steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Use another sampler with the trained denoiser (e.g. `ddim` for a `ddpm` run).
    #[arg(long)]
    sampler: Option<String>,
    /// Override a sampler config field, e.g. `--sampler-option solver=heun` or
    /// `--sampler-option eta=1` (repeatable).
    #[arg(long = "sampler-option", value_name = "KEY=VALUE")]
    sampler_options: Vec<String>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output .h5ad.
    #[arg(long)]
    out: PathBuf,
}

/// A progress bar on a terminal, nothing otherwise.
struct Bar {
    bar: Option<indicatif::ProgressBar>,
    stage: String,
}

impl Bar {
    fn new() -> Self {
        Self {
            bar: None,
            stage: String::new(),
        }
    }
}

impl Progress for Bar {
    fn step(&mut self, stage: &str, step: u64, total: u64, loss: f32) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        if self.stage != stage {
            if let Some(b) = self.bar.take() {
                b.finish();
            }
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix:>12} [{bar:40}] {pos}/{len} {msg} ({eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(stage.to_string());
            self.bar = Some(b);
            self.stage = stage.to_string();
        }
        if let Some(b) = &self.bar {
            b.set_position(step + 1);
            if step.is_multiple_of(10) {
                b.set_message(format!("loss {loss:.4}"));
            }
            if step + 1 == total {
                b.finish();
            }
        }
    }
}

/// A number in `[0, 1]` (`--counts-density`).
fn parse_fraction(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{text}: expected a fraction between 0 and 1, e.g. 0.15"
        )),
    }
}

fn parse_pairs(flag: &str, items: &[String]) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|s| {
            let (k, v) = s.split_once('=').ok_or_else(|| {
                anyhow!("{flag} {s}: expected KEY=VALUE, e.g. bulk_labels=\"CD14+ Monocyte\" or solver=heun")
            })?;
            Ok((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

fn load_run(dir: &Path) -> Result<Run> {
    latentlab::plugins::link();
    let dev = device(0)?;
    Ok(load(dir, &dev)?)
}

fn run_sample(args: &SampleArgs) -> Result<()> {
    if args.n == Some(0) {
        return Err(anyhow!("--n must be at least 1"));
    }
    if args.per_row == 0 {
        return Err(anyhow!("--per-row must be at least 1"));
    }
    if args.conditions_from.is_some() && args.n.is_some() {
        return Err(anyhow!(
            "--n and --conditions-from exclude each other: with a file, --per-row sets cells per row"
        ));
    }
    let run = load_run(&args.run)?;
    let mut fixed = parse_pairs("--condition", &args.conditions)?;
    fixed.extend(parse_pairs("--set", &args.set)?);
    let request = SampleRequest {
        n: args.n.unwrap_or(0),
        fixed,
        per_cell: None,
        from: args.conditions_from.as_ref().map(|path| ConditionsFrom {
            path: path.clone(),
            per_row: args.per_row,
            invert: args.invert,
            allow_missing_genes: args.allow_missing_genes,
        }),
        steps: args.steps,
        guidance: args.cfg,
        attribute_guidance: parse_pairs("--cfg-attribute", &args.cfg_attribute)?
            .into_iter()
            .map(|(k, v)| {
                v.parse::<f32>()
                    .map(|scale| (k.clone(), scale))
                    .map_err(|_| anyhow!("--cfg-attribute {k}={v}: the scale must be a number"))
            })
            .collect::<Result<_>>()?,
        sampler: args.sampler.clone(),
        sampler_options: parse_pairs("--sampler-option", &args.sampler_options)?,
        seed: args.seed,
    };
    let written = sample_to_file(&run, &request, &args.out)?;
    for warning in &written.warnings {
        eprintln!("warning: {warning}");
    }
    eprintln!(
        "wrote {} cells x {} genes to {}",
        written.n_obs,
        written.n_vars,
        args.out.display()
    );
    Ok(())
}

fn run_all(config_path: &Path, out: &Path, overwrite: bool, resume: bool) -> Result<()> {
    let config = ExperimentConfig::load(config_path)?;
    let run_dir = out.join("run");
    let t = std::time::Instant::now();
    let manifest = train_run_with(&config, &run_dir, overwrite, resume, &mut Bar::new())?;
    eprintln!(
        "trained in {:.1}s: {} training / {} validation cells -> {}",
        t.elapsed().as_secs_f64(),
        manifest.n_train,
        manifest.n_validation,
        run_dir.display()
    );
    eprintln!(
        "stage-1 reconstruction on the validation split: {:?}",
        manifest.reconstruction
    );
    let run = load_run(&run_dir)?;
    // Application protocols replace plain generation (docs/applications.md).
    let t = std::time::Instant::now();
    let protocol = if let Some(hold) = &run.config.data.hold_out {
        let (evaluation, files) = evaluate_held_out(&run, hold, out)?;
        Some((
            evaluation,
            format!("generated the held-out {} cells", hold.key),
            files.generated,
        ))
    } else if let Some(cfg) = &run.config.evaluate.prediction {
        let (evaluation, files) = evaluate_prediction(&run, cfg, out)?;
        Some((
            evaluation,
            "predicted the held-out rows".to_string(),
            files.predicted,
        ))
    } else if let Some(cf) = &run.config.evaluate.counterfactual {
        let (evaluation, files) = evaluate_counterfactual(&run, cf, out)?;
        Some((
            evaluation,
            format!(
                "predicted {} → {} for the held-out cells",
                cf.source, cf.target
            ),
            files.predicted,
        ))
    } else {
        None
    };
    if let Some((evaluation, what, file)) = protocol {
        eprintln!(
            "{what} in {:.2}s -> {}",
            t.elapsed().as_secs_f64(),
            file.display()
        );
        println!(
            "{}",
            latentlab::framework::report::markdown_table(&evaluation)
        );
        eprintln!(
            "report: {}",
            out.join("report").join("index.html").display()
        );
        return Ok(());
    }
    // Mirror the validation split's labels so per-label metrics compare like with like.
    let (n_reference, labels) =
        latentlab::framework::run_evaluation::validation_labels(&run.config)?;
    let per_cell = labels.filter(|(key, _)| run.manifest.conditions.iter().any(|c| &c.key == key));
    let request = SampleRequest {
        n: n_reference,
        fixed: BTreeMap::new(),
        per_cell,
        from: None,
        steps: None,
        guidance: None,
        attribute_guidance: BTreeMap::new(),
        sampler: None,
        sampler_options: BTreeMap::new(),
        seed: config.seed,
    };
    let t = std::time::Instant::now();
    let adata = sample(&run, &request)?.cells;
    let generated = out.join("generated.h5ad");
    write_h5ad(&generated, &adata)?;
    eprintln!(
        "sampled {} cells in {:.2}s -> {}",
        adata.n_obs(),
        t.elapsed().as_secs_f64(),
        generated.display()
    );
    let report = out.join("report");
    let evaluation = evaluate_run(&run, &generated, None, &report)?;
    println!(
        "{}",
        latentlab::framework::report::markdown_table(&evaluation)
    );
    eprintln!("report: {}", report.join("index.html").display());
    Ok(())
}

fn execute(cli: Cli) -> Result<()> {
    latentlab::plugins::link();
    match cli.command {
        Command::Train {
            config,
            out,
            overwrite,
            resume,
        } => {
            let cfg = ExperimentConfig::load(&config)?;
            let manifest = train_run_with(&cfg, &out, overwrite, resume, &mut Bar::new())?;
            eprintln!(
                "wrote run {} ({} training / {} validation cells)",
                out.display(),
                manifest.n_train,
                manifest.n_validation
            );
            eprintln!(
                "stage-1 reconstruction on the validation split: {:?}",
                manifest.reconstruction
            );
        }
        Command::Sample(args) => run_sample(&args)?,
        Command::Evaluate {
            run,
            generated,
            reference,
            out,
        } => {
            let run = load_run(&run)?;
            let evaluation = evaluate_run(&run, &generated, reference.as_deref(), &out)?;
            println!(
                "{}",
                latentlab::framework::report::markdown_table(&evaluation)
            );
            eprintln!("report: {}", out.join("index.html").display());
        }
        Command::Run {
            config,
            out,
            overwrite,
            resume,
        } => run_all(&config, &out, overwrite, resume)?,
        Command::Plugins { json } => {
            let entries = catalog();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&entries).context("serializing the catalog")?
                );
            } else {
                for kind in PluginKind::ALL {
                    println!(
                        "{} plugins (config section [{}]):",
                        format!("{kind:?}").to_lowercase(),
                        kind.section()
                    );
                    for e in entries.iter().filter(|e| e.kind == kind) {
                        println!("  {:<24} {}", e.name, e.summary);
                    }
                }
            }
        }
        Command::Bench {
            json,
            cases,
            threads,
            min_seconds,
            repeats,
            genes,
            latent,
            cells,
            steps,
            counts_density,
        } => {
            let cases = if cases.is_empty() {
                [
                    "vae_step",
                    "vae_counts_step",
                    "latent_denoiser_step",
                    "gene_denoiser_step",
                    "dit_step",
                    "latent_sampling",
                    "gene_sampling",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect()
            } else {
                cases
            };
            let shapes = latentlab::bench::BenchShapes {
                min_seconds,
                repeats: repeats as usize,
                genes,
                latent,
                cells,
                steps,
                counts_density,
                ..Default::default()
            };
            let report = latentlab::bench::run(&shapes, &threads, &cases)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                for (case, by_threads) in &report.rates {
                    let cols: Vec<String> = by_threads
                        .iter()
                        .map(|(t, r)| {
                            let gflops = report.gflops.get(case).and_then(|g| g.get(t));
                            let peak = report.sgemm_peak.get(t);
                            match (gflops, peak) {
                                (Some(g), Some(p)) => format!(
                                    "{t} thread(s): {r:.2} ({g:.1} GFLOP/s, {:.0} % of sgemm peak)",
                                    100.0 * g / p
                                ),
                                _ => format!("{t} thread(s): {r:.2}"),
                            }
                        })
                        .collect();
                    println!("{case:<22} {}", cols.join("   "));
                }
                for (t, p) in &report.sgemm_peak {
                    println!(
                        "{:<22} {t} thread(s): {p:.1} GFLOP/s (1024³ product)",
                        "sgemm peak"
                    );
                }
            }
        }
        Command::Inspect { file } => {
            let adata = read_any(&file)?;
            println!("{}", summarize(&adata, &file));
        }
        Command::ImportVisium { dir, out } => {
            let adata = latentlab::framework::data::read_visium(&dir)?;
            if !adata.obsm.contains_key("spatial") {
                return Err(anyhow!(
                    "{}: no spatial/tissue_positions_list.csv (or tissue_positions.csv) with the barcodes; point at the Space Ranger output folder",
                    dir.display()
                ));
            }
            write_h5ad(&out, &adata)?;
            eprintln!(
                "wrote {} spots x {} genes with obsm[\"spatial\"] to {}",
                adata.n_obs(),
                adata.n_vars(),
                out.display()
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    keep_freed_pages();
    let cli = Cli::parse();
    // On a pool worker: parallel kernels started from the main thread park it on a lock per call.
    // `bench` builds a pool per thread count and times inside it.
    let result = if matches!(cli.command, Command::Bench { .. }) {
        execute(cli)
    } else {
        latentlab::framework::parallel::on_worker_thread(|| execute(cli))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// [`super::MI_OPTION_PURGE_DELAY`] is the purge delay: it holds that option's documented
    /// default (1,000 ms in the bundled sources) until [`super::keep_freed_pages`] turns purging off.
    #[test]
    #[allow(unsafe_code)]
    fn the_allocator_option_set_is_the_purge_delay() {
        // SAFETY: reads and sets integer allocator options; no pointers are involved.
        let before = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        super::keep_freed_pages();
        // SAFETY: as above.
        let after = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!((before, after), (1000, -1));
    }
}
