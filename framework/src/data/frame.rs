//! Per-cell (`obs`) and per-gene (`var`) annotation tables.

use std::collections::BTreeSet;
use std::path::Path;

use super::error::DataError;

/// One annotation column.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Categorical (pandas `category`): `codes[i]` indexes `categories`, `-1` means missing.
    Categorical {
        /// Per-row category code, `-1` = missing.
        codes: Vec<i32>,
        /// Category labels.
        categories: Vec<String>,
        /// Whether the categories are ordered.
        ordered: bool,
    },
    /// Floating-point values (float32 columns are widened).
    Float(Vec<f64>),
    /// Integer values.
    Int(Vec<i64>),
    /// Booleans.
    Bool(Vec<bool>),
    /// Strings.
    Str(Vec<String>),
    /// Integers with a missing mask (`mask[i] == true` means missing).
    NullableInt {
        /// Values (undefined where masked).
        values: Vec<i64>,
        /// `true` = missing.
        mask: Vec<bool>,
    },
    /// Booleans with a missing mask (`mask[i] == true` means missing).
    NullableBool {
        /// Values (undefined where masked).
        values: Vec<bool>,
        /// `true` = missing.
        mask: Vec<bool>,
    },
}

impl Column {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Column::Categorical { codes, .. } => codes.len(),
            Column::Float(v) => v.len(),
            Column::Int(v) => v.len(),
            Column::Bool(v) => v.len(),
            Column::Str(v) => v.len(),
            Column::NullableInt { values, .. } => values.len(),
            Column::NullableBool { values, .. } => values.len(),
        }
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Short type name for reports: `categorical`, `float`, `int`, `bool`, `string`,
    /// `nullable-int`, `nullable-bool`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Column::Categorical { .. } => "categorical",
            Column::Float(_) => "float",
            Column::Int(_) => "int",
            Column::Bool(_) => "bool",
            Column::Str(_) => "string",
            Column::NullableInt { .. } => "nullable-int",
            Column::NullableBool { .. } => "nullable-bool",
        }
    }

    /// A new column with the given rows, in order.
    pub fn select_rows(&self, rows: &[usize]) -> Column {
        fn pick<T: Clone>(v: &[T], rows: &[usize]) -> Vec<T> {
            rows.iter().map(|&r| v[r].clone()).collect()
        }
        match self {
            Column::Categorical {
                codes,
                categories,
                ordered,
            } => Column::Categorical {
                codes: pick(codes, rows),
                categories: categories.clone(),
                ordered: *ordered,
            },
            Column::Float(v) => Column::Float(pick(v, rows)),
            Column::Int(v) => Column::Int(pick(v, rows)),
            Column::Bool(v) => Column::Bool(pick(v, rows)),
            Column::Str(v) => Column::Str(pick(v, rows)),
            Column::NullableInt { values, mask } => Column::NullableInt {
                values: pick(values, rows),
                mask: pick(mask, rows),
            },
            Column::NullableBool { values, mask } => Column::NullableBool {
                values: pick(values, rows),
                mask: pick(mask, rows),
            },
        }
    }

    /// Values as strings, `None` where missing (for reports and label extraction).
    pub fn to_strings(&self) -> Vec<Option<String>> {
        match self {
            Column::Categorical {
                codes, categories, ..
            } => codes
                .iter()
                .map(|&c| {
                    usize::try_from(c)
                        .ok()
                        .and_then(|c| categories.get(c).cloned())
                })
                .collect(),
            Column::Float(v) => v
                .iter()
                .map(|x| (!x.is_nan()).then(|| format_number(*x)))
                .collect(),
            Column::Int(v) => v.iter().map(|x| Some(x.to_string())).collect(),
            Column::Bool(v) => v.iter().map(|x| Some(x.to_string())).collect(),
            Column::Str(v) => v.iter().cloned().map(Some).collect(),
            Column::NullableInt { values, mask } => values
                .iter()
                .zip(mask)
                .map(|(v, m)| (!m).then(|| v.to_string()))
                .collect(),
            Column::NullableBool { values, mask } => values
                .iter()
                .zip(mask)
                .map(|(v, m)| (!m).then(|| v.to_string()))
                .collect(),
        }
    }
}

fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// A table with a string index (cell barcodes for `obs`, gene names for `var`) and named
/// columns in a fixed order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DataFrame {
    /// Name of the index (anndata's `_index` attribute), usually `_index` or `index`.
    pub index_name: String,
    /// Row names.
    pub index: Vec<String>,
    /// Columns in order; every column has `index.len()` rows.
    pub columns: Vec<(String, Column)>,
}

impl DataFrame {
    /// A frame with only an index (named `_index`).
    pub fn from_index(index: Vec<String>) -> Self {
        DataFrame {
            index_name: "_index".into(),
            index,
            columns: Vec::new(),
        }
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// Column names in order.
    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the frame has no rows.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Add or replace a column.
    pub fn set_column(&mut self, name: impl Into<String>, column: Column) {
        let name = name.into();
        if let Some(slot) = self.columns.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = column;
        } else {
            self.columns.push((name, column));
        }
    }

    /// Integer labels for column `key`: `(categories, codes)` with `codes[i]` indexing
    /// `categories` and `-1` for a missing value.
    ///
    /// Categorical columns keep their categories; string, integer and boolean columns (and
    /// float columns holding only whole numbers, e.g. time points) get their sorted unique
    /// values as categories (numerically sorted for numbers).
    ///
    /// # Errors
    /// [`DataError::Missing`] naming the available columns when `key` is absent, and
    /// [`DataError::Invalid`] for a float column with non-integer values.
    pub fn labels(&self, key: &str, file: &Path) -> Result<(Vec<String>, Vec<i32>), DataError> {
        self.labels_for(key, file, "the obs key in your config")
    }

    /// [`DataFrame::labels`] with the config field to name in the fix
    /// (e.g. `data.condition_keys`).
    ///
    /// # Errors
    /// As [`DataFrame::labels`].
    pub fn labels_for(
        &self,
        key: &str,
        file: &Path,
        config_field: &str,
    ) -> Result<(Vec<String>, Vec<i32>), DataError> {
        let col = self.column(key).ok_or_else(|| {
            DataError::missing(
                file,
                format!("obs column \"{key}\""),
                self.column_names(),
                format!("set {config_field} to one of them"),
            )
        })?;
        match col {
            Column::Categorical {
                codes, categories, ..
            } => {
                let n = categories.len() as i32;
                let codes = codes
                    .iter()
                    .map(|&c| if (0..n).contains(&c) { c } else { -1 })
                    .collect();
                Ok((categories.clone(), codes))
            }
            Column::Float(v) if v.iter().any(|x| x.is_finite() && x.fract() != 0.0) => {
                Err(DataError::invalid(
                    file,
                    format!("obs column \"{key}\""),
                    "is a continuous float column, not a label column",
                    format!(
                        "make it categorical (e.g. `adata.obs[\"{key}\"] = adata.obs[\"{key}\"].astype(\"category\")`) or set {config_field} to a categorical column"
                    ),
                ))
            }
            Column::Float(_)
            | Column::Int(_)
            | Column::NullableInt { .. }
            | Column::Bool(_)
            | Column::NullableBool { .. } => {
                let strings = col.to_strings();
                let numeric = matches!(
                    col,
                    Column::Float(_) | Column::Int(_) | Column::NullableInt { .. }
                );
                let mut uniq: Vec<String> = strings
                    .iter()
                    .flatten()
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                if numeric {
                    uniq.sort_by(|a, b| {
                        let (x, y) = (
                            a.parse::<f64>().unwrap_or(f64::NAN),
                            b.parse::<f64>().unwrap_or(f64::NAN),
                        );
                        x.total_cmp(&y)
                    });
                }
                Ok(codes_for(&strings, uniq))
            }
            Column::Str(v) => {
                let uniq: Vec<String> = v
                    .iter()
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let strings: Vec<Option<String>> = v.iter().cloned().map(Some).collect();
                Ok(codes_for(&strings, uniq))
            }
        }
    }

    /// A new frame with the given rows, in order.
    pub fn select_rows(&self, rows: &[usize]) -> DataFrame {
        DataFrame {
            index_name: self.index_name.clone(),
            index: rows.iter().map(|&r| self.index[r].clone()).collect(),
            columns: self
                .columns
                .iter()
                .map(|(n, c)| (n.clone(), c.select_rows(rows)))
                .collect(),
        }
    }

    /// Check that every column has as many rows as the index.
    ///
    /// # Errors
    /// A one-line description naming the first column of the wrong length.
    pub fn validate(&self) -> Result<(), String> {
        for (name, col) in &self.columns {
            if col.len() != self.index.len() {
                return Err(format!(
                    "column \"{name}\" has {} rows but the index has {}",
                    col.len(),
                    self.index.len()
                ));
            }
            if let Column::Categorical {
                codes, categories, ..
            } = col
            {
                if let Some(c) = codes
                    .iter()
                    .find(|&&c| c < -1 || c >= categories.len() as i32)
                {
                    return Err(format!(
                        "column \"{name}\" has code {c} but only {} categories",
                        categories.len()
                    ));
                }
            }
        }
        Ok(())
    }
}

fn codes_for(strings: &[Option<String>], categories: Vec<String>) -> (Vec<String>, Vec<i32>) {
    let lookup: std::collections::HashMap<&str, i32> = categories
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i as i32))
        .collect();
    let codes = strings
        .iter()
        .map(|s| {
            s.as_deref()
                .and_then(|s| lookup.get(s).copied())
                .unwrap_or(-1)
        })
        .collect();
    (categories, codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> DataFrame {
        DataFrame {
            index_name: "_index".into(),
            index: vec!["a".into(), "b".into(), "c".into()],
            columns: vec![
                (
                    "s".into(),
                    Column::Str(vec!["y".into(), "x".into(), "y".into()]),
                ),
                (
                    "cat".into(),
                    Column::Categorical {
                        codes: vec![1, -1, 0],
                        categories: vec!["p".into(), "q".into()],
                        ordered: false,
                    },
                ),
                ("hours".into(), Column::Float(vec![24.0, 0.0, 24.0])),
                ("score".into(), Column::Float(vec![0.5, 0.1, 0.2])),
                ("n".into(), Column::Int(vec![10, 9, 10])),
            ],
        }
    }

    #[test]
    fn labels_from_each_kind() {
        let f = frame();
        let p = Path::new("f.h5ad");
        assert_eq!(
            f.labels("s", p).unwrap(),
            (vec!["x".into(), "y".into()], vec![1, 0, 1])
        );
        assert_eq!(
            f.labels("cat", p).unwrap(),
            (vec!["p".into(), "q".into()], vec![1, -1, 0])
        );
        assert_eq!(
            f.labels("hours", p).unwrap(),
            (vec!["0".into(), "24".into()], vec![1, 0, 1])
        );
        assert_eq!(
            f.labels("n", p).unwrap(),
            (vec!["9".into(), "10".into()], vec![1, 0, 1])
        );
        assert!(f.labels("score", p).is_err());
        let e = f
            .labels_for("cell_type", p, "data.condition_keys")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.h5ad: obs column \"cell_type\" not found (available: s, cat, hours, score, n); \
             set data.condition_keys to one of them"
        );
    }

    #[test]
    fn select_rows_keeps_types() {
        let f = frame().select_rows(&[2, 0]);
        assert_eq!(f.index, vec!["c".to_string(), "a".to_string()]);
        assert_eq!(f.column("n"), Some(&Column::Int(vec![10, 10])));
        assert!(f.validate().is_ok());
    }
}
