//! Principal component analysis.
//!
//! # Algorithm choice
//! The data are mean-centred (the mean is kept and applied again in [`Pca::transform`]).
//! - **`d <= 3000` ([`PcaMethod::Covariance`])**: the `d × d` sample covariance
//!   `C = Xcᵀ Xc / (n − 1)` is formed explicitly (`O(n d²)`, at most 72 MB): rows are
//!   centred in f64 in blocks of 4096 and each block's `Bᵀ B` is one dense f64 matrix
//!   product (the `gemm` kernels behind dfdx's CPU matmul; deterministic for a given
//!   thread count). Its eigenpairs are then computed with cyclic Jacobi when `d <= 256`,
//!   otherwise with block subspace iteration on `C` (`l = k + max(k, 10)` vectors, each
//!   application `V C` one matrix product, Rayleigh–Ritz at every step, stop when every
//!   top-`k` residual `‖C u − θ u‖ ≤ 1e-6 θ₁`, at most 500 iterations).
//! - **`d > 3000` ([`PcaMethod::RandomizedSubspace`])**: neither `C` nor the centred data
//!   are materialized; the operator `v ↦ Xcᵀ (Xc v) / (n − 1)` is applied implicitly to a
//!   seeded Gaussian block (randomized subspace iteration, Halko–Martinsson–Tropp style,
//!   same block size and Rayleigh–Ritz extraction, stop at residual `≤ 1e-5 θ₁` or after 40
//!   iterations). Cost per iteration `4 n d l` flops. For raw 20 000-gene matrices, select
//!   highly variable genes first when speed matters.
//!
//! Measured on 2 CPU cores (release build, `k = 50`): `n = 10 000, d = 2 000` covariance
//! route 9.6 s before the matrix-product kernels (2026-11-25); on the evaluation bench's
//! cells (87 subspace iterations, a concurrent job on the machine) 48 s before, 13 s after
//! (covariance 2–4 s, about 0.1 s per iteration; 2026-11-26); `n = 2 000, d = 20 000`
//! randomized route 13 s (scales linearly in `n`).
//!
//! The `n × n` Gram-matrix route was not used: at `n = 10 000` it would need 800 MB.
//!
//! Components are sorted by explained variance (descending). Sign convention: each
//! component is flipped so that its entry with the largest absolute value (first such
//! index on ties) is positive. Explained variances are eigenvalues of the sample
//! covariance (denominator `n − 1`).

use super::linalg::{sym_eigen, top_eigen};
use super::util::check_matrix;
use super::{MetricsError, Result};
use rayon::prelude::*;
use serde::Serialize;

/// Largest feature count for which the explicit covariance route is used.
pub const COVARIANCE_MAX_D: usize = 3000;
const JACOBI_MAX_D: usize = 256;
/// Rows centred and multiplied per covariance block (at most `4096 · d` f64 at a time).
const COV_ROW_BLOCK: usize = 4096;
const COV_TOL: f64 = 1e-6;
const RANDOMIZED_TOL: f64 = 1e-5;

/// How a [`Pca`] was (or should be) computed. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PcaMethod {
    /// Explicit `d × d` covariance matrix then a dense symmetric eigen-solver.
    Covariance,
    /// Implicit randomized subspace iteration on `Xcᵀ Xc`.
    RandomizedSubspace,
}

/// A fitted PCA model: `k` components over `d` features.
#[derive(Debug, Clone, Serialize)]
pub struct Pca {
    mean: Vec<f64>,
    components: Vec<f64>,
    explained_variance: Vec<f64>,
    total_variance: f64,
    d: usize,
    k: usize,
    method: PcaMethod,
    iterations: usize,
    /// `components · mean`, length `k` (for a fast transform).
    mean_proj: Vec<f64>,
}

impl Pca {
    /// Fits `k` principal components of the row-major `(n, d)` matrix `x`, choosing the
    /// method by `d` (see module docs) with seed 0 for the randomized parts.
    ///
    /// # Errors
    /// [`MetricsError`] if the shape is wrong, `n < 2`, `k == 0`, `k > min(n, d)`, or `x`
    /// has a non-finite value.
    pub fn fit(x: &[f32], n: usize, d: usize, k: usize) -> Result<Pca> {
        Self::fit_with(x, n, d, k, None, 0)
    }

    /// Like [`Pca::fit`] but with an explicit method (`None` = automatic by `d`) and seed
    /// for the random starting block.
    ///
    /// # Errors
    /// As [`Pca::fit`].
    pub fn fit_with(
        x: &[f32],
        n: usize,
        d: usize,
        k: usize,
        method: Option<PcaMethod>,
        seed: u64,
    ) -> Result<Pca> {
        check_matrix("pca input", x, n, d, 2)?;
        if k == 0 || k > n.min(d) {
            return Err(MetricsError::InvalidArgument(format!(
                "pca: k={k} must be in 1..=min(n={n}, d={d})"
            )));
        }
        let method = method.unwrap_or(if d <= COVARIANCE_MAX_D {
            PcaMethod::Covariance
        } else {
            PcaMethod::RandomizedSubspace
        });
        let mut mean = vec![0.0f64; d];
        for row in x.chunks_exact(d) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += f64::from(*v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut var = vec![0.0f64; d];
        for row in x.chunks_exact(d) {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                let t = f64::from(*v) - m;
                *s += t * t;
            }
        }
        let total_variance = var.iter().sum::<f64>() / (n as f64 - 1.0);
        let l = (k + k.max(10)).min(d);
        let (vals, mut vecs, iterations) = match method {
            PcaMethod::Covariance => {
                let c = covariance(x, n, d, &mean);
                if d <= JACOBI_MAX_D {
                    let (v, e) = sym_eigen(&c, d);
                    (v[..k].to_vec(), e[..k * d].to_vec(), 1)
                } else {
                    // `W = V C` (= (C Vᵀ)ᵀ, C symmetric) as one dense f64 matrix product
                    use dfdx::prelude::*;
                    let dev: Cpu = Default::default();
                    let ct = dev.tensor_from_vec(c, (d, d));
                    let apply = |v: &[f64]| {
                        let vt = dev.tensor_from_vec(v.to_vec(), (v.len() / d, d));
                        vt.matmul(ct.clone()).as_vec()
                    };
                    top_eigen(apply, d, k, l, 500, COV_TOL, seed)
                }
            }
            PcaMethod::RandomizedSubspace => {
                let apply = |v: &[f64]| gram_apply(x, n, d, &mean, v);
                top_eigen(apply, d, k, l, 40, RANDOMIZED_TOL, seed)
            }
        };
        for c in 0..k {
            let row = &mut vecs[c * d..(c + 1) * d];
            let mut best = 0;
            for j in 1..d {
                if row[j].abs() > row[best].abs() {
                    best = j;
                }
            }
            if row[best] < 0.0 {
                row.iter_mut().for_each(|v| *v = -*v);
            }
        }
        let mean_proj = (0..k)
            .map(|c| dot_f64(&vecs[c * d..(c + 1) * d], &mean))
            .collect();
        Ok(Pca {
            mean_proj,
            mean,
            components: vecs,
            explained_variance: vals.iter().map(|v: &f64| v.max(0.0)).collect(),
            total_variance,
            d,
            k,
            method,
            iterations,
        })
    }

    /// Projects the row-major `(n, d)` matrix `x` onto the components: returns the
    /// row-major `(n, k)` scores `(x_i − mean) · component_c` as `f32`.
    ///
    /// # Errors
    /// [`MetricsError`] if `d` differs from the fitted feature count, the length is not
    /// `n * d`, or `x` has a non-finite value.
    pub fn transform(&self, x: &[f32], n: usize, d: usize) -> Result<Vec<f32>> {
        check_matrix("pca transform input", x, n, d, 0)?;
        if d != self.d {
            return Err(MetricsError::Shape {
                what: "pca transform input".to_string(),
                detail: format!("d={d} but the model was fitted with d={}", self.d),
            });
        }
        let k = self.k;
        let mut out = vec![0.0f32; n * k];
        out.par_chunks_mut(k)
            .zip(x.par_chunks_exact(d))
            .for_each(|(o, row)| {
                for (c, oc) in o.iter_mut().enumerate() {
                    let comp = &self.components[c * d..(c + 1) * d];
                    *oc = (dot_f32_f64(row, comp) - self.mean_proj[c]) as f32;
                }
            });
        Ok(out)
    }

    /// Fraction of the total variance (sum of per-feature sample variances) explained by
    /// each component; length `k`.
    pub fn explained_variance_ratio(&self) -> Vec<f64> {
        if self.total_variance <= 0.0 {
            return vec![0.0; self.k];
        }
        self.explained_variance
            .iter()
            .map(|v| v / self.total_variance)
            .collect()
    }

    /// Variance along each component (eigenvalues of the sample covariance); length `k`.
    pub fn explained_variance(&self) -> &[f64] {
        &self.explained_variance
    }

    /// Components as a row-major `(k, d)` matrix of unit rows.
    pub fn components(&self) -> &[f64] {
        &self.components
    }

    /// Per-feature mean used for centring; length `d`.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Number of components `k`.
    pub fn n_components(&self) -> usize {
        self.k
    }

    /// Number of input features `d`.
    pub fn n_features(&self) -> usize {
        self.d
    }

    /// The method that was used.
    pub fn method(&self) -> PcaMethod {
        self.method
    }

    /// Number of subspace iterations used (1 for the direct Jacobi route).
    pub fn iterations(&self) -> usize {
        self.iterations
    }
}

/// Sample covariance `Xcᵀ Xc / (n − 1)`, `d × d` row-major. Rows are centred (in f64) in
/// blocks of at most `COV_ROW_BLOCK`; each block's `Bᵀ B` is one dense f64 matrix product
/// (the `gemm` kernels behind dfdx's CPU matmul, parallel over output tiles on the rayon
/// pool, so the result is deterministic for a given thread count); the block products are
/// summed in order, and the upper triangle is mirrored so `C` is exactly symmetric.
fn covariance(x: &[f32], n: usize, d: usize, mean: &[f64]) -> Vec<f64> {
    use dfdx::prelude::*;
    let dev: Cpu = Default::default();
    let mut c = vec![0.0f64; d * d];
    let mut block = Vec::with_capacity(COV_ROW_BLOCK.min(n) * d);
    for rows in x.chunks(COV_ROW_BLOCK * d) {
        let nb = rows.len() / d;
        block.clear();
        for xr in rows.chunks_exact(d) {
            block.extend(xr.iter().zip(mean).map(|(v, m)| f64::from(*v) - m));
        }
        let b = dev.tensor_from_vec(block.clone(), (nb, d));
        let bt = b.clone().permute::<_, Axes2<1, 0>>();
        let prod = bt.matmul(b).as_vec();
        for (cv, pv) in c.iter_mut().zip(&prod) {
            *cv += pv;
        }
    }
    let denom = n as f64 - 1.0;
    for i in 0..d {
        for j in i..d {
            let v = c[i * d + j] / denom;
            c[i * d + j] = v;
            c[j * d + i] = v;
        }
    }
    c
}

/// `W = Xcᵀ (Xc V) / (n − 1)` without materializing `Xc = X − 1 meanᵀ`; `v` is `l × d`.
/// Cache-blocked over rows and columns; deterministic (no cross-thread reductions).
fn gram_apply(x: &[f32], n: usize, d: usize, mean: &[f64], v: &[f64]) -> Vec<f64> {
    const RB: usize = 64;
    const CB: usize = 1024;
    let l = v.len() / d;
    let mean_dot: Vec<f64> = (0..l)
        .map(|r| {
            v[r * d..(r + 1) * d]
                .iter()
                .zip(mean)
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect();
    // Y = Xc V  (n × l), parallel over row blocks, column-blocked inner loop
    let mut y = vec![0.0f64; n * l];
    y.par_chunks_mut(RB * l)
        .zip(x.par_chunks(RB * d))
        .for_each(|(yb, xb)| {
            let nb = xb.len() / d;
            for c0 in (0..d).step_by(CB) {
                let c1 = (c0 + CB).min(d);
                for i in 0..nb {
                    let xr = &xb[i * d + c0..i * d + c1];
                    for r in 0..l {
                        let vr = &v[r * d + c0..r * d + c1];
                        yb[i * l + r] += dot_f32_f64(xr, vr);
                    }
                }
            }
            for i in 0..nb {
                for r in 0..l {
                    yb[i * l + r] -= mean_dot[r];
                }
            }
        });
    let ysum: Vec<f64> = (0..l).map(|r| (0..n).map(|i| y[i * l + r]).sum()).collect();
    // W = Xᵀ Y − mean (1ᵀ Y), parallel over column blocks (each task owns its columns)
    let denom = n as f64 - 1.0;
    let blocks: Vec<(usize, Vec<f64>)> = (0..d)
        .step_by(CB)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|c0| {
            let c1 = (c0 + CB).min(d);
            let w = c1 - c0;
            let mut wb = vec![0.0f64; l * w];
            // four cells per pass: 4x fewer reads/writes of the W block
            let mut i = 0;
            while i + 4 <= n {
                let xs: [&[f32]; 4] =
                    std::array::from_fn(|q| &x[(i + q) * d + c0..(i + q) * d + c1]);
                for r in 0..l {
                    let a: [f64; 4] = std::array::from_fn(|q| y[(i + q) * l + r]);
                    for (j, wv) in wb[r * w..(r + 1) * w].iter_mut().enumerate() {
                        *wv += a[0] * f64::from(xs[0][j])
                            + a[1] * f64::from(xs[1][j])
                            + a[2] * f64::from(xs[2][j])
                            + a[3] * f64::from(xs[3][j]);
                    }
                }
                i += 4;
            }
            for i in i..n {
                let xr = &x[i * d + c0..i * d + c1];
                for r in 0..l {
                    let a = y[i * l + r];
                    for (wv, xv) in wb[r * w..(r + 1) * w].iter_mut().zip(xr) {
                        *wv += a * f64::from(*xv);
                    }
                }
            }
            for r in 0..l {
                for (j, wv) in wb[r * w..(r + 1) * w].iter_mut().enumerate() {
                    *wv = (*wv - mean[c0 + j] * ysum[r]) / denom;
                }
            }
            (c0, wb)
        })
        .collect();
    let mut out = vec![0.0f64; l * d];
    for (c0, wb) in blocks {
        let w = wb.len() / l;
        for r in 0..l {
            out[r * d + c0..r * d + c0 + w].copy_from_slice(&wb[r * w..(r + 1) * w]);
        }
    }
    out
}

/// Dot product with eight independent accumulators (vectorizes; fixed summation order).
fn dot_f64(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f64 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    s
}

/// Mixed-precision dot product, f64 accumulation, eight accumulators.
fn dot_f32_f64(a: &[f32], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..8 {
            acc[k] += f64::from(x[k]) * y[k];
        }
    }
    let mut s: f64 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += f64::from(*x) * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    /// Points `offset + a_i u + b_i w` with u = (1,1)/√2, w = (1,−1)/√2 and a, b orthogonal
    /// zero-mean coefficient vectors: covariance eigenvectors are exactly u (var 12) and
    /// w (var 4/3).
    #[test]
    fn known_eigenvectors_2d() {
        let s = 0.5f64.sqrt();
        let a = [3.0, 3.0, -3.0, -3.0];
        let b = [1.0, -1.0, 1.0, -1.0];
        let mut x = Vec::new();
        for i in 0..4 {
            x.push((10.0 + a[i] * s + b[i] * s) as f32);
            x.push((-5.0 + a[i] * s - b[i] * s) as f32);
        }
        let p = Pca::fit(&x, 4, 2, 2).expect("fit");
        assert_eq!(p.method(), PcaMethod::Covariance);
        let ev = p.explained_variance();
        assert!((ev[0] - 12.0).abs() < 1e-5, "{ev:?}");
        assert!((ev[1] - 4.0 / 3.0).abs() < 1e-5);
        let c = p.components();
        assert!((c[0] - s).abs() < 1e-6 && (c[1] - s).abs() < 1e-6);
        // second: (s, -s) — tie in |.|, first index made positive
        assert!((c[2] - s).abs() < 1e-6 && (c[3] + s).abs() < 1e-6);
        let r = p.explained_variance_ratio();
        assert!((r[0] - 0.9).abs() < 1e-6 && (r[1] - 0.1).abs() < 1e-6);
        let t = p.transform(&x, 4, 2).expect("transform");
        for i in 0..4 {
            assert!((f64::from(t[2 * i]) - a[i]).abs() < 1e-5);
            assert!((f64::from(t[2 * i + 1]) - b[i]).abs() < 1e-5);
        }
    }

    #[test]
    fn axis_aligned_3d_and_sign() {
        // Independent axes with variances 9 (axis 2), 4 (axis 0), 1 (axis 1).
        let mut rng = StdRng::seed_from_u64(3);
        let n = 4000;
        let mut x = Vec::with_capacity(n * 3);
        for _ in 0..n {
            x.push(Normal::new(0.0, 2.0).expect("n").sample(&mut rng) as f32);
            x.push(Normal::new(0.0, 1.0).expect("n").sample(&mut rng) as f32);
            x.push(Normal::new(5.0, 3.0).expect("n").sample(&mut rng) as f32);
        }
        let p = Pca::fit(&x, n, 3, 3).expect("fit");
        let c = p.components();
        assert!(c[2] > 0.99 && c[3] > 0.99 && c[7] > 0.99, "{c:?}");
        assert!((p.explained_variance()[0] - 9.0).abs() < 0.6);
    }

    fn low_rank_data(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let nz = Normal::new(0.0, 1.0).expect("n");
        let r = 5;
        let basis: Vec<f64> = (0..r * d).map(|_| nz.sample(&mut rng)).collect();
        let mut x = Vec::with_capacity(n * d);
        for _ in 0..n {
            let z: Vec<f64> = (0..r)
                .map(|j| nz.sample(&mut rng) * (5.0 - j as f64))
                .collect();
            for g in 0..d {
                let mut v = 0.1 * nz.sample(&mut rng) + 1.0;
                for j in 0..r {
                    v += z[j] * basis[j * d + g];
                }
                x.push(v as f32);
            }
        }
        x
    }

    #[test]
    fn randomized_matches_covariance_and_subspace_route() {
        let (n, d, k) = (300, 400, 4);
        let x = low_rank_data(n, d, 9);
        let a = Pca::fit_with(&x, n, d, k, Some(PcaMethod::Covariance), 0).expect("cov");
        let b = Pca::fit_with(&x, n, d, k, Some(PcaMethod::RandomizedSubspace), 1).expect("rnd");
        for c in 0..k {
            let ea = a.explained_variance()[c];
            let eb = b.explained_variance()[c];
            assert!((ea - eb).abs() < 1e-6 * ea, "{ea} {eb}");
            let dot: f64 = (0..d)
                .map(|j| a.components()[c * d + j] * b.components()[c * d + j])
                .sum();
            assert!(dot > 1.0 - 1e-6, "component {c} dot {dot}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Pca::fit(&[1.0, 2.0, 3.0], 2, 2, 1).is_err());
        assert!(Pca::fit(&[1.0, f32::NAN, 3.0, 4.0], 2, 2, 1).is_err());
        assert!(Pca::fit(&[1.0, 2.0, 3.0, 4.0], 2, 2, 3).is_err());
        assert!(Pca::fit(&[1.0, 2.0], 1, 2, 1).is_err());
    }
}
