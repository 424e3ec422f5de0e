//! Heat map of a metric matrix (e.g. metric per label).

use super::common::{draw_err, render, text_width, PlotError};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// Viridis colour stops (matplotlib), evenly spaced on `[0, 1]`.
const VIRIDIS: [(u8, u8, u8); 9] = [
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
];

/// Viridis colour for `t` in `[0, 1]` (clamped) by linear interpolation between stops.
fn viridis(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (VIRIDIS.len() - 1) as f64;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f64;
    let lerp = |a: u8, b: u8| (f64::from(a) + f * (f64::from(b) - f64::from(a))).round() as u8;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

/// Heat map of the row-major `(row_labels.len(), col_labels.len())` matrix `values`,
/// row 0 at the top, viridis colours scaled to the finite min..max, non-finite cells grey
/// (printed `n/a`), a colour bar titled `colorbar_label`, and the value printed in each cell
/// when the cells are large enough. Column labels are horizontal when they fit the cell
/// width, otherwise rotated. The image size grows with the number of rows and columns.
///
/// # Errors
/// [`PlotError`] for an extension other than png/svg, zero rows or columns,
/// `values.len() != rows * cols`, a drawing failure, or an I/O error.
pub fn heatmap<R: AsRef<str>, C: AsRef<str>>(
    path: impl AsRef<Path>,
    title: &str,
    row_labels: &[R],
    col_labels: &[C],
    values: &[f64],
    colorbar_label: &str,
) -> Result<(), PlotError> {
    let (rows, cols) = (row_labels.len(), col_labels.len());
    if rows == 0 || cols == 0 || values.len() != rows * cols {
        return Err(PlotError::InvalidInput(format!(
            "heatmap: {} values for {rows} rows x {cols} cols",
            values.len()
        )));
    }
    let rl: Vec<String> = row_labels.iter().map(|s| s.as_ref().to_string()).collect();
    let cl: Vec<String> = col_labels.iter().map(|s| s.as_ref().to_string()).collect();
    let layout = Layout::new(title, &rl, &cl, colorbar_label);
    render!(
        path.as_ref(),
        (layout.width, layout.height),
        draw_heatmap(title, &rl, &cl, values, colorbar_label, &layout)
    )
}

/// Pixel geometry of the heat map.
struct Layout {
    gx: i32,
    gy: i32,
    cell_w: i32,
    cell_h: i32,
    rotate_cols: bool,
    bar_x: i32,
    bar_h: i32,
    width: u32,
    height: u32,
}

const LABEL_PT: f64 = 14.0;

impl Layout {
    fn new(title: &str, rows: &[String], cols: &[String], bar_label: &str) -> Layout {
        let (nr, nc) = (rows.len() as i32, cols.len() as i32);
        let row_w = rows
            .iter()
            .map(|l| text_width(l, LABEL_PT))
            .max()
            .unwrap_or(0)
            .min(320) as i32;
        let col_w = cols
            .iter()
            .map(|l| text_width(l, LABEL_PT))
            .max()
            .unwrap_or(0)
            .min(260) as i32;
        let cell_w = (900 / nc).clamp(22, 100);
        let cell_h = (700 / nr).clamp(16, 48);
        let rotate_cols = col_w > cell_w - 6;
        let col_h = if rotate_cols { col_w + 10 } else { 24 };
        let gx = row_w + 25;
        let gy = 70;
        let bar_x = gx + nc * cell_w + 30;
        let bar_h = (nr * cell_h).max(120);
        let bar_label_w = text_width(bar_label, LABEL_PT) as i32;
        let width = (bar_x + 25 + 90)
            .max(bar_x + bar_label_w / 2 + 20)
            .max(text_width(title, 22.0) as i32 + 40);
        let height = gy + (nr * cell_h).max(bar_h) + col_h + 20;
        Layout {
            gx,
            gy,
            cell_w,
            cell_h,
            rotate_cols,
            bar_x,
            bar_h,
            width: width as u32,
            height: height as u32,
        }
    }
}

fn draw_heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    row_labels: &[String],
    col_labels: &[String],
    values: &[f64],
    colorbar_label: &str,
    l: &Layout,
) -> Result<(), PlotError> {
    root.fill(&WHITE).map_err(draw_err)?;
    let (rows, cols) = (row_labels.len(), col_labels.len());
    let (mut vmin, mut vmax) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.iter().filter(|v| v.is_finite()) {
        vmin = vmin.min(*v);
        vmax = vmax.max(*v);
    }
    if !vmin.is_finite() {
        vmin = 0.0;
        vmax = 1.0;
    }
    if vmax <= vmin {
        vmin -= 0.5;
        vmax += 0.5;
    }
    let norm = |v: f64| (v - vmin) / (vmax - vmin);
    let anchored = |size: f64, h: HPos, v: VPos| {
        ("sans-serif", size)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(h, v))
    };
    root.draw(&Text::new(
        title.to_string(),
        (l.width as i32 / 2, 15),
        anchored(22.0, HPos::Center, VPos::Top),
    ))
    .map_err(draw_err)?;
    let grey = RGBColor(200, 200, 200);
    let show_values = l.cell_w >= 40 && l.cell_h >= 16;
    for r in 0..rows {
        let y0 = l.gy + r as i32 * l.cell_h;
        root.draw(&Text::new(
            row_labels[r].clone(),
            (l.gx - 8, y0 + l.cell_h / 2),
            anchored(LABEL_PT, HPos::Right, VPos::Center),
        ))
        .map_err(draw_err)?;
        for c in 0..cols {
            let x0 = l.gx + c as i32 * l.cell_w;
            let v = values[r * cols + c];
            let color = if v.is_finite() {
                viridis(norm(v))
            } else {
                grey
            };
            root.draw(&Rectangle::new(
                [(x0, y0), (x0 + l.cell_w, y0 + l.cell_h)],
                color.filled(),
            ))
            .map_err(draw_err)?;
            if show_values {
                let txt = if v.is_finite() {
                    format_value(v)
                } else {
                    "n/a".to_string()
                };
                let tc = if !v.is_finite() || norm(v) > 0.6 {
                    BLACK
                } else {
                    WHITE
                };
                let size = (f64::from(l.cell_h) * 0.55).clamp(9.0, 13.0);
                root.draw(&Text::new(
                    txt,
                    (x0 + l.cell_w / 2, y0 + l.cell_h / 2),
                    ("sans-serif", size)
                        .into_font()
                        .color(&tc)
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                ))
                .map_err(draw_err)?;
            }
        }
    }
    let grid_bottom = l.gy + rows as i32 * l.cell_h;
    for (c, label) in col_labels.iter().enumerate() {
        let xc = l.gx + c as i32 * l.cell_w + l.cell_w / 2;
        if l.rotate_cols {
            let style = ("sans-serif", LABEL_PT)
                .into_font()
                .transform(FontTransform::Rotate90)
                .color(&BLACK);
            root.draw(&Text::new(label.clone(), (xc + 7, grid_bottom + 6), style))
                .map_err(draw_err)?;
        } else {
            root.draw(&Text::new(
                label.clone(),
                (xc, grid_bottom + 6),
                anchored(LABEL_PT, HPos::Center, VPos::Top),
            ))
            .map_err(draw_err)?;
        }
    }
    // colour bar: vmax at the top
    let bw = 25;
    let steps = 100;
    for s in 0..steps {
        let ya = l.gy + l.bar_h * s / steps;
        let yb = l.gy + l.bar_h * (s + 1) / steps;
        let t = 1.0 - (f64::from(s) + 0.5) / f64::from(steps);
        root.draw(&Rectangle::new(
            [(l.bar_x, ya), (l.bar_x + bw, yb)],
            viridis(t).filled(),
        ))
        .map_err(draw_err)?;
    }
    root.draw(&Rectangle::new(
        [(l.bar_x, l.gy), (l.bar_x + bw, l.gy + l.bar_h)],
        BLACK.stroke_width(1),
    ))
    .map_err(draw_err)?;
    for k in 0..=4 {
        let y = l.gy + l.bar_h * k / 4;
        let v = vmax - (vmax - vmin) * f64::from(k) / 4.0;
        root.draw(&PathElement::new(
            vec![(l.bar_x + bw, y), (l.bar_x + bw + 5, y)],
            BLACK.stroke_width(1),
        ))
        .map_err(draw_err)?;
        root.draw(&Text::new(
            format_value(v),
            (l.bar_x + bw + 8, y),
            anchored(12.0, HPos::Left, VPos::Center),
        ))
        .map_err(draw_err)?;
    }
    root.draw(&Text::new(
        colorbar_label.to_string(),
        (l.bar_x + bw / 2, l.gy - 10),
        anchored(LABEL_PT, HPos::Center, VPos::Bottom),
    ))
    .map_err(draw_err)?;
    Ok(())
}

/// Compact number formatting for cells and the colour bar.
fn format_value(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e4).contains(&a) {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}
