//! Writes an [`Evaluation`] as `metrics.json`, `report.md`, `index.html` and PNG plots into a
//! report directory (built in a temporary directory and renamed into place).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::checkpoint::write_atomic;
use crate::evaluation::Evaluation;
use crate::metrics::gene_stats;
use crate::metrics::{two_sample_auroc, TwoSampleClassifier, TwoSampleConfig};
use crate::plots::{
    heatmap, histograms_overlay, line_curves, scatter_overlay, scatter_xy_with_diagonal,
    ScatterGroup,
};
use crate::plugin::CellSet;
use crate::{LatentError, Result};

/// Inputs of the figures.
pub struct Figures<'a> {
    /// Real reference cells (with pcs).
    pub reference: &'a CellSet,
    /// Generated cells (with pcs).
    pub generated: &'a CellSet,
    /// Training curves CSV text (`stage,step,name,value`), if available.
    pub curves_csv: Option<&'a str>,
    /// Protocol-specific scatter plots (time grids, tissue maps), drawn as PNG and SVG.
    pub extra: Vec<ExtraScatter>,
    /// The evaluation's seed: the ROC figure uses the same folds as the `knn_auroc` metric.
    pub seed: u64,
}

/// One protocol-specific scatter plot of a report.
#[derive(Debug, Clone)]
pub struct ExtraScatter {
    /// File stem (`time_grid` → `time_grid.png` and `time_grid.svg`, like every report figure).
    pub stem: String,
    /// Title and caption.
    pub caption: String,
    /// Point groups.
    pub groups: Vec<ScatterGroup>,
    /// Axis labels.
    pub axes: (String, String),
}

/// Groups of points coloured by quantile bins of `values` (5 bins, light → dark blue), for
/// maps of a continuous quantity such as one gene's expression over tissue coordinates.
pub fn binned_groups(points: &[(f32, f32)], values: &[f32], label: &str) -> Vec<ScatterGroup> {
    let mut sorted: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f32::total_cmp);
    let q = |p: f64| -> f32 {
        if sorted.is_empty() {
            0.0
        } else {
            sorted[((sorted.len() - 1) as f64 * p).round() as usize]
        }
    };
    let edges = [q(0.2), q(0.4), q(0.6), q(0.8)];
    let colors = [
        [222, 235, 247],
        [158, 202, 225],
        [66, 146, 198],
        [8, 81, 156],
        [8, 48, 107],
    ];
    (0..5)
        .map(|b| ScatterGroup {
            label: format!("{label} bin {} of 5", b + 1),
            points: points
                .iter()
                .zip(values)
                .filter(|(_, v)| edges.iter().filter(|e| **v > **e).count() == b)
                .map(|(p, _)| *p)
                .collect(),
            color: Some(colors[b]),
        })
        .collect()
}

fn plot_err(e: crate::plots::PlotError) -> LatentError {
    LatentError::Evaluation(format!("plot: {e}"))
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() >= 100.0 || (v != 0.0 && v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

/// Markdown table of all rows (metrics as columns).
pub fn markdown_table(evaluation: &Evaluation) -> String {
    let mut names: Vec<String> = Vec::new();
    for row in &evaluation.rows {
        for m in &row.metrics {
            if !names.contains(&m.name) {
                names.push(m.name.clone());
            }
        }
    }
    let mut s = String::new();
    let _ = writeln!(s, "| row | n | {} |", names.join(" | "));
    let _ = writeln!(
        s,
        "|---|---|{}|",
        names.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for row in &evaluation.rows {
        let cells: Vec<String> = names
            .iter()
            .map(|n| row.value(n).map_or("".into(), fmt_value))
            .collect();
        let _ = writeln!(s, "| {} | {} | {} |", row.name, row.n, cells.join(" | "));
    }
    s
}

fn protocols(evaluation: &Evaluation) -> String {
    let mut s = String::new();
    let mut seen = Vec::new();
    if let Some(row) = evaluation.rows.first() {
        for m in &row.metrics {
            if !seen.contains(&m.name) {
                seen.push(m.name.clone());
                let arrow = if m.lower_is_better {
                    "lower is better"
                } else {
                    "higher is better"
                };
                let _ = writeln!(s, "- `{}` ({arrow}): {}", m.name, m.protocol);
            }
        }
    }
    s
}

/// Writes the report directory.
///
/// # Errors
/// I/O or plotting errors; nothing is left behind on failure.
pub fn write_report(
    dir: &Path,
    evaluation: &Evaluation,
    figures: &Figures<'_>,
    title: &str,
) -> Result<()> {
    crate::atomic_file::replace_dir_with(dir, |tmp| write_into(tmp, evaluation, figures, title))
}

fn write_into(
    dir: &Path,
    evaluation: &Evaluation,
    figures: &Figures<'_>,
    title: &str,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| LatentError::io(dir, e))?;
    let json = serde_json::to_vec_pretty(evaluation)
        .map_err(|e| LatentError::Evaluation(e.to_string()))?;
    write_atomic(&dir.join("metrics.json"), &json)?;
    // Every figure as SVG too (same drawing, vector output); the PNGs are embedded.
    draw(dir, evaluation, figures, "svg")?;
    let images = draw(dir, evaluation, figures, "png")?;
    let table = markdown_table(evaluation);
    let mut md = format!(
        "# {title}\n\nReference: {}. PCA: {} components fit on real training cells.\n\n",
        evaluation.reference, evaluation.pca_components
    );
    md.push_str("Rows: `generated` is the model; `control: real training cells` is the real-vs-real floor; `baseline:` rows are simple generators a model must beat.\n\n");
    md.push_str(&table);
    md.push_str("\n## Metric protocols\n\n");
    md.push_str(&protocols(evaluation));
    if !evaluation.per_label.is_empty() {
        md.push_str("\n## Per label (generated vs real reference cells of that label)\n\n| label | metric | value |\n|---|---|---|\n");
        for (label, metrics) in &evaluation.per_label {
            for m in metrics {
                let _ = writeln!(md, "| {label} | {} | {} |", m.name, fmt_value(m.value));
            }
        }
    }
    md.push_str("\n## Figures\n\n");
    for (file, caption) in &images {
        let _ = writeln!(md, "![{caption}]({file})\n");
    }
    write_atomic(&dir.join("report.md"), md.as_bytes())?;
    write_atomic(
        &dir.join("index.html"),
        html(title, &md, &images).as_bytes(),
    )?;
    Ok(())
}

fn html(title: &str, md: &str, images: &[(String, String)]) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut body = String::new();
    let mut in_table = false;
    for line in md.lines() {
        if line.starts_with('|') {
            if line.starts_with("|---") {
                continue;
            }
            if !in_table {
                body.push_str("<table>\n");
                in_table = true;
            }
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let _ = writeln!(
                body,
                "<tr>{}</tr>",
                cells
                    .iter()
                    .map(|c| format!("<td>{}</td>", escape(c)))
                    .collect::<String>()
            );
            continue;
        }
        if in_table {
            body.push_str("</table>\n");
            in_table = false;
        }
        if let Some(h) = line.strip_prefix("## ") {
            let _ = writeln!(body, "<h2>{}</h2>", escape(h));
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = writeln!(body, "<h1>{}</h1>", escape(h));
        } else if line.starts_with("![") {
            continue;
        } else if let Some(item) = line.strip_prefix("- ") {
            let _ = writeln!(body, "<li>{}</li>", escape(item));
        } else if !line.is_empty() {
            let _ = writeln!(body, "<p>{}</p>", escape(line));
        }
    }
    if in_table {
        body.push_str("</table>\n");
    }
    for (file, caption) in images {
        let _ = writeln!(
            body,
            "<figure><img src=\"{file}\" alt=\"{0}\"><figcaption>{0}</figcaption></figure>",
            escape(caption)
        );
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{0}</title><style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}td{{border:1px solid #ccc;padding:3px 6px;font-size:13px}}tr:first-child td{{font-weight:bold;background:#f3f3f3}}img{{max-width:100%}}</style></head><body>\n{1}</body></html>\n",
        escape(title),
        body
    )
}

/// Out-of-fold ROC curve of a kNN (k = 10, 5 folds, fold seed `seed`) telling reference from
/// generated cells in their PCs; `None` when either set is too small or has no PCs.
fn two_sample_roc(
    reference: &CellSet,
    generated: &CellSet,
    seed: u64,
) -> Option<(f64, Vec<(f64, f64)>)> {
    let k = reference.pcs.len().checked_div(reference.n)?;
    if k == 0 || generated.pcs.len() != generated.n * k || reference.n.min(generated.n) < 15 {
        return None;
    }
    let config = TwoSampleConfig {
        classifier: TwoSampleClassifier::Knn { k: 10 },
        seed,
        ..TwoSampleConfig::default()
    };
    let result = two_sample_auroc(
        &reference.pcs,
        reference.n,
        &generated.pcs,
        generated.n,
        k,
        &config,
    )
    .ok()?;
    Some((result.auroc, result.roc))
}

fn draw(
    dir: &Path,
    evaluation: &Evaluation,
    f: &Figures<'_>,
    ext: &str,
) -> Result<Vec<(String, String)>> {
    let mut images = Vec::new();
    let pc = |c: &CellSet| -> Vec<(f32, f32)> {
        let k = c.pcs.len().checked_div(c.n).unwrap_or(0);
        if k < 2 {
            return Vec::new();
        }
        (0..c.n).map(|i| (c.pcs[i * k], c.pcs[i * k + 1])).collect()
    };
    let file = |name: &str| -> PathBuf { dir.join(name) };
    scatter_overlay(
        file(&format!("pca_real_vs_generated.{ext}")),
        "Real reference vs generated cells (PCA of real training cells)",
        &[
            ScatterGroup {
                label: "real (reference)".into(),
                points: pc(f.reference),
                color: Some([120, 120, 120]),
            },
            ScatterGroup {
                label: "generated".into(),
                points: pc(f.generated),
                color: Some([214, 39, 40]),
            },
        ],
        "PC1",
        "PC2",
    )
    .map_err(plot_err)?;
    images.push((
        format!("pca_real_vs_generated.{ext}"),
        "PC1/PC2: real reference (grey) vs generated (red)".into(),
    ));
    if let (Some(gl), Some(rl)) = (&f.generated.labels, &f.reference.labels) {
        let mut labels: Vec<&String> = rl.iter().collect();
        labels.sort();
        labels.dedup();
        for (set, labels_of, file_name, caption) in [
            (
                f.generated,
                gl,
                "pca_generated_by_label",
                "Generated cells coloured by conditioned label",
            ),
            (
                f.reference,
                rl,
                "pca_real_by_label",
                "Real reference cells coloured by label",
            ),
        ] {
            let points = pc(set);
            let groups: Vec<ScatterGroup> = labels
                .iter()
                .map(|l| ScatterGroup {
                    label: (*l).clone(),
                    points: (0..set.n)
                        .filter(|&i| labels_of[i] == **l)
                        .map(|i| points[i])
                        .collect(),
                    color: None,
                })
                .collect();
            let file_name = format!("{file_name}.{ext}");
            scatter_overlay(file(&file_name), caption, &groups, "PC1", "PC2").map_err(plot_err)?;
            images.push((file_name, caption.into()));
        }
    }
    for extra in &f.extra {
        scatter_overlay(
            file(&format!("{}.{ext}", extra.stem)),
            &extra.caption,
            &extra.groups,
            &extra.axes.0,
            &extra.axes.1,
        )
        .map_err(plot_err)?;
        images.push((format!("{}.{ext}", extra.stem), extra.caption.clone()));
    }
    if let Some((auroc, roc)) = two_sample_roc(f.reference, f.generated, f.seed) {
        let name = format!("roc_two_sample.{ext}");
        line_curves(
            file(&name),
            "Two-sample classifier: real reference vs generated (kNN, 5-fold, PCA)",
            "false positive rate",
            "true positive rate",
            &[
                (format!("kNN k = 10 (AUROC {auroc:.3})"), roc),
                (
                    "chance (indistinguishable)".to_string(),
                    vec![(0.0, 0.0), (1.0, 1.0)],
                ),
            ],
            false,
        )
        .map_err(plot_err)?;
        images.push((
            name,
            format!("ROC curve of the kNN two-sample classifier (AUROC {auroc:.3}; the diagonal is indistinguishable)"),
        ));
    }
    let g = f.reference.n_genes;
    let err = |e: crate::metrics::MetricsError| LatentError::Evaluation(e.to_string());
    let real = gene_stats(&f.reference.x, f.reference.n, g, 1e-3).map_err(err)?;
    let generated = gene_stats(&f.generated.x, f.generated.n, g, 1e-3).map_err(err)?;
    for (stat, a, b) in [
        ("mean", &real.mean, &generated.mean),
        ("variance", &real.variance, &generated.variance),
        (
            "zero_fraction",
            &real.zero_fraction,
            &generated.zero_fraction,
        ),
    ] {
        let points: Vec<(f64, f64)> = a.iter().copied().zip(b.iter().copied()).collect();
        let r = crate::metrics::pearson(a, b)
            .map(|r| format!("Pearson r = {r:.3}"))
            .unwrap_or_else(|_| "Pearson r undefined".into());
        let name = format!("gene_{stat}.{ext}");
        scatter_xy_with_diagonal(
            file(&name),
            &format!("Per-gene {stat}: real vs generated"),
            &format!("real {stat}"),
            &format!("generated {stat}"),
            &points,
            &r,
        )
        .map_err(plot_err)?;
        images.push((
            name,
            format!("Per-gene {stat}, real reference vs generated ({r})"),
        ));
    }
    let lib = |c: &CellSet| -> Vec<f32> {
        c.x.chunks(c.n_genes.max(1))
            .map(|r| r.iter().sum())
            .collect()
    };
    histograms_overlay(
        file(&format!("qc_total_expression.{ext}")),
        "Per-cell total expression (model scale)",
        "row sum",
        &[
            ("real (reference)", lib(f.reference)),
            ("generated", lib(f.generated)),
        ],
        40,
    )
    .map_err(plot_err)?;
    images.push((
        format!("qc_total_expression.{ext}"),
        "Distribution of per-cell total expression".into(),
    ));
    if let Some(csv) = f.curves_csv {
        let mut series: std::collections::BTreeMap<String, Vec<(f64, f64)>> =
            std::collections::BTreeMap::new();
        for line in csv.lines().skip(1) {
            let parts: Vec<&str> = line.split(',').collect();
            if parts.len() == 4 && (parts[2] == "train_loss" || parts[2] == "validation_loss") {
                if let (Ok(step), Ok(v)) = (parts[1].parse::<f64>(), parts[3].parse::<f64>()) {
                    series
                        .entry(format!("{} {}", parts[0], parts[2]))
                        .or_default()
                        .push((step, v));
                }
            }
        }
        let smoothed: Vec<(String, Vec<(f64, f64)>)> =
            series.into_iter().map(|(k, v)| (k, smooth(&v))).collect();
        let of_stage = |stage: &str| -> Vec<(String, Vec<(f64, f64)>)> {
            smoothed
                .iter()
                .filter(|(k, _)| k.split(' ').next() == Some(stage))
                .cloned()
                .collect()
        };
        for (name, log) in [("autoencoder", true), ("denoiser", false), ("joint", true)] {
            let group = of_stage(name);
            if !group.is_empty() {
                line_curves(
                    file(&format!("loss_{name}.{ext}")),
                    &format!("Training curves ({name})"),
                    "step",
                    "loss",
                    &group,
                    log && group.iter().all(|(_, v)| v.iter().all(|p| p.1 > 0.0)),
                )
                .map_err(plot_err)?;
                images.push((
                    format!("loss_{name}.{ext}"),
                    format!("Training and validation loss, {name}"),
                ));
            }
        }
    }
    if !evaluation.per_label.is_empty() {
        let labels: Vec<&String> = evaluation.per_label.keys().collect();
        let names: Vec<String> = evaluation
            .per_label
            .values()
            .next()
            .map(|m| m.iter().map(|x| x.name.clone()).collect())
            .unwrap_or_default();
        let values: Vec<f64> = labels
            .iter()
            .flat_map(|l| {
                names.iter().map(|n| {
                    evaluation.per_label[*l]
                        .iter()
                        .find(|m| &m.name == n)
                        .map_or(f64::NAN, |m| m.value)
                })
            })
            .collect();
        if !names.is_empty() {
            heatmap(
                file(&format!("per_label_metrics.{ext}")),
                "Generated vs real, per label",
                &labels,
                &names,
                &values,
                "value",
            )
            .map_err(plot_err)?;
            images.push((
                format!("per_label_metrics.{ext}"),
                "Per-label metrics (generated vs real cells of the label)".into(),
            ));
        }
    }
    Ok(images)
}

/// Moving average over windows of ~1% of the points (raw values when there are few).
fn smooth(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let w = (points.len() / 100).max(1);
    if w == 1 {
        return points.to_vec();
    }
    points
        .chunks(w)
        .map(|c| {
            (
                c[c.len() / 2].0,
                c.iter().map(|p| p.1).sum::<f64>() / c.len() as f64,
            )
        })
        .collect()
}
