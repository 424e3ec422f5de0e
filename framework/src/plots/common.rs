//! Shared plotting helpers: errors, output format, atomic writes, palette, ranges.

use plotters::drawing::DrawingAreaErrorKind;
use plotters::style::RGBColor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

/// Error of every plotting function. Messages are one line.
#[derive(Debug, Error)]
pub enum PlotError {
    /// The file extension is not `png` or `svg` (case-insensitive).
    #[error("unsupported plot file extension for {0} (use .png or .svg)")]
    UnsupportedExtension(String),
    /// The arguments are inconsistent (e.g. label count does not match the data shape).
    #[error("invalid plot input: {0}")]
    InvalidInput(String),
    /// Drawing failed inside plotters.
    #[error("drawing failed: {0}")]
    Draw(String),
    /// The bundled font could not be registered.
    #[error("font error: {0}")]
    Font(String),
    /// Creating, writing or renaming the output file failed.
    #[error("plot i/o error at {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Converts a plotters drawing error.
pub(crate) fn draw_err<E: std::error::Error + Send + Sync>(
    e: DrawingAreaErrorKind<E>,
) -> PlotError {
    PlotError::Draw(e.to_string().replace('\n', " "))
}

/// Qualitative 20-colour palette (Tableau 10 followed by its 10 light variants); group
/// `i` without an explicit colour gets `PALETTE[i % 20]`.
pub const PALETTE: [[u8; 3]; 20] = [
    [0x1f, 0x77, 0xb4],
    [0xff, 0x7f, 0x0e],
    [0x2c, 0xa0, 0x2c],
    [0xd6, 0x27, 0x28],
    [0x94, 0x67, 0xbd],
    [0x8c, 0x56, 0x4b],
    [0xe3, 0x77, 0xc2],
    [0x7f, 0x7f, 0x7f],
    [0xbc, 0xbd, 0x22],
    [0x17, 0xbe, 0xcf],
    [0xae, 0xc7, 0xe8],
    [0xff, 0xbb, 0x78],
    [0x98, 0xdf, 0x8a],
    [0xff, 0x98, 0x96],
    [0xc5, 0xb0, 0xd5],
    [0xc4, 0x9c, 0x94],
    [0xf7, 0xb6, 0xd2],
    [0xc7, 0xc7, 0xc7],
    [0xdb, 0xdb, 0x8d],
    [0x9e, 0xda, 0xe5],
];

pub(crate) fn palette(i: usize) -> RGBColor {
    let c = PALETTE[i % PALETTE.len()];
    RGBColor(c[0], c[1], c[2])
}

/// Output format chosen from the extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Png,
    Svg,
}

pub(crate) fn output_format(path: &Path) -> Result<Format, PlotError> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("png") => Ok(Format::Png),
        Some("svg") => Ok(Format::Svg),
        _ => Err(PlotError::UnsupportedExtension(path.display().to_string())),
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Hidden temporary sibling of `path` with a lower-case extension matching `format`;
/// creates the parent directory if needed.
pub(crate) fn temp_path(path: &Path, format: Format) -> Result<PathBuf, PlotError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|source| PlotError::Io {
        path: parent.display().to_string(),
        source,
    })?;
    let stem = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plot".to_string());
    let ext = match format {
        Format::Png => "png",
        Format::Svg => "svg",
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok(parent.join(format!(".{stem}.tmp-{}-{n}.{ext}", std::process::id())))
}

/// Renames the finished temporary file over `path`, or removes it on error.
pub(crate) fn commit(
    result: Result<(), PlotError>,
    tmp: &Path,
    path: &Path,
) -> Result<(), PlotError> {
    match result {
        Ok(()) => std::fs::rename(tmp, path).map_err(|source| {
            let _ = std::fs::remove_file(tmp);
            PlotError::Io {
                path: path.display().to_string(),
                source,
            }
        }),
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(e)
        }
    }
}

/// Renders with the backend chosen by `path`'s extension: the named drawing function is
/// called as `draw_fn(&root, args...)` (it must be generic over the backend), then the
/// result is committed atomically.
macro_rules! render {
    ($path:expr, $size:expr, $draw:ident ( $($arg:expr),* $(,)? )) => {{
        use plotters::prelude::{BitMapBackend, IntoDrawingArea, SVGBackend};
        let path: &std::path::Path = $path;
        let format = $crate::plots::common::output_format(path)?;
        $crate::plots::font::ensure_font()?;
        let tmp = $crate::plots::common::temp_path(path, format)?;
        let result = match format {
            $crate::plots::common::Format::Png => {
                let root = BitMapBackend::new(&tmp, $size).into_drawing_area();
                $draw(&root, $($arg),*)
                    .and_then(|_| root.present().map_err($crate::plots::common::draw_err))
            }
            $crate::plots::common::Format::Svg => {
                let root = SVGBackend::new(&tmp, $size).into_drawing_area();
                $draw(&root, $($arg),*)
                    .and_then(|_| root.present().map_err($crate::plots::common::draw_err))
            }
        };
        $crate::plots::common::commit(result, &tmp, path)
    }};
}
pub(crate) use render;

/// `(lo, hi)` covering the finite values with 5 % padding; a default for empty or
/// degenerate input.
pub(crate) fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * lo.abs().max(1.0) {
        let pad = 0.5 * lo.abs().max(1.0);
        return (lo - pad, hi + pad);
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad, hi + pad)
}

/// Approximate rendered width in pixels of `s` at font size `size`.
pub(crate) fn text_width(s: &str, size: f64) -> u32 {
    (s.chars().count() as f64 * size * 0.6).ceil() as u32
}

/// Compact axis tick label: up to 4 decimals with trailing zeros trimmed, scientific
/// notation outside `[1e-3, 1e5)`.
pub(crate) fn fmt_tick(v: &f64) -> String {
    let v = *v;
    if v == 0.0 {
        return "0".to_string();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}
