//! Thin, panic-proof helpers over `hdf5-reader`: open a file, look up nodes by path, read
//! attributes and numeric/string datasets with type widening, map every failure to a
//! one-line [`DataError`] naming the file and HDF5 path.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use hdf5_reader::group::Group;
use hdf5_reader::{Attribute, Dataset, Datatype, Hdf5File, OpenOptions};
use hdf5_reader::{SliceInfo, SliceInfoElem};

use super::error::{one_line, DataError};

const CORRUPT_FIX: &str = "the file is probably truncated or corrupted; re-export or re-copy it";

/// Run `f`, turning a panic inside the HDF5 decoder into a [`DataError`].
pub(crate) fn guard<T>(
    path: &Path,
    field: &str,
    f: impl FnOnce() -> Result<T, DataError>,
) -> Result<T, DataError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "decoder panicked".into());
            Err(DataError::invalid(
                path,
                field,
                format!("HDF5 decoder failed ({})", one_line(msg)),
                CORRUPT_FIX,
            ))
        }
    }
}

/// An HDF5 object: group or dataset.
pub(crate) enum Node {
    Group(Group),
    Dataset(Box<Dataset>),
}

impl Node {
    pub(crate) fn attr(&self, name: &str) -> Option<Attribute> {
        match self {
            Node::Group(g) => g.attribute(name).ok(),
            Node::Dataset(d) => d.attribute(name).ok(),
        }
    }

    /// `encoding-type` attribute, if any.
    pub(crate) fn encoding(&self) -> Option<String> {
        self.attr("encoding-type").and_then(|a| attr_string(&a))
    }
}

/// Join HDF5 path components (`""` is the root).
pub(crate) fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// An open HDF5 file plus its path for error messages.
pub(crate) struct H5 {
    pub(crate) path: PathBuf,
    pub(crate) file: Hdf5File,
}

impl H5 {
    /// Open `path`, distinguishing a missing file, a non-HDF5 file and a corrupted one.
    pub(crate) fn open(path: &Path) -> Result<H5, DataError> {
        let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
        if meta.is_dir() {
            return Err(DataError::Io {
                path: path.to_path_buf(),
                reason: "is a directory".into(),
                fix: "pass the .h5ad/.h5 file inside it".into(),
            });
        }
        let mut magic = [0u8; 8];
        {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
            let n = f.read(&mut magic).map_err(|e| DataError::io(path, e))?;
            if n < 8 || &magic != b"\x89HDF\r\n\x1a\n" {
                // HDF5 allows a user block (512, 1024, ... bytes) before the signature; let
                // the decoder decide for those, but give a precise message for tiny files.
                if meta.len() < 512 {
                    return Err(DataError::NotHdf5 {
                        path: path.to_path_buf(),
                        reason: "no HDF5 signature".into(),
                        fix: not_hdf5_fix(),
                    });
                }
            }
        }
        let limit = (meta.len() as usize).saturating_mul(1000).max(1 << 30);
        let options = OpenOptions::default().with_max_read_bytes(limit);
        let file = guard(path, "superblock", || {
            Hdf5File::open_with_options(path, options).map_err(|e| {
                let reason = one_line(&e);
                let fix = if matches!(e, hdf5_reader::error::Error::InvalidMagic) {
                    not_hdf5_fix()
                } else {
                    CORRUPT_FIX.to_string()
                };
                DataError::NotHdf5 {
                    path: path.to_path_buf(),
                    reason,
                    fix,
                }
            })
        })?;
        let h5 = H5 {
            path: path.to_path_buf(),
            file,
        };
        // Touch the root group now so that truncation shows up as "not readable".
        guard(path, "/", || {
            h5.file
                .root_group()
                .and_then(|g| g.member_names())
                .map_err(|e| DataError::NotHdf5 {
                    path: path.to_path_buf(),
                    reason: one_line(e),
                    fix: CORRUPT_FIX.into(),
                })
        })?;
        Ok(h5)
    }

    /// A decoding error at `field`.
    pub(crate) fn err(&self, field: &str, e: impl std::fmt::Display) -> DataError {
        DataError::invalid(
            &self.path,
            field,
            format!("cannot be decoded ({})", one_line(e)),
            CORRUPT_FIX,
        )
    }

    /// An invalid-content error at `field`.
    pub(crate) fn bad(&self, field: &str, problem: impl std::fmt::Display, fix: &str) -> DataError {
        DataError::invalid(&self.path, field, problem, fix)
    }

    /// The group at `path` (`""` = root).
    pub(crate) fn group(&self, path: &str) -> Result<Group, DataError> {
        guard(&self.path, path, || {
            if path.is_empty() {
                self.file.root_group().map_err(|e| self.err("/", e))
            } else {
                self.file.group(path).map_err(|e| self.err(path, e))
            }
        })
    }

    /// Names of child groups and datasets of group `path`.
    pub(crate) fn children(&self, path: &str) -> Result<(Vec<String>, Vec<String>), DataError> {
        let g = self.group(path)?;
        guard(&self.path, path, || {
            g.member_names().map_err(|e| self.err(path, e))
        })
    }

    /// All child names of group `path`, sorted.
    pub(crate) fn child_names(&self, path: &str) -> Result<Vec<String>, DataError> {
        let (mut g, d) = self.children(path)?;
        g.extend(d);
        g.sort();
        Ok(g)
    }

    /// The node at `path`, or `None` if its parent has no such child.
    pub(crate) fn node(&self, path: &str) -> Result<Option<Node>, DataError> {
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", path),
        };
        let (groups, datasets) = self.children(parent)?;
        guard(&self.path, path, || {
            if groups.iter().any(|g| g == name) {
                self.file
                    .group(path)
                    .map(|g| Some(Node::Group(g)))
                    .map_err(|e| self.err(path, e))
            } else if datasets.iter().any(|d| d == name) {
                self.file
                    .dataset(path)
                    .map(|d| Some(Node::Dataset(Box::new(d))))
                    .map_err(|e| self.err(path, e))
            } else {
                Ok(None)
            }
        })
    }

    /// The dataset at `path`; a missing one is a [`DataError::Missing`] listing siblings.
    pub(crate) fn dataset(&self, path: &str, fix: &str) -> Result<Dataset, DataError> {
        match self.node(path)? {
            Some(Node::Dataset(d)) => Ok(*d),
            Some(Node::Group(_)) => Err(self.bad(path, "is a group, expected a dataset", fix)),
            None => {
                let parent = path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                Err(DataError::missing(
                    &self.path,
                    format!("HDF5 dataset \"{path}\""),
                    self.child_names(parent).unwrap_or_default(),
                    fix,
                ))
            }
        }
    }

    /// Read a numeric dataset (any int/float/bool-enum type) as f64/i64/bool-capable values.
    pub(crate) fn read_num(&self, ds: &Dataset, field: &str) -> Result<NumVec, DataError> {
        guard(&self.path, field, || {
            read_num(ds).map_err(|e| self.err(field, e))
        })
    }

    /// Read `[start, end)` of a 1-D numeric dataset.
    pub(crate) fn read_num_range(
        &self,
        ds: &Dataset,
        field: &str,
        start: u64,
        end: u64,
    ) -> Result<NumVec, DataError> {
        guard(&self.path, field, || {
            read_num_slice(ds, start, end).map_err(|e| self.err(field, e))
        })
    }

    /// Read a string dataset (fixed or variable length; numbers are formatted).
    pub(crate) fn read_strings(&self, ds: &Dataset, field: &str) -> Result<Vec<String>, DataError> {
        guard(&self.path, field, || match ds.dtype() {
            Datatype::String { .. } | Datatype::VarLen { .. } => {
                ds.read_strings().map_err(|e| self.err(field, e))
            }
            _ => read_num(ds)
                .map(|v| v.to_strings())
                .map_err(|e| self.err(field, e)),
        })
    }
}

fn not_hdf5_fix() -> String {
    "pass an .h5ad file, a 10x .h5 file, a 10x MTX folder, or a .csv/.tsv table".into()
}

/// Numeric values read from a dataset, in their widened storage class.
#[derive(Debug, Clone)]
pub(crate) enum NumVec {
    /// Floating point.
    Float(Vec<f64>),
    /// Signed or unsigned integers.
    Int(Vec<i64>),
    /// Booleans (h5py stores numpy bool as an enum over int8).
    Bool(Vec<bool>),
}

impl NumVec {
    pub(crate) fn to_f32(&self) -> Vec<f32> {
        match self {
            NumVec::Float(v) => v.iter().map(|&x| x as f32).collect(),
            NumVec::Int(v) => v.iter().map(|&x| x as f32).collect(),
            NumVec::Bool(v) => v.iter().map(|&x| f32::from(u8::from(x))).collect(),
        }
    }

    pub(crate) fn to_f64(&self) -> Vec<f64> {
        match self {
            NumVec::Float(v) => v.clone(),
            NumVec::Int(v) => v.iter().map(|&x| x as f64).collect(),
            NumVec::Bool(v) => v.iter().map(|&x| f64::from(u8::from(x))).collect(),
        }
    }

    /// Integers; `None` if a float value is not a whole number.
    pub(crate) fn to_i64(&self) -> Option<Vec<i64>> {
        match self {
            NumVec::Float(v) => v
                .iter()
                .map(|&x| (x.fract() == 0.0 && x.is_finite()).then_some(x as i64))
                .collect(),
            NumVec::Int(v) => Some(v.clone()),
            NumVec::Bool(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
        }
    }

    pub(crate) fn to_bool(&self) -> Vec<bool> {
        match self {
            NumVec::Float(v) => v.iter().map(|&x| x != 0.0).collect(),
            NumVec::Int(v) => v.iter().map(|&x| x != 0).collect(),
            NumVec::Bool(v) => v.clone(),
        }
    }

    pub(crate) fn to_strings(&self) -> Vec<String> {
        match self {
            NumVec::Float(v) => v.iter().map(|x| x.to_string()).collect(),
            NumVec::Int(v) => v.iter().map(|x| x.to_string()).collect(),
            NumVec::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
        }
    }
}

/// Name of a datatype as numpy would print it (`float32`, `int64`, `bool`, `string`).
pub(crate) fn dtype_name(dt: &Datatype) -> String {
    match dt {
        Datatype::FixedPoint { size, signed, .. } => {
            format!("{}int{}", if *signed { "" } else { "u" }, size * 8)
        }
        Datatype::FloatingPoint { size, .. } => format!("float{}", size * 8),
        Datatype::Enum { .. } => "bool".into(),
        Datatype::String { .. } => "string".into(),
        Datatype::VarLen { .. } => "vlen".into(),
        Datatype::Compound { .. } => "compound".into(),
        other => format!("{other:?}")
            .split(['{', ' '])
            .next()
            .unwrap_or("unknown")
            .to_lowercase(),
    }
}

/// Storage class of a numeric dataset.
#[derive(Clone, Copy)]
enum Kind {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

fn kind_of(dt: &Datatype) -> Result<Kind, String> {
    Ok(match dt {
        Datatype::FixedPoint { size, signed, .. } => match (size, signed) {
            (1, true) => Kind::I8,
            (1, false) => Kind::U8,
            (2, true) => Kind::I16,
            (2, false) => Kind::U16,
            (4, true) => Kind::I32,
            (4, false) => Kind::U32,
            (8, true) => Kind::I64,
            (8, false) => Kind::U64,
            _ => return Err(format!("unsupported integer size {size}")),
        },
        Datatype::FloatingPoint { size: 4, .. } => Kind::F32,
        Datatype::FloatingPoint { size: 8, .. } => Kind::F64,
        other => {
            return Err(format!(
                "unsupported numeric datatype {}",
                dtype_name(other)
            ))
        }
    })
}

/// Decode h5py's boolean enum (`FALSE = 0`, `TRUE = 1` over an integer base).
fn decode_enum_bool(raw: &[u8], base: &Datatype) -> Result<NumVec, String> {
    let size = match base {
        Datatype::FixedPoint { size, .. } if *size > 0 => *size as usize,
        other => return Err(format!("unsupported enum base {}", dtype_name(other))),
    };
    Ok(NumVec::Bool(
        raw.chunks_exact(size)
            .map(|c| c.iter().any(|&b| b != 0))
            .collect(),
    ))
}

macro_rules! dispatch {
    ($kind:expr, $read:ident) => {
        match $kind {
            Kind::I8 => {
                $read!(i8).map(|a| NumVec::Int(a.iter().map(|&x| (i64::from)(x)).collect()))
            }
            Kind::U8 => {
                $read!(u8).map(|a| NumVec::Int(a.iter().map(|&x| (i64::from)(x)).collect()))
            }
            Kind::I16 => {
                $read!(i16).map(|a| NumVec::Int(a.iter().map(|&x| (i64::from)(x)).collect()))
            }
            Kind::U16 => {
                $read!(u16).map(|a| NumVec::Int(a.iter().map(|&x| (i64::from)(x)).collect()))
            }
            Kind::I32 => {
                $read!(i32).map(|a| NumVec::Int(a.iter().map(|&x| (i64::from)(x)).collect()))
            }
            Kind::U32 => {
                $read!(u32).map(|a| NumVec::Int(a.iter().map(|&x| (i64::from)(x)).collect()))
            }
            Kind::I64 => $read!(i64).map(|a| NumVec::Int(a.iter().map(|&x| (|x| x)(x)).collect())),
            Kind::U64 => {
                $read!(u64).map(|a| NumVec::Int(a.iter().map(|&x| (|x| x as i64)(x)).collect()))
            }
            Kind::F32 => {
                $read!(f32).map(|a| NumVec::Float(a.iter().map(|&x| (f64::from)(x)).collect()))
            }
            Kind::F64 => {
                $read!(f64).map(|a| NumVec::Float(a.iter().map(|&x| (|x| x)(x)).collect()))
            }
        }
    };
}

fn read_num(ds: &Dataset) -> Result<NumVec, String> {
    if let Datatype::Enum { base, .. } = ds.dtype() {
        let raw = ds.read_raw_bytes().map_err(|e| e.to_string())?;
        return decode_enum_bool(&raw, base);
    }
    let kind = kind_of(ds.dtype())?;
    macro_rules! rd {
        ($t:ty) => {
            ds.read_array::<$t>()
        };
    }
    dispatch!(kind, rd).map_err(|e| e.to_string())
}

fn read_num_slice(ds: &Dataset, start: u64, end: u64) -> Result<NumVec, String> {
    if start >= end {
        return Ok(NumVec::Float(Vec::new()));
    }
    let sel = SliceInfo {
        selections: vec![SliceInfoElem::Slice {
            start,
            end,
            step: 1,
        }],
    };
    if let Datatype::Enum { .. } = ds.dtype() {
        return Err("boolean slices are not supported".into());
    }
    let kind = kind_of(ds.dtype())?;
    macro_rules! rd {
        ($t:ty) => {
            ds.read_slice::<$t>(&sel)
        };
    }
    dispatch!(kind, rd).map_err(|e| e.to_string())
}

/// A string attribute (scalar, or the first element of a 1-element array).
pub(crate) fn attr_string(a: &Attribute) -> Option<String> {
    a.read_string()
        .ok()
        .or_else(|| a.read_strings().ok().and_then(|v| v.into_iter().next()))
}

/// A string-array attribute; an empty numeric array (h5py's `[]`) reads as empty.
pub(crate) fn attr_strings(a: &Attribute) -> Option<Vec<String>> {
    if a.num_elements().ok() == Some(0) || a.shape.first() == Some(&0) {
        return Some(Vec::new());
    }
    match a.read_strings() {
        Ok(v) => Some(v),
        Err(_) => attr_string(a).map(|s| vec![s]),
    }
}

/// An integer-array attribute (any integer or whole-float type).
pub(crate) fn attr_i64s(a: &Attribute) -> Option<Vec<i64>> {
    let kind = kind_of(&a.datatype).ok()?;
    macro_rules! rd {
        ($t:ty) => {
            a.read_1d::<$t>()
        };
    }
    let v: Vec<i64> = match kind {
        Kind::I8 => rd!(i8).ok()?.into_iter().map(i64::from).collect(),
        Kind::U8 => rd!(u8).ok()?.into_iter().map(i64::from).collect(),
        Kind::I16 => rd!(i16).ok()?.into_iter().map(i64::from).collect(),
        Kind::U16 => rd!(u16).ok()?.into_iter().map(i64::from).collect(),
        Kind::I32 => rd!(i32).ok()?.into_iter().map(i64::from).collect(),
        Kind::U32 => rd!(u32).ok()?.into_iter().map(i64::from).collect(),
        Kind::I64 => rd!(i64).ok()?,
        Kind::U64 => rd!(u64).ok()?.into_iter().map(|x| x as i64).collect(),
        Kind::F32 => rd!(f32).ok()?.into_iter().map(|x| x as i64).collect(),
        Kind::F64 => rd!(f64).ok()?.into_iter().map(|x| x as i64).collect(),
    };
    Some(v)
}

/// A boolean attribute (h5py enum, integer, or the strings "true"/"false").
pub(crate) fn attr_bool(a: &Attribute) -> Option<bool> {
    match &a.datatype {
        Datatype::Enum { .. } | Datatype::FixedPoint { .. } => {
            Some(a.raw_data.iter().any(|&b| b != 0))
        }
        _ => attr_string(a).map(|s| s.eq_ignore_ascii_case("true")),
    }
}
