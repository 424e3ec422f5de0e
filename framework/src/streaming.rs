//! Training from an `.h5ad` matrix streamed from disk in row chunks (`[data.streaming]`), so
//! memory is bounded by the chunk size and the latent codes rather than by cells × genes.
//!
//! Loading reads only the annotations (obs, var, obsm, uns), fits the preprocessing over the
//! chunks ([`Preparation`]) and keeps a capped validation subset in memory. Training draws
//! minibatches from shuffle windows: every epoch visits the chunks in a new seeded order, reads
//! `shuffle_chunks` of them, keeps their training cells, prepares them and shuffles them
//! together. Stage 2's latents are encoded chunk by chunk.

use std::path::PathBuf;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::cells::{CellBatch, CellBatches, TrainingCells, ENCODE_CHUNK};
use crate::config::ExperimentConfig;
use crate::data::{read_h5ad_annotations, CsrRowChunks, Matrix, MatrixSource};
use crate::dataset::{annotate, Annotations};
use crate::plugin::{Autoencoder, ConditionKind, ExpressionBatch, InputKind};
use crate::preparation::{require_cells, Preparation};
use crate::rng::derive_seed;
use crate::{LatentError, Result};

/// Marks a file row that is not a training cell.
const NOT_TRAINING: u32 = u32::MAX;

/// The training cells of a streamed data set: read, prepared and shuffled chunk by chunk.
pub struct StreamedCells {
    reader: CsrRowChunks,
    preparation: Preparation,
    /// For every file row, its position among the training cells (or [`NOT_TRAINING`]).
    position: Vec<u32>,
    n_train: usize,
    shuffle_chunks: usize,
}

impl StreamedCells {
    /// Reads file rows `start..end` and prepares its training cells: `(positions, cells)`.
    fn training_cells_of(
        &self,
        start: usize,
        end: usize,
    ) -> Result<(Vec<usize>, Matrix, Vec<f32>)> {
        let local: Vec<usize> = (start..end)
            .filter(|&r| self.position[r] != NOT_TRAINING)
            .map(|r| r - start)
            .collect();
        let positions = local
            .iter()
            .map(|&l| self.position[start + l] as usize)
            .collect();
        if local.is_empty() {
            return Ok((
                positions,
                Matrix::Dense {
                    rows: 0,
                    cols: 0,
                    data: Vec::new(),
                },
                Vec::new(),
            ));
        }
        let chunk = self.reader.read_rows(start, end)?;
        let chunk = if local.len() == end - start {
            chunk
        } else {
            chunk.select_rows(&local)
        };
        let (m, library_size) = self.preparation.apply(chunk);
        Ok((positions, m, library_size))
    }

    /// Reads and prepares the file rows `rows` (any cells, not only training ones; any order,
    /// no repeats), in that order.
    ///
    /// # Errors
    /// Read errors.
    pub fn read_rows(&self, rows: &[usize]) -> Result<ExpressionBatch> {
        read_prepared(&self.reader, &self.preparation, rows)
    }
}

/// A shuffle window: prepared chunks and a shuffled list of `(chunk, row, position)`.
struct StreamedBatches<'a> {
    cells: &'a StreamedCells,
    batch_size: usize,
    rng: StdRng,
    /// Chunks still to visit this epoch (popped from the back).
    pending: Vec<(usize, usize)>,
    window: Vec<(Matrix, Vec<f32>)>,
    entries: Vec<(u32, u32, usize)>,
    cursor: usize,
}

impl StreamedBatches<'_> {
    fn refill(&mut self) -> Result<()> {
        self.window.clear();
        self.entries.clear();
        self.cursor = 0;
        let mut empty_epochs = 0;
        while self.entries.is_empty() {
            if self.pending.is_empty() {
                if empty_epochs > 0 {
                    return Err(LatentError::Data(
                        "the streamed matrix holds no training cells".into(),
                    ));
                }
                empty_epochs += 1;
                self.pending = self.cells.reader.chunk_ranges();
                self.pending.shuffle(&mut self.rng);
            }
            for _ in 0..self.cells.shuffle_chunks {
                let Some((start, end)) = self.pending.pop() else {
                    break;
                };
                let (positions, m, library_size) = self.cells.training_cells_of(start, end)?;
                if positions.is_empty() {
                    continue;
                }
                let c = self.window.len() as u32;
                self.entries.extend(
                    positions
                        .into_iter()
                        .enumerate()
                        .map(|(row, p)| (c, row as u32, p)),
                );
                self.window.push((m, library_size));
            }
        }
        self.entries.shuffle(&mut self.rng);
        Ok(())
    }
}

impl CellBatches for StreamedBatches<'_> {
    fn next_batch(&mut self) -> Result<CellBatch> {
        if self.cursor >= self.entries.len() {
            self.refill()?;
        }
        let end = (self.cursor + self.batch_size).min(self.entries.len());
        let picked = &self.entries[self.cursor..end];
        self.cursor = end;
        let genes = self.window[0].0.shape().1;
        let mut x = vec![0.0f32; picked.len() * genes];
        let mut library_size = Vec::with_capacity(picked.len());
        let mut rows = Vec::with_capacity(picked.len());
        for (k, &(c, r, p)) in picked.iter().enumerate() {
            let (m, lib) = &self.window[c as usize];
            m.row_into(r as usize, &mut x[k * genes..(k + 1) * genes]);
            library_size.push(lib[r as usize]);
            rows.push(p);
        }
        Ok(CellBatch {
            rows,
            cells: ExpressionBatch {
                x,
                n: picked.len(),
                library_size,
            },
        })
    }
}

impl TrainingCells for StreamedCells {
    fn len(&self) -> usize {
        self.n_train
    }

    fn batches<'s>(&'s self, batch_size: usize, rng: StdRng) -> Result<Box<dyn CellBatches + 's>> {
        Ok(Box::new(StreamedBatches {
            cells: self,
            batch_size: batch_size.max(1),
            rng,
            pending: Vec::new(),
            window: Vec::new(),
            entries: Vec::new(),
            cursor: 0,
        }))
    }

    fn encode(&self, autoencoder: &dyn Autoencoder) -> Result<Vec<f32>> {
        let dim = autoencoder.latent_dim();
        let mut z = vec![0.0f32; self.n_train * dim];
        for (start, end) in self.reader.chunk_ranges() {
            let (positions, m, library_size) = self.training_cells_of(start, end)?;
            for (k, piece) in positions.chunks(ENCODE_CHUNK).enumerate() {
                let rows: Vec<usize> = (k * ENCODE_CHUNK..k * ENCODE_CHUNK + piece.len()).collect();
                let batch = ExpressionBatch {
                    x: m.gather_rows_dense(&rows),
                    n: rows.len(),
                    library_size: rows.iter().map(|&r| library_size[r]).collect(),
                };
                let codes = autoencoder.encode(&batch)?;
                for (i, &p) in piece.iter().enumerate() {
                    z[p * dim..(p + 1) * dim].copy_from_slice(&codes[i * dim..(i + 1) * dim]);
                }
            }
        }
        Ok(z)
    }

    fn head(&self, k: usize) -> Result<ExpressionBatch> {
        let mut wanted: Vec<usize> = self
            .position
            .iter()
            .enumerate()
            .filter(|(_, &p)| (p as usize) < k.min(self.n_train))
            .map(|(r, _)| r)
            .collect();
        wanted.sort_by_key(|&r| self.position[r]);
        read_prepared(&self.reader, &self.preparation, &wanted)
    }
}

/// Reads and prepares the file rows `rows` (any order, no repeats), in that order.
fn read_prepared(
    reader: &CsrRowChunks,
    preparation: &Preparation,
    rows: &[usize],
) -> Result<ExpressionBatch> {
    let genes = preparation.genes.len();
    let mut x = vec![0.0f32; rows.len() * genes];
    let mut library_size = vec![0.0f32; rows.len()];
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i]);
    for (start, end) in reader.chunk_ranges() {
        let first = order.partition_point(|&i| rows[i] < start);
        let last = order.partition_point(|&i| rows[i] < end);
        if first == last {
            continue;
        }
        let picked = &order[first..last];
        let local: Vec<usize> = picked.iter().map(|&i| rows[i] - start).collect();
        let (m, lib) = preparation.apply(reader.read_rows(start, end)?.select_rows(&local));
        for (k, &i) in picked.iter().enumerate() {
            m.row_into(k, &mut x[i * genes..(i + 1) * genes]);
            library_size[i] = lib[k];
        }
    }
    Ok(ExpressionBatch {
        x,
        n: rows.len(),
        library_size,
    })
}

/// A data set opened for streamed training.
pub struct StreamedData {
    /// The training cells (streamed).
    pub train: StreamedCells,
    /// The validation cells kept in memory (`validation_rows`).
    pub validation: ExpressionBatch,
    /// The file rows of `validation`: a seeded subset of the validation split of at most
    /// `max_validation_cells` cells, in split order.
    pub validation_rows: Vec<usize>,
    /// Labels, the whole split, held-out rows and every cell's conditions.
    pub annotations: Annotations,
    /// obs names of every cell.
    pub cell_names: Vec<String>,
    /// Gene names after preprocessing.
    pub gene_names: Vec<String>,
    /// What the prepared values are.
    pub input_kind: InputKind,
    /// The file.
    pub path: PathBuf,
}

/// Opens the data of `config` (which has `[data.streaming]`) for streamed training.
///
/// # Errors
/// Not an `.h5ad` file, a CSC or obsm matrix, a modality condition (it needs a second matrix in
/// memory), and every error of an in-memory load (NaN, missing genes or obs keys, …), each as a
/// one-line message naming the file, field and fix.
pub fn load_streamed(config: &ExperimentConfig) -> Result<StreamedData> {
    let path = config.data.path.clone();
    let streaming = config.data.streaming.clone().unwrap_or_default();
    let file = path.display();
    if !path.exists() {
        return Err(LatentError::Data(format!("{file}: file not found; check data.path in the config (paths are relative to the working directory)")));
    }
    if path.is_dir() {
        return Err(LatentError::Data(format!("{file}: data.streaming reads .h5ad files only; convert the folder to .h5ad (e.g. scanpy.read_10x_mtx(...).write_h5ad(...)) or remove [data.streaming]")));
    }
    let source = MatrixSource::from_str(&config.data.matrix)
        .map_err(|e| LatentError::Data(format!("{file}: data.matrix: {e}")))?;
    if let MatrixSource::Obsm(key) = &source {
        return Err(LatentError::Data(format!("{file}: data.matrix = \"obsm/{key}\" is small enough to load; remove [data.streaming] for it")));
    }
    if let Some((key, _)) = config
        .conditioner
        .as_ref()
        .map(|c| c.sources())
        .unwrap_or_default()
        .into_iter()
        .find(|(_, kind)| matches!(kind, ConditionKind::Modality(_)))
    {
        return Err(LatentError::Data(format!("{file}: condition `{key}` is another modality, which needs its matrix in memory; remove [data.streaming] for this config")));
    }
    let adata = read_h5ad_annotations(&path)?;
    let reader = CsrRowChunks::open(&path, &source, streaming.chunk_cells)?;
    let (rows, cols) = reader.shape();
    let source_name = source.to_string();
    require_cells(rows, cols, &path, &source_name)?;
    let preparation = Preparation::fit(
        &adata.gene_names_for(&source),
        &config.data.preprocess,
        (&path, &source_name),
        &mut |visit| {
            for (start, end) in reader.chunk_ranges() {
                visit(&reader.read_rows(start, end)?)?;
            }
            Ok(())
        },
    )?;
    let annotations = annotate(config, &adata, &path)?;
    let mut position = vec![NOT_TRAINING; rows];
    for (p, &r) in annotations.train_rows.iter().enumerate() {
        position[r] = u32::try_from(p).map_err(|_| {
            LatentError::Data(format!(
                "{file}: more than {} training cells cannot be streamed",
                u32::MAX - 1
            ))
        })?;
    }
    let validation_rows = capped_subset(
        &annotations.validation_rows,
        streaming.max_validation_cells,
        derive_seed(config.seed, "streaming.validation"),
    );
    let validation = read_prepared(&reader, &preparation, &validation_rows)?;
    let (gene_names, input_kind) = (preparation.genes.clone(), preparation.input_kind);
    Ok(StreamedData {
        train: StreamedCells {
            n_train: annotations.train_rows.len(),
            reader,
            preparation,
            position,
            shuffle_chunks: streaming.shuffle_chunks,
        },
        validation,
        validation_rows,
        annotations,
        cell_names: adata.cell_names().to_vec(),
        gene_names,
        input_kind,
        path,
    })
}

/// At most `cap` of `rows`, chosen at random with `seed`, in their original order.
pub fn capped_subset(rows: &[usize], cap: usize, seed: u64) -> Vec<usize> {
    if rows.len() <= cap {
        return rows.to_vec();
    }
    let mut picked: Vec<usize> = (0..rows.len()).collect();
    picked.shuffle(&mut StdRng::seed_from_u64(seed));
    picked.truncate(cap);
    picked.sort_unstable();
    picked.into_iter().map(|i| rows[i]).collect()
}
