//! Exact brute-force k-nearest neighbours (squared Euclidean distance).
//!
//! Queries are processed in blocks of 64 rows in parallel (rayon) against reference blocks
//! of 512 rows, so extra memory is `O(nq · k)` for the result plus one small top-`k` list
//! per query; no `nq × nr` distance matrix is ever formed. Cost `O(nq · nr · d)`.
//! Ties in distance are broken by the smaller reference index, so results are
//! deterministic.

use super::util::{check_matrix, sq_dist};
use super::{MetricsError, Result};
use rayon::prelude::*;

const QUERY_BLOCK: usize = 64;
const REF_BLOCK: usize = 512;

/// Result of [`knn`]: for each query row, its `k` nearest reference rows sorted by
/// increasing distance.
#[derive(Debug, Clone, PartialEq)]
pub struct KnnResult {
    /// Neighbours per query.
    pub k: usize,
    /// Row-major `(nq, k)` reference row indices.
    pub indices: Vec<usize>,
    /// Row-major `(nq, k)` squared Euclidean distances, matching `indices`.
    pub sq_dists: Vec<f64>,
}

impl KnnResult {
    /// Reference indices of the neighbours of query `i` (length `k`).
    ///
    /// # Panics
    /// If `i` is not a valid query index.
    pub fn neighbors(&self, i: usize) -> &[usize] {
        &self.indices[i * self.k..(i + 1) * self.k]
    }

    /// Squared distances to the neighbours of query `i` (length `k`).
    ///
    /// # Panics
    /// If `i` is not a valid query index.
    pub fn sq_distances(&self, i: usize) -> &[f64] {
        &self.sq_dists[i * self.k..(i + 1) * self.k]
    }
}

/// Exact `k` nearest neighbours in `reference` (`(nr, d)` row-major) of every row of
/// `query` (`(nq, d)` row-major), by squared Euclidean distance.
///
/// # Errors
/// [`MetricsError`] on a shape mismatch, non-finite input, `k == 0` or `k > nr`.
pub fn knn(
    query: &[f32],
    nq: usize,
    reference: &[f32],
    nr: usize,
    d: usize,
    k: usize,
) -> Result<KnnResult> {
    check_matrix("knn query", query, nq, d, 0)?;
    check_matrix("knn reference", reference, nr, d, 1)?;
    if k == 0 || k > nr {
        return Err(MetricsError::InvalidArgument(format!(
            "knn: k={k} must be in 1..=nr={nr}"
        )));
    }
    let mut indices = vec![0usize; nq * k];
    let mut sq_dists = vec![0.0f64; nq * k];
    indices
        .par_chunks_mut(QUERY_BLOCK * k)
        .zip(sq_dists.par_chunks_mut(QUERY_BLOCK * k))
        .zip(query.par_chunks(QUERY_BLOCK * d))
        .for_each(|((idx_out, dist_out), qblock)| {
            let nb = qblock.len() / d;
            let mut tops: Vec<Vec<(f64, usize)>> = vec![Vec::with_capacity(k + 1); nb];
            for (bi, rblock) in reference.chunks(REF_BLOCK * d).enumerate() {
                let base = bi * REF_BLOCK;
                for (qi, q) in qblock.chunks_exact(d).enumerate() {
                    let top = &mut tops[qi];
                    for (ri, r) in rblock.chunks_exact(d).enumerate() {
                        let dist = sq_dist(q, r);
                        if top.len() == k && dist >= top[k - 1].0 {
                            continue;
                        }
                        let pos = top.partition_point(|e| e.0 <= dist);
                        top.insert(pos, (dist, base + ri));
                        top.truncate(k);
                    }
                }
            }
            for (qi, top) in tops.iter().enumerate() {
                for (j, &(dist, idx)) in top.iter().enumerate() {
                    idx_out[qi * k + j] = idx;
                    dist_out[qi * k + j] = dist;
                }
            }
        });
    Ok(KnnResult {
        k,
        indices,
        sq_dists,
    })
}

/// Distance (not squared) from each query row to its nearest reference row. Internal
/// helper; inputs must be validated by the caller.
pub(crate) fn nearest_distances(
    query: &[f32],
    nq: usize,
    reference: &[f32],
    nr: usize,
    d: usize,
) -> Result<Vec<f64>> {
    let r = knn(query, nq, reference, nr, d, 1)?;
    Ok(r.sq_dists.iter().map(|v| v.sqrt()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_with_ties() {
        // 1-D points 0..1000 reference, queries at half-integers (ties between neighbours).
        let reference: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let query = vec![10.5f32, 999.0, -3.0];
        let r = knn(&query, 3, &reference, 1000, 1, 3).expect("knn");
        assert_eq!(r.neighbors(0), &[10, 11, 9]);
        assert_eq!(r.sq_distances(0), &[0.25, 0.25, 2.25]);
        assert_eq!(r.neighbors(1), &[999, 998, 997]);
        assert_eq!(r.neighbors(2), &[0, 1, 2]);
        assert_eq!(r.sq_distances(2)[0], 9.0);
    }

    #[test]
    fn many_queries_across_blocks() {
        let d = 3;
        let nr = 1300;
        let reference: Vec<f32> = (0..nr * d).map(|i| ((i * 37) % 101) as f32).collect();
        let nq = 150;
        let query: Vec<f32> = reference[..nq * d].to_vec();
        let r = knn(&query, nq, &reference, nr, d, 2).expect("knn");
        for i in 0..nq {
            assert_eq!(r.sq_distances(i)[0], 0.0);
            // brute force check of the second distance
            let mut all: Vec<f64> = (0..nr)
                .map(|j| sq_dist(&query[i * d..(i + 1) * d], &reference[j * d..(j + 1) * d]))
                .collect();
            all.sort_by(|a, b| a.total_cmp(b));
            assert_eq!(r.sq_distances(i)[1], all[1]);
        }
    }

    #[test]
    fn rejects_bad_k() {
        assert!(knn(&[0.0], 1, &[0.0, 1.0], 2, 1, 3).is_err());
        assert!(knn(&[0.0], 1, &[0.0, 1.0], 2, 1, 0).is_err());
    }
}
