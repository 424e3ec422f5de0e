//! Write `.h5ad` files that Python anndata (≥ 0.8) reads, atomically (temp file + rename).

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use hdf5_writer::{
    AttributeBuilder, ByteOrder, DatasetBuilder, Datatype, EnumMember, FilterDescription,
    Hdf5Builder, WriteOptions, FILTER_DEFLATE,
};

use super::anndata::{AnnData, ObsmEntry, UnsValue};
use super::error::{one_line, DataError};
use super::frame::{Column, DataFrame};
use super::matrix::Matrix;

/// Options for [`write_h5ad_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct H5adWriteOptions {
    /// Gzip (deflate) level 1–9 for numeric datasets; `None` writes uncompressed.
    pub gzip_level: Option<u32>,
}

/// Write `adata` to `path` as `.h5ad` (uncompressed).
///
/// Written: `X` (dense float32 array or `csr_matrix`), `obs`/`var` dataframes (categorical,
/// string, float, int, bool, nullable-integer and nullable-boolean columns), `layers`,
/// `obsm` (arrays and dataframes), `raw` and `uns` (strings, numbers, booleans, string and
/// numeric arrays, nested dicts), each with the `encoding-type`/`encoding-version`
/// attributes anndata expects. `storage` is not written.
///
/// The file is written to a hidden `.<name>.tmp-<pid>` in the same folder and renamed over `path`
/// only when complete; on error the temporary file is removed and `path` is untouched.
/// Uncompressed matrices (`X`, `layers`, `raw/X`) go from `adata`'s own arrays into the file a
/// block at a time: writing holds no second copy of them (decision 0024).
///
/// # Errors
/// [`DataError::Write`] when `adata` is inconsistent (shapes, a column named like the
/// index, names containing `/`), or the file cannot be created, written or renamed.
pub fn write_h5ad(path: &Path, adata: &AnnData) -> Result<(), DataError> {
    write_h5ad_with(path, adata, H5adWriteOptions::default())
}

/// [`write_h5ad`] with options (compression).
///
/// # Errors
/// As [`write_h5ad`].
pub fn write_h5ad_with(
    path: &Path,
    adata: &AnnData,
    options: H5adWriteOptions,
) -> Result<(), DataError> {
    adata.validate().map_err(|e| inconsistent(path, e))?;
    write_planned::<DataError>(path, adata, options.gzip_level, None)
}

/// [`write_h5ad`] for an `X` made while the file is written (generated cells): `adata.x` is
/// `Matrix::Dense { rows, cols, data }` with an empty `data` and gives only the shape;
/// `next_rows` appends the next block of whole rows (row-major float32) to the buffer it gets,
/// empty, and is called until `rows` rows have come. Uncompressed. The file holds the bytes
/// [`write_h5ad`] writes for the same values, and at most one block of `X` is in memory.
///
/// # Errors
/// As [`write_h5ad`]; `adata.x` not an empty dense placeholder, or a block that is not whole
/// rows or goes past `rows` ([`DataError::Write`]); what `next_rows` returns. On any error
/// `path` is untouched.
pub fn write_h5ad_streamed<E: From<DataError>>(
    path: &Path,
    adata: &AnnData,
    mut next_rows: impl FnMut(&mut Vec<f32>) -> Result<(), E>,
) -> Result<(), E> {
    match &adata.x {
        Matrix::Dense { data, .. } if data.is_empty() => {}
        _ => {
            return Err(write_error(
                path,
                "X is given, not streamed".into(),
                "pass X as an empty dense placeholder of its shape",
            )
            .into())
        }
    }
    adata
        .validate_annotations()
        .map_err(|e| inconsistent(path, e))?;
    write_planned(path, adata, None, Some(&mut next_rows))
}

/// The producer of a streamed `X`: appends the next block of whole rows to the buffer.
type NextRows<'a, E> = dyn FnMut(&mut Vec<f32>) -> Result<(), E> + 'a;

/// `adata` (validated) to `path`: the HDF5 plan with its matrix arrays deferred (uncompressed)
/// or copied in (`gzip`), written atomically; deferred arrays are then written into their
/// regions, a dense `X` from `streamed_x` when given.
fn write_planned<E: From<DataError>>(
    path: &Path,
    adata: &AnnData,
    gzip: Option<u32>,
    mut streamed_x: Option<&mut NextRows<'_, E>>,
) -> Result<(), E> {
    let werr = |reason: String, fix: &str| write_error(path, reason, fix);
    let gzip = gzip.map(|l| l.clamp(1, 9));
    let mut w = Plan::new(gzip, gzip.is_none(), streamed_x.is_some());
    w.build(adata)
        .map_err(|e| werr(e, "rename the offending column/key"))?;
    let Plan { b, deferred, .. } = w;
    let plan = b.into_plan().map_err(|e| {
        werr(
            format!("HDF5 encoding failed: {e}"),
            "rename the offending column/key",
        )
    })?;
    crate::atomic_file::write_atomic_with(
        path,
        |file| {
            let regions = plan
                .write_to(file, WriteOptions::default())
                .map_err(|e| match e {
                    hdf5_writer::Error::Io(e) => io_error(path, e),
                    e => werr(
                        format!("HDF5 encoding failed: {e}"),
                        "rename the offending column/key",
                    ),
                })?;
            let expected = deferred.iter().filter(|(_, v)| v.byte_len() > 0).count();
            if regions.len() != expected {
                return Err(werr(
                    format!(
                        "internal: {} regions reserved for {expected} arrays",
                        regions.len()
                    ),
                    "report this as a bug",
                )
                .into());
            }
            for region in regions {
                let values = deferred
                    .iter()
                    .find(|(name, _)| *name == region.name)
                    .map(|(_, values)| values)
                    .filter(|values| values.byte_len() == region.len)
                    .ok_or_else(|| {
                        werr(
                            format!(
                                "internal: no array of {} bytes for {}",
                                region.len, region.name
                            ),
                            "report this as a bug",
                        )
                    })?;
                file.seek(SeekFrom::Start(region.address))
                    .map_err(|e| io_error(path, e))?;
                match (values, streamed_x.as_deref_mut()) {
                    (Deferred::Streamed { len, cols }, Some(next_rows)) => {
                        write_streamed(path, file, *len, *cols, next_rows)?;
                    }
                    _ => values.write(file).map_err(|e| io_error(path, e))?,
                }
            }
            Ok(())
        },
        |e| io_error(path, e).into(),
    )
}

/// Writes `len` float32 values, `cols` per row, from `next_rows`' blocks at the file's
/// position.
fn write_streamed<E: From<DataError>>(
    path: &Path,
    file: &mut impl Write,
    len: usize,
    cols: usize,
    next_rows: &mut NextRows<'_, E>,
) -> Result<(), E> {
    let mut block = Vec::new();
    let mut bytes = Vec::new();
    let mut written = 0;
    while written < len {
        block.clear();
        next_rows(&mut block)?;
        if block.is_empty() || block.len() % cols.max(1) != 0 || written + block.len() > len {
            return Err(write_error(
                path,
                format!(
                    "internal: a block of {} values after {written} of {len} ({cols} per row)",
                    block.len()
                ),
                "report this as a bug",
            )
            .into());
        }
        bytes.clear();
        bytes.extend(block.iter().flat_map(|x| x.to_ne_bytes()));
        file.write_all(&bytes).map_err(|e| io_error(path, e))?;
        written += block.len();
    }
    Ok(())
}

/// [`DataError::Write`] for `path`.
fn write_error(path: &Path, reason: String, fix: &str) -> DataError {
    DataError::Write {
        path: path.to_path_buf(),
        reason: one_line(reason),
        fix: fix.into(),
    }
}

/// `adata` disagreeing with itself (shapes, names), found before anything is written.
fn inconsistent(path: &Path, e: String) -> DataError {
    write_error(
        path,
        format!("inconsistent data ({e})"),
        "fix the AnnData before writing",
    )
}

/// A failed file operation while writing `path`.
fn io_error(path: &Path, e: std::io::Error) -> DataError {
    DataError::Write {
        path: path.to_path_buf(),
        reason: one_line(e),
        fix: "check that the output folder exists and is writable".into(),
    }
}

/// A matrix array left out of the HDF5 plan and written from `adata`'s memory into the
/// region the plan reserves for it ([`DatasetBuilder::deferred_data`]), converted to its stored
/// type one block at a time.
#[derive(Clone, Copy)]
enum Deferred<'a> {
    /// float32 values.
    Floats(&'a [f32]),
    /// Column indices, stored as int32 (int64 when `wide`).
    Indices { values: &'a [u32], wide: bool },
    /// Row pointers, stored as int64.
    Offsets(&'a [usize]),
    /// `len` float32 values, `cols` per row, made while the file is written
    /// ([`write_h5ad_streamed`]).
    Streamed { len: usize, cols: usize },
}

/// Elements converted per block by [`Deferred::write`] (256 KiB of float32).
const DEFERRED_BLOCK: usize = 1 << 16;

impl Deferred<'_> {
    /// The stored datatype's element size in bytes.
    fn element_size(&self) -> usize {
        match self {
            Deferred::Floats(_)
            | Deferred::Indices { wide: false, .. }
            | Deferred::Streamed { .. } => 4,
            Deferred::Indices { wide: true, .. } | Deferred::Offsets(_) => 8,
        }
    }

    fn len(&self) -> usize {
        match self {
            Deferred::Floats(v) => v.len(),
            Deferred::Indices { values, .. } => values.len(),
            Deferred::Offsets(v) => v.len(),
            Deferred::Streamed { len, .. } => *len,
        }
    }

    /// Stored bytes.
    fn byte_len(&self) -> u64 {
        (self.len() * self.element_size()) as u64
    }

    /// An empty dataset of the stored type and `shape`, its data deferred.
    fn dataset(&self, path: &str, shape: Vec<u64>) -> DatasetBuilder {
        match self {
            Deferred::Floats(_) | Deferred::Streamed { .. } => {
                DatasetBuilder::typed::<f32>(path, shape)
            }
            Deferred::Indices { wide: false, .. } => DatasetBuilder::typed::<i32>(path, shape),
            Deferred::Indices { wide: true, .. } | Deferred::Offsets(_) => {
                DatasetBuilder::typed::<i64>(path, shape)
            }
        }
        .deferred_data()
    }

    /// Writes the stored bytes (native byte order, as [`DatasetBuilder::typed`] declares).
    fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut block = Vec::with_capacity(DEFERRED_BLOCK * self.element_size());
        for start in (0..self.len()).step_by(DEFERRED_BLOCK) {
            let end = (start + DEFERRED_BLOCK).min(self.len());
            block.clear();
            match self {
                Deferred::Floats(v) => v[start..end]
                    .iter()
                    .for_each(|x| block.extend_from_slice(&x.to_ne_bytes())),
                Deferred::Indices {
                    values,
                    wide: false,
                } => values[start..end]
                    .iter()
                    .for_each(|&i| block.extend_from_slice(&(i as i32).to_ne_bytes())),
                Deferred::Indices { values, wide: true } => values[start..end]
                    .iter()
                    .for_each(|&i| block.extend_from_slice(&i64::from(i).to_ne_bytes())),
                Deferred::Offsets(v) => v[start..end]
                    .iter()
                    .for_each(|&i| block.extend_from_slice(&(i as i64).to_ne_bytes())),
                Deferred::Streamed { .. } => {
                    return Err(std::io::Error::other(
                        "internal: streamed values written without their source",
                    ))
                }
            }
            out.write_all(&block)?;
        }
        Ok(())
    }

    /// The values as an owned dataset (when they cannot be deferred: compressed files).
    fn materialized(&self, path: &str, shape: Vec<u64>) -> Result<DatasetBuilder, String> {
        let d = match self {
            Deferred::Floats(v) => DatasetBuilder::typed_data(path, shape, v),
            Deferred::Indices {
                values,
                wide: false,
            } => {
                let v: Vec<i32> = values.iter().map(|&i| i as i32).collect();
                DatasetBuilder::typed_data(path, shape, &v)
            }
            Deferred::Indices { values, wide: true } => {
                let v: Vec<i64> = values.iter().map(|&i| i64::from(i)).collect();
                DatasetBuilder::typed_data(path, shape, &v)
            }
            Deferred::Offsets(v) => {
                let v: Vec<i64> = v.iter().map(|&i| i as i64).collect();
                DatasetBuilder::typed_data(path, shape, &v)
            }
            Deferred::Streamed { .. } => {
                return Err(format!(
                    "{path}: streamed values go only to uncompressed files"
                ))
            }
        };
        d.map_err(|e| format!("{path}: {e}"))
    }
}

struct Plan<'a> {
    b: Hdf5Builder,
    gzip: Option<u32>,
    /// Whether matrix arrays are deferred (uncompressed files) rather than copied into `b`.
    defer: bool,
    /// The deferred arrays by dataset path.
    deferred: Vec<(String, Deferred<'a>)>,
    /// Whether a dense `X` is made while writing ([`Deferred::Streamed`]).
    stream_x: bool,
}

fn str_attr(name: &str, value: &str) -> AttributeBuilder {
    AttributeBuilder::fixed_string(name, value)
}

fn enc(t: &str, v: &str) -> [AttributeBuilder; 2] {
    [
        str_attr("encoding-type", t),
        str_attr("encoding-version", v),
    ]
}

fn bool_dtype() -> Datatype {
    Datatype::Enum {
        base: Box::new(Datatype::FixedPoint {
            size: 1,
            signed: true,
            byte_order: ByteOrder::LittleEndian,
        }),
        members: vec![
            EnumMember {
                name: "FALSE".into(),
                value: vec![0],
            },
            EnumMember {
                name: "TRUE".into(),
                value: vec![1],
            },
        ],
    }
}

fn check_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name == "." {
        return Err(format!(
            "{what} name \"{name}\" cannot be stored in HDF5 (empty, \".\" or containing '/')"
        ));
    }
    Ok(())
}

type R = Result<(), String>;

impl<'a> Plan<'a> {
    fn new(gzip: Option<u32>, defer: bool, stream_x: bool) -> Self {
        Plan {
            b: Hdf5Builder::new(),
            gzip,
            defer,
            deferred: Vec::new(),
            stream_x,
        }
    }

    /// A matrix array at `path`: deferred, or copied into the plan (and compressed).
    fn matrix_array(&mut self, path: &str, shape: Vec<u64>, values: Deferred<'a>, t: &str) -> R {
        let d = if self.defer {
            self.deferred.push((path.to_string(), values));
            values.dataset(path, shape.clone())
        } else {
            values.materialized(path, shape.clone())?
        };
        let d = self.finish_ds(d, &shape, t, "0.2.0");
        self.push(d);
        Ok(())
    }

    fn push(&mut self, d: DatasetBuilder) {
        let b = std::mem::take(&mut self.b);
        self.b = b.dataset(d);
    }

    fn group(&mut self, path: &str, t: &str, v: &str) {
        let mut b = std::mem::take(&mut self.b);
        for a in enc(t, v) {
            b = b.group_attribute(path, a);
        }
        self.b = b;
    }

    fn group_attr(&mut self, path: &str, a: AttributeBuilder) {
        let b = std::mem::take(&mut self.b);
        self.b = b.group_attribute(path, a);
    }

    fn finish_ds(&self, d: DatasetBuilder, shape: &[u64], t: &str, v: &str) -> DatasetBuilder {
        let mut d = d;
        if let Some(level) = self.gzip {
            let n: u64 = shape.iter().product();
            if n > 0 {
                let chunk: Vec<u64> = if shape.len() == 1 {
                    vec![shape[0].min(1 << 16)]
                } else {
                    let row = shape[1..].iter().product::<u64>().max(1);
                    let rows = ((1u64 << 18) / row).clamp(1, shape[0]);
                    std::iter::once(rows)
                        .chain(shape[1..].iter().copied())
                        .collect()
                };
                d = d.chunked(chunk).filter(FilterDescription {
                    id: FILTER_DEFLATE,
                    name: None,
                    client_data: vec![level],
                });
            }
        }
        let [a, b] = enc(t, v);
        if t.is_empty() {
            d
        } else {
            d.attribute(a).attribute(b)
        }
    }

    fn numeric<T: hdf5_writer::H5WriteElement>(
        &mut self,
        path: &str,
        shape: Vec<u64>,
        values: &[T],
        t: &str,
    ) -> R {
        let d = DatasetBuilder::typed_data(path, shape.clone(), values)
            .map_err(|e| format!("{path}: {e}"))?;
        let d = self.finish_ds(d, &shape, t, "0.2.0");
        self.push(d);
        Ok(())
    }

    fn bools(&mut self, path: &str, values: &[bool], t: &str) {
        let shape = vec![values.len() as u64];
        let raw: Vec<u8> = values.iter().map(|&b| u8::from(b)).collect();
        let d = DatasetBuilder::new(path, bool_dtype(), shape.clone()).raw_data(raw);
        let d = self.finish_ds(d, &shape, t, "0.2.0");
        self.push(d);
    }

    fn strings(&mut self, path: &str, values: &[String], scalar: bool) -> R {
        let shape: Vec<u64> = if scalar {
            vec![]
        } else {
            vec![values.len() as u64]
        };
        let d = DatasetBuilder::vlen_string_data(path, shape, values)
            .map_err(|e| format!("{path}: {e}"))?;
        let (t, v) = if scalar {
            ("string", "0.2.0")
        } else {
            ("string-array", "0.2.0")
        };
        let [a, b] = enc(t, v);
        self.push(d.attribute(a).attribute(b));
        Ok(())
    }

    fn build(&mut self, a: &'a AnnData) -> R {
        for attr in enc("anndata", "0.1.0") {
            let b = std::mem::take(&mut self.b);
            self.b = b.attribute(attr);
        }
        match &a.x {
            Matrix::Dense { rows, cols, .. } if self.stream_x => self.matrix_array(
                "X",
                vec![*rows as u64, *cols as u64],
                Deferred::Streamed {
                    len: rows * cols,
                    cols: *cols,
                },
                "array",
            )?,
            x => self.matrix("X", x)?,
        }
        self.dataframe("obs", &a.obs)?;
        self.dataframe("var", &a.var)?;
        self.group("layers", "dict", "0.1.0");
        for (k, m) in &a.layers {
            check_name(k, "layer")?;
            self.matrix(&format!("layers/{k}"), m)?;
        }
        self.group("obsm", "dict", "0.1.0");
        for (k, e) in &a.obsm {
            check_name(k, "obsm key")?;
            let p = format!("obsm/{k}");
            match e {
                ObsmEntry::Array { rows, cols, data } => {
                    self.numeric(&p, vec![*rows as u64, *cols as u64], data, "array")?
                }
                ObsmEntry::Frame(f) => self.dataframe(&p, f)?,
            }
        }
        for g in ["obsp", "varm", "varp"] {
            self.group(g, "dict", "0.1.0");
        }
        if let Some(raw) = &a.raw {
            self.group("raw", "raw", "0.1.0");
            self.matrix("raw/X", &raw.x)?;
            self.dataframe("raw/var", &raw.var)?;
            self.group("raw/varm", "dict", "0.1.0");
        }
        self.uns("uns", &a.uns)
    }

    fn matrix(&mut self, path: &str, m: &'a Matrix) -> R {
        match m {
            Matrix::Dense { rows, cols, data } => self.matrix_array(
                path,
                vec![*rows as u64, *cols as u64],
                Deferred::Floats(data),
                "array",
            ),
            Matrix::Csr(c) => {
                self.group(path, "csr_matrix", "0.1.0");
                self.group_attr(
                    path,
                    AttributeBuilder::vector("shape", &[c.rows as i64, c.cols as i64])
                        .map_err(|e| e.to_string())?,
                );
                let n = vec![c.nnz() as u64];
                self.matrix_array(
                    &format!("{path}/data"),
                    n.clone(),
                    Deferred::Floats(&c.data),
                    "",
                )?;
                let indices = Deferred::Indices {
                    values: &c.indices,
                    wide: c.cols > i32::MAX as usize,
                };
                self.matrix_array(&format!("{path}/indices"), n, indices, "")?;
                self.matrix_array(
                    &format!("{path}/indptr"),
                    vec![c.indptr.len() as u64],
                    Deferred::Offsets(&c.indptr),
                    "",
                )
            }
        }
    }

    fn dataframe(&mut self, path: &str, f: &DataFrame) -> R {
        let index_name = if f.index_name.is_empty() {
            "_index"
        } else {
            f.index_name.as_str()
        };
        check_name(index_name, "index")?;
        self.group(path, "dataframe", "0.2.0");
        self.group_attr(path, str_attr("_index", index_name));
        let names: Vec<&str> = f.columns.iter().map(|(n, _)| n.as_str()).collect();
        let order = if names.is_empty() {
            AttributeBuilder::vector::<f64>("column-order", &[])
        } else {
            AttributeBuilder::vlen_strings("column-order", &names)
        }
        .map_err(|e| e.to_string())?;
        self.group_attr(path, order);
        self.strings(&format!("{path}/{index_name}"), &f.index, false)?;
        for (name, col) in &f.columns {
            check_name(name, "column")?;
            if name == index_name {
                return Err(format!(
                    "{path}: column \"{name}\" has the same name as the index"
                ));
            }
            self.column(&format!("{path}/{name}"), col)?;
        }
        Ok(())
    }

    fn column(&mut self, p: &str, col: &Column) -> R {
        let n = vec![col.len() as u64];
        match col {
            Column::Categorical {
                codes,
                categories,
                ordered,
            } => {
                self.group(p, "categorical", "0.2.0");
                self.group_attr(
                    p,
                    AttributeBuilder::new(
                        "ordered",
                        bool_dtype(),
                        Vec::new(),
                        vec![u8::from(*ordered)],
                    ),
                );
                if categories.len() < i8::MAX as usize {
                    let c: Vec<i8> = codes.iter().map(|&c| c as i8).collect();
                    self.numeric(&format!("{p}/codes"), n, &c, "array")?;
                } else if categories.len() < i16::MAX as usize {
                    let c: Vec<i16> = codes.iter().map(|&c| c as i16).collect();
                    self.numeric(&format!("{p}/codes"), n, &c, "array")?;
                } else {
                    self.numeric(&format!("{p}/codes"), n, codes, "array")?;
                }
                self.strings(&format!("{p}/categories"), categories, false)
            }
            Column::Float(v) => self.numeric(p, n, v, "array"),
            Column::Int(v) => self.numeric(p, n, v, "array"),
            Column::Bool(v) => {
                self.bools(p, v, "array");
                Ok(())
            }
            Column::Str(v) => self.strings(p, v, false),
            Column::NullableInt { values, mask } => {
                self.group(p, "nullable-integer", "0.1.0");
                self.numeric(&format!("{p}/values"), n, values, "array")?;
                self.bools(&format!("{p}/mask"), mask, "array");
                Ok(())
            }
            Column::NullableBool { values, mask } => {
                self.group(p, "nullable-boolean", "0.1.0");
                self.bools(&format!("{p}/values"), values, "array");
                self.bools(&format!("{p}/mask"), mask, "array");
                Ok(())
            }
        }
    }

    fn uns(&mut self, path: &str, map: &BTreeMap<String, UnsValue>) -> R {
        self.group(path, "dict", "0.1.0");
        for (k, v) in map {
            check_name(k, "uns key")?;
            let p = format!("{path}/{k}");
            match v {
                UnsValue::Str(s) => self.strings(&p, std::slice::from_ref(s), true)?,
                UnsValue::Float(x) => self.scalar(&p, *x)?,
                UnsValue::Int(x) => self.scalar(&p, *x)?,
                UnsValue::Bool(x) => {
                    let d = DatasetBuilder::new(&p, bool_dtype(), Vec::<u64>::new())
                        .raw_data(vec![u8::from(*x)]);
                    let [a, b] = enc("numeric-scalar", "0.2.0");
                    self.push(d.attribute(a).attribute(b));
                }
                UnsValue::Strings(s) => self.strings(&p, s, false)?,
                UnsValue::Floats(x) => self.numeric(&p, vec![x.len() as u64], x, "array")?,
                UnsValue::Map(m) => self.uns(&p, m)?,
            }
        }
        Ok(())
    }

    fn scalar<T: hdf5_writer::H5WriteElement>(&mut self, p: &str, x: T) -> R {
        let d = DatasetBuilder::typed_data(p, Vec::<u64>::new(), &[x])
            .map_err(|e| format!("{p}: {e}"))?;
        let [a, b] = enc("numeric-scalar", "0.2.0");
        self.push(d.attribute(a).attribute(b));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::h5ad_read::read_h5ad;
    use crate::data::matrix::CsrMatrix;
    use std::path::PathBuf;

    /// An AnnData exercising every column kind, layers, obsm, raw and uns.
    pub(crate) fn sample(dense: bool) -> AnnData {
        let csr = CsrMatrix {
            rows: 3,
            cols: 4,
            indptr: vec![0, 2, 2, 5],
            indices: vec![0, 3, 1, 2, 3],
            data: vec![1.0, 2.5, 3.0, 4.0, 5.0],
        };
        let x = if dense {
            Matrix::Dense {
                rows: 3,
                cols: 4,
                data: Matrix::Csr(csr.clone()).to_dense(),
            }
        } else {
            Matrix::Csr(csr.clone())
        };
        let obs = DataFrame {
            index_name: "_index".into(),
            index: vec!["AAAC-1".into(), "AAAG-1".into(), "célula-3".into()],
            columns: vec![
                (
                    "cell_type".into(),
                    Column::Categorical {
                        codes: vec![0, 1, -1],
                        categories: vec!["B".into(), "T".into()],
                        ordered: false,
                    },
                ),
                ("n_counts".into(), Column::Float(vec![3.5, 0.0, 12.0])),
                ("n_genes".into(), Column::Int(vec![2, 0, 3])),
                ("is_doublet".into(), Column::Bool(vec![false, true, false])),
                (
                    "batch".into(),
                    Column::Str(vec!["a".into(), "b".into(), "a".into()]),
                ),
                (
                    "age".into(),
                    Column::NullableInt {
                        values: vec![30, 0, 41],
                        mask: vec![false, true, false],
                    },
                ),
                (
                    "treated".into(),
                    Column::NullableBool {
                        values: vec![true, false, false],
                        mask: vec![false, false, true],
                    },
                ),
            ],
        };
        let var = DataFrame {
            index_name: "gene_ids".into(),
            index: vec!["CD3E".into(), "MS4A1".into(), "LYZ".into(), "GNLY".into()],
            columns: vec![(
                "highly_variable".into(),
                Column::Bool(vec![true, false, true, true]),
            )],
        };
        let mut a = AnnData::new(x, obs, var.clone());
        a.layers.insert("counts".into(), Matrix::Csr(csr.clone()));
        a.obsm.insert(
            "X_umap".into(),
            ObsmEntry::Array {
                rows: 3,
                cols: 2,
                data: vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            },
        );
        let mut prot = DataFrame::from_index(a.obs.index.clone());
        prot.columns
            .push(("CD3".into(), Column::Float(vec![1.0, 2.0, 3.0])));
        a.obsm.insert("protein".into(), ObsmEntry::Frame(prot));
        a.raw = Some(crate::data::anndata::Raw {
            x: Matrix::Csr(csr),
            var,
        });
        let mut inner = BTreeMap::new();
        inner.insert("source".into(), UnsValue::Str("unit test".into()));
        inner.insert("n".into(), UnsValue::Int(7));
        inner.insert("empty".into(), UnsValue::Map(BTreeMap::new()));
        a.uns.insert("provenance".into(), UnsValue::Map(inner));
        a.uns.insert("lr".into(), UnsValue::Float(0.001));
        a.uns.insert("flag".into(), UnsValue::Bool(true));
        a.uns.insert(
            "names".into(),
            UnsValue::Strings(vec!["x".into(), "y".into()]),
        );
        a.uns
            .insert("curve".into(), UnsValue::Floats(vec![1.0, 0.5]));
        a
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dp-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn write_read_identity() {
        for (dense, gzip) in [(true, None), (false, None), (false, Some(4))] {
            let a = sample(dense);
            let p = tmp(&format!("rt-{dense}-{gzip:?}.h5ad"));
            write_h5ad_with(&p, &a, H5adWriteOptions { gzip_level: gzip }).unwrap();
            let b = read_h5ad(&p).unwrap();
            assert_eq!(
                b.storage.x_encoding,
                if dense { "array" } else { "csr_matrix" }
            );
            assert!(b.storage.skipped.is_empty(), "{:?}", b.storage.skipped);
            let mut b2 = b.clone();
            b2.storage = a.storage.clone();
            assert_eq!(b2, a, "dense={dense} gzip={gzip:?}");
            assert!(!crate::atomic_file::temp_path(&p).exists());
        }
    }

    /// Arrays written into the regions the plan reserved give the very bytes of a file whose
    /// plan holds copies of them (dense and sparse `X`, sparse layers and `raw`).
    #[test]
    fn deferred_arrays_give_the_bytes_of_copied_ones() {
        for dense in [true, false] {
            let a = sample(dense);
            let mut copied = Plan::new(None, false, false);
            copied.build(&a).unwrap();
            assert!(copied.deferred.is_empty());
            let expected = copied
                .b
                .into_plan()
                .unwrap()
                .encode(WriteOptions::default())
                .unwrap();
            let mut deferred = Plan::new(None, true, false);
            deferred.build(&a).unwrap();
            assert_eq!(deferred.deferred.len(), if dense { 7 } else { 9 });
            let p = tmp(&format!("deferred-{dense}.h5ad"));
            write_h5ad(&p, &a).unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), expected, "dense={dense}");
        }
    }

    /// An `X` streamed in uneven blocks of rows gives the bytes of the same AnnData written
    /// whole; bad blocks and the producer's errors leave no file.
    #[test]
    fn a_streamed_x_gives_the_bytes_of_the_whole_one() {
        let a = sample(true);
        let (rows, cols) = a.x.shape();
        let values = a.x.values().to_vec();
        let whole = tmp("streamed-whole.h5ad");
        write_h5ad(&whole, &a).unwrap();
        let mut shell = a.clone();
        shell.x = Matrix::Dense {
            rows,
            cols,
            data: Vec::new(),
        };
        let p = tmp("streamed.h5ad");
        let mut next = 0;
        let mut calls = 0;
        write_h5ad_streamed::<DataError>(&p, &shell, |block| {
            let take = (calls % 2 + 1).min(rows - next);
            block.extend_from_slice(&values[next * cols..(next + take) * cols]);
            next += take;
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert!(calls > 1);
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&whole).unwrap());

        let bad = tmp("streamed-bad.h5ad");
        let too_many = write_h5ad_streamed::<DataError>(&bad, &shell, |block| {
            block.extend_from_slice(&vec![0.0; (rows + 1) * cols]);
            Ok(())
        });
        assert!(matches!(too_many, Err(DataError::Write { .. })));
        let part_row = write_h5ad_streamed::<DataError>(&bad, &shell, |block| {
            block.push(1.0);
            Ok(())
        });
        assert!(matches!(part_row, Err(DataError::Write { .. })));
        let failed = write_h5ad_streamed(&bad, &shell, |_| {
            Err(crate::LatentError::Data("decoder failed".into()))
        });
        assert!(matches!(failed, Err(crate::LatentError::Data(m)) if m == "decoder failed"));
        assert!(!bad.exists() && !crate::atomic_file::temp_path(&bad).exists());
        let given = write_h5ad_streamed::<DataError>(&bad, &a, |_| Ok(()));
        assert!(given.unwrap_err().to_string().contains("placeholder"));
    }

    /// Arrays longer than one conversion block are written whole and in order.
    #[test]
    fn deferred_arrays_span_blocks() {
        let (rows, cols) = (3, DEFERRED_BLOCK / 2 + 5);
        let data: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 7.0).collect();
        let a = AnnData::new(
            Matrix::Dense { rows, cols, data },
            DataFrame::from_index((0..rows).map(|i| format!("c{i}")).collect()),
            DataFrame::from_index((0..cols).map(|j| format!("g{j}")).collect()),
        );
        let p = tmp("blocks.h5ad");
        write_h5ad(&p, &a).unwrap();
        assert_eq!(read_h5ad(&p).unwrap().x, a.x);
    }

    #[test]
    fn empty_and_real_roundtrip() {
        // A real file: read, write, read again gives the same object.
        let src = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/hsmm_myoblast/cells.h5ad"
        ));
        let a = read_h5ad(src).unwrap();
        let p = tmp("hsmm.h5ad");
        write_h5ad(&p, &a).unwrap();
        let mut b = read_h5ad(&p).unwrap();
        b.storage = a.storage.clone();
        assert_eq!(a, b);
        // Zero non-zeros and no columns.
        let e = AnnData::new(
            Matrix::Csr(CsrMatrix::zeros(2, 3)),
            DataFrame::from_index(vec!["a".into(), "b".into()]),
            DataFrame::from_index(vec!["g1".into(), "g2".into(), "g3".into()]),
        );
        let p = tmp("empty.h5ad");
        write_h5ad(&p, &e).unwrap();
        assert_eq!(read_h5ad(&p).unwrap().x, e.x);
    }

    fn frame_json(f: &DataFrame) -> serde_json::Value {
        use serde_json::json;
        let mut cols = serde_json::Map::new();
        for (name, c) in &f.columns {
            let v = match c {
                Column::Categorical { categories, .. } => {
                    json!({"kind": "categorical", "categories": categories, "values": c.to_strings()})
                }
                Column::Float(v) => json!({"kind": "float", "values": v}),
                Column::Int(v) => json!({"kind": "int", "values": v}),
                Column::Bool(v) => json!({"kind": "bool", "values": v}),
                Column::Str(v) => json!({"kind": "string", "values": v}),
                Column::NullableInt { values, mask } => json!({"kind": "nullable-int",
                    "values": values.iter().zip(mask).map(|(v, m)| (!m).then_some(*v)).collect::<Vec<_>>()}),
                Column::NullableBool { values, mask } => json!({"kind": "nullable-bool",
                    "values": values.iter().zip(mask).map(|(v, m)| (!m).then_some(*v)).collect::<Vec<_>>()}),
            };
            cols.insert(name.clone(), v);
        }
        json!({"index": f.index, "order": f.column_names(), "columns": cols})
    }

    fn rows(m: &Matrix) -> Vec<Vec<f32>> {
        let (r, c) = m.shape();
        let d = m.to_dense();
        (0..r).map(|i| d[i * c..(i + 1) * c].to_vec()).collect()
    }

    fn uns_json(v: &UnsValue) -> serde_json::Value {
        use serde_json::json;
        match v {
            UnsValue::Str(s) => json!({"kind": "str", "value": s}),
            UnsValue::Float(x) => json!({"kind": "float", "value": x}),
            UnsValue::Int(x) => json!({"kind": "int", "value": x}),
            UnsValue::Bool(x) => json!({"kind": "bool", "value": x}),
            UnsValue::Strings(x) => json!({"kind": "strings", "value": x}),
            UnsValue::Floats(x) => json!({"kind": "floats", "value": x}),
            UnsValue::Map(m) => json!({"kind": "map", "value": m.iter()
                .map(|(k, v)| (k.clone(), uns_json(v))).collect::<serde_json::Map<_, _>>()}),
        }
    }

    /// What Python anndata must see in the file written from `a`.
    fn expected_json(a: &AnnData) -> serde_json::Value {
        use serde_json::json;
        let obsm: serde_json::Map<_, _> = a
            .obsm
            .iter()
            .map(|(k, e)| {
                let v = match e {
                    ObsmEntry::Array { rows, cols, data } => json!({"kind": "array",
                        "values": (0..*rows).map(|r| data[r * cols..(r + 1) * cols].to_vec()).collect::<Vec<_>>()}),
                    ObsmEntry::Frame(f) => json!({"kind": "frame", "frame": frame_json(f)}),
                };
                (k.clone(), v)
            })
            .collect();
        json!({
            "shape": [a.n_obs(), a.n_vars()],
            "x_sparse": matches!(a.x, Matrix::Csr(_)),
            "X": rows(&a.x),
            "obs": frame_json(&a.obs),
            "var": frame_json(&a.var),
            "layers": a.layers.iter().map(|(k, m)| (k.clone(), json!(rows(m)))).collect::<serde_json::Map<_, _>>(),
            "obsm": obsm,
            "raw": a.raw.as_ref().map(|r| json!({"X": rows(&r.x), "var_names": r.var.index})),
            "uns": a.uns.iter().map(|(k, v)| (k.clone(), uns_json(v))).collect::<serde_json::Map<_, _>>(),
        })
    }

    /// Writes `<name>.h5ad` + `<name>.expected.json` pairs for `tests/python/roundtrip_check.py`
    /// into `$LATENTLAB_ROUNDTRIP_DIR` (default: a temp dir), and runs the script when
    /// `$LATENTLAB_PYTHON` names a Python with anndata installed.
    #[test]
    fn python_roundtrip_fixtures() {
        let dir = std::env::var_os("LATENTLAB_ROUNDTRIP_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| tmp("python"));
        std::fs::create_dir_all(&dir).unwrap();
        let real = read_h5ad(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/pbmc68k_reduced/train.h5ad"
        )))
        .unwrap();
        let cases = [
            ("sample_dense", sample(true), None),
            ("sample_csr", sample(false), None),
            ("sample_csr_gzip", sample(false), Some(6)),
            ("pbmc_subset", real.select_obs(&[0, 5, 9, 100]), None),
        ];
        for (name, a, gzip) in cases {
            write_h5ad_with(
                &dir.join(format!("{name}.h5ad")),
                &a,
                H5adWriteOptions { gzip_level: gzip },
            )
            .unwrap();
            let json = serde_json::to_string(&expected_json(&a)).unwrap();
            std::fs::write(dir.join(format!("{name}.expected.json")), json).unwrap();
        }
        let Some(python) = std::env::var_os("LATENTLAB_PYTHON") else {
            eprintln!(
                "LATENTLAB_PYTHON not set: wrote fixtures to {} but did not run Python",
                dir.display()
            );
            return;
        };
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/roundtrip_check.py");
        let out = std::process::Command::new(python)
            .arg(&script)
            .arg(&dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        eprintln!("{text}");
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let mut a = sample(false);
        a.obs
            .columns
            .push(("bad/name".into(), Column::Int(vec![1, 2, 3])));
        let p = tmp("bad.h5ad");
        let e = write_h5ad(&p, &a).unwrap_err();
        assert!(e.to_string().contains("bad/name"), "{e}");
        assert!(!p.exists() && !crate::atomic_file::temp_path(&p).exists());
        let e = write_h5ad(Path::new("/nonexistent-dir/x.h5ad"), &sample(true)).unwrap_err();
        assert!(matches!(e, DataError::Write { .. }));
    }
}
