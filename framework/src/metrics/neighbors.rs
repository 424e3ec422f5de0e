//! Exact brute-force k-nearest neighbours (squared Euclidean distance).
//!
//! Queries are processed in blocks of rows against tiles of reference rows. For each tile,
//! approximate squared distances `‖q‖² + ‖r‖² − 2 q·r` come from one dense f64 matrix
//! product (the `gemm` kernels behind dfdx's CPU matmul, as in
//! `util::pairwise_sq_dist_row_sums`); only one cache-sized tile is held at a time, never
//! the full `nq × nr` matrix. Each approximation is within a rigorous rounding bound
//! `tol · (‖q‖² + ‖r‖²)` of the direct difference (`util::sq_dist`), so a reference row is kept
//! as a candidate unless `k` other rows are certainly nearer; the few candidates left are
//! then re-measured with the direct formula and ranked by `(distance, index)`. The result
//! (indices *and* distances) is therefore exactly that of the plain scalar brute force: the
//! `k` smallest direct squared distances, ties broken by the smaller reference index,
//! deterministic. Cost `O(nq · nr · d)` in matrix products plus `O(nq · nr)` scans, parallel
//! over query rows.

use super::util::{check_matrix, column_tiles, copy_out, sq_dist, TILE_ROWS};
use super::{MetricsError, Result};
use rayon::prelude::*;

/// Relative rounding bound: `|approx − sq_dist| ≤ tol · (‖q‖² + ‖r‖²)` for dimension `d`.
///
/// The f32 inputs are exact in f64 and so are their pairwise products; norms and dot
/// products (any summation order, with or without FMA) carry at most `γ_d` relative error of
/// `Σ|q_k r_k| ≤ (‖q‖² + ‖r‖²)/2`, the final additions a few unit roundoffs, and the direct
/// formula itself at most `γ_{d+3} · ‖q − r‖² ≤ γ_{d+3} · 2(‖q‖² + ‖r‖²)`. Together this is
/// below `(4d + 11) u` with `u = ε/2`; `(4d + 32) ε` leaves more than a factor 2 for the
/// rounding of the bound and comparisons themselves.
fn rounding_tol(d: usize) -> f64 {
    (4.0 * d as f64 + 32.0) * f64::EPSILON
}

/// Candidate during the scan: lower and upper bound of the direct squared distance, index.
type Candidate = (f64, f64, usize);

/// Tightens `tau` to the `k`-th smallest upper bound among `cand` and drops every candidate
/// whose lower bound exceeds it (then `k` other rows are strictly nearer). Returns the new
/// threshold. `k <= cand.len()` is not required.
fn prune(cand: &mut Vec<Candidate>, k: usize, tau: f64, scratch: &mut Vec<f64>) -> f64 {
    if cand.len() < k {
        return tau;
    }
    scratch.clear();
    scratch.extend(cand.iter().map(|c| c.1));
    let (_, kth, _) = scratch.select_nth_unstable_by(k - 1, f64::total_cmp);
    let tau = tau.min(*kth);
    cand.retain(|c| c.0 <= tau);
    tau
}

/// Scan state of one query row across reference tiles.
struct RowScan {
    /// Rows that may still be among the `k` nearest.
    cand: Vec<Candidate>,
    /// `k`-th smallest upper bound seen so far (`+∞` until `k` rows were seen).
    tau: f64,
    /// Candidate count that triggers [`prune`].
    cap: usize,
    scratch: Vec<f64>,
}

impl RowScan {
    fn new(k: usize) -> Self {
        let cap = 4 * k + 64;
        RowScan {
            cand: Vec::with_capacity(cap),
            tau: f64::INFINITY,
            cap,
            scratch: Vec::with_capacity(cap),
        }
    }

    /// Visits reference rows `c0 ..` with dot products `g` and squared norms `rn` (same
    /// length); `qn` is the query's squared norm.
    fn scan(&mut self, g: &[f64], rn: &[f64], c0: usize, qn: f64, k: usize, tol: f64) {
        for (j, (&gj, &rj)) in g.iter().zip(rn).enumerate() {
            let s = qn + rj;
            let approx = s - 2.0 * gj;
            let margin = tol * s;
            let lower = approx - margin;
            if lower > self.tau {
                continue;
            }
            self.cand.push((lower, approx + margin, c0 + j));
            if self.cand.len() >= self.cap {
                self.tau = prune(&mut self.cand, k, self.tau, &mut self.scratch);
                // many near-ties (e.g. duplicated rows): grow instead of pruning every step
                if self.cand.len() * 2 > self.cap {
                    self.cap = self.cand.len() * 2;
                }
            }
        }
    }

    /// The `k` nearest rows by `(direct squared distance, index)`.
    fn finish(mut self, q: &[f32], reference: &[f32], d: usize, k: usize) -> Vec<(f64, usize)> {
        prune(&mut self.cand, k, self.tau, &mut self.scratch);
        let mut exact: Vec<(f64, usize)> = self
            .cand
            .iter()
            .map(|&(_, _, j)| (sq_dist(q, &reference[j * d..(j + 1) * d]), j))
            .collect();
        exact.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        exact.truncate(k);
        exact
    }
}

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
/// `query` (`(nq, d)` row-major), by squared Euclidean distance (module docs: same result as
/// the direct brute force, ties broken by the smaller reference index).
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
    use dfdx::prelude::*;
    check_matrix("knn query", query, nq, d, 0)?;
    check_matrix("knn reference", reference, nr, d, 1)?;
    if k == 0 || k > nr {
        return Err(MetricsError::InvalidArgument(format!(
            "knn: k={k} must be in 1..=nr={nr}"
        )));
    }
    let mut indices = vec![0usize; nq * k];
    let mut sq_dists = vec![0.0f64; nq * k];
    if nq == 0 {
        return Ok(KnnResult {
            k,
            indices,
            sq_dists,
        });
    }
    let tol = rounding_tol(d);
    let norm = |r: &[f64]| r.iter().map(|v| v * v).sum::<f64>();
    let dev: Cpu = Default::default();
    let r64: Vec<f64> = reference.iter().map(|v| f64::from(*v)).collect();
    let rn: Vec<f64> = r64.chunks_exact(d).map(norm).collect();
    let tiles = column_tiles(&r64, nr, d);
    let mut g = Vec::new();
    for ((qblock, idx_out), dist_out) in query
        .chunks(TILE_ROWS * d)
        .zip(indices.chunks_mut(TILE_ROWS * k))
        .zip(sq_dists.chunks_mut(TILE_ROWS * k))
    {
        let nb = qblock.len() / d;
        let q64: Vec<f64> = qblock.iter().map(|v| f64::from(*v)).collect();
        let qn: Vec<f64> = q64.chunks_exact(d).map(norm).collect();
        let qt = dev.tensor_from_vec(q64, (nb, d));
        let mut scans: Vec<RowScan> = (0..nb).map(|_| RowScan::new(k)).collect();
        for (c0, c1, rt) in &tiles {
            let (c0, c1) = (*c0, *c1);
            copy_out(
                &qt.clone().matmul(rt.clone().permute::<_, Axes2<1, 0>>()),
                &mut g,
            );
            scans
                .par_iter_mut()
                .zip(g.par_chunks(c1 - c0))
                .zip(qn.par_iter())
                .for_each(|((scan, gr), &qni)| scan.scan(gr, &rn[c0..c1], c0, qni, k, tol));
        }
        scans
            .into_par_iter()
            .zip(qblock.par_chunks(d))
            .zip(idx_out.par_chunks_mut(k).zip(dist_out.par_chunks_mut(k)))
            .for_each(|((scan, q), (io, dout))| {
                let top = scan.finish(q, reference, d, k);
                for ((i, dv), (dist, idx)) in io.iter_mut().zip(dout.iter_mut()).zip(top) {
                    *i = idx;
                    *dv = dist;
                }
            });
    }
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

    /// The k smallest `(sq_dist, index)` pairs by a plain scalar scan (reference result).
    fn naive(query: &[f32], reference: &[f32], d: usize, k: usize) -> (Vec<usize>, Vec<f64>) {
        let (mut idx, mut dist) = (vec![], vec![]);
        for q in query.chunks_exact(d) {
            let mut all: Vec<(f64, usize)> = reference
                .chunks_exact(d)
                .enumerate()
                .map(|(j, r)| (sq_dist(q, r), j))
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for &(s, j) in &all[..k] {
                idx.push(j);
                dist.push(s);
            }
        }
        (idx, dist)
    }

    #[test]
    fn agrees_with_naive_brute_force_with_duplicates_and_ties() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        use rand_distr::{Distribution, Normal};
        let mut rng = StdRng::seed_from_u64(11);
        let nz = Normal::new(0.0f32, 1.0).expect("normal");
        // (nr, nq, d, k, kind): 0 = Gaussian, 1 = small integer grid (many exact ties),
        // 2 = tight cluster far from the origin (cancellation in ‖q‖² + ‖r‖² − 2 q·r).
        for &(nr, nq, d, k, kind) in &[
            (300usize, 70usize, 5usize, 7usize, 0u8),
            (257, 300, 3, 10, 1),
            (40, 33, 2, 40, 1),
            (1000, 50, 17, 3, 2),
            (9000, 20, 4, 5, 1),
            (600, 90, 50, 10, 0),
            (500, 40, 8, 1, 2),
        ] {
            let mut reference: Vec<f32> = match kind {
                0 => (0..nr * d).map(|_| nz.sample(&mut rng)).collect(),
                1 => (0..nr * d)
                    .map(|_| rng.gen_range(-2i32..=2) as f32)
                    .collect(),
                _ => (0..nr * d)
                    .map(|_| 1000.0 + 1e-3 * nz.sample(&mut rng))
                    .collect(),
            };
            // duplicate some reference rows exactly
            for j in (0..nr).step_by(7).skip(1) {
                let src = (j / 3) * d;
                let row = reference[src..src + d].to_vec();
                reference[j * d..(j + 1) * d].copy_from_slice(&row);
            }
            // queries: copies of reference rows, midpoints of pairs and fresh rows
            let mut query = Vec::with_capacity(nq * d);
            for i in 0..nq {
                let a = rng.gen_range(0..nr);
                let b = rng.gen_range(0..nr);
                for c in 0..d {
                    let (ra, rb) = (reference[a * d + c], reference[b * d + c]);
                    query.push(match i % 3 {
                        0 => ra,
                        1 => 0.5 * (ra + rb),
                        _ => ra + 0.25 * nz.sample(&mut rng),
                    });
                }
            }
            let r = knn(&query, nq, &reference, nr, d, k).expect("knn");
            let (idx, dist) = naive(&query, &reference, d, k);
            assert_eq!(r.indices, idx, "indices nr={nr} d={d} k={k} kind={kind}");
            assert_eq!(
                r.sq_dists, dist,
                "distances nr={nr} d={d} k={k} kind={kind}"
            );
            for i in (0..nq).step_by(3) {
                assert_eq!(r.sq_distances(i)[0], 0.0, "copy of a reference row");
            }
        }
    }

    #[test]
    fn all_identical_rows_rank_by_index() {
        let reference = vec![3.5f32; 200 * 4];
        let r = knn(&[3.5f32; 8], 2, &reference, 200, 4, 5).expect("knn");
        assert_eq!(r.neighbors(1), &[0, 1, 2, 3, 4]);
        assert_eq!(r.sq_distances(1), &[0.0; 5]);
    }

    #[test]
    fn rejects_bad_k() {
        assert!(knn(&[0.0], 1, &[0.0, 1.0], 2, 1, 3).is_err());
        assert!(knn(&[0.0], 1, &[0.0, 1.0], 2, 1, 0).is_err());
    }
}
