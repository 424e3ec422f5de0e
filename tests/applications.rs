//! The application configs through the CLI with few steps: `latentlab run` on each, then
//! `sample --conditions-from` with the application's flags, and the bad inputs a user will make
//! (one-line errors, non-zero exit, no output file).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latentlab"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("the latentlab binary runs")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn fails(out: &Output, needle: &str, output_file: &Path) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure for `{needle}`");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got:\n{err}");
    assert!(
        err.contains(needle),
        "error should mention `{needle}`:\n{err}"
    );
    assert!(
        !output_file.exists(),
        "a failed command left {output_file:?}"
    );
}

/// The shipped config with its training shortened to `steps` (an untrained stage 1 stays so).
fn short_config(name: &str, dir: &Path, steps: usize) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("configs").join(name)).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("autoencoder_steps") && l.trim() != "autoencoder_steps = 0" {
                format!("autoencoder_steps = {steps}")
            } else if l.starts_with("denoiser_steps") {
                format!("denoiser_steps = {steps}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `latentlab run` on the shortened config into `dir/name`; checks that metrics.json names every
/// row or metric in `expected`. Returns the output directory.
fn run_application(config: &str, dir: &Path, steps: usize, expected: &[&str]) -> PathBuf {
    let path = short_config(config, dir, steps);
    let out = dir.join(config.trim_end_matches(".toml"));
    ok(
        &run(&[
            "run",
            "--config",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]),
        config,
    );
    let metrics = std::fs::read_to_string(out.join("report").join("metrics.json")).unwrap();
    for needle in expected {
        assert!(
            metrics.contains(needle),
            "{config}: metrics.json lacks {needle}"
        );
    }
    out
}

#[test]
fn perturbation_response_end_to_end_and_bad_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = run_application(
        "kang_perturbation.toml",
        dir,
        40,
        &[
            "delta_pearson_top_de",
            "baseline: no change",
            "baseline: additive mean shift",
            "control: real training stim cells",
        ],
    );
    let heldout = out.join("heldout_ctrl.h5ad");
    assert!(heldout.exists() && out.join("predicted_stim.h5ad").exists());

    // The user's own command for the same prediction, with several samples per cell.
    let run_dir = out.join("run");
    let pred = dir.join("pred.h5ad");
    let (r, h, p) = (
        run_dir.to_str().unwrap(),
        heldout.to_str().unwrap(),
        pred.to_str().unwrap(),
    );
    ok(
        &run(&[
            "sample",
            "--run",
            r,
            "--conditions-from",
            h,
            "--set",
            "condition=stim",
            "--invert",
            "--per-row",
            "2",
            "--out",
            p,
        ]),
        "sample --invert",
    );
    let inspect = String::from_utf8_lossy(&run(&["inspect", p]).stdout).into_owned();
    assert!(inspect.contains("source_cell"), "{inspect}");

    // Bad inputs: unknown perturbation, condition column missing in the file, --n with a file.
    let bad = dir.join("bad.h5ad");
    let b = bad.to_str().unwrap();
    fails(
        &run(&[
            "sample",
            "--run",
            r,
            "--conditions-from",
            h,
            "--set",
            "condition=TNF",
            "--out",
            b,
        ]),
        "known perturbations: ctrl, stim",
        &bad,
    );
    let pbmc = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pbmc68k_reduced/train.h5ad");
    fails(
        &run(&[
            "sample",
            "--run",
            r,
            "--conditions-from",
            pbmc.to_str().unwrap(),
            "--out",
            b,
        ]),
        "\"condition\" not found",
        &bad,
    );
    fails(
        &run(&[
            "sample",
            "--run",
            r,
            "--conditions-from",
            h,
            "--n",
            "5",
            "--out",
            b,
        ]),
        "exclude each other",
        &bad,
    );
    // Argument errors come from clap (usage text), still non-zero and naming the flag.
    let out = run(&["sample", "--run", r, "--set", "condition=stim", "--out", b]);
    assert!(!out.status.success() && !bad.exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--conditions-from"));
}

#[test]
fn time_course_held_out_time_end_to_end_and_extrapolation_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = run_application(
        "hsmm_time_course.toml",
        dir,
        30,
        &[
            "control: other half of the held-out cells",
            "baseline: nearest observed Hours = 24",
            "baseline: nearest observed Hours = 72",
            "pooled",
            "linearly interpolated mean",
        ],
    );
    for plot in ["time_grid_real.png", "time_grid_generated.svg"] {
        assert!(
            out.join("report").join(plot).exists(),
            "report lacks {plot}"
        );
    }
    let manifest = std::fs::read_to_string(out.join("run").join("manifest.json")).unwrap();
    assert!(
        manifest.contains("\"n_train\": 162"),
        "48 h cells must not be trained on"
    );
    // A time outside the trained range is generated with a warning, not an error.
    let r = out.join("run");
    let late = dir.join("late.h5ad");
    let log = ok(
        &run(&[
            "sample",
            "--run",
            r.to_str().unwrap(),
            "--n",
            "5",
            "--condition",
            "Hours=96",
            "--out",
            late.to_str().unwrap(),
        ]),
        "sample Hours=96",
    );
    assert!(log.contains("extrapolates"), "{log}");
    // A numeric condition without a value is an error naming the fix.
    let bad = dir.join("bad.h5ad");
    fails(
        &run(&[
            "sample",
            "--run",
            r.to_str().unwrap(),
            "--n",
            "5",
            "--out",
            bad.to_str().unwrap(),
        ]),
        "--condition Hours=VALUE",
        &bad,
    );
}

#[test]
fn spatial_prediction_end_to_end_and_visium_import() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = run_application(
        "visium_spatial.toml",
        dir,
        30,
        &[
            "per_feature_pearson",
            "interval_coverage_80",
            "baseline: mean of 6 nearest training rows",
            "baseline: ridge regression",
            "baseline: training mean",
        ],
    );
    let tissue_svgs = std::fs::read_dir(out.join("report"))
        .unwrap()
        .filter(|e| {
            let name = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .into_owned();
            name.starts_with("tissue_") && name.ends_with("_predicted.svg")
        })
        .count();
    assert_eq!(tissue_svgs, 3, "three predicted tissue maps expected");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spots = dir.join("spots.h5ad");
    ok(
        &run(&[
            "import-visium",
            root.join("data/visium_spaceranger_sample")
                .to_str()
                .unwrap(),
            "--out",
            spots.to_str().unwrap(),
        ]),
        "import-visium",
    );
    let inspect =
        String::from_utf8_lossy(&run(&["inspect", spots.to_str().unwrap()]).stdout).into_owned();
    assert!(inspect.contains("obsm/spatial: array 100 × 2"), "{inspect}");
    // Sampling a spatial run without coordinates names the fix; a file without obsm["spatial"] too.
    let r = out.join("run");
    let bad = dir.join("bad.h5ad");
    fails(
        &run(&[
            "sample",
            "--run",
            r.to_str().unwrap(),
            "--n",
            "3",
            "--out",
            bad.to_str().unwrap(),
        ]),
        "--conditions-from",
        &bad,
    );
    fails(
        &run(&[
            "sample",
            "--run",
            r.to_str().unwrap(),
            "--conditions-from",
            root.join("data/hsmm_myoblast/cells.h5ad").to_str().unwrap(),
            "--out",
            bad.to_str().unwrap(),
        ]),
        "obsm key \"spatial\" not found",
        &bad,
    );
}

#[test]
fn rna_to_protein_end_to_end_and_bad_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = run_application(
        "cite_rna_to_protein.toml",
        dir,
        30,
        &[
            "per_feature_pearson",
            "interval_coverage_80",
            "baseline: mean of 10 nearest training rows",
            "baseline: ridge regression",
        ],
    );
    // The user's own command: 3 protein panels per held-out cell, from its RNA.
    let r = out.join("run");
    let heldout = out.join("heldout.h5ad");
    let pred = dir.join("proteins.h5ad");
    let (r, h, p) = (
        r.to_str().unwrap(),
        heldout.to_str().unwrap(),
        pred.to_str().unwrap(),
    );
    ok(
        &run(&[
            "sample",
            "--run",
            r,
            "--conditions-from",
            h,
            "--per-row",
            "3",
            "--out",
            p,
        ]),
        "sample --per-row",
    );
    let inspect = String::from_utf8_lossy(&run(&["inspect", p]).stdout).into_owned();
    assert!(
        inspect.contains("obsm/protein_expression: dataframe 120 × 14")
            && inspect.contains("CD3_TotalSeqB")
            && inspect.contains("source_cell"),
        "{inspect}"
    );

    // Bad inputs: cells with other gene identifiers, no cells given, a fixed RNA value, and
    // inverting cells whose protein panel is absent.
    let bad = dir.join("bad.h5ad");
    let b = bad.to_str().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hsmm = root.join("data/hsmm_myoblast/cells.h5ad");
    fails(
        &run(&[
            "sample",
            "--run",
            r,
            "--conditions-from",
            hsmm.to_str().unwrap(),
            "--out",
            b,
        ]),
        "--allow-missing-genes",
        &bad,
    );
    fails(
        &run(&["sample", "--run", r, "--n", "3", "--out", b]),
        "--conditions-from",
        &bad,
    );
    fails(
        &run(&[
            "sample",
            "--run",
            r,
            "--conditions-from",
            h,
            "--set",
            "rna=1",
            "--out",
            b,
        ]),
        "another modality",
        &bad,
    );
    let pbmc = root.join("data/pbmc68k_reduced/train.h5ad");
    fails(
        &run(&[
            "sample",
            "--run",
            r,
            "--conditions-from",
            pbmc.to_str().unwrap(),
            "--allow-missing-genes",
            "--invert",
            "--out",
            b,
        ]),
        "obsm \"protein_expression\" not found",
        &bad,
    );
}
