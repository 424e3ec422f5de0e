//! Inference over independent rows in tiles spread over rayon's threads, each tile running the
//! whole network on one thread.
//!
//! Sampling calls the networks on thousands of rows at once. Run as one batch, every activation
//! is megabytes wide: each element-wise pass streams it through memory, every new buffer is
//! fresh pages to fault in, and every matrix product is split across threads and joined again.
//! A tile's activations stay in cache from one layer to the next, and the threads work on
//! different tiles without meeting until the end. Tiles are at most [`MAX_TILE_ROWS`] rows (more
//! rows per product amortize the packing of the weights) and at least one per thread. Rows never
//! interact at inference (the registry conformance tests check every plugin), and a matrix
//! product's rows do not depend on how its rows are split, so results do not depend on the
//! tiling. Where a tile also draws randomness, [`row_blocks`] gives boundaries that do not depend
//! on the thread count. On the CUDA build one tile covers every row (the device wants large
//! batches).

#[cfg(not(feature = "cuda"))]
use std::cell::Cell;
use std::ops::Range;

use crate::Result;

/// Most rows per tile of [`row_tiles`].
pub const MAX_TILE_ROWS: usize = 1024;

#[cfg(not(feature = "cuda"))]
thread_local! {
    /// Threads a matrix product may use on this thread: 0 outside any tile (all of rayon's).
    static TILE_THREADS: Cell<usize> = const { Cell::new(0) };
}

/// Threads a kernel called on this thread may spread over: all of rayon's threads outside a
/// tile, the tile's share inside one (one for inference tiles, which already occupy every
/// thread; more for training shards when threads outnumber them).
#[cfg(not(feature = "cuda"))]
pub(crate) fn kernel_threads() -> usize {
    match TILE_THREADS.with(Cell::get) {
        0 => rayon::current_num_threads(),
        share => share,
    }
}

/// Marks this thread as inside a tile with a thread share until dropped (restoring the previous
/// mark, so a tile picked up while another one on the same thread waits nests correctly).
#[cfg(not(feature = "cuda"))]
struct TileMark(usize);

#[cfg(not(feature = "cuda"))]
impl TileMark {
    fn set(share: usize) -> Self {
        TileMark(TILE_THREADS.with(|c| c.replace(share.max(1))))
    }
}

#[cfg(not(feature = "cuda"))]
impl Drop for TileMark {
    fn drop(&mut self) {
        TILE_THREADS.with(|c| c.set(self.0));
    }
}

/// Near-equal consecutive row ranges covering `rows` rows: at least one per rayon thread, at
/// most [`MAX_TILE_ROWS`] rows each (one range on CUDA; none for zero rows). The split depends
/// on the thread count; use it for computations whose results do not.
pub fn row_tiles(rows: usize) -> Vec<Range<usize>> {
    if rows == 0 {
        return Vec::new();
    }
    let tiles = if cfg!(feature = "cuda") {
        1
    } else {
        rayon::current_num_threads()
            .max(rows.div_ceil(MAX_TILE_ROWS))
            .min(rows)
    };
    (0..tiles)
        .map(|i| i * rows / tiles..(i + 1) * rows / tiles)
        .collect()
}

/// Consecutive ranges of `block` rows (the last one shorter) covering `rows` rows, independent
/// of the thread count: for tiles that draw randomness (one range on CUDA).
pub fn row_blocks(rows: usize, block: usize) -> Vec<Range<usize>> {
    let block = if cfg!(feature = "cuda") {
        rows.max(1)
    } else {
        block.max(1)
    };
    (0..rows)
        .step_by(block)
        .map(|start| start..(start + block).min(rows))
        .collect()
}

/// Most shards of [`training_shards`]; larger batches get larger shards (each shard holds its
/// own copy of the gradients other than the linear layers' weight gradients, and those layers'
/// inputs and output gradients, until the shards are summed).
pub const MAX_TRAINING_SHARDS: usize = 8;

/// Rows per shard of [`training_shards`] (fewest, except for batches of 128–255 rows, which get
/// two shards of at least half as many): smaller products (and shorter sums in the weight
/// gradients) lose more to the matrix kernel's overheads than a second thread gains.
pub const TRAINING_SHARD_ROWS: usize = 128;

/// Most product rows (batch rows × [`crate::plugin::Denoiser::rows_per_sample`]) that
/// [`training_shards`] keeps in one shard at one thread: the MLP denoisers ran 6–10 % faster as
/// one shard than as 0017's split at 256–1024 rows, while the reference DiT (16 tokens per
/// sample) ran ~15 % faster as two shards of 2,048 token rows than as one of 4,096.
pub const ONE_THREAD_SHARD_ROWS: usize = 1024;

/// Near-equal consecutive row ranges of a training batch of `rows` rows for data-parallel
/// gradients (none for zero rows; one on CUDA).
///
/// `fixed: Some(n)` gives `n` shards (at most `rows`) at any thread count, so gradients summed
/// over the shards in order are the same bits at any thread count. `None` (the default, decision
/// 0029) gives one shard when rayon's pool has one thread and the products run over at most
/// [`ONE_THREAD_SHARD_ROWS`] rows (`rows × rows_per_sample`): shards pay for themselves only in
/// parallel or on long products, and at one thread they cost the MLP denoisers 6–10 % (each
/// product runs on half the rows, each weight is packed twice, the weight gradients' sums are
/// split). Otherwise it gives `floor(rows / TRAINING_SHARD_ROWS)` shards, at least one and at
/// most [`MAX_TRAINING_SHARDS`], except that batches of `TRAINING_SHARD_ROWS` to
/// `2 · TRAINING_SHARD_ROWS − 1` rows (the common batch of 128) get two shards of at least 64
/// rows (as one shard they kept the second thread of a two-core machine idle): the split then
/// depends only on `rows`, so results are the same bits at every thread count from two up.
pub fn training_shards(
    rows: usize,
    fixed: Option<usize>,
    rows_per_sample: usize,
) -> Vec<Range<usize>> {
    if rows == 0 {
        return Vec::new();
    }
    let shards = if cfg!(feature = "cuda") {
        1
    } else if let Some(n) = fixed {
        n.clamp(1, rows)
    } else if rayon::current_num_threads() <= 1
        && rows.saturating_mul(rows_per_sample) <= ONE_THREAD_SHARD_ROWS
    {
        1
    } else {
        (rows / TRAINING_SHARD_ROWS)
            .max(if rows >= TRAINING_SHARD_ROWS { 2 } else { 1 })
            .clamp(1, MAX_TRAINING_SHARDS)
    };
    (0..shards)
        .map(|i| i * rows / shards..(i + 1) * rows / shards)
        .collect()
}

/// Runs `f(i)` for `i` in `0..count` (in parallel on the CPU, each call marked as a tile whose
/// kernels share `rayon threads / count` threads, at least one) and returns the results in order.
///
/// # Errors
/// The first error of `f`, in index order.
pub fn run_tiles<T, F>(count: usize, f: F) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(usize) -> Result<T> + Sync,
{
    if count <= 1 {
        return (0..count).map(&f).collect();
    }
    #[cfg(not(feature = "cuda"))]
    {
        use rayon::prelude::*;
        let share = rayon::current_num_threads() / count;
        (0..count)
            .into_par_iter()
            .with_max_len(1)
            .map(|i| {
                let _mark = TileMark::set(share);
                f(i)
            })
            .collect::<Vec<Result<T>>>()
            .into_iter()
            .collect()
    }
    #[cfg(feature = "cuda")]
    (0..count).map(&f).collect()
}

/// Runs `f(i)` for every tile index `i` of `tiles` (in parallel on the CPU through [`run_tiles`]:
/// one thread per call when tiles outnumber threads) and concatenates the outputs in tile order.
///
/// # Errors
/// The first error of `f`, in tile order.
pub fn map_tiles<F>(tiles: &[Range<usize>], f: F) -> Result<Vec<f32>>
where
    F: Fn(usize) -> Result<Vec<f32>> + Sync,
{
    let mut out = Vec::new();
    append_tiles(tiles, &mut out, f)?;
    Ok(out)
}

/// [`map_tiles`] appending to `out`.
///
/// # Errors
/// The first error of `f`, in tile order (`out` is then unchanged).
pub fn append_tiles<F>(tiles: &[Range<usize>], out: &mut Vec<f32>, f: F) -> Result<()>
where
    F: Fn(usize) -> Result<Vec<f32>> + Sync,
{
    let parts = run_tiles(tiles.len(), f)?;
    out.reserve(parts.iter().map(Vec::len).sum());
    for part in parts {
        out.extend_from_slice(&part);
    }
    Ok(())
}

#[cfg(all(test, not(feature = "cuda")))]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_rows_in_order() {
        assert!(row_tiles(0).is_empty());
        for rows in [1, 3, 1000, 4096, 10_001] {
            let t = row_tiles(rows);
            assert_eq!(t.first().map(|r| r.start), Some(0));
            assert_eq!(t.last().map(|r| r.end), Some(rows));
            assert!(t.windows(2).all(|w| w[0].end == w[1].start));
            assert!(t.iter().all(|r| !r.is_empty() && r.len() <= MAX_TILE_ROWS));
            assert!(t.len() >= rayon::current_num_threads().min(rows));
        }
        assert!(training_shards(0, None, 1).is_empty());
        let two_threads = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let split = |rows: usize, fixed: Option<usize>| {
            let t = two_threads.install(|| training_shards(rows, fixed, 1));
            assert_eq!((t[0].start, t[t.len() - 1].end), (0, rows));
            assert!(t.windows(2).all(|w| w[0].end == w[1].start));
            if let Some(n) = fixed {
                assert_eq!(one_thread.install(|| training_shards(rows, fixed, 1)), t);
                assert_eq!(t.len(), n.clamp(1, rows), "{rows} rows in {n}");
            }
            t
        };
        for (rows, shards) in [
            (1, 1),
            (127, 1),
            (128, 2),
            (255, 2),
            (256, 2),
            (300, 2),
            (100_000, MAX_TRAINING_SHARDS),
        ] {
            let t = split(rows, None);
            assert_eq!(t.len(), shards, "{rows} rows");
            assert!(t
                .iter()
                .all(|r| r.len() >= (TRAINING_SHARD_ROWS / 2).min(rows)));
            let one = one_thread.install(|| training_shards(rows, None, 1));
            if rows <= ONE_THREAD_SHARD_ROWS {
                assert_eq!((one.len(), one[0].clone()), (1, 0..rows));
            } else {
                assert_eq!(one, t);
            }
            // Long products (many rows per sample) keep the split at one thread.
            let tokens = ONE_THREAD_SHARD_ROWS / rows.min(ONE_THREAD_SHARD_ROWS) + 1;
            assert_eq!(
                one_thread.install(|| training_shards(rows, None, tokens)),
                t
            );
        }
        for (rows, n) in [(256, 2), (256, 3), (5, 9), (7, 0)] {
            let t = split(rows, Some(n));
            assert!(t.iter().all(|r| r.len() >= rows / n.clamp(1, rows)));
        }
        let b = row_blocks(2 * 256 + 3, 256);
        assert_eq!(b, vec![0..256, 256..512, 512..515]);
        assert!(row_blocks(0, 256).is_empty());
    }

    #[test]
    fn outputs_concatenate_in_tile_order_and_kernels_know_they_are_inside() {
        let tiles = row_blocks(5 * 100, 100);
        let all = rayon::current_num_threads();
        assert_eq!(kernel_threads(), all);
        let out = map_tiles(&tiles, |i| {
            assert_eq!(kernel_threads(), (all / 5).max(1));
            Ok(tiles[i].clone().map(|r| r as f32).collect())
        })
        .unwrap();
        assert_eq!(kernel_threads(), all);
        let expected: Vec<f32> = (0..500).map(|r| r as f32).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn the_first_error_in_tile_order_is_returned() {
        let tiles = row_blocks(400, 100);
        let err = map_tiles(&tiles, |i| {
            if i >= 2 {
                Err(crate::LatentError::Data(format!("tile {i}")))
            } else {
                Ok(vec![0.0])
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("tile 2"), "{err}");
    }
}
