//! Tests: every plot function writes a valid PNG and SVG.

use super::*;
use std::path::Path;

fn check(path: &Path) {
    let bytes = std::fs::read(path).expect("read plot");
    assert!(bytes.len() > 1000, "{} too small", path.display());
    if path.extension().and_then(|e| e.to_str()) == Some("png") {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    } else {
        let s = String::from_utf8_lossy(&bytes);
        assert!(s.contains("<svg"), "no <svg in {}", path.display());
    }
    // no temp files left next to it
    let dir = path.parent().expect("parent");
    for e in std::fs::read_dir(dir).expect("dir") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "left temp file {name}");
    }
}

fn out_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Set `LATENTLAB_PLOT_DIR` to keep the images for visual inspection.
fn keep(dir: &Path, name: &str) {
    if let Ok(d) = std::env::var("LATENTLAB_PLOT_DIR") {
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::copy(dir.join(name), Path::new(&d).join(name)).expect("copy");
    }
}

fn blob(n: usize, cx: f32, cy: f32, seed: u32) -> Vec<(f32, f32)> {
    (0..n)
        .map(|i| {
            let t =
                (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) as f32 / u32::MAX as f32;
            let u = ((i * 7919) % 1000) as f32 / 1000.0;
            let r = (-2.0 * (t.max(1e-6)).ln()).sqrt();
            (
                cx + r * (std::f32::consts::TAU * u).cos(),
                cy + r * (std::f32::consts::TAU * u).sin(),
            )
        })
        .collect()
}

#[test]
fn all_plots_png_and_svg() {
    let dir = out_dir();
    for ext in ["png", "svg"] {
        let p = dir.path().join(format!("scatter.{ext}"));
        let groups = vec![
            ScatterGroup {
                label: "real".into(),
                points: blob(800, 0.0, 0.0, 1),
                color: None,
            },
            ScatterGroup {
                label: "generated".into(),
                points: blob(800, 1.0, 0.5, 2),
                color: None,
            },
        ];
        scatter_overlay(&p, "PCA: real vs generated", &groups, "PC1", "PC2").expect("scatter");
        check(&p);
        keep(dir.path(), &format!("scatter.{ext}"));

        let p = dir.path().join(format!("celltypes.{ext}"));
        let groups: Vec<ScatterGroup> = (0..20)
            .map(|k| ScatterGroup {
                label: format!("cell type {k} (T cell subtype)"),
                points: blob(150, (k % 5) as f32 * 4.0, (k / 5) as f32 * 4.0, k),
                color: None,
            })
            .collect();
        scatter_overlay(&p, "Latents by cell type", &groups, "latent 1", "latent 2")
            .expect("scatter");
        check(&p);
        keep(dir.path(), &format!("celltypes.{ext}"));

        let p = dir.path().join(format!("diag.{ext}"));
        let pts: Vec<(f64, f64)> = (0..500)
            .map(|g| {
                let m = (g as f64 * 0.37).sin().abs() * 3.0;
                (m, m * 1.05 + 0.1 * ((g * 13 % 7) as f64 / 7.0 - 0.5))
            })
            .collect();
        scatter_xy_with_diagonal(
            &p,
            "Per-gene mean",
            "real mean",
            "generated mean",
            &pts,
            "Pearson r = 0.97",
        )
        .expect("diag");
        check(&p);
        keep(dir.path(), &format!("diag.{ext}"));

        let p = dir.path().join(format!("loss.{ext}"));
        let train: Vec<(f64, f64)> = (1..200)
            .map(|s| (s as f64, 10.0 / (s as f64).sqrt()))
            .collect();
        let val: Vec<(f64, f64)> = (1..20)
            .map(|s| (s as f64 * 10.0, 12.0 / (s as f64 * 10.0).sqrt()))
            .collect();
        line_curves(
            &p,
            "Loss",
            "step",
            "loss",
            &[("train", train.clone()), ("val", val.clone())],
            true,
        )
        .expect("lines");
        check(&p);
        keep(dir.path(), &format!("loss.{ext}"));
        let p = dir.path().join(format!("loss_lin.{ext}"));
        line_curves(
            &p,
            "Loss",
            "step",
            "loss",
            &[("train".to_string(), train)],
            false,
        )
        .expect("lines");
        check(&p);

        let p = dir.path().join(format!("hist.{ext}"));
        let a: Vec<f32> = blob(2000, 5.0, 0.0, 3)
            .iter()
            .map(|p| p.0 * 1000.0)
            .collect();
        let b: Vec<f32> = blob(1000, 5.5, 0.0, 4)
            .iter()
            .map(|p| p.0 * 1000.0)
            .collect();
        histograms_overlay(
            &p,
            "Library size",
            "total counts",
            &[("real", a), ("generated", b)],
            40,
        )
        .expect("hist");
        check(&p);
        keep(dir.path(), &format!("hist.{ext}"));

        let p = dir.path().join(format!("heat.{ext}"));
        let rows = ["B cell", "CD4 T", "CD8 T", "NK", "Monocyte", "Dendritic"];
        let cols = [
            "MMD²",
            "energy",
            "C2ST AUROC",
            "fidelity",
            "memorization ratio",
        ];
        let mut vals: Vec<f64> = (0..30).map(|i| (i as f64 * 0.618).fract()).collect();
        vals[5] = f64::NAN;
        heatmap(&p, "Metrics per cell type", &rows, &cols, &vals, "value").expect("heat");
        check(&p);
        keep(dir.path(), &format!("heat.{ext}"));
    }
}

#[test]
fn errors_not_panics() {
    let dir = out_dir();
    let bad = dir.path().join("x.jpg");
    assert!(matches!(
        line_curves(&bad, "t", "x", "y", &[("a", vec![(0.0, 1.0)])], false),
        Err(PlotError::UnsupportedExtension(_))
    ));
    let p = dir.path().join("h.png");
    assert!(heatmap(&p, "t", &["a"], &["b", "c"], &[1.0], "v").is_err());
    assert!(histograms_overlay(&p, "t", "x", &[("a", vec![1.0f32])], 0).is_err());
    // degenerate but valid input draws fine: constant values, NaN, empty series, log of zeros
    let p = dir.path().join("deg.png");
    histograms_overlay(
        &p,
        "t",
        "x",
        &[("a", vec![1.0f32, 1.0, f32::NAN]), ("b", vec![])],
        10,
    )
    .expect("hist");
    line_curves(
        &p,
        "t",
        "x",
        "y",
        &[("a", vec![(0.0, 0.0), (1.0, -1.0)])],
        true,
    )
    .expect("lines");
    scatter_xy_with_diagonal(&p, "t", "x", "y", &[], "").expect("diag");
    scatter_overlay(
        &p,
        "t",
        &[ScatterGroup {
            label: "e".into(),
            points: vec![(f32::NAN, 0.0)],
            color: Some([1, 2, 3]),
        }],
        "x",
        "y",
    )
    .expect("scatter");
    heatmap(&p, "t", &["a"], &["b"], &[f64::NAN], "v").expect("heat");
    check(&p);
    // writes into a missing sub directory
    let p = dir.path().join("sub/dir/x.svg");
    heatmap(&p, "t", &["a"], &["b"], &[1.0], "v").expect("heat");
    assert!(p.exists());
}
