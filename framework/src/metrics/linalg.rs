//! Small dense symmetric eigen-solvers (crate-private).
//!
//! - [`sym_eigen`]: cyclic Jacobi rotations, all eigenpairs of a small symmetric matrix.
//! - [`top_eigen`]: block subspace (orthogonal) iteration with Rayleigh–Ritz extraction for
//!   the top-`k` eigenpairs of a symmetric positive semi-definite operator that is only
//!   available as a function applying it to a block of vectors.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

/// All eigenpairs of the symmetric `m × m` row-major matrix `a` by cyclic Jacobi.
///
/// Returns `(values, vectors)`: values sorted descending, `vectors` is `m × m` row-major with
/// row `i` the unit eigenvector of `values[i]`.
pub(crate) fn sym_eigen(a: &[f64], m: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    // symmetrize defensively
    for p in 0..m {
        for q in p + 1..m {
            let s = 0.5 * (a[p * m + q] + a[q * m + p]);
            a[p * m + q] = s;
            a[q * m + p] = s;
        }
    }
    let mut v = vec![0.0; m * m];
    for i in 0..m {
        v[i * m + i] = 1.0;
    }
    let frob2: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let mut off = 0.0;
        for p in 0..m {
            for q in p + 1..m {
                off += a[p * m + q] * a[p * m + q];
            }
        }
        if off <= 1e-30 * frob2 || off == 0.0 {
            break;
        }
        for p in 0..m {
            for q in p + 1..m {
                let apq = a[p * m + q];
                if apq == 0.0 {
                    continue;
                }
                let app = a[p * m + p];
                let aqq = a[q * m + q];
                let theta = (aqq - app) / (2.0 * apq);
                let t = if theta.abs() > 1e150 {
                    0.5 / theta
                } else {
                    let sgn = if theta >= 0.0 { 1.0 } else { -1.0 };
                    sgn / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..m {
                    let akp = a[k * m + p];
                    let akq = a[k * m + q];
                    a[k * m + p] = c * akp - s * akq;
                    a[k * m + q] = s * akp + c * akq;
                }
                for k in 0..m {
                    let apk = a[p * m + k];
                    let aqk = a[q * m + k];
                    a[p * m + k] = c * apk - s * aqk;
                    a[q * m + k] = s * apk + c * aqk;
                }
                for k in 0..m {
                    let vkp = v[k * m + p];
                    let vkq = v[k * m + q];
                    v[k * m + p] = c * vkp - s * vkq;
                    v[k * m + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| a[j * m + j].total_cmp(&a[i * m + i]));
    let values: Vec<f64> = order.iter().map(|&i| a[i * m + i]).collect();
    let mut vectors = vec![0.0; m * m];
    for (r, &i) in order.iter().enumerate() {
        for k in 0..m {
            vectors[r * m + k] = v[k * m + i];
        }
    }
    (values, vectors)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Orthonormalizes the `l` rows (length `m`) of `v` in place by modified Gram–Schmidt with
/// re-orthogonalization; a row that becomes (numerically) dependent is replaced by a fresh
/// random direction from `rng`.
pub(crate) fn orthonormalize_rows(v: &mut [f64], l: usize, m: usize, rng: &mut StdRng) {
    for i in 0..l {
        let mut attempts = 0;
        loop {
            let (done, rest) = v.split_at_mut(i * m);
            let row = &mut rest[..m];
            let orig = dot(row, row).sqrt();
            for _pass in 0..2 {
                for j in 0..i {
                    let prev = &done[j * m..(j + 1) * m];
                    let c = dot(row, prev);
                    for (x, p) in row.iter_mut().zip(prev) {
                        *x -= c * p;
                    }
                }
            }
            let nrm = dot(row, row).sqrt();
            if nrm > 1e-10 * orig && nrm > 1e-300 {
                for x in row.iter_mut() {
                    *x /= nrm;
                }
                break;
            }
            attempts += 1;
            for x in row.iter_mut() {
                *x = StandardNormal.sample(rng);
            }
            if attempts > 10 {
                // m < l cannot happen for callers (l <= m); give up with a zero row.
                row.iter_mut().for_each(|x| *x = 0.0);
                break;
            }
        }
    }
}

/// Top-`k` eigenpairs of a symmetric PSD operator of size `m` by block subspace iteration
/// with `l >= k` vectors (`l <= m`) and Rayleigh–Ritz extraction at every step.
///
/// `apply(v)` must return `A v` row-wise for the `l × m` row-major block `v`. Stops when every
/// top-`k` Ritz residual `‖A u_i − θ_i u_i‖ ≤ tol · θ_1` or after `max_iter` applications.
/// Returns `(values, vectors, iterations)` with `values` descending (length `k`) and
/// `vectors` `k × m` row-major unit rows.
pub(crate) fn top_eigen<F>(
    apply: F,
    m: usize,
    k: usize,
    l: usize,
    max_iter: usize,
    tol: f64,
    seed: u64,
) -> (Vec<f64>, Vec<f64>, usize)
where
    F: Fn(&[f64]) -> Vec<f64>,
{
    let l = l.clamp(k, m);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v: Vec<f64> = (0..l * m)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    orthonormalize_rows(&mut v, l, m, &mut rng);
    let mut it = 0;
    loop {
        it += 1;
        let w = apply(&v);
        // upper triangle row by row in parallel (each entry computed exactly as before)
        let upper: Vec<Vec<f64>> = (0..l)
            .into_par_iter()
            .map(|i| {
                (i..l)
                    .map(|j| {
                        0.5 * (dot(&v[i * m..(i + 1) * m], &w[j * m..(j + 1) * m])
                            + dot(&v[j * m..(j + 1) * m], &w[i * m..(i + 1) * m]))
                    })
                    .collect()
            })
            .collect();
        let mut h = vec![0.0; l * l];
        for (i, row) in upper.iter().enumerate() {
            for (j, &a) in (i..l).zip(row) {
                h[i * l + j] = a;
                h[j * l + i] = a;
            }
        }
        let (theta, s) = sym_eigen(&h, l);
        // Ritz vectors U = S V and A U = S W.
        // (parallel over output rows; each row is accumulated in the same order as before)
        let mut u = vec![0.0; l * m];
        let mut au = vec![0.0; l * m];
        u.par_chunks_mut(m)
            .zip(au.par_chunks_mut(m))
            .enumerate()
            .for_each(|(r, (ur, aur))| {
                for j in 0..l {
                    let c = s[r * l + j];
                    if c == 0.0 {
                        continue;
                    }
                    let vj = &v[j * m..(j + 1) * m];
                    let wj = &w[j * m..(j + 1) * m];
                    for (x, y) in ur.iter_mut().zip(vj) {
                        *x += c * y;
                    }
                    for (x, y) in aur.iter_mut().zip(wj) {
                        *x += c * y;
                    }
                }
            });
        let scale = theta[0].abs().max(f64::MIN_POSITIVE);
        let mut max_res: f64 = 0.0;
        for i in 0..k {
            let mut r2 = 0.0;
            for (a, b) in au[i * m..(i + 1) * m].iter().zip(&u[i * m..(i + 1) * m]) {
                let t = a - theta[i] * b;
                r2 += t * t;
            }
            max_res = max_res.max(r2.sqrt());
        }
        if max_res <= tol * scale || theta[0] <= 0.0 || it >= max_iter {
            u.truncate(k * m);
            let vals = theta[..k].iter().map(|t| t.max(0.0)).collect();
            return (vals, u, it);
        }
        v = au;
        orthonormalize_rows(&mut v, l, m, &mut rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_diagonalizes_known_matrix() {
        // [[2,1],[1,2]] has eigenpairs 3:(1,1)/√2 and 1:(1,-1)/√2.
        let (vals, vecs) = sym_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((vals[0] - 3.0).abs() < 1e-12 && (vals[1] - 1.0).abs() < 1e-12);
        assert!((vecs[0].abs() - 0.5f64.sqrt()).abs() < 1e-12);
        assert!((vecs[0] * vecs[1] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn subspace_matches_jacobi() {
        let m = 30;
        let mut rng = StdRng::seed_from_u64(1);
        let b: Vec<f64> = (0..m * m)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let mut a = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..m {
                a[i * m + j] = (0..m).map(|k| b[i * m + k] * b[j * m + k]).sum();
            }
        }
        let (full, _) = sym_eigen(&a, m);
        let apply = |v: &[f64]| {
            let l = v.len() / m;
            let mut w = vec![0.0; l * m];
            for r in 0..l {
                for i in 0..m {
                    w[r * m + i] = (0..m).map(|j| a[i * m + j] * v[r * m + j]).sum();
                }
            }
            w
        };
        let (top, _, _) = top_eigen(apply, m, 3, 10, 1000, 1e-10, 7);
        for i in 0..3 {
            assert!(
                (top[i] - full[i]).abs() < 1e-6 * full[0],
                "{} vs {}",
                top[i],
                full[i]
            );
        }
    }
}
