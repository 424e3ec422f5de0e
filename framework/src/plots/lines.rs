//! Line plots (loss curves).

use super::common::{draw_err, fmt_tick, padded_range, palette, render, PlotError};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// One line per `(label, points)` series, e.g. training and validation loss against step,
/// with a legend. With `log_y` the y axis is logarithmic and points with `y <= 0` are
/// skipped. Non-finite points are skipped. 1000 × 650 px.
///
/// # Errors
/// [`PlotError`] for an extension other than png/svg, an empty `series`, a drawing
/// failure, or an I/O error.
pub fn line_curves<S: AsRef<str>>(
    path: impl AsRef<Path>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(S, Vec<(f64, f64)>)],
    log_y: bool,
) -> Result<(), PlotError> {
    if series.is_empty() {
        return Err(PlotError::InvalidInput(
            "line_curves: no series".to_string(),
        ));
    }
    render!(
        path.as_ref(),
        (1000, 650),
        draw_lines(title, x_label, y_label, series, log_y)
    )
}

/// True when the positive finite `y` values span at least two powers of ten (with the 1.2×
/// padding the log axis adds).
fn spans_two_powers_of_ten<'a>(points: impl Iterator<Item = &'a (f64, f64)>) -> bool {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(_, y) in points {
        if y.is_finite() && y > 0.0 {
            lo = lo.min(y);
            hi = hi.max(y);
        }
    }
    lo.is_finite() && ((hi * 1.2).log10().floor() - (lo / 1.2).log10().ceil()) >= 1.0
}

fn draw_lines<DB: DrawingBackend, S: AsRef<str>>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(S, Vec<(f64, f64)>)],
    log_y: bool,
) -> Result<(), PlotError> {
    root.fill(&WHITE).map_err(draw_err)?;
    // plotters labels a log axis only at powers of ten: fewer than two in range leaves the axis
    // without numbers, so such a range is drawn linearly.
    let log_y = log_y && spans_two_powers_of_ten(series.iter().flat_map(|(_, v)| v.iter()));
    let keep = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite() && (!log_y || p.1 > 0.0);
    let pts: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, v)| v.iter().filter(keep).copied().collect())
        .collect();
    let (x0, x1) = padded_range(pts.iter().flatten().map(|p| p.0));
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80);
    if log_y {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for p in pts.iter().flatten() {
            lo = lo.min(p.1);
            hi = hi.max(p.1);
        }
        if !lo.is_finite() {
            lo = 0.1;
            hi = 10.0;
        }
        if hi <= lo * 1.0001 {
            lo /= 2.0;
            hi *= 2.0;
        }
        let (lo, hi) = (lo / 1.2, hi * 1.2);
        let mut chart = builder
            .build_cartesian_2d(x0..x1, (lo..hi).log_scale())
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(format!("{y_label} (log scale)"))
            .label_style(("sans-serif", 14))
            .x_label_formatter(&fmt_tick)
            .y_label_formatter(&fmt_tick)
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(RGBColor(240, 240, 240))
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .map_err(draw_err)?;
        for (i, ((label, _), p)) in series.iter().zip(&pts).enumerate() {
            let c = palette(i);
            chart
                .draw_series(LineSeries::new(p.iter().copied(), c.stroke_width(2)))
                .map_err(draw_err)?
                .label(label.as_ref())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(draw_err)?;
    } else {
        let (y0, y1) = padded_range(pts.iter().flatten().map(|p| p.1));
        let mut chart = builder
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
        for (i, ((label, _), p)) in series.iter().zip(&pts).enumerate() {
            let c = palette(i);
            chart
                .draw_series(LineSeries::new(p.iter().copied(), c.stroke_width(2)))
                .map_err(draw_err)?
                .label(label.as_ref())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(draw_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::spans_two_powers_of_ten;

    #[test]
    fn log_axis_only_when_two_powers_of_ten_are_in_range() {
        let ys = |v: &[f64]| v.iter().map(|&y| (0.0, y)).collect::<Vec<_>>();
        assert!(spans_two_powers_of_ten(ys(&[2.0, 900.0]).iter()));
        assert!(spans_two_powers_of_ten(ys(&[0.9, 9.0]).iter()));
        assert!(!spans_two_powers_of_ten(ys(&[250.0, 3000.0]).iter()));
        assert!(!spans_two_powers_of_ten(ys(&[270.0, 300.0]).iter()));
        assert!(!spans_two_powers_of_ten(ys(&[0.0, -1.0, f64::NAN]).iter()));
    }
}
