//! The in-memory annotated data matrix (the anndata model): `X`, `obs`, `var`, `layers`,
//! `obsm`, `raw`, `uns`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::DataError;
use super::frame::DataFrame;
use super::matrix::Matrix;

/// One entry of `obsm` (per-cell multi-dimensional annotation).
#[derive(Debug, Clone, PartialEq)]
pub enum ObsmEntry {
    /// A dense `rows × cols` array (PCA, UMAP, spatial coordinates), row-major.
    Array {
        /// Number of rows (cells).
        rows: usize,
        /// Number of columns.
        cols: usize,
        /// Row-major values.
        data: Vec<f32>,
    },
    /// A dataframe with one row per cell (e.g. CITE-seq protein counts).
    Frame(DataFrame),
}

impl ObsmEntry {
    /// `(rows, cols)`; for a frame, cols is the number of columns.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            ObsmEntry::Array { rows, cols, .. } => (*rows, *cols),
            ObsmEntry::Frame(f) => (f.len(), f.columns.len()),
        }
    }

    /// The entry as a dense row-major f32 array plus column names (`0..cols` for arrays).
    /// Non-numeric frame columns are skipped; missing values become NaN.
    pub fn to_dense(&self) -> (usize, usize, Vec<f32>, Vec<String>) {
        match self {
            ObsmEntry::Array { rows, cols, data } => (
                *rows,
                *cols,
                data.clone(),
                (0..*cols).map(|c| c.to_string()).collect(),
            ),
            ObsmEntry::Frame(f) => {
                use super::frame::Column;
                let mut names = Vec::new();
                let mut cols_data: Vec<Vec<f32>> = Vec::new();
                for (name, col) in &f.columns {
                    let v: Option<Vec<f32>> = match col {
                        Column::Float(v) => Some(v.iter().map(|&x| x as f32).collect()),
                        Column::Int(v) => Some(v.iter().map(|&x| x as f32).collect()),
                        Column::Bool(v) => {
                            Some(v.iter().map(|&x| f32::from(u8::from(x))).collect())
                        }
                        Column::NullableInt { values, mask } => Some(
                            values
                                .iter()
                                .zip(mask)
                                .map(|(&x, &m)| if m { f32::NAN } else { x as f32 })
                                .collect(),
                        ),
                        _ => None,
                    };
                    if let Some(v) = v {
                        names.push(name.clone());
                        cols_data.push(v);
                    }
                }
                let rows = f.len();
                let cols = cols_data.len();
                let mut data = vec![0.0; rows * cols];
                for (c, col) in cols_data.iter().enumerate() {
                    for (r, &v) in col.iter().enumerate() {
                        data[r * cols + c] = v;
                    }
                }
                (rows, cols, data, names)
            }
        }
    }
}

/// A value in `uns` (unstructured annotation). Unsupported encodings are skipped on read.
#[derive(Debug, Clone, PartialEq)]
pub enum UnsValue {
    /// A string scalar.
    Str(String),
    /// A float scalar.
    Float(f64),
    /// An integer scalar.
    Int(i64),
    /// A boolean scalar.
    Bool(bool),
    /// A 1-D string array.
    Strings(Vec<String>),
    /// A 1-D numeric array.
    Floats(Vec<f64>),
    /// A nested mapping.
    Map(BTreeMap<String, UnsValue>),
}

/// The frozen raw (usually unfiltered, un-normalized) matrix of `.raw`.
#[derive(Debug, Clone, PartialEq)]
pub struct Raw {
    /// The raw matrix: same cells as `X`, genes as in `var`.
    pub x: Matrix,
    /// Gene annotation of the raw matrix.
    pub var: DataFrame,
}

/// How the data was stored where it was read from (kept for reports and for refusing a
/// likelihood on the wrong kind of data).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StorageInfo {
    /// Source format: `h5ad`, `10x-h5`, `10x-mtx`, `csv`, `tsv`, or `memory`.
    pub format: String,
    /// Encoding of `X` as stored: `csr_matrix`, `csc_matrix`, `array` (dense), `mtx`, ...
    pub x_encoding: String,
    /// Element type of `X` as stored: `float32`, `float64`, `int32`, ...
    pub x_dtype: String,
    /// Elements skipped while reading (unsupported encodings outside `X`/`layers`), one line each.
    pub skipped: Vec<String>,
}

/// An annotated data matrix: cells × genes.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnData {
    /// The main matrix, `n_obs × n_vars`.
    pub x: Matrix,
    /// Per-cell annotation (`n_obs` rows).
    pub obs: DataFrame,
    /// Per-gene annotation (`n_vars` rows); the index holds the gene names.
    pub var: DataFrame,
    /// Extra matrices with the shape of `X` (e.g. `counts`).
    pub layers: BTreeMap<String, Matrix>,
    /// Per-cell multi-dimensional annotation.
    pub obsm: BTreeMap<String, ObsmEntry>,
    /// The `.raw` attribute, if present.
    pub raw: Option<Raw>,
    /// Unstructured annotation.
    pub uns: BTreeMap<String, UnsValue>,
    /// How `X` was stored in the source file (not written to output files).
    pub storage: StorageInfo,
}

impl AnnData {
    /// A new object with empty layers/obsm/uns, no raw, and `storage.format = "memory"`.
    pub fn new(x: Matrix, obs: DataFrame, var: DataFrame) -> Self {
        AnnData {
            x,
            obs,
            var,
            layers: BTreeMap::new(),
            obsm: BTreeMap::new(),
            raw: None,
            uns: BTreeMap::new(),
            storage: StorageInfo {
                format: "memory".into(),
                ..StorageInfo::default()
            },
        }
    }

    /// Number of cells.
    pub fn n_obs(&self) -> usize {
        self.x.shape().0
    }

    /// Number of genes.
    pub fn n_vars(&self) -> usize {
        self.x.shape().1
    }

    /// Gene names (the `var` index).
    pub fn gene_names(&self) -> &[String] {
        &self.var.index
    }

    /// Cell names (the `obs` index).
    pub fn cell_names(&self) -> &[String] {
        &self.obs.index
    }

    /// The matrix selected by `source`. For [`MatrixSource::Raw`] the genes are those of
    /// `raw.var`, which may differ from [`AnnData::gene_names`]; an `obsm` source is copied into
    /// a dense matrix (non-numeric dataframe columns skipped).
    ///
    /// # Errors
    /// [`DataError::Missing`] naming what is available when the layer, `.raw` or obsm key is
    /// absent or has no numeric column.
    pub fn matrix(&self, source: &MatrixSource, file: &Path) -> Result<Cow<'_, Matrix>, DataError> {
        let missing = |what: String| {
            DataError::missing(
                file,
                what,
                self.available_sources(),
                "set the matrix source in your config (e.g. data.matrix) to one of them",
            )
        };
        match source {
            MatrixSource::X => Ok(Cow::Borrowed(&self.x)),
            MatrixSource::Layer(name) => self
                .layers
                .get(name)
                .map(Cow::Borrowed)
                .ok_or_else(|| missing(format!("layer \"{name}\""))),
            MatrixSource::Raw => self
                .raw
                .as_ref()
                .map(|r| Cow::Borrowed(&r.x))
                .ok_or_else(|| missing("raw (.raw/X)".into())),
            MatrixSource::Obsm(key) => {
                let (rows, cols, data, _) = self
                    .obsm
                    .get(key)
                    .ok_or_else(|| missing(format!("obsm \"{key}\"")))?
                    .to_dense();
                if cols == 0 {
                    return Err(missing(format!("a numeric column in obsm \"{key}\"")));
                }
                Ok(Cow::Owned(Matrix::Dense { rows, cols, data }))
            }
        }
    }

    /// Feature names of the matrix selected by `source`: `raw.var` for raw, the dataframe's
    /// numeric columns for an obsm frame, `var` otherwise.
    pub fn gene_names_for(&self, source: &MatrixSource) -> Cow<'_, [String]> {
        match (source, &self.raw) {
            (MatrixSource::Raw, Some(raw)) => Cow::Borrowed(&raw.var.index),
            (MatrixSource::Obsm(key), _) => match self.obsm.get(key) {
                Some(entry) => Cow::Owned(entry.to_dense().3),
                None => Cow::Owned(Vec::new()),
            },
            _ => Cow::Borrowed(&self.var.index),
        }
    }

    /// The matrix sources present, as strings accepted by [`MatrixSource::from_str`].
    pub fn available_sources(&self) -> Vec<String> {
        let mut out = vec!["X".to_string()];
        out.extend(self.layers.keys().map(|k| format!("layers/{k}")));
        if self.raw.is_some() {
            out.push("raw".into());
        }
        out.extend(self.obsm.keys().map(|k| format!("obsm/{k}")));
        out
    }

    /// A new object holding the given cells in order (all of `X`, `obs`, `layers`, `obsm`,
    /// `raw`; `var` and `uns` are copied).
    pub fn select_obs(&self, rows: &[usize]) -> AnnData {
        AnnData {
            x: self.x.select_rows(rows),
            obs: self.obs.select_rows(rows),
            var: self.var.clone(),
            layers: self
                .layers
                .iter()
                .map(|(k, m)| (k.clone(), m.select_rows(rows)))
                .collect(),
            obsm: self
                .obsm
                .iter()
                .map(|(k, e)| {
                    let e = match e {
                        ObsmEntry::Array { cols, data, .. } => ObsmEntry::Array {
                            rows: rows.len(),
                            cols: *cols,
                            data: rows
                                .iter()
                                .flat_map(|&r| data[r * cols..(r + 1) * cols].iter().copied())
                                .collect(),
                        },
                        ObsmEntry::Frame(f) => ObsmEntry::Frame(f.select_rows(rows)),
                    };
                    (k.clone(), e)
                })
                .collect(),
            raw: self.raw.as_ref().map(|r| Raw {
                x: r.x.select_rows(rows),
                var: r.var.clone(),
            }),
            uns: self.uns.clone(),
            storage: self.storage.clone(),
        }
    }

    /// A new object holding the given genes in order (`X`, `layers`, `var`; `raw` is kept
    /// whole because it has its own genes).
    pub fn select_vars(&self, cols: &[usize]) -> AnnData {
        let mut out = self.clone();
        out.x = self.x.select_cols(cols);
        out.var = select_frame_rows(&self.var, cols);
        out.layers = self
            .layers
            .iter()
            .map(|(k, m)| (k.clone(), m.select_cols(cols)))
            .collect();
        out
    }

    /// Check that every part agrees on the number of cells and genes.
    ///
    /// # Errors
    /// A one-line description of the first disagreement, naming the element.
    pub fn validate(&self) -> Result<(), String> {
        let (n, g) = self.x.shape();
        if self.x.values().len() != n * g && matches!(self.x, Matrix::Dense { .. }) {
            return Err("X: dense buffer length != rows * cols".into());
        }
        self.validate_annotations()
    }

    /// [`AnnData::validate`] without the check of a dense `X`'s buffer length: everything
    /// agrees with `X`'s shape (for a file whose `X` values are made while it is written).
    ///
    /// # Errors
    /// A one-line description of the first disagreement, naming the element.
    pub fn validate_annotations(&self) -> Result<(), String> {
        let (n, g) = self.x.shape();
        if let Matrix::Csr(m) = &self.x {
            m.validate().map_err(|e| format!("X: {e}"))?;
        }
        if self.obs.len() != n {
            return Err(format!("obs has {} rows but X has {n}", self.obs.len()));
        }
        if self.var.len() != g {
            return Err(format!(
                "var has {} rows but X has {g} columns",
                self.var.len()
            ));
        }
        self.obs.validate().map_err(|e| format!("obs: {e}"))?;
        self.var.validate().map_err(|e| format!("var: {e}"))?;
        for (k, m) in &self.layers {
            if m.shape() != (n, g) {
                return Err(format!(
                    "layers/{k} has shape {:?}, X has {:?}",
                    m.shape(),
                    (n, g)
                ));
            }
        }
        for (k, e) in &self.obsm {
            if e.shape().0 != n {
                return Err(format!("obsm/{k} has {} rows, X has {n}", e.shape().0));
            }
        }
        if let Some(raw) = &self.raw {
            if raw.x.shape().0 != n || raw.x.shape().1 != raw.var.len() {
                return Err(format!(
                    "raw/X has shape {:?} but X has {n} rows and raw/var {} rows",
                    raw.x.shape(),
                    raw.var.len()
                ));
            }
        }
        Ok(())
    }
}

fn select_frame_rows(f: &DataFrame, rows: &[usize]) -> DataFrame {
    f.select_rows(rows)
}

/// Which matrix of an [`AnnData`] to use.
///
/// In configs it is a string: `"X"`, `"raw"` (also `"raw/X"`), or `"layers/<name>"`
/// (e.g. `"layers/counts"`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum MatrixSource {
    /// The main matrix `X`.
    #[default]
    X,
    /// A named layer.
    Layer(String),
    /// `.raw/X`.
    Raw,
    /// A per-cell array or numeric dataframe in `obsm` (e.g. a CITE-seq protein panel); its
    /// feature names are the dataframe's columns (`0..cols` for arrays).
    Obsm(String),
}

impl FromStr for MatrixSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "X" | "x" => Ok(MatrixSource::X),
            "raw" | "raw/X" | "raw.X" => Ok(MatrixSource::Raw),
            _ => {
                let layer = s
                    .strip_prefix("layers/")
                    .or_else(|| s.strip_prefix("layers."));
                let obsm = s.strip_prefix("obsm/").or_else(|| s.strip_prefix("obsm."));
                match (layer, obsm) {
                    (Some(name), _) if !name.is_empty() => Ok(MatrixSource::Layer(name.to_string())),
                    (_, Some(key)) if !key.is_empty() => Ok(MatrixSource::Obsm(key.to_string())),
                    _ => Err(format!(
                        "invalid matrix source \"{s}\": expected \"X\", \"raw\", \"layers/<name>\" or \"obsm/<key>\" (e.g. \"layers/counts\", \"obsm/protein_expression\")"
                    )),
                }
            }
        }
    }
}

impl TryFrom<String> for MatrixSource {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MatrixSource> for String {
    fn from(s: MatrixSource) -> String {
        s.to_string()
    }
}

impl fmt::Display for MatrixSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatrixSource::X => write!(f, "X"),
            MatrixSource::Layer(n) => write!(f, "layers/{n}"),
            MatrixSource::Raw => write!(f, "raw"),
            MatrixSource::Obsm(k) => write!(f, "obsm/{k}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_source_serde() {
        for (s, v) in [
            ("\"X\"", MatrixSource::X),
            ("\"raw\"", MatrixSource::Raw),
            ("\"layers/counts\"", MatrixSource::Layer("counts".into())),
            (
                "\"obsm/protein_expression\"",
                MatrixSource::Obsm("protein_expression".into()),
            ),
        ] {
            let got: MatrixSource = serde_json::from_str(s).unwrap();
            assert_eq!(got, v);
            assert_eq!(serde_json::to_string(&v).unwrap(), s);
        }
        assert!(serde_json::from_str::<MatrixSource>("\"counts\"").is_err());
    }

    #[test]
    fn missing_layer_names_alternatives() {
        let a = AnnData::new(
            Matrix::Dense {
                rows: 1,
                cols: 1,
                data: vec![1.0],
            },
            DataFrame::from_index(vec!["c".into()]),
            DataFrame::from_index(vec!["g".into()]),
        );
        let e = a
            .matrix(&MatrixSource::Layer("counts".into()), Path::new("f.h5ad"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("layer \"counts\" not found (available: X)"),
            "{e}"
        );
        assert!(a.validate().is_ok());
    }
}
