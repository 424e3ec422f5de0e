//! The one error type of the framework: every failure names what went wrong, where, and the fix.

use std::path::PathBuf;

/// Result alias used across latentlab.
pub type Result<T, E = LatentError> = std::result::Result<T, E>;

/// Errors raised while building, training, sampling or loading latentlab objects.
///
/// Every variant renders as one line that names the offending plugin, field or file and,
/// where possible, the fix.
#[derive(Debug, thiserror::Error)]
pub enum LatentError {
    /// A config value is out of range or inconsistent.
    #[error("{plugin}: invalid `{field}`: expected {expected}, got {got}")]
    InvalidConfig {
        /// Plugin or config section (`autoencoder.vae`, `train`, ...).
        plugin: String,
        /// Field name inside that section.
        field: String,
        /// What would be valid.
        expected: String,
        /// What was given.
        got: String,
    },
    /// Two plugins cannot be combined (e.g. a flow sampler on an epsilon-trained denoiser).
    #[error("incompatible combination: {0}")]
    Incompatible(String),
    /// A tensor had the wrong shape for a layer or operation.
    #[error("shape mismatch in {op}: expected {expected}, got {got}")]
    Shape {
        /// The layer or operation.
        op: String,
        /// Expected shape.
        expected: String,
        /// Actual shape.
        got: String,
    },
    /// A numeric computation produced NaN or infinity.
    #[error("non-finite value in {0}; lower the learning rate or check the input data")]
    NonFinite(String),
    /// A config file could not be parsed.
    #[error("{path}: {message}")]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// Parser message (includes the unknown field or type).
        message: String,
    },
    /// A checkpoint or run directory is missing, corrupted or does not match.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The file inside the run directory.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Data loading or validation failed.
    #[error("{0}")]
    Data(String),
    /// Evaluation or plotting failed.
    #[error("{0}")]
    Evaluation(String),
    /// File system error with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl LatentError {
    /// Shorthand for [`LatentError::InvalidConfig`].
    pub fn config(
        plugin: impl Into<String>,
        field: impl Into<String>,
        expected: impl Into<String>,
        got: impl std::fmt::Display,
    ) -> Self {
        Self::InvalidConfig {
            plugin: plugin.into(),
            field: field.into(),
            expected: expected.into(),
            got: got.to_string(),
        }
    }

    /// Shorthand for [`LatentError::Shape`].
    pub fn shape(
        op: impl Into<String>,
        expected: impl std::fmt::Display,
        got: impl std::fmt::Display,
    ) -> Self {
        Self::Shape {
            op: op.into(),
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }

    /// Shorthand for [`LatentError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<crate::data::DataError> for LatentError {
    fn from(e: crate::data::DataError) -> Self {
        LatentError::Data(e.to_string())
    }
}
