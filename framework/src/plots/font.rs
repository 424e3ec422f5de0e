//! Bundled font registration.

use super::common::PlotError;
use plotters::style::{register_font, FontStyle};
use std::sync::OnceLock;

/// DejaVu Sans (see `assets/DejaVuSans-LICENSE.txt`).
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

static REGISTERED: OnceLock<bool> = OnceLock::new();

/// Registers the bundled font as `"sans-serif"` once per process.
pub(crate) fn ensure_font() -> Result<(), PlotError> {
    let ok = *REGISTERED.get_or_init(|| {
        let normal = register_font("sans-serif", FontStyle::Normal, DEJAVU_SANS).is_ok();
        let bold = register_font("sans-serif", FontStyle::Bold, DEJAVU_SANS).is_ok();
        normal && bold
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font(
            "bundled DejaVu Sans could not be parsed".to_string(),
        ))
    }
}
