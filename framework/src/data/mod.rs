//! Data layer: read and write `.h5ad` in pure Rust, read 10x (MTX, HDF5, Visium) and
//! CSV/TSV tables, preprocess (normalize, log1p, HVG), split and batch, and report.
//!
//! Every failure is a [`DataError`] whose message is one line naming the file, the field
//! and the fix. Nothing here panics on malformed input.

pub mod anndata;
pub mod delimited;
pub mod error;
pub mod frame;
pub mod h5ad_read;
pub mod h5ad_write;
pub(crate) mod h5util;
pub mod inspect;
pub mod matrix;
pub mod preprocess;
pub mod split;
pub mod stream;
pub mod tenx;
pub(crate) mod text;

use std::path::Path;

pub use anndata::{AnnData, MatrixSource, ObsmEntry, Raw, StorageInfo, UnsValue};
pub use delimited::read_delimited;
pub use error::DataError;
pub use frame::{Column, DataFrame};
pub use h5ad_read::{read_h5ad, read_h5ad_annotations};
pub use h5ad_write::{write_h5ad, write_h5ad_streamed, write_h5ad_with, H5adWriteOptions};
pub use inspect::{summarize, value_kind, ValueKind};
pub use matrix::{CsrMatrix, Matrix};
pub use preprocess::{highly_variable_genes, library_sizes, log1p, normalize_total, HvgFlavor};
pub use split::{stratified_split, MinibatchIter};
pub use stream::CsrRowChunks;
pub use tenx::{read_10x_h5, read_10x_mtx, read_visium};
pub use text::make_unique;

const FORMATS: &str = "pass an .h5ad file, a 10x .h5 file, a 10x MTX folder (or its matrix.mtx[.gz]), a Space Ranger folder, or a .csv/.tsv/.txt[.gz] table";

/// Read any supported input, dispatching on what `path` is:
///
/// - a folder holding `matrix.mtx[.gz]` → [`read_10x_mtx`]; one holding
///   `filtered_feature_bc_matrix.h5` → [`read_visium`] (Space Ranger, positions added when
///   `spatial/` exists); one holding a `filtered_feature_bc_matrix/` MTX folder → that;
/// - `*.h5ad` → [`read_h5ad`]; `*.h5` → [`read_10x_h5`];
/// - `matrix.mtx[.gz]` → [`read_10x_mtx`] of its folder;
/// - `*.csv`, `*.tsv`, `*.txt` (optionally `.gz`) → [`read_delimited`];
/// - any other file starting with the HDF5 signature → [`read_h5ad`].
///
/// # Errors
/// Those of the chosen reader; [`DataError::Io`] for a missing path and
/// [`DataError::Invalid`] for an unrecognized format, listing what is supported.
pub fn read_any(path: &Path) -> Result<AnnData, DataError> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.is_dir() {
        if text::find_in(path, &["matrix.mtx.gz", "matrix.mtx"]).is_some() {
            return read_10x_mtx(path);
        }
        if text::find_in(
            path,
            &["filtered_feature_bc_matrix.h5", "raw_feature_bc_matrix.h5"],
        )
        .is_some()
        {
            return read_visium(path);
        }
        let sub = path.join("filtered_feature_bc_matrix");
        if sub.is_dir() {
            return read_10x_mtx(&sub);
        }
        return Err(DataError::invalid(
            path,
            "folder",
            "holds neither a 10x MTX matrix nor a 10x .h5 matrix",
            FORMATS,
        ));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let stem = name.strip_suffix(".gz").unwrap_or(&name);
    if stem.ends_with(".h5ad") {
        read_h5ad(path)
    } else if stem.ends_with(".h5") || stem.ends_with(".hdf5") {
        read_10x_h5(path)
    } else if stem.ends_with(".mtx") {
        read_10x_mtx(path.parent().unwrap_or(Path::new(".")))
    } else if stem.ends_with(".csv") || stem.ends_with(".tsv") || stem.ends_with(".txt") {
        read_delimited(path)
    } else if starts_with_hdf5_signature(path) {
        read_h5ad(path)
    } else {
        Err(DataError::invalid(
            path,
            "file name",
            "has an unrecognized extension",
            FORMATS,
        ))
    }
}

fn starts_with_hdf5_signature(path: &Path) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map(|()| &buf == b"\x89HDF\r\n\x1a\n")
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data");

    #[test]
    fn read_any_dispatches() {
        let d = Path::new(DATA);
        let a = read_any(&d.join("kang2018_ifnb/train.h5ad")).unwrap();
        assert_eq!(a.storage.format, "h5ad");
        let v = read_any(&d.join("visium_spaceranger_sample")).unwrap();
        assert_eq!(v.storage.format, "visium");
        let h =
            read_any(&d.join("visium_spaceranger_sample/filtered_feature_bc_matrix.h5")).unwrap();
        assert_eq!(h.storage.format, "10x-h5");
        let e = read_any(&d.join("visium_spaceranger_sample/spatial/tissue_lowres_image.png"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unrecognized extension; pass an .h5ad"), "{e}");
        let e = read_any(&d.join("does-not-exist.h5ad")).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }));
    }
}
