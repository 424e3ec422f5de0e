//! End to end through the CLI binary on the shipped PBMC data (small step counts): train →
//! sample → evaluate, plus the bad invocations a user will make. Every failure must exit non-zero
//! with a one-line cause and leave no partial output behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_latentlab"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .output()
        .expect("the latentlab binary runs")
}

fn data(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(rel)
        .display()
        .to_string()
}

fn tiny_config(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"seed = 1
[data]
path = "{}"
[autoencoder]
type = "vae"
latent_dim = 8
hidden = [64, 32]
[denoiser]
type = "mlp"
width = 64
blocks = 1
[sampler]
type = "ddpm"
train_steps = 100
steps = 20
[conditioner]
type = "class_embedding"
keys = ["bulk_labels"]
dim = 16
[train]
autoencoder_steps = 30
denoiser_steps = 30
batch_size = 64
validate_every = 15
{extra}"#,
        data("pbmc68k_reduced/train.h5ad")
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// [`tiny_config`] with each `(from, to)` of `edits` replaced in its text, in order.
fn tiny_config_edited(dir: &Path, extra: &str, edits: &[(&str, &str)]) -> PathBuf {
    let path = tiny_config(dir, extra);
    let text = edits.iter().fold(
        std::fs::read_to_string(&path).unwrap(),
        |text, (from, to)| text.replace(from, to),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn assert_one_line_failure(out: &Output, needle: &str) {
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got:\n{err}");
    assert!(
        err.contains(needle),
        "error should mention `{needle}`:\n{err}"
    );
}

/// `sample_to_file` (what `latentlab sample` runs: cells decoded a chunk at a time straight into
/// the file) writes the bytes of `sample`'s in-memory cells written whole, here over three
/// chunks of 16 rows.
fn sampling_to_a_file_gives_the_bytes_of_sampling_in_memory(run_dir: &Path) {
    use latentlab::framework::data::write_h5ad;
    use latentlab::framework::sampling::{sample, sample_to_file, SampleRequest};
    latentlab::plugins::link();
    let dev = latentlab::framework::device::device(0).unwrap();
    let mut trained = latentlab::framework::run::load(run_dir, &dev).unwrap();
    trained.config.sample.chunk_size = 16;
    let request = SampleRequest {
        n: 40,
        fixed: [("bulk_labels".to_string(), "CD14+ Monocyte".to_string())].into(),
        per_cell: None,
        from: None,
        steps: Some(4),
        guidance: None,
        attribute_guidance: Default::default(),
        sampler: None,
        sampler_options: Default::default(),
        seed: 11,
    };
    let dir = run_dir.with_file_name("streamed");
    std::fs::create_dir_all(&dir).unwrap();
    let (streamed, whole) = (dir.join("streamed.h5ad"), dir.join("whole.h5ad"));
    let written = sample_to_file(&trained, &request, &streamed).unwrap();
    let in_memory = sample(&trained, &request).unwrap();
    write_h5ad(&whole, &in_memory.cells).unwrap();
    assert_eq!(
        (written.n_obs, written.n_vars),
        (in_memory.cells.n_obs(), in_memory.cells.n_vars())
    );
    assert_eq!(written.warnings, in_memory.warnings);
    assert_eq!(
        std::fs::read(&streamed).unwrap(),
        std::fs::read(&whole).unwrap()
    );
}

#[test]
fn train_sample_evaluate_and_bad_invocations() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = tiny_config(dir, "");
    let run_dir = dir.join("run");
    let out = run(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "config.toml",
        "manifest.json",
        "weights.safetensors",
        "genes.txt",
        "latent_stats.json",
        "curves.csv",
        "split.json",
    ] {
        assert!(run_dir.join(f).exists(), "run is missing {f}");
    }

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .unwrap();
    let r = manifest["reconstruction"]["gene_mean_pearson"]
        .as_f64()
        .expect("stage-1 reconstruction quality in the manifest");
    assert!(r.is_finite() && r <= 1.0, "{r}");
    let nll = manifest["reconstruction"]["validation_reconstruction"]
        .as_f64()
        .expect("held-out reconstruction loss in the manifest");
    assert!(nll.is_finite(), "{nll}");

    // Training into an existing run directory without --overwrite is refused.
    let again = run(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert_one_line_failure(&again, "--overwrite");

    let cells = dir.join("cells.h5ad");
    let out = run(&[
        "sample",
        "--run",
        run_dir.to_str().unwrap(),
        "--n",
        "40",
        "--condition",
        "bulk_labels=CD14+ Monocyte",
        "--out",
        cells.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "sample failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cells.exists());
    sampling_to_a_file_gives_the_bytes_of_sampling_in_memory(&run_dir);

    // DDPM-trained denoiser sampled with DDIM in few steps, with guidance.
    let ddim = dir.join("ddim.h5ad");
    let out = run(&[
        "sample",
        "--run",
        run_dir.to_str().unwrap(),
        "--n",
        "20",
        "--sampler",
        "ddim",
        "--steps",
        "5",
        "--cfg",
        "2.0",
        "--out",
        ddim.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "ddim sample failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Per-attribute guidance needs a combined conditioner trained with part dropout.
    let bad = dir.join("bad.h5ad");
    for (setting, needle) in [
        ("bulk_labels=2", "part_drop_prob"),
        ("bulk_labels", "KEY=VALUE"),
        ("bulk_labels=x", "must be a number"),
    ] {
        let out = run(&[
            "sample",
            "--run",
            run_dir.to_str().unwrap(),
            "--n",
            "5",
            "--cfg-attribute",
            setting,
            "--out",
            bad.to_str().unwrap(),
        ]);
        assert_one_line_failure(&out, needle);
        assert!(!bad.exists());
    }

    // Sampler fields switch at sampling time (DDIM with eta = 1); unknown fields are refused.
    for (option, ok) in [("eta=1", true), ("nonsense=1", false)] {
        let out = run(&[
            "sample",
            "--run",
            run_dir.to_str().unwrap(),
            "--n",
            "5",
            "--sampler",
            "ddim",
            "--sampler-option",
            option,
            "--steps",
            "5",
            "--out",
            bad.to_str().unwrap(),
        ]);
        if ok {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::remove_file(&bad).unwrap();
        } else {
            assert_one_line_failure(&out, "nonsense");
            assert!(!bad.exists());
        }
    }

    // A flow sampler on a diffusion-trained denoiser is refused.
    let out = run(&[
        "sample",
        "--run",
        run_dir.to_str().unwrap(),
        "--n",
        "5",
        "--sampler",
        "rectified_flow",
        "--out",
        bad.to_str().unwrap(),
    ]);
    assert_one_line_failure(&out, "rectified_flow");
    assert!(!bad.exists());

    // Unknown condition value and key.
    let out = run(&[
        "sample",
        "--run",
        run_dir.to_str().unwrap(),
        "--n",
        "5",
        "--condition",
        "bulk_labels=Neuron",
        "--out",
        bad.to_str().unwrap(),
    ]);
    assert_one_line_failure(&out, "Neuron");
    let out = run(&[
        "sample",
        "--run",
        run_dir.to_str().unwrap(),
        "--n",
        "5",
        "--condition",
        "tissue=lung",
        "--out",
        bad.to_str().unwrap(),
    ]);
    assert_one_line_failure(&out, "tissue");
    assert!(!bad.exists());

    let report = dir.join("report");
    let out = run(&[
        "evaluate",
        "--run",
        run_dir.to_str().unwrap(),
        "--generated",
        cells.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "evaluate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "metrics.json",
        "report.md",
        "index.html",
        "pca_real_vs_generated.png",
        "latent_pca_by_label.png",
        "latent_pca_by_label.svg",
        "mean_variance.png",
        "pca_real_vs_generated.svg",
        "gene_mean.svg",
        "roc_two_sample.png",
        "roc_two_sample.svg",
    ] {
        assert!(report.join(f).exists(), "report is missing {f}");
    }
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    for row in [
        "generated",
        "control: real training cells",
        "baseline: per-label gaussian",
        "baseline: autoencoder prior decoded",
    ] {
        assert!(md.contains(row), "report lacks row {row}");
    }

    // Gene mismatch between the run and a reference file.
    let other = data("kang2018_ifnb/train.h5ad");
    let out = run(&[
        "evaluate",
        "--run",
        run_dir.to_str().unwrap(),
        "--generated",
        cells.to_str().unwrap(),
        "--reference",
        &other,
        "--out",
        dir.join("r2").to_str().unwrap(),
    ]);
    assert_one_line_failure(&out, "gene");
    assert!(!dir.join("r2").exists());

    // Missing files.
    let out = run(&[
        "train",
        "--config",
        dir.join("nope.toml").to_str().unwrap(),
        "--out",
        dir.join("x").to_str().unwrap(),
    ]);
    assert_one_line_failure(&out, "nope.toml");
    let out = run(&[
        "sample",
        "--run",
        dir.join("no_run").to_str().unwrap(),
        "--n",
        "3",
        "--out",
        bad.to_str().unwrap(),
    ]);
    assert_one_line_failure(&out, "no_run");
}

#[test]
fn config_errors_are_one_line_and_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let vae = "type = \"vae\"\nlatent_dim = 8\nhidden = [64, 32]";
    // (what, text replacements in the tiny config, what the error must name)
    type Edits<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, Edits, &str); 6] = [
        // Unknown field.
        (
            "unknown field",
            &[("batch_size = 64", "batch_size = 64\nlearning_rate_typo = 3")],
            "learning_rate_typo",
        ),
        // A value out of range: zero shards.
        (
            "zero shards",
            &[("batch_size = 64", "batch_size = 64\nshards = 0")],
            "train.shards",
        ),
        // Unknown plugin.
        (
            "unknown plugin",
            &[("type = \"ddpm\"", "type = \"ddpmx\"")],
            "ddpmx",
        ),
        // A count likelihood on log-normalized X is refused with the fix.
        (
            "counts on log-normalized X",
            &[("type = \"vae\"", "type = \"nb_vae\"")],
            "layers/counts",
        ),
        // Missing obs key.
        (
            "missing obs key",
            &[("keys = [\"bulk_labels\"]", "keys = [\"cell_type\"]")],
            "cell_type",
        ),
        // Joint fine-tuning of an autoencoder without an encoder is refused at load.
        (
            "joint without an encoder",
            &[
                (vae, "type = \"identity\""),
                (
                    "autoencoder_steps = 30",
                    "autoencoder_steps = 0\njoint_steps = 5",
                ),
            ],
            "joint_steps",
        ),
    ];
    for (i, (what, edits, needle)) in cases.into_iter().enumerate() {
        let text = edits.iter().fold(
            std::fs::read_to_string(tiny_config(dir, "")).unwrap(),
            |text, (from, to)| {
                assert!(text.contains(from), "{what}: `{from}` not in the config");
                text.replace(from, to)
            },
        );
        let config = dir.join(format!("c{i}.toml"));
        std::fs::write(&config, text).unwrap();
        let out_dir = dir.join(format!("out{i}"));
        let out = run(&[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        assert_one_line_failure(&out, needle);
        assert!(!out_dir.exists(), "{what}: partial output left behind");
    }
}

#[test]
fn plugins_and_inspect() {
    let out = run(&["plugins", "--json"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for n in [
        "vae",
        "mlp",
        "ddpm",
        "ddim",
        "rectified_flow",
        "class_embedding",
        "distribution",
    ] {
        assert!(names.contains(&n), "catalog lacks {n}");
    }
    let out = run(&["inspect", &data("pbmc68k_reduced/train.h5ad")]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("560") && text.contains("bulk_labels"),
        "{text}"
    );
    let out = run(&["inspect", &data("README.md")]);
    assert!(!out.status.success());
}

/// The shipped VQ-GAN config with short stages, the adversary switched on after 3 steps, and
/// `edit` applied to the parsed config.
fn short_vq_gan(dir: &Path, name: &str, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/vq_gan_rectified_flow.toml");
    let mut config: toml::Table = std::fs::read_to_string(shipped).unwrap().parse().unwrap();
    config["data"]["path"] = data("pbmc68k_reduced/train.h5ad").into();
    let train = config["train"].as_table_mut().unwrap();
    for (key, value) in [
        ("autoencoder_steps", 6),
        ("denoiser_steps", 4),
        ("batch_size", 64),
        ("validate_every", 3),
    ] {
        train.insert(key.into(), value.into());
    }
    config["autoencoder"]["adversarial_start"] = 3.into();
    edit(&mut config);
    let path = dir.join(name);
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    path
}

#[test]
fn vq_gan_config_trains_a_few_steps_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = short_vq_gan(dir, "vq_gan.toml", |_| {});
    let run_dir = dir.join("run");
    let out = run(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let curves = std::fs::read_to_string(run_dir.join("curves.csv")).unwrap();
    for name in [
        "train_perplexity",
        "train_codes_used",
        "train_adversarial",
        "train_adaptive_weight",
        "train_adversary_loss",
    ] {
        assert!(curves.contains(name), "curves.csv lacks {name}");
    }
    let out = run(&[
        "sample",
        "--run",
        run_dir.to_str().unwrap(),
        "--n",
        "5",
        "--out",
        dir.join("cells.h5ad").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "sample failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A warm-up at or beyond the stage-1 steps is refused in one line, before anything is written.
    let bad = short_vq_gan(dir, "bad.toml", |c| {
        c["autoencoder"]["adversarial_start"] = 6.into();
    });
    let out = run(&[
        "train",
        "--config",
        bad.to_str().unwrap(),
        "--out",
        dir.join("bad").to_str().unwrap(),
    ]);
    assert_one_line_failure(&out, "adversarial_start");
    assert!(!dir.join("bad").exists());
}

/// `train` keeps snapshots while training; after the process is killed mid-stage-2,
/// `train --resume` finishes the run from the latest snapshot (every step logged once, snapshots
/// removed). Resuming with nothing to resume, or with a changed config, is refused by name.
#[test]
fn train_resume_continues_a_killed_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = tiny_config_edited(
        dir,
        "checkpoint_every = 20",
        &[("denoiser_steps = 30", "denoiser_steps = 1500")],
    );
    let c = config.to_str().unwrap();
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    let state = dir.join("run.resume");

    let mut child = bin()
        .args(["train", "--config", c, "--out", o])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !state.join("denoiser.json").exists() {
        assert!(
            started.elapsed().as_secs() < 300,
            "no stage-2 snapshot appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before it could be interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "a killed training must not leave a run");

    // A changed config is refused, naming the field; the snapshot survives.
    let changed = dir.join("changed.toml");
    std::fs::write(
        &changed,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("batch_size = 64", "batch_size = 32"),
    )
    .unwrap();
    let refused = run(&[
        "train",
        "--config",
        changed.to_str().unwrap(),
        "--out",
        o,
        "--resume",
    ]);
    assert_one_line_failure(&refused, "train.batch_size");
    assert!(state.join("fingerprint.json").exists());

    let resumed = run(&["train", "--config", c, "--out", o, "--resume"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(
        !state.exists(),
        "snapshots are removed once the run is written"
    );
    let curves = std::fs::read_to_string(out.join("curves.csv")).unwrap();
    let steps: Vec<u64> = curves
        .lines()
        .filter(|l| l.starts_with("denoiser,") && l.contains(",train_loss,"))
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(steps, (0..1500).collect::<Vec<_>>());

    let nothing = run(&[
        "train",
        "--config",
        c,
        "--out",
        dir.join("other").to_str().unwrap(),
        "--resume",
    ]);
    assert_one_line_failure(&nothing, "no interrupted training to resume");
    assert!(!dir.join("other").exists());
}

/// Stage-2 batches of 256 rows with dropout in the denoiser: with `train.shards = 2` the weights
/// written are the same bytes at one and two threads; with the default split (two shards from
/// two threads up, decision 0029) the same bytes at two and three threads and from one
/// two-thread run to the next.
#[test]
fn training_writes_the_same_weights_at_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = |shards: &str| {
        tiny_config_edited(
            dir,
            "",
            &[
                ("blocks = 1", "blocks = 1\ndropout = 0.2"),
                ("batch_size = 64", &format!("batch_size = 256{shards}")),
            ],
        )
    };
    let weights = |config: &Path, threads: &str, name: &str| {
        let out = dir.join(name);
        let done = bin()
            .env("RAYON_NUM_THREADS", threads)
            .args(["train", "--config", config.to_str().unwrap(), "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        std::fs::read(out.join("weights.safetensors")).unwrap()
    };
    let fixed = config("\nshards = 2");
    let one = weights(&fixed, "1", "one");
    assert!(
        one == weights(&fixed, "2", "two"),
        "two threads changed the weights of a fixed split"
    );
    let default = config("");
    let two = weights(&default, "2", "default two");
    assert!(
        two == weights(&default, "3", "default three"),
        "three threads changed the weights of the default split"
    );
    assert!(
        two == weights(&default, "2", "again"),
        "a second two-thread run changed the weights"
    );
}

/// A run with a `combined` conditioner trained with per-part dropout samples with one guidance
/// scale per attribute; an attribute no part covers is refused with the attributes listed.
#[test]
fn per_attribute_guidance_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = std::fs::read_to_string(tiny_config(dir, ""))
        .unwrap()
        .replace(
            "[conditioner]\ntype = \"class_embedding\"\nkeys = [\"bulk_labels\"]\ndim = 16",
            "[conditioner]\ntype = \"combined\"\npart_drop_prob = 0.2\n\
         [[conditioner.parts]]\ntype = \"class_embedding\"\nkeys = [\"bulk_labels\"]\ndim = 16\n\
         [[conditioner.parts]]\ntype = \"class_embedding\"\nkeys = [\"phase\"]\ndim = 16",
        );
    assert!(text.contains("part_drop_prob"));
    std::fs::write(dir.join("combined.toml"), text).unwrap();
    let run_dir = dir.join("run");
    let out = run(&[
        "train",
        "--config",
        dir.join("combined.toml").to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cells = dir.join("cells.h5ad");
    let sample = |attribute: &str| {
        run(&[
            "sample",
            "--run",
            run_dir.to_str().unwrap(),
            "--n",
            "12",
            "--steps",
            "5",
            "--cfg",
            "1.5",
            "--cfg-attribute",
            attribute,
            "--out",
            cells.to_str().unwrap(),
        ])
    };
    let out = sample("phase=3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cells.exists());
    std::fs::remove_file(&cells).unwrap();
    let out = sample("louvain=3");
    assert_one_line_failure(&out, "bulk_labels, phase");
    assert!(!cells.exists());
}

#[test]
fn streamed_training_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = tiny_config(
        dir,
        "joint_steps = 4\n[data.streaming]\nchunk_cells = 50\nshuffle_chunks = 2\nmax_validation_cells = 60\n",
    );
    let out_dir = dir.join("run");
    let out = run(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The report compares with the capped validation subset and says so.
    let report = std::fs::read_to_string(out_dir.join("report/report.md")).unwrap();
    assert!(
        report.contains("(60 cells, a seeded sample of it"),
        "{report}"
    );
    let manifest = std::fs::read_to_string(out_dir.join("run/manifest.json")).unwrap();
    assert!(manifest.contains("\"n_validation\": 112"), "{manifest}");
    let curves = std::fs::read_to_string(out_dir.join("run/curves.csv")).unwrap();
    assert!(
        curves.contains("joint,"),
        "the joint phase ran on streamed cells"
    );

    // What cannot be streamed is refused in one line, before any output exists.
    let csc = std::fs::read_to_string(&config)
        .unwrap()
        .replace("train.h5ad", "variants/train_csc.h5ad");
    let csc_config = dir.join("csc.toml");
    std::fs::write(&csc_config, csc).unwrap();
    let refused = dir.join("refused");
    let out = run(&[
        "train",
        "--config",
        csc_config.to_str().unwrap(),
        "--out",
        refused.to_str().unwrap(),
    ]);
    assert_one_line_failure(&out, "streaming needs CSR or dense storage");
    assert!(!refused.exists());
}

/// `bench --json` prints the peer's `rates` shape plus GFLOP/s of the training cases and the
/// sgemm peak they are compared with (200 genes, to stay quick); with `--repeats` it lists every
/// measurement and reports their median.
#[test]
fn bench_reports_rates_gflops_and_the_sgemm_peak() {
    let bench = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "bench",
            "--json",
            "--case",
            "vae_step",
            "--threads",
            "1",
            "--min-seconds",
            "0",
            "--genes",
            "200",
        ];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let report = bench(&[]);
    let positive = |v: &serde_json::Value| v.as_f64().is_some_and(|x| x.is_finite() && x > 0.0);
    assert!(positive(&report["rates"]["vae_step"]["1"]), "{report}");
    assert!(positive(&report["gflops"]["vae_step"]["1"]), "{report}");
    assert!(positive(&report["sgemm_peak"]["1"]), "{report}");
    assert!(
        report.get("repeats").is_none(),
        "one measurement lists no repeats: {report}"
    );

    // Three measurements: all listed, and the reported rate is their median.
    let report = bench(&["--repeats", "3"]);
    let mut all: Vec<f64> = report["repeats"]["vae_step"]["1"]
        .as_array()
        .unwrap_or_else(|| panic!("no repeats: {report}"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(all.len(), 3, "{report}");
    assert!(all.iter().all(|x| x.is_finite() && *x > 0.0), "{report}");
    all.sort_by(f64::total_cmp);
    assert_eq!(report["rates"]["vae_step"]["1"].as_f64(), Some(all[1]));

    let refused = run(&["bench", "--repeats", "0", "--case", "vae_step"]);
    assert!(!refused.status.success());

    // The VAE step on expression-like input (its first layer's sparse products) at a chosen
    // density; a density outside [0, 1] is refused with the flag named.
    let report = bench(&["--case", "vae_counts_step", "--counts-density", "0.1"]);
    assert!(
        positive(&report["rates"]["vae_counts_step"]["1"]),
        "{report}"
    );
    assert!(
        positive(&report["gflops"]["vae_counts_step"]["1"]),
        "{report}"
    );
    let refused = run(&[
        "bench",
        "--case",
        "vae_counts_step",
        "--counts-density",
        "1.5",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--counts-density"));
}
