//! Overlaid histograms (QC distributions).

use super::common::{draw_err, fmt_tick, padded_range, palette, render, PlotError};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Overlaid histograms of several series on shared bins: `bins` equal-width bins over the
/// range of all finite values; each bar height is the **fraction** of that series' finite
/// values in the bin (so series of different sizes are comparable). Bars are
/// semi-transparent with an outline. 1000 × 650 px.
///
/// # Errors
/// [`PlotError`] for an extension other than png/svg, an empty `series`, `bins == 0`, a
/// drawing failure, or an I/O error.
pub fn histograms_overlay<S: AsRef<str>>(
    path: impl AsRef<Path>,
    title: &str,
    x_label: &str,
    series: &[(S, Vec<f32>)],
    bins: usize,
) -> Result<(), PlotError> {
    if series.is_empty() || bins == 0 {
        return Err(PlotError::InvalidInput(
            "histograms_overlay: need at least one series and bins > 0".to_string(),
        ));
    }
    render!(
        path.as_ref(),
        (1000, 650),
        draw_hist(title, x_label, series, bins)
    )
}

fn draw_hist<DB: DrawingBackend, S: AsRef<str>>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    series: &[(S, Vec<f32>)],
    bins: usize,
) -> Result<(), PlotError> {
    root.fill(&WHITE).map_err(draw_err)?;
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in series
        .iter()
        .flat_map(|s| s.1.iter())
        .filter(|v| v.is_finite())
    {
        lo = lo.min(f64::from(*v));
        hi = hi.max(f64::from(*v));
    }
    if !lo.is_finite() {
        lo = 0.0;
        hi = 1.0;
    }
    if hi <= lo {
        lo -= 0.5;
        hi += 0.5;
    }
    let width = (hi - lo) / bins as f64;
    let hists: Vec<(Vec<f64>, usize)> = series
        .iter()
        .map(|(_, v)| {
            let mut h = vec![0.0; bins];
            let mut n = 0usize;
            for x in v.iter().filter(|x| x.is_finite()) {
                let b = (((f64::from(*x) - lo) / width) as usize).min(bins - 1);
                h[b] += 1.0;
                n += 1;
            }
            if n > 0 {
                h.iter_mut().for_each(|c| *c /= n as f64);
            }
            (h, n)
        })
        .collect();
    let ymax = hists
        .iter()
        .flat_map(|h| h.0.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.08;
    let (x0, x1) = padded_range([lo, hi].into_iter());
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, 0.0..ymax)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("fraction of cells")
        .label_style(("sans-serif", 14))
        .x_label_formatter(&fmt_tick)
        .y_label_formatter(&fmt_tick)
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(draw_err)?;
    for (i, ((label, _), (h, n))) in series.iter().zip(&hists).enumerate() {
        let c = palette(i);
        chart
            .draw_series(
                h.iter()
                    .enumerate()
                    .filter(|(_, v)| **v > 0.0)
                    .map(|(b, v)| {
                        let xa = lo + b as f64 * width;
                        Rectangle::new([(xa, 0.0), (xa + width, *v)], c.mix(0.35).filled())
                    }),
            )
            .map_err(draw_err)?
            .label(format!("{} (n={n})", label.as_ref()))
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.mix(0.6).filled())
            });
        // step outline
        let mut outline = Vec::with_capacity(2 * bins + 2);
        outline.push((lo, 0.0));
        for (b, v) in h.iter().enumerate() {
            let xa = lo + b as f64 * width;
            outline.push((xa, *v));
            outline.push((xa + width, *v));
        }
        outline.push((hi, 0.0));
        chart
            .draw_series(LineSeries::new(outline, c.stroke_width(2)))
            .map_err(draw_err)?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(draw_err)?;
    Ok(())
}
