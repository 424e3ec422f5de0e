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
    static INSIDE_TILE: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is running a tile of [`map_tiles`]: the tiles already occupy every
/// thread, so a kernel called from it runs on this thread alone.
#[cfg(not(feature = "cuda"))]
pub(crate) fn inside_tile() -> bool {
    INSIDE_TILE.with(Cell::get)
}

/// Marks this thread as inside a tile until dropped (restoring the previous mark, so a tile
/// picked up while another one on the same thread waits nests correctly).
#[cfg(not(feature = "cuda"))]
struct TileMark(bool);

#[cfg(not(feature = "cuda"))]
impl TileMark {
    fn set() -> Self {
        TileMark(INSIDE_TILE.with(|c| c.replace(true)))
    }
}

#[cfg(not(feature = "cuda"))]
impl Drop for TileMark {
    fn drop(&mut self) {
        INSIDE_TILE.with(|c| c.set(self.0));
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

/// Runs `f(i)` for every tile index `i` of `tiles` (in parallel on the CPU, each call on one
/// thread) and concatenates the outputs in tile order.
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
/// The first error of `f`, in tile order (`out` may then hold the earlier tiles).
pub fn append_tiles<F>(tiles: &[Range<usize>], out: &mut Vec<f32>, f: F) -> Result<()>
where
    F: Fn(usize) -> Result<Vec<f32>> + Sync,
{
    if tiles.len() <= 1 {
        for i in 0..tiles.len() {
            out.extend(f(i)?);
        }
        return Ok(());
    }
    #[cfg(not(feature = "cuda"))]
    let parts: Vec<Result<Vec<f32>>> = {
        use rayon::prelude::*;
        (0..tiles.len())
            .into_par_iter()
            .with_max_len(1)
            .map(|i| {
                let _mark = TileMark::set();
                f(i)
            })
            .collect()
    };
    #[cfg(feature = "cuda")]
    let parts: Vec<Result<Vec<f32>>> = (0..tiles.len()).map(&f).collect();
    out.reserve(parts.iter().map(|p| p.as_ref().map_or(0, Vec::len)).sum());
    for part in parts {
        out.extend_from_slice(&part?);
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
        let b = row_blocks(2 * 256 + 3, 256);
        assert_eq!(b, vec![0..256, 256..512, 512..515]);
        assert!(row_blocks(0, 256).is_empty());
    }

    #[test]
    fn outputs_concatenate_in_tile_order_and_kernels_know_they_are_inside() {
        let tiles = row_blocks(5 * 100, 100);
        assert!(!inside_tile());
        let out = map_tiles(&tiles, |i| {
            assert!(inside_tile());
            Ok(tiles[i].clone().map(|r| r as f32).collect())
        })
        .unwrap();
        assert!(!inside_tile());
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
