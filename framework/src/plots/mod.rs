//! Evaluation plots (PNG or SVG, chosen by the file extension) drawn with `plotters`.
//!
//! Text uses the bundled DejaVu Sans font (`assets/DejaVuSans.ttf`, Bitstream Vera /
//! public-domain licence in `assets/DejaVuSans-LICENSE.txt`), registered with plotters'
//! `ab_glyph` backend under the family name `"sans-serif"`, so no system fontconfig is
//! needed. SVG output references the family `sans-serif` in `<text>` elements.
//!
//! Every function writes atomically: the figure is rendered to a hidden temporary file in
//! the target directory (created if missing) and renamed over `path` only on success.
//! Non-finite data points are skipped. Functions return [`PlotError`] and never panic on
//! user data.
//!
//! - [`scatter_overlay`]: groups of 2-D points with a legend panel (real vs generated on
//!   PC1/PC2, latents coloured by cell type; qualitative 20-colour [`PALETTE`]).
//! - [`scatter_xy_with_diagonal`]: real vs generated per-gene statistic with the `y = x`
//!   line and an annotation.
//! - [`line_curves`]: loss curves, optional log-scale y axis.
//! - [`histograms_overlay`]: overlaid normalized histograms (QC distributions).
//! - [`heatmap`]: matrix of values with row / column labels and a colour bar (viridis).

mod common;
mod font;
mod heatmap;
mod histogram;
mod lines;
mod scatter;

pub use common::{PlotError, PALETTE};
pub use heatmap::heatmap;
pub use histogram::histograms_overlay;
pub use lines::line_curves;
pub use scatter::{scatter_overlay, scatter_xy_with_diagonal, ScatterGroup};

#[cfg(test)]
mod tests;
