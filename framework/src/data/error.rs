//! The error type of the data layer: every variant renders as one line naming the file,
//! the field inside it (HDF5 path, obs key, line number) and the fix.

use std::path::{Path, PathBuf};

/// Errors raised while reading, writing or preparing single-cell data.
///
/// Display is always a single line of the form
/// `<file>: <field>: <problem>; <fix>`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file or folder could not be opened, read or listed.
    #[error("{}: cannot read: {}; {}", .path.display(), esc(.reason), esc(.fix))]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating-system error, on one line.
        reason: String,
        /// What the user should do.
        fix: String,
    },
    /// The file is not a (readable) HDF5 file: wrong magic bytes, truncated or corrupted.
    #[error("{}: not a readable HDF5 file ({}); {}", .path.display(), esc(.reason), esc(.fix))]
    NotHdf5 {
        /// The file.
        path: PathBuf,
        /// What the decoder reported, on one line.
        reason: String,
        /// What the user should do.
        fix: String,
    },
    /// A required group, dataset, attribute or column is absent.
    #[error("{}: {} not found{}; {}", .path.display(), esc(.field), available_suffix(.available), esc(.fix))]
    Missing {
        /// The file.
        path: PathBuf,
        /// What is missing, e.g. `obs column "cell_type"` or `HDF5 dataset "X/indptr"`.
        field: String,
        /// What is there instead (may be empty).
        available: Vec<String>,
        /// What the user should do.
        fix: String,
    },
    /// An element uses an on-disk encoding this reader does not handle.
    #[error("{}: {}: unsupported encoding \"{}\"; {}", .path.display(), esc(.field), esc(.encoding), esc(.fix))]
    UnsupportedEncoding {
        /// The file.
        path: PathBuf,
        /// HDF5 path of the element.
        field: String,
        /// The `encoding-type` (or datatype) found.
        encoding: String,
        /// What the user should do.
        fix: String,
    },
    /// An element is present but its content is inconsistent or malformed.
    #[error("{}: {}: {}; {}", .path.display(), esc(.field), esc(.problem), esc(.fix))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// HDF5 path, column, or `line N` where the problem is.
        field: String,
        /// What is wrong, on one line.
        problem: String,
        /// What the user should do.
        fix: String,
    },
    /// Writing an output file failed; no partial file is left behind.
    #[error("{}: cannot write: {}; {}", .path.display(), esc(.reason), esc(.fix))]
    Write {
        /// The output file.
        path: PathBuf,
        /// What failed, on one line.
        reason: String,
        /// What the user should do.
        fix: String,
    },
}

/// Escape control characters (newlines, ...) so that a message stays on one line even when
/// names come from a malformed file.
fn esc(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        s.to_string()
    }
}

fn available_suffix(available: &[String]) -> String {
    if available.is_empty() {
        return " (nothing available)".to_string();
    }
    const MAX: usize = 20;
    let mut shown: Vec<String> = available.iter().take(MAX).map(|a| esc(a)).collect();
    if available.len() > MAX {
        shown.push(format!("... {} more", available.len() - MAX));
    }
    format!(" (available: {})", shown.join(", "))
}

/// Collapse a message onto one line (HDF5 and OS errors may span lines).
pub(crate) fn one_line(s: impl std::fmt::Display) -> String {
    s.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl DataError {
    /// Build an [`DataError::Invalid`].
    pub fn invalid(
        path: &Path,
        field: impl Into<String>,
        problem: impl std::fmt::Display,
        fix: impl Into<String>,
    ) -> Self {
        DataError::Invalid {
            path: path.to_path_buf(),
            field: field.into(),
            problem: one_line(problem),
            fix: fix.into(),
        }
    }

    /// Build an [`DataError::Missing`].
    pub fn missing(
        path: &Path,
        field: impl Into<String>,
        available: Vec<String>,
        fix: impl Into<String>,
    ) -> Self {
        DataError::Missing {
            path: path.to_path_buf(),
            field: field.into(),
            available,
            fix: fix.into(),
        }
    }

    /// Build an [`DataError::Io`] from an OS error.
    pub fn io(path: &Path, err: impl std::fmt::Display) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            reason: one_line(err),
            fix: "check that the path exists and is readable".into(),
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DataError::Io { path, .. }
            | DataError::NotHdf5 { path, .. }
            | DataError::Missing { path, .. }
            | DataError::UnsupportedEncoding { path, .. }
            | DataError::Invalid { path, .. }
            | DataError::Write { path, .. } => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_with_file_field_and_fix() {
        let e = DataError::missing(
            Path::new("data/x.h5ad"),
            "obs column \"cell_type\"",
            vec!["bulk_labels".into(), "louvain".into()],
            "set data.condition_keys to one of them",
        );
        assert_eq!(
            e.to_string(),
            "data/x.h5ad: obs column \"cell_type\" not found (available: bulk_labels, louvain); \
             set data.condition_keys to one of them"
        );
        let e = DataError::invalid(Path::new("a.h5"), "X", "bad\nthing", "fix it");
        assert!(!e.to_string().contains('\n'));
    }
}
