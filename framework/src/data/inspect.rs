//! Human-readable reports on a data set (`latentlab inspect`).

use std::fmt::Write;
use std::path::Path;

use super::anndata::{AnnData, ObsmEntry, UnsValue};
use super::frame::{Column, DataFrame};
use super::matrix::Matrix;

/// What the values of a matrix look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Non-negative integers: raw counts (NB/ZINB likelihoods apply).
    Counts,
    /// Non-negative, non-integer, max ≤ 30: most likely `log1p` of normalized counts.
    LogNormalized,
    /// Non-negative, non-integer, larger values: normalized but not logged (or FPKM/TPM).
    Normalized,
    /// Negative values present: scaled/centred data.
    Scaled,
    /// NaN or infinite values present.
    NonFinite,
}

impl ValueKind {
    /// One-line description.
    pub fn describe(self) -> &'static str {
        match self {
            ValueKind::Counts => "raw counts (non-negative integers)",
            ValueKind::LogNormalized => "log-normalized (non-integer, max <= 30)",
            ValueKind::Normalized => {
                "normalized, not logged (non-integer, large values; e.g. CPM/FPKM)"
            }
            ValueKind::Scaled => "scaled/centred (negative values present)",
            ValueKind::NonFinite => "contains NaN/inf",
        }
    }
}

/// Guess what the values of `m` are.
pub fn value_kind(m: &Matrix) -> ValueKind {
    if !m.is_finite() {
        ValueKind::NonFinite
    } else if m.looks_like_counts() {
        ValueKind::Counts
    } else if m.values().iter().any(|&v| v < 0.0) {
        ValueKind::Scaled
    } else if m.values().iter().copied().fold(0f32, f32::max) <= 30.0 {
        ValueKind::LogNormalized
    } else {
        ValueKind::Normalized
    }
}

fn min_max(v: &[f32]) -> (f32, f32) {
    v.iter()
        .filter(|x| x.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn matrix_line(m: &Matrix) -> String {
    let (r, c) = m.shape();
    let (lo, hi) = min_max(m.values());
    let (lo, hi) = if m.values().is_empty() {
        (0.0, 0.0)
    } else {
        (lo, hi)
    };
    let lo = if matches!(m, Matrix::Csr(_)) && m.nnz() < r * c {
        lo.min(0.0)
    } else {
        lo
    };
    format!(
        "{} {r} × {c}, {} stored, {:.1}% non-zero, range [{lo}, {hi}], {}",
        m.kind(),
        m.nnz(),
        100.0 * m.density(),
        value_kind(m).describe()
    )
}

fn preview(items: &[String], n: usize) -> String {
    let mut s = items.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > n {
        let _ = write!(s, ", ... ({} total)", items.len());
    }
    s
}

fn column_line(col: &Column) -> String {
    match col {
        Column::Categorical {
            codes, categories, ..
        } => {
            let mut counts = vec![0usize; categories.len()];
            let mut missing = 0;
            for &c in codes {
                match usize::try_from(c).ok().and_then(|c| counts.get_mut(c)) {
                    Some(k) => *k += 1,
                    None => missing += 1,
                }
            }
            let mut pairs: Vec<(usize, &String)> = counts.iter().copied().zip(categories).collect();
            pairs.sort_by_key(|p| std::cmp::Reverse(p.0));
            let shown: Vec<String> = pairs
                .iter()
                .take(8)
                .map(|(n, c)| format!("{c} {n}"))
                .collect();
            format!(
                "{} categories: {}{}{}",
                categories.len(),
                shown.join(", "),
                if pairs.len() > 8 { ", ..." } else { "" },
                if missing > 0 {
                    format!("; {missing} missing")
                } else {
                    String::new()
                }
            )
        }
        Column::Float(v) => {
            let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            let (lo, hi) = min_max(&f);
            let nan = v.iter().filter(|x| x.is_nan()).count();
            format!(
                "range [{lo}, {hi}]{}",
                if nan > 0 {
                    format!(", {nan} NaN")
                } else {
                    String::new()
                }
            )
        }
        Column::Int(v) => format!(
            "range [{}, {}]",
            v.iter().min().copied().unwrap_or(0),
            v.iter().max().copied().unwrap_or(0)
        ),
        Column::Bool(v) => format!("{} true", v.iter().filter(|&&b| b).count()),
        Column::Str(v) => {
            let mut u = v.clone();
            u.sort();
            u.dedup();
            format!("{} unique, e.g. {}", u.len(), preview(&u, 3))
        }
        Column::NullableInt { mask, .. } | Column::NullableBool { mask, .. } => {
            format!("{} missing", mask.iter().filter(|&&m| m).count())
        }
    }
}

fn frame_lines(out: &mut String, name: &str, f: &DataFrame) {
    let mut uniq = f.index.clone();
    uniq.sort();
    uniq.dedup();
    let _ = writeln!(
        out,
        "{name}: {} rows, index \"{}\" (e.g. {}){}, {} columns",
        f.len(),
        f.index_name,
        preview(&f.index, 3),
        if uniq.len() < f.len() {
            format!(", NOT unique: {} duplicates", f.len() - uniq.len())
        } else {
            String::new()
        },
        f.columns.len()
    );
    let width = f.columns.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (n, c) in &f.columns {
        let _ = writeln!(out, "  {n:width$}  {:13} {}", c.type_name(), column_line(c));
    }
}

fn uns_keys(map: &std::collections::BTreeMap<String, UnsValue>) -> String {
    map.iter()
        .map(|(k, v)| match v {
            UnsValue::Map(m) => format!("{k}{{{}}}", uns_keys(m)),
            _ => k.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A multi-line report: cells, genes, how `X` is stored, a counts vs log-normalized guess,
/// `obs`/`var` columns with types and category counts, layers, `obsm` shapes, `raw`, `uns`
/// keys and anything skipped while reading.
pub fn summarize(adata: &AnnData, path: &Path) -> String {
    let mut s = String::new();
    let st = &adata.storage;
    let _ = writeln!(s, "{}", path.display());
    let _ = writeln!(
        s,
        "cells: {}, genes: {} (format {}, X stored as {} {})",
        adata.n_obs(),
        adata.n_vars(),
        if st.format.is_empty() {
            "?"
        } else {
            &st.format
        },
        if st.x_encoding.is_empty() {
            "?"
        } else {
            &st.x_encoding
        },
        st.x_dtype
    );
    let _ = writeln!(s, "X: {}", matrix_line(&adata.x));
    frame_lines(&mut s, "obs", &adata.obs);
    frame_lines(&mut s, "var", &adata.var);
    if adata.layers.is_empty() {
        let _ = writeln!(s, "layers: none");
    }
    for (k, m) in &adata.layers {
        let _ = writeln!(s, "layers/{k}: {}", matrix_line(m));
    }
    if adata.obsm.is_empty() {
        let _ = writeln!(s, "obsm: none");
    }
    for (k, e) in &adata.obsm {
        let (r, c) = e.shape();
        match e {
            ObsmEntry::Array { .. } => {
                let _ = writeln!(s, "obsm/{k}: array {r} × {c}");
            }
            ObsmEntry::Frame(f) => {
                let _ = writeln!(
                    s,
                    "obsm/{k}: dataframe {r} × {c} ({})",
                    preview(&f.column_names(), 6)
                );
            }
        }
    }
    match &adata.raw {
        Some(raw) => {
            let _ = writeln!(s, "raw: {}", matrix_line(&raw.x));
        }
        None => {
            let _ = writeln!(s, "raw: absent");
        }
    }
    let _ = writeln!(
        s,
        "uns: {}",
        if adata.uns.is_empty() {
            "none".to_string()
        } else {
            uns_keys(&adata.uns)
        }
    );
    if !st.skipped.is_empty() {
        let _ = writeln!(
            s,
            "skipped (unsupported encodings): {}",
            st.skipped.join("; ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbmc_report() {
        let p = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/pbmc68k_reduced/train.h5ad"
        ));
        let a = crate::data::read_h5ad(p).unwrap();
        let r = summarize(&a, p);
        assert!(
            r.contains("cells: 560, genes: 765 (format h5ad, X stored as csr_matrix float32)"),
            "{r}"
        );
        assert!(r.contains("log-normalized"), "{r}");
        assert!(r.contains("layers/counts: csr 560 × 765"), "{r}");
        assert!(r.contains("raw counts"), "{r}");
        assert!(r.contains("Dendritic 192"), "{r}");
        assert_eq!(value_kind(&a.x), ValueKind::LogNormalized);
    }
}
