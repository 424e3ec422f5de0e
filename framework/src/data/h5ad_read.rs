//! Read `.h5ad` files (anndata ≥ 0.8 on-disk format, `encoding-type` attributes) in pure Rust.

use std::collections::BTreeMap;
use std::path::Path;

use super::anndata::{AnnData, ObsmEntry, Raw, StorageInfo, UnsValue};
use super::error::DataError;
use super::frame::{Column, DataFrame};
use super::h5util::{attr_bool, attr_i64s, attr_string, attr_strings, dtype_name, join, Node, H5};
use super::matrix::{CsrMatrix, Matrix};

const MATRIX_FIX: &str = "store it as a dense array or a CSR/CSC sparse matrix, e.g. in Python `adata.X = scipy.sparse.csr_matrix(adata.X); adata.write_h5ad(path)`";

/// Read an `.h5ad` file: `X` (dense, CSR or CSC; any int/float dtype, converted to f32),
/// `obs`, `var`, `layers`, `obsm` (arrays and dataframes), `raw` and `uns`.
///
/// Elements outside `X`/`layers`/`raw` whose encoding is not supported (e.g. an awkward
/// array in `uns`, a sparse `obsp`) are skipped and listed in `storage.skipped`.
///
/// # Errors
/// [`DataError::Io`] if the file cannot be opened, [`DataError::NotHdf5`] for a non-HDF5,
/// truncated or corrupted file, [`DataError::Missing`] when `X` is absent,
/// [`DataError::UnsupportedEncoding`] for an `X`/layer encoding other than dense/CSR/CSC,
/// and [`DataError::Invalid`] for inconsistent content (shapes, index ranges).
/// Non-finite values are not an error here: check [`Matrix::is_finite`].
pub fn read_h5ad(path: &Path) -> Result<AnnData, DataError> {
    let h5 = H5::open(path)?;
    let mut reader = Reader {
        h5: &h5,
        skipped: Vec::new(),
        matrices: true,
    };
    reader.read()
}

/// Read an `.h5ad` file's annotations without its expression matrices: `obs`, `var`, `obsm`,
/// `uns` and `raw/var` as [`read_h5ad`] reads them, while `X` (and `raw/X`) are replaced by
/// empty sparse matrices of their stored shape and `layers` are left out. For streaming
/// training, where the matrix is read in row chunks ([`crate::data::CsrRowChunks`]) and only
/// the annotations are held in memory.
///
/// # Errors
/// As [`read_h5ad`], except that matrix contents are not read and so not checked.
pub fn read_h5ad_annotations(path: &Path) -> Result<AnnData, DataError> {
    let h5 = H5::open(path)?;
    let mut reader = Reader {
        h5: &h5,
        skipped: Vec::new(),
        matrices: false,
    };
    reader.read()
}

/// Matrix read from an h5ad element plus how it was stored.
pub(crate) struct StoredMatrix {
    pub(crate) matrix: Matrix,
    pub(crate) encoding: String,
    pub(crate) dtype: String,
}

struct Reader<'a> {
    h5: &'a H5,
    skipped: Vec<String>,
    /// Read matrix contents (false: shapes only, see [`read_h5ad_annotations`]).
    matrices: bool,
}

impl Reader<'_> {
    fn read(&mut self) -> Result<AnnData, DataError> {
        let root = self.h5.child_names("")?;
        let has = |k: &str| root.iter().any(|r| r == k);
        if !has("X") {
            return Err(DataError::missing(
                &self.h5.path,
                "HDF5 element \"X\"",
                root.clone(),
                "latentlab needs an X matrix; if the data sits in a layer, set `adata.X = adata.layers[name]` in Python and save again",
            ));
        }
        let x = self.matrix("X")?;
        let (n_obs, n_vars) = x.matrix.shape();
        let obs = if has("obs") {
            self.read_dataframe("obs")?
        } else {
            DataFrame::from_index((0..n_obs).map(|i| i.to_string()).collect())
        };
        let var = if has("var") {
            self.read_dataframe("var")?
        } else {
            DataFrame::from_index((0..n_vars).map(|i| i.to_string()).collect())
        };
        let mut layers = BTreeMap::new();
        if has("layers") && self.matrices {
            for name in self.h5.child_names("layers")? {
                let m = read_matrix(self.h5, &join("layers", &name))?;
                layers.insert(name, m.matrix);
            }
        }
        let obsm = if has("obsm") {
            self.read_obsm()?
        } else {
            BTreeMap::new()
        };
        let raw = if has("raw") { self.read_raw()? } else { None };
        let uns = if has("uns") {
            self.read_uns("uns")?
        } else {
            BTreeMap::new()
        };
        let adata = AnnData {
            x: x.matrix,
            obs,
            var,
            layers,
            obsm,
            raw,
            uns,
            storage: StorageInfo {
                format: "h5ad".into(),
                x_encoding: x.encoding,
                x_dtype: x.dtype,
                skipped: std::mem::take(&mut self.skipped),
            },
        };
        adata.validate().map_err(|e| {
            self.h5.bad(
                "/",
                e,
                "the file is inconsistent; re-create it with anndata",
            )
        })?;
        Ok(adata)
    }

    /// The matrix at `path`, or an empty CSR matrix of its stored shape when matrices are not
    /// read.
    fn matrix(&self, path: &str) -> Result<StoredMatrix, DataError> {
        if self.matrices {
            return read_matrix(self.h5, path);
        }
        let node = self.h5.node(path)?.ok_or_else(|| {
            DataError::missing(
                &self.h5.path,
                format!("HDF5 element \"{path}\""),
                vec![],
                "re-create the file with anndata",
            )
        })?;
        let encoding = node.encoding();
        let shape = match &node {
            Node::Dataset(ds) => Some(ds.shape().iter().map(|&d| d as i64).collect()),
            Node::Group(_) => node
                .attr("shape")
                .or_else(|| node.attr("h5sparse_shape"))
                .and_then(|a| attr_i64s(&a)),
        }
        .filter(|s: &Vec<i64>| s.len() == 2 && s.iter().all(|&d| d >= 0))
        .ok_or_else(|| {
            self.h5.bad(
                path,
                "matrix without a valid 2-d shape",
                "re-create the file with anndata",
            )
        })?;
        Ok(StoredMatrix {
            matrix: Matrix::Csr(CsrMatrix::zeros(shape[0] as usize, shape[1] as usize)),
            encoding: encoding.unwrap_or_else(|| "array".into()),
            dtype: "not read".into(),
        })
    }

    fn skip(&mut self, path: &str, what: impl std::fmt::Display) {
        self.skipped.push(format!("{path} ({what})"));
    }

    fn read_raw(&mut self) -> Result<Option<Raw>, DataError> {
        let children = self.h5.child_names("raw")?;
        if !children.iter().any(|c| c == "X") {
            self.skip("raw", "no raw/X");
            return Ok(None);
        }
        let x = self.matrix("raw/X")?.matrix;
        let var = if children.iter().any(|c| c == "var") {
            self.read_dataframe("raw/var")?
        } else {
            DataFrame::from_index((0..x.shape().1).map(|i| i.to_string()).collect())
        };
        Ok(Some(Raw { x, var }))
    }

    fn read_dataframe(&mut self, path: &str) -> Result<DataFrame, DataError> {
        let group = match self.h5.node(path)? {
            Some(Node::Group(g)) => Node::Group(g),
            Some(Node::Dataset(_)) => {
                return Err(DataError::UnsupportedEncoding {
                    path: self.h5.path.clone(),
                    field: path.into(),
                    encoding: "legacy compound dataframe".into(),
                    fix: "the file was written by anndata < 0.7; open and save it again with anndata >= 0.8".into(),
                })
            }
            None => {
                return Err(DataError::missing(
                    &self.h5.path,
                    format!("HDF5 group \"{path}\""),
                    vec![],
                    "re-create the file with anndata",
                ))
            }
        };
        let enc = group.encoding();
        if enc.as_deref().is_some_and(|e| e != "dataframe") {
            return Err(DataError::UnsupportedEncoding {
                path: self.h5.path.clone(),
                field: path.into(),
                encoding: enc.unwrap_or_default(),
                fix: "expected a dataframe; re-create the file with anndata".into(),
            });
        }
        let index_name = group
            .attr("_index")
            .and_then(|a| attr_string(&a))
            .unwrap_or_else(|| "_index".into());
        let children = self.h5.child_names(path)?;
        let index_path = join(path, &index_name);
        let index = match self.read_column(&index_path)? {
            Some(col) => col
                .to_strings()
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect(),
            None => {
                return Err(DataError::missing(
                    &self.h5.path,
                    format!("dataframe index \"{index_path}\""),
                    children,
                    "the `_index` attribute must name a string dataset; re-create the file with anndata",
                ))
            }
        };
        let order = group
            .attr("column-order")
            .and_then(|a| attr_strings(&a))
            .unwrap_or_else(|| {
                children
                    .iter()
                    .filter(|c| **c != index_name && *c != "__categories")
                    .cloned()
                    .collect()
            });
        let mut columns = Vec::with_capacity(order.len());
        for name in order {
            let col_path = join(path, &name);
            if !children.contains(&name) {
                return Err(DataError::missing(
                    &self.h5.path,
                    format!("dataframe column \"{col_path}\" (listed in column-order)"),
                    children,
                    "the file is inconsistent; re-create it with anndata",
                ));
            }
            if let Some(col) = self.read_column(&col_path)? {
                columns.push((name, col));
            }
        }
        Ok(DataFrame {
            index_name,
            index,
            columns,
        })
    }

    /// One dataframe column; `None` (and a `skipped` entry) for unsupported encodings.
    fn read_column(&mut self, path: &str) -> Result<Option<Column>, DataError> {
        let h5 = self.h5;
        let Some(node) = h5.node(path)? else {
            return Ok(None);
        };
        let enc = node.encoding();
        match node {
            Node::Dataset(ds) => {
                if ds.shape().len() != 1 {
                    self.skip(path, format!("{}-d array", ds.shape().len()));
                    return Ok(None);
                }
                let is_str = matches!(
                    ds.dtype(),
                    hdf5_reader::Datatype::String { .. } | hdf5_reader::Datatype::VarLen { .. }
                );
                match (enc.as_deref(), is_str) {
                    (Some("string-array") | None, true) => {
                        Ok(Some(Column::Str(h5.read_strings(&ds, path)?)))
                    }
                    (Some("array") | None, false) => {
                        let v = match h5.read_num(&ds, path) {
                            Ok(v) => v,
                            Err(_) => {
                                self.skip(path, format!("dtype {}", dtype_name(ds.dtype())));
                                return Ok(None);
                            }
                        };
                        Ok(Some(match v {
                            super::h5util::NumVec::Float(f) => Column::Float(f),
                            super::h5util::NumVec::Int(i) => Column::Int(i),
                            super::h5util::NumVec::Bool(b) => Column::Bool(b),
                        }))
                    }
                    (e, _) => {
                        self.skip(path, format!("encoding {}", e.unwrap_or("none")));
                        Ok(None)
                    }
                }
            }
            Node::Group(_) => match enc.as_deref() {
                Some("categorical") => {
                    let codes_ds =
                        h5.dataset(&join(path, "codes"), "re-create the file with anndata")?;
                    let codes = h5
                        .read_num(&codes_ds, &join(path, "codes"))?
                        .to_i64()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|c| i32::try_from(c).unwrap_or(-1))
                        .collect();
                    let cat_path = join(path, "categories");
                    let cat_ds = h5.dataset(&cat_path, "re-create the file with anndata")?;
                    let categories = h5.read_strings(&cat_ds, &cat_path)?;
                    let ordered = h5
                        .node(path)?
                        .and_then(|n| n.attr("ordered"))
                        .and_then(|a| attr_bool(&a))
                        .unwrap_or(false);
                    Ok(Some(Column::Categorical {
                        codes,
                        categories,
                        ordered,
                    }))
                }
                Some(e @ ("nullable-integer" | "nullable-boolean" | "nullable-string-array")) => {
                    let fix = "re-create the file with anndata";
                    let vpath = join(path, "values");
                    let mpath = join(path, "mask");
                    let mask = h5.read_num(&h5.dataset(&mpath, fix)?, &mpath)?.to_bool();
                    let vds = h5.dataset(&vpath, fix)?;
                    Ok(Some(match e {
                        "nullable-integer" => {
                            let v = h5.read_num(&vds, &vpath)?;
                            match v.to_i64() {
                                Some(values) => Column::NullableInt { values, mask },
                                None => Column::Float(v.to_f64()),
                            }
                        }
                        "nullable-boolean" => Column::NullableBool {
                            values: h5.read_num(&vds, &vpath)?.to_bool(),
                            mask,
                        },
                        _ => {
                            // Stored as categorical so that missing values stay missing.
                            let values = h5.read_strings(&vds, &vpath)?;
                            let mut categories: Vec<String> = values
                                .iter()
                                .zip(&mask)
                                .filter(|(_, m)| !**m)
                                .map(|(v, _)| v.clone())
                                .collect::<std::collections::BTreeSet<_>>()
                                .into_iter()
                                .collect();
                            categories.sort();
                            let codes = values
                                .iter()
                                .zip(&mask)
                                .map(|(v, m)| {
                                    if *m {
                                        -1
                                    } else {
                                        categories.binary_search(v).map(|i| i as i32).unwrap_or(-1)
                                    }
                                })
                                .collect();
                            Column::Categorical {
                                codes,
                                categories,
                                ordered: false,
                            }
                        }
                    }))
                }
                e => {
                    self.skip(path, format!("encoding {}", e.unwrap_or("none")));
                    Ok(None)
                }
            },
        }
    }

    fn read_obsm(&mut self) -> Result<BTreeMap<String, ObsmEntry>, DataError> {
        let mut out = BTreeMap::new();
        for name in self.h5.child_names("obsm")? {
            let path = join("obsm", &name);
            let Some(node) = self.h5.node(&path)? else {
                continue;
            };
            let enc = node.encoding();
            match (&node, enc.as_deref()) {
                (Node::Group(_), Some("dataframe")) => {
                    out.insert(name, ObsmEntry::Frame(self.read_dataframe(&path)?));
                }
                (Node::Group(_), Some("csr_matrix" | "csc_matrix")) | (Node::Dataset(_), _) => {
                    match read_matrix(self.h5, &path) {
                        Ok(m) => {
                            let (rows, cols) = m.matrix.shape();
                            out.insert(
                                name,
                                ObsmEntry::Array {
                                    rows,
                                    cols,
                                    data: m.matrix.to_dense(),
                                },
                            );
                        }
                        Err(DataError::UnsupportedEncoding { encoding, .. }) => {
                            self.skip(&path, format!("encoding {encoding}"));
                        }
                        Err(e) => return Err(e),
                    }
                }
                (_, e) => self.skip(&path, format!("encoding {}", e.unwrap_or("none"))),
            }
        }
        Ok(out)
    }

    fn read_uns(&mut self, path: &str) -> Result<BTreeMap<String, UnsValue>, DataError> {
        let mut out = BTreeMap::new();
        for name in self.h5.child_names(path)? {
            let p = join(path, &name);
            if let Some(v) = self.read_uns_value(&p)? {
                out.insert(name, v);
            }
        }
        Ok(out)
    }

    fn read_uns_value(&mut self, path: &str) -> Result<Option<UnsValue>, DataError> {
        let h5 = self.h5;
        let Some(node) = h5.node(path)? else {
            return Ok(None);
        };
        let enc = node.encoding();
        match node {
            Node::Group(_) => match enc.as_deref() {
                Some("dict") | None => Ok(Some(UnsValue::Map(self.read_uns(path)?))),
                Some(e) => {
                    self.skip(path, format!("encoding {e}"));
                    Ok(None)
                }
            },
            Node::Dataset(ds) => {
                let scalar = ds.shape().is_empty();
                let is_str = matches!(
                    ds.dtype(),
                    hdf5_reader::Datatype::String { .. } | hdf5_reader::Datatype::VarLen { .. }
                );
                if ds.shape().len() > 1 {
                    self.skip(path, format!("{}-d array", ds.shape().len()));
                    return Ok(None);
                }
                match (enc.as_deref(), is_str) {
                    (Some("string" | "string-array") | None, true) => {
                        let mut v = h5.read_strings(&ds, path)?;
                        Ok(Some(if scalar && v.len() == 1 {
                            UnsValue::Str(v.remove(0))
                        } else {
                            UnsValue::Strings(v)
                        }))
                    }
                    (Some("numeric-scalar" | "array") | None, false) => {
                        let Ok(v) = h5.read_num(&ds, path) else {
                            self.skip(path, format!("dtype {}", dtype_name(ds.dtype())));
                            return Ok(None);
                        };
                        use super::h5util::NumVec;
                        Ok(Some(match (scalar, v) {
                            (true, NumVec::Float(f)) if f.len() == 1 => UnsValue::Float(f[0]),
                            (true, NumVec::Int(i)) if i.len() == 1 => UnsValue::Int(i[0]),
                            (true, NumVec::Bool(b)) if b.len() == 1 => UnsValue::Bool(b[0]),
                            (_, v) => UnsValue::Floats(v.to_f64()),
                        }))
                    }
                    (e, _) => {
                        self.skip(path, format!("encoding {}", e.unwrap_or("none")));
                        Ok(None)
                    }
                }
            }
        }
    }
}

/// Read a matrix element (`X`, `layers/<k>`, `raw/X`): dense array or CSR/CSC group.
pub(crate) fn read_matrix(h5: &H5, path: &str) -> Result<StoredMatrix, DataError> {
    let node = h5.node(path)?.ok_or_else(|| {
        DataError::missing(
            &h5.path,
            format!("HDF5 element \"{path}\""),
            vec![],
            "re-create the file with anndata",
        )
    })?;
    let enc = node.encoding();
    match node {
        Node::Dataset(ds) => {
            if let Some(e) = enc.as_deref().filter(|e| *e != "array") {
                return Err(unsupported(h5, path, e));
            }
            let shape = ds.shape().to_vec();
            if shape.len() != 2 {
                return Err(h5.bad(
                    path,
                    format!("is a {}-d array, expected 2-d (cells × genes)", shape.len()),
                    MATRIX_FIX,
                ));
            }
            let dtype = dtype_name(ds.dtype());
            if !matches!(
                ds.dtype(),
                hdf5_reader::Datatype::FixedPoint { .. }
                    | hdf5_reader::Datatype::FloatingPoint { .. }
            ) {
                return Err(unsupported(h5, path, &format!("array of {dtype}")));
            }
            let data = h5.read_num(&ds, path)?.to_f32();
            let (rows, cols) = (shape[0] as usize, shape[1] as usize);
            if data.len() != rows * cols {
                return Err(h5.err(path, "element count does not match shape"));
            }
            Ok(StoredMatrix {
                matrix: Matrix::Dense { rows, cols, data },
                encoding: "array".into(),
                dtype,
            })
        }
        Node::Group(_) => {
            let legacy = node.attr("h5sparse_format").and_then(|a| attr_string(&a));
            let (kind, shape_attr) = match (enc.as_deref(), legacy.as_deref()) {
                (Some("csr_matrix"), _) | (None, Some("csr")) => ("csr", "shape"),
                (Some("csc_matrix"), _) | (None, Some("csc")) => ("csc", "shape"),
                (e, _) => return Err(unsupported(h5, path, e.unwrap_or("none"))),
            };
            let shape_attr = if legacy.is_some() && enc.is_none() {
                "h5sparse_shape"
            } else {
                shape_attr
            };
            let shape = node
                .attr(shape_attr)
                .and_then(|a| attr_i64s(&a))
                .filter(|s| s.len() == 2 && s.iter().all(|&d| d >= 0))
                .ok_or_else(|| {
                    h5.bad(
                        path,
                        format!("sparse matrix without a valid `{shape_attr}` attribute"),
                        "re-create the file with anndata",
                    )
                })?;
            let (rows, cols) = (shape[0] as usize, shape[1] as usize);
            let fix = "re-create the file with anndata";
            let dpath = join(path, "data");
            let data_ds = h5.dataset(&dpath, fix)?;
            let dtype = dtype_name(data_ds.dtype());
            let data = h5.read_num(&data_ds, &dpath)?.to_f32();
            let ipath = join(path, "indices");
            let indices = h5.read_num(&h5.dataset(&ipath, fix)?, &ipath)?;
            let ppath = join(path, "indptr");
            let indptr = h5.read_num(&h5.dataset(&ppath, fix)?, &ppath)?;
            let (major, minor) = if kind == "csr" {
                (rows, cols)
            } else {
                (cols, rows)
            };
            let indices: Vec<u32> = indices
                .to_i64()
                .unwrap_or_default()
                .into_iter()
                .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
                .collect();
            let indptr: Vec<usize> = indptr
                .to_i64()
                .unwrap_or_default()
                .into_iter()
                .map(|i| usize::try_from(i).unwrap_or(usize::MAX))
                .collect();
            let as_csr = CsrMatrix {
                rows: major,
                cols: minor,
                indptr,
                indices,
                data,
            };
            as_csr
                .validate()
                .map_err(|e| h5.bad(path, format!("invalid {kind} matrix: {e}"), fix))?;
            let matrix = if kind == "csr" {
                as_csr
            } else {
                CsrMatrix::from_csc(rows, cols, &as_csr.indptr, &as_csr.indices, &as_csr.data)
            };
            Ok(StoredMatrix {
                matrix: Matrix::Csr(matrix),
                encoding: format!("{kind}_matrix"),
                dtype,
            })
        }
    }
}

fn unsupported(h5: &H5, path: &str, encoding: &str) -> DataError {
    DataError::UnsupportedEncoding {
        path: h5.path.clone(),
        field: path.into(),
        encoding: encoding.into(),
        fix: MATRIX_FIX.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data");

    fn data(rel: &str) -> std::path::PathBuf {
        Path::new(DATA).join(rel)
    }

    #[test]
    fn pbmc_train() {
        let a = read_h5ad(&data("pbmc68k_reduced/train.h5ad")).unwrap();
        assert_eq!((a.n_obs(), a.n_vars()), (560, 765));
        assert_eq!(a.storage.x_encoding, "csr_matrix");
        assert_eq!(a.storage.x_dtype, "float32");
        let (cats, codes) = a.obs.labels("bulk_labels", Path::new("x")).unwrap();
        assert_eq!(cats.len(), 10);
        let mut counts: Vec<(String, usize)> = cats
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), codes.iter().filter(|&&k| k == i as i32).count()))
            .collect();
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        let expect = [
            ("Dendritic", 192),
            ("CD14+ Monocyte", 103),
            ("CD19+ B", 76),
            ("CD4+/CD25 T Reg", 54),
            ("CD8+ Cytotoxic T", 43),
            ("CD8+/CD45RA+ Naive Cytotoxic", 34),
            ("CD56+ NK", 25),
            ("CD4+/CD45RO+ Memory", 15),
            ("CD34+", 11),
            ("CD4+/CD45RA+/CD25- Naive T", 7),
        ];
        for ((name, n), (ename, en)) in counts.iter().zip(expect) {
            assert_eq!((name.as_str(), *n), (ename, en));
        }
        for key in ["louvain", "phase"] {
            assert!(matches!(
                a.obs.column(key),
                Some(Column::Categorical { .. })
            ));
        }
        assert!(matches!(a.obs.column("n_genes"), Some(Column::Int(_))));
        assert!(matches!(a.obs.column("n_counts"), Some(Column::Float(_))));
        let counts = a.layers.get("counts").unwrap();
        assert!(counts.looks_like_counts());
        assert!(!a.x.looks_like_counts());
        assert!(a.x.is_finite());
        assert!(
            matches!(a.uns.get("provenance"), Some(UnsValue::Map(m)) if m.contains_key("source"))
        );
        assert!(a.storage.skipped.is_empty(), "{:?}", a.storage.skipped);
    }

    #[test]
    fn pbmc_variants_match_train() {
        let train = read_h5ad(&data("pbmc68k_reduced/train.h5ad")).unwrap();
        let dense = train.x.to_dense();
        for (file, enc) in [
            ("train_dense_f64.h5ad", "array"),
            ("train_csc.h5ad", "csc_matrix"),
            ("train_gzip.h5ad", "csr_matrix"),
        ] {
            let v = read_h5ad(&data(&format!("pbmc68k_reduced/variants/{file}"))).unwrap();
            assert_eq!(v.storage.x_encoding, enc, "{file}");
            assert_eq!(v.x.shape(), train.x.shape(), "{file}");
            assert_eq!(v.x.to_dense(), dense, "{file}");
            assert_eq!(v.obs, train.obs, "{file}");
            assert_eq!(v.var, train.var, "{file}");
            assert_eq!(v.layers, train.layers, "{file}");
        }
    }

    #[test]
    fn application_files() {
        let k = read_h5ad(&data("kang2018_ifnb/train.h5ad")).unwrap();
        assert_eq!((k.n_obs(), k.n_vars()), (158, 99));
        let (cats, codes) = k.obs.labels("condition", Path::new("k")).unwrap();
        assert_eq!(cats, vec!["ctrl".to_string(), "stim".to_string()]);
        assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 79);
        assert!(k.x.looks_like_counts());

        let c = read_h5ad(&data("cite_pbmc_10k/cells.h5ad")).unwrap();
        assert_eq!((c.n_obs(), c.n_vars()), (200, 16727));
        match c.obsm.get("protein_expression") {
            Some(ObsmEntry::Frame(f)) => {
                assert_eq!(f.columns.len(), 14);
                assert_eq!(f.len(), 200);
                assert_eq!(f.columns[0].0, "CD3_TotalSeqB");
            }
            other => panic!("protein_expression: {other:?}"),
        }
        assert!(matches!(
            c.var.column("highly_variable"),
            Some(Column::Bool(_))
        ));

        let h = read_h5ad(&data("hsmm_myoblast/cells.h5ad")).unwrap();
        assert_eq!((h.n_obs(), h.n_vars()), (271, 14887));
        let (cats, codes) = h.obs.labels("Hours", Path::new("h")).unwrap();
        assert_eq!(cats, vec!["0", "24", "48", "72"]);
        let per: Vec<usize> = (0..4)
            .map(|i| codes.iter().filter(|&&c| c == i).count())
            .collect();
        assert_eq!(per, vec![69, 74, 79, 49]);
        assert!(matches!(
            h.obs.column("Mapped.Fragments"),
            Some(Column::NullableInt { .. })
        ));
        assert!(matches!(
            h.var.column("use_for_ordering"),
            Some(Column::NullableBool { .. })
        ));
        assert!(!h.x.looks_like_counts());

        let v = read_h5ad(&data("visium_squidpy_sample/spots.h5ad")).unwrap();
        assert_eq!((v.n_obs(), v.n_vars()), (49, 1999));
        assert!(matches!(
            v.obsm.get("spatial"),
            Some(ObsmEntry::Array {
                rows: 49,
                cols: 2,
                ..
            })
        ));
        assert_eq!(v.obs.labels("leiden", Path::new("v")).unwrap().0.len(), 5);
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let dir = std::env::temp_dir().join(format!("dp-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = std::fs::read(data("kang2018_ifnb/train.h5ad")).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let p = dir.join("fuzz.h5ad");
        for _ in 0..150 {
            let mut b = bytes.clone();
            for _ in 0..rng.gen_range(1..8) {
                let i = rng.gen_range(0..b.len());
                b[i] = rng.gen();
            }
            std::fs::write(&p, &b).unwrap();
            let r = std::panic::catch_unwind(|| read_h5ad(&p).map(|a| a.n_obs()));
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => assert!(!e.to_string().contains('\n'), "{e}"),
                Err(_) => panic!("read_h5ad panicked on a corrupted file"),
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_files_give_one_line_errors() {
        let dir = std::env::temp_dir().join(format!("dp-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Not HDF5.
        let p = dir.join("text.h5ad");
        std::fs::write(&p, "cell,gene\n").unwrap();
        let e = read_h5ad(&p).unwrap_err();
        assert!(matches!(e, DataError::NotHdf5 { .. }), "{e}");
        // Truncated at several points.
        let bytes = std::fs::read(data("pbmc68k_reduced/train.h5ad")).unwrap();
        for cut in [100usize, 4096, bytes.len() / 2, bytes.len() - 10] {
            let p = dir.join(format!("trunc{cut}.h5ad"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let e = read_h5ad(&p).unwrap_err();
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "{msg}");
            assert!(msg.contains("trunc"), "{msg}");
        }
        // Missing X and unsupported X encoding, written with hdf5-writer directly.
        use hdf5_writer::{AttributeBuilder, DatasetBuilder, Hdf5Builder, WriteOptions};
        let write = |name: &str, b: Hdf5Builder| {
            let p = dir.join(name);
            let bytes = b
                .into_plan()
                .unwrap()
                .encode(WriteOptions::default())
                .unwrap();
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let no_x = write(
            "nox.h5ad",
            Hdf5Builder::new()
                .dataset(DatasetBuilder::typed_data("obs/_index", vec![1u64], &[1i32]).unwrap()),
        );
        let e = read_h5ad(&no_x).unwrap_err().to_string();
        assert!(
            e.contains("nox.h5ad: HDF5 element \"X\" not found (available: obs); latentlab needs an X matrix"),
            "{e}"
        );
        let odd = write(
            "odd.h5ad",
            Hdf5Builder::new()
                .dataset(DatasetBuilder::typed_data("X/data", vec![1u64], &[1f32]).unwrap())
                .group_attribute(
                    "X",
                    AttributeBuilder::fixed_string("encoding-type", "awkward-array"),
                ),
        );
        let e = read_h5ad(&odd).unwrap_err();
        assert!(matches!(e, DataError::UnsupportedEncoding { .. }), "{e}");
        assert!(e.to_string().contains("odd.h5ad: X: unsupported encoding \"awkward-array\"; store it as a dense array or a CSR/CSC"), "{e}");
        // NaN values read fine and are reported by is_finite.
        let mut a = read_h5ad(&data("kang2018_ifnb/train.h5ad")).unwrap();
        a.x.values_mut()[3] = f32::NAN;
        let p = dir.join("nan.h5ad");
        crate::data::write_h5ad(&p, &a).unwrap();
        let b = read_h5ad(&p).unwrap();
        assert!(!b.x.is_finite());
        let e = crate::data::preprocess::require_finite(&b.x, &p, "X")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nan.h5ad: X: contains 1 NaN/infinite values; remove or impute"),
            "{e}"
        );
        // Missing file.
        let e = read_h5ad(&dir.join("nope.h5ad")).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }));
        std::fs::remove_dir_all(&dir).ok();
    }
}
