//! 10x Genomics outputs: Cell Ranger / Space Ranger MTX folders, `*_feature_bc_matrix.h5`
//! files (v3 `matrix` group and legacy v2 per-genome groups), and Visium folders.

use std::collections::BTreeMap;
use std::path::Path;

use super::anndata::{AnnData, ObsmEntry, StorageInfo, UnsValue};
use super::error::DataError;
use super::frame::{Column, DataFrame};
use super::h5util::{join, H5};
use super::matrix::{CsrMatrix, Matrix};
use super::text::{find_in, lines, make_unique};

const MTX_FIX: &str = "pass a folder with matrix.mtx[.gz], features.tsv[.gz] (or genes.tsv[.gz]) and barcodes.tsv[.gz] as Cell Ranger writes it";
const MTX_LINE_FIX: &str =
    "re-export the matrix (Cell Ranger, or scipy.io.mmwrite of a genes × cells matrix)";

/// Read a 10x MTX folder (`matrix.mtx[.gz]` + `features.tsv[.gz]` or `genes.tsv[.gz]` +
/// `barcodes.tsv[.gz]`) into an [`AnnData`] with cells as rows.
///
/// `var` is indexed by gene symbol (made unique with `-1`, `-2`, ... like scanpy) with
/// columns `gene_ids` and, when present, `feature_types`; `obs` by barcode. The matrix may
/// be stored genes × cells (Cell Ranger) or cells × genes; the orientation is taken from
/// the lengths of the two tables.
///
/// # Errors
/// [`DataError::Missing`] when a file is absent, [`DataError::Invalid`] naming the line for
/// malformed or out-of-range entries or a size mismatch between the three files.
pub fn read_10x_mtx(dir: &Path) -> Result<AnnData, DataError> {
    if !dir.is_dir() {
        return Err(DataError::io(dir, "not a directory"));
    }
    let listing = || -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let need = |names: &[&str], what: &str| {
        find_in(dir, names)
            .ok_or_else(|| DataError::missing(dir, what.to_string(), listing(), MTX_FIX))
    };
    let mtx = need(&["matrix.mtx.gz", "matrix.mtx"], "matrix.mtx[.gz]")?;
    let features = need(
        &[
            "features.tsv.gz",
            "features.tsv",
            "genes.tsv.gz",
            "genes.tsv",
        ],
        "features.tsv[.gz] / genes.tsv[.gz]",
    )?;
    let barcodes_path = need(&["barcodes.tsv.gz", "barcodes.tsv"], "barcodes.tsv[.gz]")?;

    let feature_rows = read_tsv(&features)?;
    let barcodes: Vec<String> = read_tsv(&barcodes_path)?
        .into_iter()
        .map(|mut r| r.swap_remove(0))
        .collect();
    let mut var = features_frame(&feature_rows);
    let n_genes = var.len();
    let n_cells = barcodes.len();

    let csr = read_mtx(&mtx, n_cells, n_genes)?;
    make_unique(&mut var.index);
    let mut obs = DataFrame::from_index(barcodes);
    obs.index_name = "_index".into();
    let mut a = AnnData::new(Matrix::Csr(csr), obs, var);
    a.storage = StorageInfo {
        format: "10x-mtx".into(),
        x_encoding: "mtx".into(),
        x_dtype: "integer/real (text)".into(),
        skipped: Vec::new(),
    };
    Ok(a)
}

fn read_tsv(path: &Path) -> Result<Vec<Vec<String>>, DataError> {
    let mut out = Vec::new();
    for l in lines(path)? {
        let (_, line) = l?;
        if line.is_empty() {
            continue;
        }
        out.push(line.split('\t').map(str::to_string).collect());
    }
    Ok(out)
}

fn features_frame(rows: &[Vec<String>]) -> DataFrame {
    let ids: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
    let names: Vec<String> = rows
        .iter()
        .map(|r| r.get(1).cloned().unwrap_or_else(|| r[0].clone()))
        .collect();
    let mut var = DataFrame::from_index(names);
    var.columns.push(("gene_ids".into(), Column::Str(ids)));
    if rows.iter().all(|r| r.len() >= 3) && !rows.is_empty() {
        var.columns.push((
            "feature_types".into(),
            categorical(rows.iter().map(|r| r[2].clone()).collect()),
        ));
    }
    var
}

/// A categorical column from strings (categories sorted).
fn categorical(values: Vec<String>) -> Column {
    let mut categories: Vec<String> = values.clone();
    categories.sort();
    categories.dedup();
    let codes = values
        .iter()
        .map(|v| categories.binary_search(v).map(|i| i as i32).unwrap_or(-1))
        .collect();
    Column::Categorical {
        codes,
        categories,
        ordered: false,
    }
}

/// Parse a MatrixMarket coordinate file into a cells × genes CSR matrix.
fn read_mtx(path: &Path, n_cells: usize, n_genes: usize) -> Result<CsrMatrix, DataError> {
    let bad = |line: usize, problem: String| {
        DataError::invalid(path, format!("line {line}"), problem, MTX_LINE_FIX)
    };
    let mut it = lines(path)?;
    let (_, header) = it
        .next()
        .transpose()?
        .ok_or_else(|| bad(1, "empty file".into()))?;
    let h: Vec<String> = header
        .split_whitespace()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if h.len() < 5 || h[0] != "%%matrixmarket" || h[1] != "matrix" || h[2] != "coordinate" {
        return Err(bad(
            1,
            format!("expected a `%%MatrixMarket matrix coordinate ...` header, got \"{header}\""),
        ));
    }
    let pattern = h[3] == "pattern";
    if !matches!(h[3].as_str(), "integer" | "real" | "pattern" | "double") || h[4] != "general" {
        return Err(bad(
            1,
            format!("unsupported MatrixMarket type \"{} {}\"", h[3], h[4]),
        ));
    }
    let mut size: Option<(usize, usize, usize)> = None;
    let mut triplets: Vec<(u32, u32, f32)> = Vec::new();
    let mut transpose = true;
    for l in it {
        let (no, line) = l?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('%') {
            continue;
        }
        let mut f = t.split_whitespace();
        let mut num = |what: &str| -> Result<usize, DataError> {
            f.next()
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| bad(no, format!("expected an integer {what} in \"{t}\"")))
        };
        match size {
            None => {
                let (r, c, n) = (num("row count")?, num("column count")?, num("entry count")?);
                transpose = if (r, c) == (n_genes, n_cells) {
                    true
                } else if (r, c) == (n_cells, n_genes) {
                    false
                } else {
                    return Err(bad(
                        no,
                        format!(
                            "matrix is {r} × {c} but there are {n_genes} features and {n_cells} barcodes"
                        ),
                    ));
                };
                triplets.reserve(n.min(1 << 28));
                size = Some((r, c, n));
            }
            Some((r, c, _)) => {
                let (i, j) = (num("row index")?, num("column index")?);
                if i == 0 || j == 0 || i > r || j > c {
                    return Err(bad(
                        no,
                        format!(
                            "entry ({i}, {j}) outside the {r} × {c} matrix (indices are 1-based)"
                        ),
                    ));
                }
                let v = if pattern {
                    1.0
                } else {
                    f.next()
                        .and_then(|s| s.parse::<f32>().ok())
                        .ok_or_else(|| bad(no, format!("expected a value in \"{t}\"")))?
                };
                let (cell, gene) = if transpose {
                    (j - 1, i - 1)
                } else {
                    (i - 1, j - 1)
                };
                triplets.push((cell as u32, gene as u32, v));
            }
        }
    }
    let Some((_, _, n)) = size else {
        return Err(bad(1, "no size line".into()));
    };
    if triplets.len() != n {
        return Err(DataError::invalid(
            path,
            "entries",
            format!(
                "size line announces {n} entries but {} were read",
                triplets.len()
            ),
            "the file is truncated; re-export it",
        ));
    }
    triplets.sort_unstable_by_key(|&(c, g, _)| (c, g));
    let mut m = CsrMatrix::zeros(n_cells, n_genes);
    for &(c, _, _) in &triplets {
        m.indptr[c as usize + 1] += 1;
    }
    for i in 0..n_cells {
        m.indptr[i + 1] += m.indptr[i];
    }
    m.indices = triplets.iter().map(|t| t.1).collect();
    m.data = triplets.iter().map(|t| t.2).collect();
    Ok(m)
}

/// Read a 10x HDF5 matrix (`filtered_feature_bc_matrix.h5` / `raw_feature_bc_matrix.h5`):
/// Cell Ranger ≥ 3 (`matrix` group with `features/`) or Cell Ranger 2 (one group per genome
/// with `genes`/`gene_names`; the first genome is read).
///
/// `var` is indexed by gene symbol (made unique) with `gene_ids`, and `feature_types` /
/// `genome` when present; `obs` by barcode.
///
/// # Errors
/// [`DataError::NotHdf5`] for a non-HDF5 file, [`DataError::Missing`] naming the absent
/// dataset, [`DataError::Invalid`] for inconsistent sparse arrays.
pub fn read_10x_h5(path: &Path) -> Result<AnnData, DataError> {
    let h5 = H5::open(path)?;
    let (groups, _) = h5.children("")?;
    let fix = "expected a Cell Ranger/Space Ranger *_feature_bc_matrix.h5 file";
    let (g, v3) = if groups.iter().any(|g| g == "matrix") {
        ("matrix".to_string(), true)
    } else if let Some(first) = groups.first() {
        (first.clone(), false)
    } else {
        return Err(DataError::missing(
            path,
            "HDF5 group \"matrix\"",
            h5.child_names("")?,
            fix,
        ));
    };
    let num = |name: &str| -> Result<super::h5util::NumVec, DataError> {
        let p = join(&g, name);
        h5.read_num(&h5.dataset(&p, fix)?, &p)
    };
    let strings = |p: String| -> Result<Vec<String>, DataError> {
        h5.read_strings(&h5.dataset(&p, fix)?, &p)
    };
    let shape = num("shape")?.to_i64().unwrap_or_default();
    if shape.len() != 2 || shape.iter().any(|&s| s < 0) {
        return Err(h5.bad(&join(&g, "shape"), "expected two non-negative sizes", fix));
    }
    let (n_features, n_cells) = (shape[0] as usize, shape[1] as usize);
    let to_usize = |v: Vec<i64>| -> Vec<usize> {
        v.into_iter()
            .map(|i| usize::try_from(i).unwrap_or(usize::MAX))
            .collect()
    };
    let csr = CsrMatrix {
        rows: n_cells,
        cols: n_features,
        indptr: to_usize(num("indptr")?.to_i64().unwrap_or_default()),
        indices: num("indices")?
            .to_i64()
            .unwrap_or_default()
            .into_iter()
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
            .collect(),
        data: num("data")?.to_f32(),
    };
    csr.validate()
        .map_err(|e| h5.bad(&g, format!("invalid sparse matrix: {e}"), fix))?;
    let dtype = h5
        .dataset(&join(&g, "data"), fix)
        .map(|d| super::h5util::dtype_name(d.dtype()))
        .unwrap_or_default();
    let barcodes = strings(join(&g, "barcodes"))?;
    let (ids, names, extra) = if v3 {
        let fg = join(&g, "features");
        let ids = strings(join(&fg, "id"))?;
        let names = strings(join(&fg, "name"))?;
        let mut extra = Vec::new();
        let present = h5.child_names(&fg)?;
        for (key, col) in [("feature_type", "feature_types"), ("genome", "genome")] {
            if present.iter().any(|p| p == key) {
                extra.push((col.to_string(), categorical(strings(join(&fg, key))?)));
            }
        }
        (ids, names, extra)
    } else {
        (
            strings(join(&g, "genes"))?,
            strings(join(&g, "gene_names"))?,
            Vec::new(),
        )
    };
    if barcodes.len() != n_cells || names.len() != n_features || ids.len() != n_features {
        return Err(h5.bad(
            &g,
            format!(
                "shape says {n_features} features × {n_cells} barcodes but there are {} feature names and {} barcodes",
                names.len(),
                barcodes.len()
            ),
            fix,
        ));
    }
    let mut var = DataFrame::from_index(names);
    make_unique(&mut var.index);
    var.columns.push(("gene_ids".into(), Column::Str(ids)));
    var.columns.extend(extra);
    let obs = DataFrame::from_index(barcodes);
    let mut a = AnnData::new(Matrix::Csr(csr), obs, var);
    a.storage = StorageInfo {
        format: "10x-h5".into(),
        x_encoding: "csc_matrix (features × barcodes)".into(),
        x_dtype: dtype,
        skipped: Vec::new(),
    };
    Ok(a)
}

/// Read a Space Ranger output folder: `filtered_feature_bc_matrix.h5` plus
/// `spatial/tissue_positions_list.csv` (or `tissue_positions.csv`) and
/// `spatial/scalefactors_json.json` when present.
///
/// Adds `obs` columns `in_tissue`, `array_row`, `array_col`, `obsm["spatial"]` = full-resolution
/// pixel `(x, y)` = `(pxl_col, pxl_row)` as scanpy does, and `uns["spatial"]["scalefactors"]`.
/// Images are not loaded.
///
/// # Errors
/// As [`read_10x_h5`]; [`DataError::Invalid`] naming the line for a malformed positions
/// file, [`DataError::Missing`] for a barcode without a position.
pub fn read_visium(dir: &Path) -> Result<AnnData, DataError> {
    let h5 = find_in(
        dir,
        &["filtered_feature_bc_matrix.h5", "raw_feature_bc_matrix.h5"],
    )
    .ok_or_else(|| {
        DataError::missing(
            dir,
            "filtered_feature_bc_matrix.h5",
            vec![],
            "pass a Space Ranger output folder",
        )
    })?;
    let mut a = read_10x_h5(&h5)?;
    let spatial = dir.join("spatial");
    let Some(pos_path) = find_in(
        &spatial,
        &["tissue_positions_list.csv", "tissue_positions.csv"],
    ) else {
        a.storage
            .skipped
            .push("spatial/ (no tissue positions file)".into());
        return Ok(a);
    };
    let mut pos: std::collections::HashMap<String, [f64; 5]> = std::collections::HashMap::new();
    for l in lines(&pos_path)? {
        let (no, line) = l?;
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 6 || f[0] == "barcode" {
            continue;
        }
        let mut vals = [0f64; 5];
        for (k, v) in f[1..6].iter().enumerate() {
            vals[k] = v.parse().map_err(|_| {
                DataError::invalid(
                    &pos_path,
                    format!("line {no}"),
                    format!("non-numeric value \"{v}\""),
                    "expected barcode,in_tissue,array_row,array_col,pxl_row,pxl_col",
                )
            })?;
        }
        pos.insert(f[0].to_string(), vals);
    }
    let n = a.n_obs();
    let (mut in_tissue, mut row, mut col, mut xy) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(2 * n),
    );
    for bc in &a.obs.index {
        let p = pos.get(bc).ok_or_else(|| {
            DataError::missing(
                &pos_path,
                format!("position of barcode \"{bc}\""),
                vec![],
                "use the spatial/ folder of the same Space Ranger run",
            )
        })?;
        in_tissue.push(p[0] as i64);
        row.push(p[1] as i64);
        col.push(p[2] as i64);
        xy.push(p[4] as f32);
        xy.push(p[3] as f32);
    }
    a.obs
        .columns
        .push(("in_tissue".into(), Column::Int(in_tissue)));
    a.obs.columns.push(("array_row".into(), Column::Int(row)));
    a.obs.columns.push(("array_col".into(), Column::Int(col)));
    a.obsm.insert(
        "spatial".into(),
        ObsmEntry::Array {
            rows: n,
            cols: 2,
            data: xy,
        },
    );
    if let Ok(text) = std::fs::read_to_string(spatial.join("scalefactors_json.json")) {
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&text) {
            let sf: BTreeMap<String, UnsValue> = map
                .into_iter()
                .filter_map(|(k, v)| v.as_f64().map(|x| (k, UnsValue::Float(x))))
                .collect();
            let mut sp = BTreeMap::new();
            sp.insert("scalefactors".into(), UnsValue::Map(sf));
            a.uns.insert("spatial".into(), UnsValue::Map(sp));
        }
    }
    a.storage.format = "visium".into();
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("dp-10x-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn gz(path: &Path, text: &str) {
        let f = std::fs::File::create(path).unwrap();
        let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap();
    }

    const MTX: &str = "%%MatrixMarket matrix coordinate integer general\n%metadata_json: {}\n3 2 4\n1 1 5\n3 1 1\n2 2 7\n3 2 2\n";

    #[test]
    fn mtx_folder_plain_and_gzip() {
        for zipped in [false, true] {
            let d = tmpdir(&format!("mtx{zipped}"));
            let feats = "ENSG1\tCD3E\tGene Expression\nENSG2\tLYZ\tGene Expression\nENSG3\tCD3E\tGene Expression\n";
            let bcs = "AAAC-1\nAAAG-1\n";
            if zipped {
                gz(&d.join("matrix.mtx.gz"), MTX);
                gz(&d.join("features.tsv.gz"), feats);
                gz(&d.join("barcodes.tsv.gz"), bcs);
            } else {
                std::fs::write(d.join("matrix.mtx"), MTX).unwrap();
                std::fs::write(d.join("genes.tsv"), feats).unwrap();
                std::fs::write(d.join("barcodes.tsv"), bcs).unwrap();
            }
            let a = read_10x_mtx(&d).unwrap();
            assert_eq!((a.n_obs(), a.n_vars()), (2, 3));
            // cell 0: gene0=5, gene2=1; cell 1: gene1=7, gene2=2
            assert_eq!(a.x.to_dense(), vec![5.0, 0.0, 1.0, 0.0, 7.0, 2.0]);
            assert_eq!(a.gene_names(), &["CD3E", "LYZ", "CD3E-1"]);
            assert_eq!(a.cell_names(), &["AAAC-1", "AAAG-1"]);
            assert!(a.x.looks_like_counts());
            assert!(a.validate().is_ok());
            std::fs::remove_dir_all(&d).ok();
        }
    }

    #[test]
    fn mtx_errors_name_file_and_line() {
        let d = tmpdir("bad");
        std::fs::write(d.join("matrix.mtx"), MTX.replace("3 2 2", "4 2 2")).unwrap();
        std::fs::write(d.join("features.tsv"), "a\tA\nb\tB\nc\tC\n").unwrap();
        std::fs::write(d.join("barcodes.tsv"), "x\ny\n").unwrap();
        let e = read_10x_mtx(&d).unwrap_err().to_string();
        assert!(
            e.contains("matrix.mtx: line 7: entry (4, 2) outside"),
            "{e}"
        );
        std::fs::remove_file(d.join("barcodes.tsv")).unwrap();
        let e = read_10x_mtx(&d).unwrap_err().to_string();
        assert!(e.contains("barcodes.tsv[.gz] not found"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn spaceranger_h5_and_folder() {
        let dir = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/visium_spaceranger_sample"
        ));
        let a = read_10x_h5(&dir.join("filtered_feature_bc_matrix.h5")).unwrap();
        assert_eq!((a.n_obs(), a.n_vars()), (100, 100));
        assert_eq!(a.x.nnz(), 656);
        assert!(a.x.looks_like_counts());
        assert!(
            matches!(a.var.column("gene_ids"), Some(Column::Str(ids)) if ids[0].starts_with("ENSG"))
        );
        let v = read_visium(dir).unwrap();
        assert!(matches!(
            v.obsm.get("spatial"),
            Some(ObsmEntry::Array {
                rows: 100,
                cols: 2,
                ..
            })
        ));
        assert!(v.uns.contains_key("spatial"));
        assert!(v.validate().is_ok());
    }
}
