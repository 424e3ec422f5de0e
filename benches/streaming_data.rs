//! Streaming-data bench helper (issues 4 and 9), driven by `benches/streaming.sh`:
//!
//! - `cargo bench --bench streaming_data -- write FILE CELLS GENES` writes a synthetic count
//!   matrix (CSR, ~6 % non-zero, 8 cell types with their own gene programs, obs `cell_type`);
//! - `cargo bench --bench streaming_data -- read FILE CHUNK` streams it once in row chunks
//!   through normalization and log1p, printing cells/s and this process's peak RSS as JSON.
//!
//! The file is made here, never committed.

use std::path::Path;
use std::time::Instant;

use latentlab::framework::config::PreprocessConfig;
use latentlab::framework::data::{
    write_h5ad, AnnData, Column, CsrMatrix, CsrRowChunks, DataFrame, Matrix, MatrixSource,
};
use latentlab::framework::preparation::Preparation;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CELL_TYPES: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["write", file, cells, genes] => match (cells.parse(), genes.parse()) {
            (Ok(cells), Ok(genes)) => write(Path::new(file), cells, genes),
            _ => Err("CELLS and GENES must be numbers".into()),
        },
        ["read", file, chunk] => match chunk.parse() {
            Ok(chunk) => read(Path::new(file), chunk),
            Err(_) => Err("CHUNK must be a number".into()),
        },
        _ => Err("usage: streaming_data write FILE CELLS GENES | read FILE CHUNK".into()),
    };
    if let Err(e) = result {
        eprintln!("streaming_data: {e}");
        std::process::exit(1);
    }
}

/// Cumulative gene weights of one cell type: a shared log-normal base with a type-specific
/// program of 5 % of the genes up-weighted tenfold.
fn programs(genes: usize, rng: &mut StdRng) -> Vec<Vec<f64>> {
    let base: Vec<f64> = (0..genes)
        .map(|_| (rng.gen::<f64>() * 4.0 - 2.0).exp())
        .collect();
    (0..CELL_TYPES)
        .map(|_| {
            let mut acc = 0.0;
            base.iter()
                .map(|&b| {
                    acc += if rng.gen::<f64>() < 0.05 { b * 10.0 } else { b };
                    acc
                })
                .collect()
        })
        .collect()
}

fn write(file: &Path, cells: usize, genes: usize) -> Result<(), String> {
    let t = Instant::now();
    let mut rng = StdRng::seed_from_u64(0);
    let cdfs = programs(genes, &mut rng);
    let mut m = CsrMatrix::zeros(0, genes);
    m.rows = cells;
    let mut codes = Vec::with_capacity(cells);
    let mut row: Vec<u32> = Vec::new();
    for _ in 0..cells {
        let k = rng.gen_range(0..CELL_TYPES);
        codes.push(k as i32);
        let cdf = &cdfs[k];
        let total = cdf[genes - 1];
        // ~6 % of the genes detected: 0.5–1.5 × 150 UMIs drawn from the program.
        let umis = (150.0 * (0.5 + rng.gen::<f64>())) as usize;
        row.clear();
        for _ in 0..umis {
            let u = rng.gen::<f64>() * total;
            row.push(cdf.partition_point(|&c| c < u).min(genes - 1) as u32);
        }
        row.sort_unstable();
        let mut i = 0;
        while i < row.len() {
            let j = row[i..].partition_point(|&g| g == row[i]) + i;
            m.indices.push(row[i]);
            m.data.push((j - i) as f32);
            i = j;
        }
        m.indptr.push(m.data.len());
    }
    let nnz = m.data.len();
    let mut obs = DataFrame::from_index((0..cells).map(|i| format!("cell{i:07}")).collect());
    obs.columns.push((
        "cell_type".into(),
        Column::Categorical {
            codes,
            categories: (0..CELL_TYPES).map(|k| format!("type{k}")).collect(),
            ordered: false,
        },
    ));
    let var = DataFrame::from_index((0..genes).map(|j| format!("G{j:05}")).collect());
    let adata = AnnData::new(Matrix::Csr(m), obs, var);
    write_h5ad(file, &adata).map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::json!({
            "file": file.display().to_string(),
            "cells": cells,
            "genes": genes,
            "nnz": nnz,
            "density": nnz as f64 / (cells * genes) as f64,
            "write_s": t.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

fn read(file: &Path, chunk: usize) -> Result<(), String> {
    let t = Instant::now();
    let reader = CsrRowChunks::open(file, &MatrixSource::X, chunk).map_err(|e| e.to_string())?;
    let (cells, genes) = reader.shape();
    let names: Vec<String> = (0..genes).map(|j| format!("G{j:05}")).collect();
    let pre = PreprocessConfig {
        normalize_total: Some(1e4),
        log1p: true,
        ..PreprocessConfig::default()
    };
    let preparation =
        Preparation::fit(&names, &pre, (file, "X"), &mut |_| Ok(())).map_err(|e| e.to_string())?;
    let mut checksum = 0f64;
    for (start, end) in reader.chunk_ranges() {
        let m = reader.read_rows(start, end).map_err(|e| e.to_string())?;
        let (m, _) = preparation.apply(m);
        checksum += m.values().iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "file": file.display().to_string(),
            "cells": cells,
            "chunk_cells": chunk,
            "seconds": s,
            "cells_per_s": cells as f64 / s,
            "peak_rss_mib": peak_rss_mib(),
            "checksum": checksum,
        })
    );
    Ok(())
}

/// This process's peak resident set (VmHWM) in MiB, when the OS reports it.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
