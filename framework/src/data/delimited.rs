//! Dense expression tables in CSV/TSV form: header row of gene names, one row per cell with
//! the cell name first.

use std::path::Path;

use super::anndata::{AnnData, StorageInfo};
use super::error::DataError;
use super::frame::DataFrame;
use super::matrix::{CsrMatrix, Matrix};
use super::text::lines;

const FIX: &str =
    "expected a header row of gene names and one row per cell: cell name, then one number per gene";

/// Read a dense cells × genes table (`.csv`, `.tsv`, `.txt`, optionally `.gz`).
///
/// The delimiter is `,` for `.csv[.gz]` and tab otherwise (falling back to whichever of
/// tab/comma/semicolon occurs in the header). The header's first field is the corner label
/// (it may be empty); a header with one field fewer than the data rows (R's `write.csv`
/// without row-name header) is accepted too. Surrounding double quotes are stripped;
/// `NA`/`NaN`/empty cells become NaN (check [`Matrix::is_finite`]). The matrix is kept CSR
/// when fewer than half of the values are non-zero, dense otherwise.
///
/// # Errors
/// [`DataError::Io`] if unreadable, [`DataError::Invalid`] naming the line and column of a
/// non-numeric value or a row of the wrong length, or for an empty table.
pub fn read_delimited(path: &Path) -> Result<AnnData, DataError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let stem = name.trim_end_matches(".gz");
    let mut it = lines(path)?;
    let (_, header) = loop {
        match it.next().transpose()? {
            Some((_, l)) if l.trim().is_empty() => continue,
            Some(x) => break x,
            None => return Err(DataError::invalid(path, "line 1", "the file is empty", FIX)),
        }
    };
    let delim = if stem.ends_with(".csv") {
        ','
    } else if header.contains('\t') {
        '\t'
    } else if header.contains(',') {
        ','
    } else if header.contains(';') {
        ';'
    } else {
        '\t'
    };
    let split = |l: &str| -> Vec<String> {
        l.split(delim)
            .map(|f| f.trim().trim_matches('"').to_string())
            .collect()
    };
    let head = split(&header);
    let mut genes: Option<Vec<String>> = None;
    let mut cells = Vec::new();
    let mut csr = CsrMatrix::zeros(0, 0);
    for l in it {
        let (no, line) = l?;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(delim).collect();
        let genes = genes.get_or_insert_with(|| {
            if head.len() + 1 == fields.len() {
                head.clone()
            } else {
                head[1.min(head.len())..].to_vec()
            }
        });
        if fields.len() != genes.len() + 1 {
            return Err(DataError::invalid(
                path,
                format!("line {no}"),
                format!(
                    "has {} fields, expected {} (cell name + {} genes from the header)",
                    fields.len(),
                    genes.len() + 1,
                    genes.len()
                ),
                FIX,
            ));
        }
        cells.push(fields[0].trim().trim_matches('"').to_string());
        for (j, f) in fields[1..].iter().enumerate() {
            let f = f.trim().trim_matches('"');
            let v: f32 = match f {
                "" | "NA" | "NaN" | "nan" => f32::NAN,
                _ => f.parse().map_err(|_| {
                    DataError::invalid(
                        path,
                        format!("line {no}, column {} (gene \"{}\")", j + 2, genes[j]),
                        format!("\"{f}\" is not a number"),
                        FIX,
                    )
                })?,
            };
            if v != 0.0 {
                csr.indices.push(j as u32);
                csr.data.push(v);
            }
        }
        csr.indptr.push(csr.data.len());
    }
    let genes = genes.unwrap_or_default();
    if cells.is_empty() || genes.is_empty() {
        return Err(DataError::invalid(
            path,
            "table",
            "has no data rows or no gene columns",
            FIX,
        ));
    }
    csr.rows = cells.len();
    csr.cols = genes.len();
    let matrix = if csr.nnz() * 2 > csr.rows * csr.cols {
        Matrix::Dense {
            rows: csr.rows,
            cols: csr.cols,
            data: Matrix::Csr(csr).to_dense(),
        }
    } else {
        Matrix::Csr(csr)
    };
    let mut a = AnnData::new(
        matrix,
        DataFrame::from_index(cells),
        DataFrame::from_index(genes),
    );
    a.storage = StorageInfo {
        format: if delim == ',' { "csv" } else { "tsv" }.into(),
        x_encoding: "dense text".into(),
        x_dtype: "text".into(),
        skipped: Vec::new(),
    };
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("dp-delim-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn csv_tsv_and_r_style() {
        let a = read_delimited(&write("a.csv", "cell,G1,G2,G3\nc1,0,1,0\nc2,2,0,0\n")).unwrap();
        assert_eq!(a.gene_names(), &["G1", "G2", "G3"]);
        assert_eq!(a.cell_names(), &["c1", "c2"]);
        assert_eq!(a.x.to_dense(), vec![0.0, 1.0, 0.0, 2.0, 0.0, 0.0]);
        assert_eq!(a.x.kind(), "csr");
        let b = read_delimited(&write("b.tsv", "\t\"G1\"\t\"G2\"\r\nc1\t1.5\t2\r\n")).unwrap();
        assert_eq!(b.x.to_dense(), vec![1.5, 2.0]);
        assert_eq!(b.x.kind(), "dense");
        let r = read_delimited(&write("r.csv", "\"G1\",\"G2\"\n\"c1\",3,4\n")).unwrap();
        assert_eq!(r.gene_names(), &["G1", "G2"]);
        let n = read_delimited(&write("n.csv", "x,G1\nc1,NA\n")).unwrap();
        assert!(!n.x.is_finite());
    }

    #[test]
    fn bad_value_names_line_and_gene() {
        let e = read_delimited(&write("bad.csv", "cell,G1,G2\nc1,1,2\nc2,1,abc\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.csv: line 3, column 3 (gene \"G2\"): \"abc\" is not a number"),
            "{e}"
        );
        let e = read_delimited(&write("short.csv", "cell,G1,G2\nc1,1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2: has 2 fields, expected 3"), "{e}");
    }
}
