//! Streamed training data (`[data.streaming]`): the same cells, genes, validation split and
//! latent codes as an in-memory load; every training cell once per epoch in a seeded order;
//! refusals of what cannot be streamed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use latentlab::framework::cells::TrainingCells;
use latentlab::framework::config::{ExperimentConfig, PreprocessConfig, StreamingConfig};
use latentlab::framework::dataset;
use latentlab::framework::plugin::AutoencoderContext;
use latentlab::framework::streaming::load_streamed;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn config(matrix: &str, pre: PreprocessConfig, streaming: StreamingConfig) -> ExperimentConfig {
    let text = format!(
        r#"
seed = 3
[data]
path = "{}/data/pbmc68k_reduced/train.h5ad"
matrix = "{matrix}"
[autoencoder]
type = "vae"
latent_dim = 8
hidden = [32]
[denoiser]
type = "mlp"
width = 32
blocks = 1
[sampler]
type = "rectified_flow"
[conditioner]
type = "class_embedding"
keys = ["bulk_labels"]
dim = 8
"#,
        env!("CARGO_MANIFEST_DIR")
    );
    let mut c =
        ExperimentConfig::from_str_with_path(&text, std::path::Path::new("t.toml")).unwrap();
    c.data.preprocess = pre;
    c.data.streaming = Some(streaming);
    c
}

fn chunks(chunk_cells: usize, shuffle_chunks: usize, cap: usize) -> StreamingConfig {
    StreamingConfig {
        chunk_cells,
        shuffle_chunks,
        max_validation_cells: cap,
    }
}

#[test]
fn streamed_cells_equal_the_in_memory_cells() {
    let counts_hvg = PreprocessConfig {
        normalize_total: Some(1e4),
        log1p: true,
        highly_variable_genes: Some(300),
        genes: None,
    };
    for (matrix, pre) in [
        ("X", PreprocessConfig::default()),
        ("layers/counts", counts_hvg),
        ("layers/counts", PreprocessConfig::default()),
    ] {
        let c = config(matrix, pre, chunks(37, 3, 100_000));
        let streamed = load_streamed(&c).unwrap();
        let loaded = dataset::load(&c).unwrap();
        let p = &loaded.prepared;
        assert_eq!(streamed.gene_names, p.gene_names, "{matrix}");
        assert_eq!(streamed.input_kind, p.input_kind);
        assert_eq!(streamed.validation_rows, p.validation_rows);
        let validation = p.expression.select(&p.validation_rows);
        assert_eq!(streamed.validation.x, validation.x);
        assert_eq!(streamed.validation.library_size, validation.library_size);
        let train = p.expression.select(&p.train_rows);
        let head = streamed.train.head(5).unwrap();
        assert_eq!(head.x, train.select(&[0, 1, 2, 3, 4]).x);
        // Latents: the same codes, whatever the chunking.
        let dev = latentlab::framework::device::device(0).unwrap();
        let ae = c
            .autoencoder
            .build(&AutoencoderContext {
                n_genes: p.gene_names.len(),
                input: p.input_kind,
                seed: 1,
                dev,
            })
            .unwrap();
        let a = streamed.train.encode(ae.as_ref()).unwrap();
        let b = train.encode(ae.as_ref()).unwrap();
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-5, "{matrix}: {worst}");
    }
}

#[test]
fn every_training_cell_comes_once_per_epoch_in_a_seeded_order() {
    let c = config("X", PreprocessConfig::default(), chunks(50, 2, 100_000));
    let streamed = load_streamed(&c).unwrap();
    let loaded = dataset::load(&c).unwrap();
    let p = &loaded.prepared;
    let train = p.expression.select(&p.train_rows);
    let n = streamed.train.len();
    assert_eq!(n, p.train_rows.len());
    let epoch = |seed: u64| {
        let mut batches = streamed
            .train
            .batches(32, StdRng::seed_from_u64(seed))
            .unwrap();
        let mut order = Vec::new();
        while order.len() < n {
            let b = batches.next_batch().unwrap();
            assert!(b.cells.n > 0 && b.cells.n <= 32);
            // Each row is the training cell at its position.
            assert_eq!(b.cells.x, train.select(&b.rows).x);
            assert_eq!(b.cells.library_size, train.select(&b.rows).library_size);
            order.extend(b.rows);
        }
        order
    };
    let first = epoch(7);
    assert_eq!(first.len(), n);
    let mut sorted = first.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>());
    assert_eq!(first, epoch(7));
    assert_ne!(first, epoch(8));
    // Shuffled across chunks, not in file order.
    assert_ne!(first, sorted);
}

#[test]
fn the_validation_subset_is_capped_and_seeded() {
    let c = config("X", PreprocessConfig::default(), chunks(64, 2, 10));
    let streamed = load_streamed(&c).unwrap();
    let all = &streamed.annotations.validation_rows;
    assert!(all.len() > 10);
    assert_eq!(streamed.validation_rows.len(), 10);
    assert_eq!(streamed.validation.n, 10);
    assert!(streamed.validation_rows.iter().all(|r| all.contains(r)));
    assert_eq!(
        load_streamed(&c).unwrap().validation_rows,
        streamed.validation_rows
    );
}

#[test]
fn unsupported_streaming_inputs_are_refused_with_the_fix() {
    let mut c = config("X", PreprocessConfig::default(), chunks(64, 2, 10));
    c.data.path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/pbmc68k_reduced/variants/train_csc.h5ad"
    ));
    let e = load_streamed(&c).err().unwrap().to_string();
    assert!(e.contains("streaming needs CSR or dense storage"), "{e}");
    c.data.path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data"));
    let e = load_streamed(&c).err().unwrap().to_string();
    assert!(e.contains("data.streaming reads .h5ad files only"), "{e}");
}
