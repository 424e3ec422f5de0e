//! Scatter plots.

use super::common::{draw_err, fmt_tick, padded_range, palette, render, text_width, PlotError};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// One coloured group of points in [`scatter_overlay`].
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterGroup {
    /// Legend label (the point count is appended automatically).
    pub label: String,
    /// `(x, y)` points; non-finite ones are skipped.
    pub points: Vec<(f32, f32)>,
    /// RGB colour; `None` = `PALETTE[group index % 20]`.
    pub color: Option<[u8; 3]>,
}

/// Overlaid scatter of several groups with a legend panel on the right, e.g. real vs
/// generated cells on PC1/PC2 or latents coloured by cell type (up to ~20 categories;
/// colours repeat after 20). Later groups are drawn on top. 1100 × 800 px.
///
/// # Errors
/// [`PlotError`] for an extension other than png/svg, an empty `groups`, a drawing
/// failure, or an I/O error.
pub fn scatter_overlay(
    path: impl AsRef<Path>,
    title: &str,
    groups: &[ScatterGroup],
    x_label: &str,
    y_label: &str,
) -> Result<(), PlotError> {
    if groups.is_empty() {
        return Err(PlotError::InvalidInput(
            "scatter_overlay: no groups".to_string(),
        ));
    }
    render!(
        path.as_ref(),
        (1100, 800),
        draw_overlay(title, groups, x_label, y_label)
    )
}

fn finite(p: &(f32, f32)) -> bool {
    p.0.is_finite() && p.1.is_finite()
}

fn draw_overlay<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    groups: &[ScatterGroup],
    x_label: &str,
    y_label: &str,
) -> Result<(), PlotError> {
    root.fill(&WHITE).map_err(draw_err)?;
    let (w, h) = root.dim_in_pixel();
    let labels: Vec<String> = groups
        .iter()
        .map(|g| {
            format!(
                "{} (n={})",
                g.label,
                g.points.iter().filter(|p| finite(p)).count()
            )
        })
        .collect();
    let legend_w = labels
        .iter()
        .map(|l| text_width(l, 14.0) + 50)
        .max()
        .unwrap_or(120)
        .clamp(120, 380);
    let (plot_area, legend_area) = root.split_horizontally(w - legend_w);
    let all = || {
        groups
            .iter()
            .flat_map(|g| g.points.iter().filter(|p| finite(p)))
    };
    let (x0, x1) = padded_range(all().map(|p| f64::from(p.0)));
    let (y0, y1) = padded_range(all().map(|p| f64::from(p.1)));
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(75)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .x_label_formatter(&fmt_tick)
        .y_label_formatter(&fmt_tick)
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(draw_err)?;
    let total: usize = groups.iter().map(|g| g.points.len()).sum();
    let radius = if total > 20_000 {
        1
    } else if total > 3_000 {
        2
    } else {
        3
    };
    let color_of = |i: usize, g: &ScatterGroup| match g.color {
        Some([r, gg, b]) => RGBColor(r, gg, b),
        None => palette(i),
    };
    for (i, g) in groups.iter().enumerate() {
        let c = color_of(i, g);
        chart
            .draw_series(g.points.iter().filter(|p| finite(p)).map(|&(x, y)| {
                Circle::new((f64::from(x), f64::from(y)), radius, c.mix(0.6).filled())
            }))
            .map_err(draw_err)?;
    }
    // legend panel
    let n = groups.len() as u32;
    let row_h = ((h.saturating_sub(80)) / n.max(1)).clamp(8, 24) as i32;
    let font_size = (row_h as f64 * 0.65).clamp(8.0, 15.0);
    let style = ("sans-serif", font_size)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (g, label)) in groups.iter().zip(&labels).enumerate() {
        let y = 60 + i as i32 * row_h;
        let c = color_of(i, g);
        legend_area
            .draw(&Circle::new((16, y), (row_h / 4).clamp(3, 6), c.filled()))
            .map_err(draw_err)?;
        legend_area
            .draw(&Text::new(label.clone(), (30, y), style.clone()))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Scatter of `(real, generated)` pairs (e.g. per-gene means) with the `y = x` line, equal
/// axis ranges and `annotation` (e.g. `"Pearson r = 0.97"`) in the upper-left corner.
/// 800 × 800 px.
///
/// # Errors
/// [`PlotError`] for an extension other than png/svg, a drawing failure, or an I/O error.
pub fn scatter_xy_with_diagonal(
    path: impl AsRef<Path>,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64)],
    annotation: &str,
) -> Result<(), PlotError> {
    render!(
        path.as_ref(),
        (800, 800),
        draw_diag(title, x_label, y_label, points, annotation)
    )
}

fn draw_diag<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64)],
    annotation: &str,
) -> Result<(), PlotError> {
    root.fill(&WHITE).map_err(draw_err)?;
    let ok = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let (lo, hi) = padded_range(points.iter().filter(ok).flat_map(|p| [p.0, p.1]));
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(75)
        .build_cartesian_2d(lo..hi, lo..hi)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .x_label_formatter(&fmt_tick)
        .y_label_formatter(&fmt_tick)
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(LineSeries::new(
            [(lo, lo), (hi, hi)],
            RGBColor(150, 150, 150).stroke_width(2),
        ))
        .map_err(draw_err)?;
    let n = points.iter().filter(ok).count();
    let radius = if n > 5000 { 2 } else { 3 };
    chart
        .draw_series(
            points
                .iter()
                .filter(ok)
                .map(|&(x, y)| Circle::new((x, y), radius, palette(0).mix(0.5).filled())),
        )
        .map_err(draw_err)?;
    if !annotation.is_empty() {
        let style = ("sans-serif", 18)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Top));
        chart
            .draw_series(std::iter::once(Text::new(
                annotation.to_string(),
                (lo + 0.03 * (hi - lo), hi - 0.03 * (hi - lo)),
                style,
            )))
            .map_err(draw_err)?;
    }
    Ok(())
}
