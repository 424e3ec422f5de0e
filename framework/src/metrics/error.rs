//! Error type of the metrics module.

use thiserror::Error;

/// Error returned by every fallible metric function. Messages are one line.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MetricsError {
    /// A slice length does not match the stated shape, or a dimension is zero.
    #[error("invalid shape for {what}: {detail}")]
    Shape {
        /// Which argument.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// Fewer cells (rows / values) than the metric needs.
    #[error("too few cells in {what}: got {got}, need at least {need}")]
    TooFew {
        /// Which argument.
        what: String,
        /// Number supplied.
        got: usize,
        /// Minimum required.
        need: usize,
    },
    /// A NaN or infinite value in the input.
    #[error("non-finite value in {what} at flat index {index}")]
    NonFinite {
        /// Which argument.
        what: String,
        /// Flat index of the first offending value.
        index: usize,
    },
    /// A parameter is out of its valid range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The statistic is undefined for this input (for example a correlation with a
    /// constant vector).
    #[error("undefined statistic: {0}")]
    Undefined(String),
}
