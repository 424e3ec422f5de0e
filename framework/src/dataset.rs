//! From a data file and the experiment config to [`PreparedData`]: read, choose the matrix,
//! check it, preprocess, extract the conditions the conditioner declares, split.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::config::{ExperimentConfig, PreprocessConfig};
use crate::data::preprocess::require_finite;
use crate::data::{
    log1p, normalize_total, read_any, stratified_split, AnnData, Column, Matrix, MatrixSource,
};
use crate::experiment::PreparedData;
use crate::modality::fit_condition;
use crate::plugin::{ConditionColumn, ConditionKind, ConditionTable, ExpressionBatch, InputKind};
use crate::preparation::{require_cells, Preparation};
use crate::rng::derive_seed;
use crate::{LatentError, Result};

/// A data set loaded for an experiment, with what sampling and evaluation need later.
#[derive(Debug, Clone)]
pub struct LoadedData {
    /// Cells ready for training.
    pub prepared: PreparedData,
    /// obs names of every cell (row order of `prepared`).
    pub cell_names: Vec<String>,
    /// The label column used for stratification and per-label reports, if any.
    pub label_key: Option<String>,
    /// Per-cell label strings for `label_key`.
    pub labels: Option<Vec<String>>,
    /// The file it came from.
    pub path: PathBuf,
    /// Cells excluded from training and validation by `data.hold_out` (empty without it).
    pub held_out_rows: Vec<usize>,
}

/// Rows of `adata` whose obs `key` equals one of `values` (numeric columns compare numerically).
///
/// # Errors
/// Missing column, unparsable numbers, no matching cells (listing the values present).
pub fn rows_matching(
    adata: &AnnData,
    key: &str,
    values: &[String],
    path: &Path,
) -> Result<Vec<usize>> {
    let file = path.display();
    let column = adata.obs.column(key).ok_or_else(|| {
        LatentError::Data(format!(
            "{file}: obs column \"{key}\" not found (available: {}); fix data.hold_out.key",
            adata.obs.column_names().join(", ")
        ))
    })?;
    let numeric: Option<Vec<f64>> = match column {
        Column::Float(v) => Some(v.clone()),
        Column::Int(v) => Some(v.iter().map(|&x| x as f64).collect()),
        _ => None,
    };
    let rows: Vec<usize> = match numeric {
        Some(v) => {
            let wanted: Vec<f64> = values
                .iter()
                .map(|s| {
                    s.trim().parse::<f64>().map_err(|_| {
                        LatentError::Data(format!("{file}: obs \"{key}\" is numeric; data.hold_out.values must be numbers, got \"{s}\""))
                    })
                })
                .collect::<Result<_>>()?;
            (0..v.len())
                .filter(|&i| {
                    wanted
                        .iter()
                        .any(|w| (v[i] - w).abs() <= 1e-9 * w.abs().max(1.0))
                })
                .collect()
        }
        None => {
            let strings = column.to_strings();
            (0..strings.len())
                .filter(|&i| strings[i].as_ref().is_some_and(|s| values.contains(s)))
                .collect()
        }
    };
    if rows.is_empty() {
        let mut present: Vec<String> = column.to_strings().into_iter().flatten().collect();
        present.sort();
        present.dedup();
        present.truncate(20);
        return Err(LatentError::Data(format!(
            "{file}: no cell has obs \"{key}\" in {values:?} (values present: {}); fix data.hold_out.values",
            present.join(", ")
        )));
    }
    Ok(rows)
}

/// Reads `path` and checks it is usable.
///
/// # Errors
/// [`LatentError::Data`] with the file, field and fix.
pub fn read(path: &Path) -> Result<AnnData> {
    if !path.exists() {
        return Err(LatentError::Data(format!("{}: file not found; check data.path in the config (paths are relative to the working directory)", path.display())));
    }
    Ok(read_any(path)?)
}

/// Selects the configured matrix and gene names, applies preprocessing and returns
/// `(matrix, genes, input_kind, library_size)` where `library_size` is the row sum before
/// normalization (over the kept genes).
///
/// # Errors
/// Missing matrix source, NaN/inf values, missing genes, empty result.
pub fn select_matrix(
    adata: &AnnData,
    matrix: &str,
    pre: &PreprocessConfig,
    path: &Path,
) -> Result<(Matrix, Vec<String>, InputKind, Vec<f32>)> {
    let source = MatrixSource::from_str(matrix)
        .map_err(|e| LatentError::Data(format!("{}: data.matrix: {e}", path.display())))?;
    let m = adata.matrix(&source, path)?;
    let (rows, cols) = m.shape();
    require_cells(rows, cols, path, &source.to_string())?;
    let preparation = Preparation::fit(
        &adata.gene_names_for(&source),
        pre,
        (path, &source.to_string()),
        &mut |visit| visit(&m),
    )?;
    let (prepared, library_size) = preparation.apply(m.into_owned());
    Ok((
        prepared,
        preparation.genes,
        preparation.input_kind,
        library_size,
    ))
}

/// Extracts one condition source from obs/obsm.
///
/// # Errors
/// Missing keys (listing the available ones), missing values, wrong types.
pub fn condition_column(
    adata: &AnnData,
    key: &str,
    kind: &ConditionKind,
    path: &Path,
) -> Result<ConditionColumn> {
    let file = path.display();
    match kind {
        ConditionKind::Categorical | ConditionKind::Set { .. } => {
            let (categories, codes) = adata.obs.labels_for(key, path, "the conditioner's keys")?;
            if let Some(i) = codes.iter().position(|&c| c < 0) {
                return Err(LatentError::Data(format!("{file}: obs column \"{key}\" has missing values (cell {i}); drop those cells or fill the column before training")));
            }
            Ok(ConditionColumn::Categorical {
                categories,
                codes: codes.into_iter().map(|c| c as u32).collect(),
            })
        }
        ConditionKind::Continuous => {
            let col = adata.obs.column(key).ok_or_else(|| {
                LatentError::Data(format!("{file}: obs column \"{key}\" not found (available: {}); fix the conditioner's key", adata.obs.column_names().join(", ")))
            })?;
            let values: Vec<f32> = match col {
                Column::Float(v) => v.iter().map(|&x| x as f32).collect(),
                Column::Int(v) => v.iter().map(|&x| x as f32).collect(),
                Column::NullableInt { values, mask } if !mask.iter().any(|&m| m) => values.iter().map(|&x| x as f32).collect(),
                other => {
                    return Err(LatentError::Data(format!("{file}: obs column \"{key}\" is {}, not numeric; use a categorical conditioner for it", other.type_name())))
                }
            };
            if values.iter().any(|v| !v.is_finite()) {
                return Err(LatentError::Data(format!("{file}: obs column \"{key}\" has NaN/infinite values; fill or drop those cells")));
            }
            Ok(ConditionColumn::Continuous(values))
        }
        ConditionKind::Vector => {
            let entry = adata.obsm.get(key).ok_or_else(|| {
                LatentError::Data(format!("{file}: obsm key \"{key}\" not found (available: {}); fix the conditioner's key", adata.obsm.keys().cloned().collect::<Vec<_>>().join(", ")))
            })?;
            let (_, dim, values, _) = entry.to_dense();
            if values.iter().any(|v| !v.is_finite()) {
                return Err(LatentError::Data(format!(
                    "{file}: obsm \"{key}\" has NaN/infinite values; fill or drop those cells"
                )));
            }
            Ok(ConditionColumn::Vector { dim, values })
        }
        ConditionKind::Modality(source) => Err(LatentError::Data(format!(
            "{file}: condition `{key}` is the modality {}; it is encoded with a fitted encoder (modality::fit_condition / encode_condition), not read as a column",
            source.matrix
        ))),
    }
}

/// Loads the data named in `config` and prepares it for training.
///
/// # Errors
/// Any data problem, as a one-line message naming file, field and fix.
pub fn load(config: &ExperimentConfig) -> Result<LoadedData> {
    let path = config.data.path.clone();
    let adata = read(&path)?;
    let (matrix, genes, input_kind, library_size) =
        select_matrix(&adata, &config.data.matrix, &config.data.preprocess, &path)?;
    let annotations = annotate(config, &adata, &path)?;
    let prepared = PreparedData {
        expression: ExpressionBatch {
            x: matrix.to_dense(),
            n: adata.n_obs(),
            library_size,
        },
        gene_names: genes,
        conditions: annotations.conditions,
        input_kind,
        train_rows: annotations.train_rows,
        validation_rows: annotations.validation_rows,
    };
    Ok(LoadedData {
        prepared,
        cell_names: adata.cell_names().to_vec(),
        label_key: annotations.label_key,
        labels: annotations.labels,
        path,
        held_out_rows: annotations.held_out_rows,
    })
}

/// What the obs annotations give a run: labels, the split, held-out cells and conditions.
#[derive(Debug, Clone)]
pub struct Annotations {
    /// The label column used for stratification and per-label reports, if any.
    pub label_key: Option<String>,
    /// Per-cell label strings for `label_key`.
    pub labels: Option<Vec<String>>,
    /// Training rows.
    pub train_rows: Vec<usize>,
    /// Validation rows.
    pub validation_rows: Vec<usize>,
    /// Rows excluded by `data.hold_out`.
    pub held_out_rows: Vec<usize>,
    /// Conditions of every cell for every source the conditioner declares.
    pub conditions: ConditionTable,
}

/// Labels, the stratified split (minus `data.hold_out`) and the conditions of `adata`'s cells.
///
/// # Errors
/// Missing obs keys, missing values, no training cells left.
pub fn annotate(config: &ExperimentConfig, adata: &AnnData, path: &Path) -> Result<Annotations> {
    let path = path.to_path_buf();
    let n = adata.n_obs();
    let sources = config
        .conditioner
        .as_ref()
        .map(|c| c.sources())
        .unwrap_or_default();
    let label_key = config.data.label_key.clone().or_else(|| {
        sources
            .iter()
            .find(|(_, k)| *k == ConditionKind::Categorical)
            .map(|(k, _)| k.clone())
    });
    let (labels, codes) = match &label_key {
        Some(key) => {
            let (cats, codes) = adata.obs.labels_for(key, &path, "data.label_key")?;
            let strings = codes
                .iter()
                .map(|&c| {
                    if c < 0 {
                        "NA".to_string()
                    } else {
                        cats[c as usize].clone()
                    }
                })
                .collect();
            (Some(strings), codes)
        }
        None => (None, vec![0; n]),
    };
    let (train_rows, validation_rows) = stratified_split(
        &codes,
        config.data.validation_fraction,
        derive_seed(config.seed, "split"),
    );
    let held_out_rows = match &config.data.hold_out {
        Some(h) => rows_matching(adata, &h.key, &h.values, &path)?,
        None => Vec::new(),
    };
    let (train_rows, validation_rows) = if held_out_rows.is_empty() {
        (train_rows, validation_rows)
    } else {
        let mut held = vec![false; n];
        for &r in &held_out_rows {
            held[r] = true;
        }
        let keep =
            |rows: Vec<usize>| -> Vec<usize> { rows.into_iter().filter(|&r| !held[r]).collect() };
        (keep(train_rows), keep(validation_rows))
    };
    if train_rows.is_empty() {
        return Err(LatentError::Data(format!(
            "{}: data.hold_out leaves no training cells",
            path.display()
        )));
    }
    let mut conditions = ConditionTable::default();
    for (key, kind) in &sources {
        let column = match kind {
            ConditionKind::Modality(source) => {
                let (column, encoder) = fit_condition(adata, source, &train_rows, &path)?;
                conditions.encoders.insert(key.clone(), encoder);
                column
            }
            kind => condition_column(adata, key, kind, &path)?,
        };
        conditions.columns.insert(key.clone(), column);
    }
    Ok(Annotations {
        label_key,
        labels,
        train_rows,
        validation_rows,
        held_out_rows,
        conditions,
    })
}

/// Expression of every cell of `adata` in a trained model's gene space: the configured matrix,
/// genes matched to `genes` by name, then the configured normalization and log1p (gene
/// selection steps are replaced by the name match). Returns the batch and how many genes were
/// missing (filled with zeros, only when `allow_missing`).
///
/// # Errors
/// Missing matrix, non-finite values, missing genes (naming how many and the fix), counts
/// expected but not found.
pub fn expression_for_genes(
    adata: &AnnData,
    path: &Path,
    matrix: &str,
    pre: &PreprocessConfig,
    genes: &[String],
    expect_counts: bool,
    allow_missing: bool,
) -> Result<(ExpressionBatch, usize)> {
    let file = path.display();
    let source = MatrixSource::from_str(matrix)
        .map_err(|e| LatentError::Data(format!("{file}: data.matrix: {e}")))?;
    let m = adata.matrix(&source, path)?;
    require_finite(&m, path, &source.to_string())?;
    let names = adata.gene_names_for(&source);
    let pos: std::collections::HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, g)| (g.as_str(), i))
        .collect();
    let found: Vec<Option<usize>> = genes.iter().map(|g| pos.get(g.as_str()).copied()).collect();
    let missing = found.iter().filter(|f| f.is_none()).count();
    if missing > 0 && !allow_missing {
        return Err(LatentError::Data(format!(
            "{file}: {missing} of the run's {} genes are absent from {source}'s var names (e.g. {}); use the same gene identifiers, or pass --allow-missing-genes to fill them with zeros",
            genes.len(),
            genes
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_none())
                .take(5)
                .map(|(g, _)| g.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if missing == genes.len() {
        return Err(LatentError::Data(format!(
            "{file}: none of the run's genes are in {source}'s var names; check the gene identifiers"
        )));
    }
    if expect_counts && !m.looks_like_counts() {
        return Err(LatentError::Data(format!(
            "{file}: the run was trained on counts but {source} is not integer-valued; set data.matrix to the counts layer"
        )));
    }
    let present: Vec<usize> = found.iter().flatten().copied().collect();
    let mut selected = m.select_cols(&present);
    let library_size = selected.row_sums();
    if let Some(target) = pre.normalize_total {
        normalize_total(&mut selected, target);
    }
    if pre.log1p {
        log1p(&mut selected);
    }
    let (n, _) = selected.shape();
    let dense = selected.to_dense();
    let width = genes.len();
    let mut x = vec![0.0f32; n * width];
    let mut col = 0;
    for (j, f) in found.iter().enumerate() {
        if f.is_some() {
            for i in 0..n {
                x[i * width + j] = dense[i * present.len() + col];
            }
            col += 1;
        }
    }
    Ok((ExpressionBatch { x, n, library_size }, missing))
}
