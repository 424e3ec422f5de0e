//! Streaming row chunks of an `.h5ad` matrix from disk, so memory stays bounded by the
//! chunk size rather than the number of cells.

use std::path::Path;

use hdf5_reader::{Dataset, SliceInfo, SliceInfoElem};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::anndata::MatrixSource;
use super::error::DataError;
use super::h5util::{attr_i64s, guard, join, Node, H5};
use super::matrix::{CsrMatrix, Matrix};

enum Layout {
    /// CSR: `indptr` held in memory, `data`/`indices` read by slice.
    Csr {
        indptr: Vec<usize>,
        data: Box<Dataset>,
        indices: Box<Dataset>,
    },
    /// Dense 2-D array read by row hyperslabs.
    Dense(Box<Dataset>),
}

/// Reads row ranges of `X`, a layer or `raw/X` of an `.h5ad` file without loading the whole
/// matrix: CSR matrices keep only `indptr` (8 bytes per cell) in memory and read the
/// `data`/`indices` slices of the requested rows; dense matrices read row hyperslabs.
/// CSC matrices cannot be streamed by rows (convert them to CSR).
///
/// Iterating yields consecutive chunks of `chunk_rows` rows as [`Matrix`] values;
/// [`CsrRowChunks::read_rows`] gives random access, and [`CsrRowChunks::shuffled_chunks`]
/// a seeded chunk order for chunk-shuffled training.
pub struct CsrRowChunks {
    h5: H5,
    element: String,
    rows: usize,
    cols: usize,
    layout: Layout,
    chunk_rows: usize,
    next: usize,
}

impl CsrRowChunks {
    /// Open the matrix `source` of the `.h5ad` file `path` for streaming in chunks of
    /// `chunk_rows` rows (0 is treated as 1).
    ///
    /// # Errors
    /// As [`crate::data::read_h5ad`] for unreadable files; [`DataError::Missing`] when the
    /// element is absent; [`DataError::UnsupportedEncoding`] for CSC or other encodings.
    pub fn open(path: &Path, source: &MatrixSource, chunk_rows: usize) -> Result<Self, DataError> {
        let element = match source {
            MatrixSource::X => "X".to_string(),
            MatrixSource::Raw => "raw/X".to_string(),
            MatrixSource::Layer(name) => format!("layers/{name}"),
            MatrixSource::Obsm(key) => format!("obsm/{key}"),
        };
        Self::open_element(path, &element, chunk_rows)
    }

    /// [`CsrRowChunks::open`] for the HDF5 element path `element` (`"X"`, `"raw/X"`,
    /// `"layers/counts"`, …).
    ///
    /// # Errors
    /// As [`CsrRowChunks::open`].
    pub fn open_element(path: &Path, element: &str, chunk_rows: usize) -> Result<Self, DataError> {
        let h5 = H5::open(path)?;
        let element = element.to_string();
        let fix = "re-create the file with anndata";
        let node = h5.node(&element)?.ok_or_else(|| {
            DataError::missing(
                path,
                format!("HDF5 element \"{element}\""),
                vec![],
                "set the matrix source to an element present in the file",
            )
        })?;
        let enc = node.encoding();
        let (rows, cols, layout) = match node {
            Node::Dataset(ds) => {
                let shape = ds.shape().to_vec();
                if shape.len() != 2 {
                    return Err(h5.bad(&element, "expected a 2-d array", fix));
                }
                (shape[0] as usize, shape[1] as usize, Layout::Dense(ds))
            }
            Node::Group(_) if enc.as_deref() == Some("csr_matrix") => {
                let shape = node
                    .attr("shape")
                    .and_then(|a| attr_i64s(&a))
                    .filter(|s| s.len() == 2 && s.iter().all(|&d| d >= 0))
                    .ok_or_else(|| h5.bad(&element, "csr_matrix without a valid `shape`", fix))?;
                let ppath = join(&element, "indptr");
                let indptr: Vec<usize> = h5
                    .read_num(&h5.dataset(&ppath, fix)?, &ppath)?
                    .to_i64()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| usize::try_from(i).unwrap_or(usize::MAX))
                    .collect();
                let data = Box::new(h5.dataset(&join(&element, "data"), fix)?);
                let indices = Box::new(h5.dataset(&join(&element, "indices"), fix)?);
                let nnz = data.shape().first().copied().unwrap_or(0) as usize;
                let ok = indptr.len() == shape[0] as usize + 1
                    && indptr.first() == Some(&0)
                    && indptr.windows(2).all(|w| w[0] <= w[1])
                    && indptr.last() == Some(&nnz)
                    && indices.shape().first().copied().unwrap_or(0) as usize == nnz;
                if !ok {
                    return Err(h5.bad(&ppath, "indptr is inconsistent with shape/data", fix));
                }
                (
                    shape[0] as usize,
                    shape[1] as usize,
                    Layout::Csr {
                        indptr,
                        data,
                        indices,
                    },
                )
            }
            Node::Group(_) => {
                return Err(DataError::UnsupportedEncoding {
                    path: path.to_path_buf(),
                    field: element,
                    encoding: enc.unwrap_or_else(|| "none".into()),
                    fix: "streaming needs CSR or dense storage; convert in Python with `adata.X = scipy.sparse.csr_matrix(adata.X)` and save again".into(),
                })
            }
        };
        Ok(CsrRowChunks {
            h5,
            element,
            rows,
            cols,
            layout,
            chunk_rows: chunk_rows.max(1),
            next: 0,
        })
    }

    /// The element's anndata encoding: `"csr_matrix"` or `"array"`.
    pub fn encoding(&self) -> &'static str {
        match self.layout {
            Layout::Csr { .. } => "csr_matrix",
            Layout::Dense(_) => "array",
        }
    }

    /// `(rows, cols)` of the whole matrix.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// `[start, end)` row ranges of all chunks, in file order.
    pub fn chunk_ranges(&self) -> Vec<(usize, usize)> {
        (0..self.rows)
            .step_by(self.chunk_rows)
            .map(|s| (s, (s + self.chunk_rows).min(self.rows)))
            .collect()
    }

    /// The chunk ranges in a seeded random order (for chunk-level shuffling).
    pub fn shuffled_chunks(&self, seed: u64) -> Vec<(usize, usize)> {
        let mut r = self.chunk_ranges();
        r.shuffle(&mut StdRng::seed_from_u64(seed));
        r
    }

    /// Read rows `start..end` (clamped to the matrix).
    ///
    /// # Errors
    /// [`DataError::Invalid`] if the slice cannot be decoded or holds out-of-range column ids.
    pub fn read_rows(&self, start: usize, end: usize) -> Result<Matrix, DataError> {
        let end = end.min(self.rows);
        let start = start.min(end);
        let field = format!("{} rows {start}..{end}", self.element);
        match &self.layout {
            Layout::Dense(ds) => {
                let sel = SliceInfo {
                    selections: vec![
                        SliceInfoElem::Slice {
                            start: start as u64,
                            end: end as u64,
                            step: 1,
                        },
                        SliceInfoElem::Slice {
                            start: 0,
                            end: self.cols as u64,
                            step: 1,
                        },
                    ],
                };
                let data = if start == end {
                    Vec::new()
                } else {
                    read_f32_slice(&self.h5, ds, &field, &sel)?
                };
                Ok(Matrix::Dense {
                    rows: end - start,
                    cols: self.cols,
                    data,
                })
            }
            Layout::Csr {
                indptr,
                data,
                indices,
            } => {
                let (a, b) = (indptr[start] as u64, indptr[end] as u64);
                let vals = self.h5.read_num_range(data, &field, a, b)?.to_f32();
                let idx: Vec<u32> = self
                    .h5
                    .read_num_range(indices, &field, a, b)?
                    .to_i64()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
                    .collect();
                let m = CsrMatrix {
                    rows: end - start,
                    cols: self.cols,
                    indptr: indptr[start..=end]
                        .iter()
                        .map(|&p| p - indptr[start])
                        .collect(),
                    indices: idx,
                    data: vals,
                };
                m.validate().map_err(|e| {
                    self.h5.bad(
                        &field,
                        e,
                        "the file is corrupted; re-create it with anndata",
                    )
                })?;
                Ok(Matrix::Csr(m))
            }
        }
    }
}

fn read_f32_slice(
    h5: &H5,
    ds: &Dataset,
    field: &str,
    sel: &SliceInfo,
) -> Result<Vec<f32>, DataError> {
    use hdf5_reader::Datatype;
    guard(&h5.path, field, || {
        let r = match ds.dtype() {
            Datatype::FloatingPoint { size: 4, .. } => ds
                .read_slice::<f32>(sel)
                .map(|a| a.iter().copied().collect()),
            Datatype::FloatingPoint { size: 8, .. } => ds
                .read_slice::<f64>(sel)
                .map(|a| a.iter().map(|&x| x as f32).collect()),
            Datatype::FixedPoint {
                size: 4,
                signed: true,
                ..
            } => ds
                .read_slice::<i32>(sel)
                .map(|a| a.iter().map(|&x| x as f32).collect()),
            Datatype::FixedPoint {
                size: 8,
                signed: true,
                ..
            } => ds
                .read_slice::<i64>(sel)
                .map(|a| a.iter().map(|&x| x as f32).collect()),
            other => {
                return Err(h5.bad(
                    field,
                    format!(
                        "dense dtype {} cannot be streamed",
                        super::h5util::dtype_name(other)
                    ),
                    "store X as float32/float64",
                ))
            }
        };
        r.map_err(|e| h5.err(field, e))
    })
}

impl Iterator for CsrRowChunks {
    type Item = Result<Matrix, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.rows {
            return None;
        }
        let start = self.next;
        self.next = (start + self.chunk_rows).min(self.rows);
        Some(self.read_rows(start, self.next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(rel: &str) -> std::path::PathBuf {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../data")).join(rel)
    }

    #[test]
    fn chunks_reassemble_the_matrix() {
        let full = crate::data::read_h5ad(&data("pbmc68k_reduced/train.h5ad")).unwrap();
        let dense = full.x.to_dense();
        for file in [
            "pbmc68k_reduced/train.h5ad",
            "pbmc68k_reduced/variants/train_gzip.h5ad",
            "pbmc68k_reduced/variants/train_dense_f64.h5ad",
        ] {
            let chunks = CsrRowChunks::open(&data(file), &MatrixSource::X, 64).unwrap();
            assert_eq!(chunks.shape(), (560, 765));
            assert_eq!(chunks.chunk_ranges().len(), 9);
            let mut got = Vec::new();
            for c in chunks {
                got.extend(c.unwrap().to_dense());
            }
            assert_eq!(got, dense, "{file}");
        }
        let layer = CsrRowChunks::open(
            &data("pbmc68k_reduced/train.h5ad"),
            &MatrixSource::Layer("counts".into()),
            100,
        )
        .unwrap();
        let part = layer.read_rows(500, 560).unwrap();
        assert_eq!(
            part,
            full.layers["counts"].select_rows(&(500..560).collect::<Vec<_>>())
        );
        let order = layer.shuffled_chunks(3);
        assert_eq!(order.len(), 6);
        assert_eq!(order, layer.shuffled_chunks(3));
        let e = CsrRowChunks::open(
            &data("pbmc68k_reduced/variants/train_csc.h5ad"),
            &MatrixSource::X,
            10,
        )
        .err()
        .unwrap();
        assert!(matches!(e, DataError::UnsupportedEncoding { .. }), "{e}");
    }
}
