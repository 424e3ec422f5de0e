//! CPU kernels of the Gaussian losses in [`crate::likelihood`]: one parallel pass forward (a sum)
//! and one backward. dfdx composes each from 4–12 single-threaded element-wise ops over the
//! `(batch, genes)` matrix, each allocating its result and, backward, its gradient; at the
//! reference VAE shape (256 × 2,000) that serial work held the second thread idle for ~8 % of a
//! training step. Partial sums are taken over fixed row blocks and added in order (in `f64`), so
//! results do not depend on the thread count.

use dfdx::prelude::*;
use rayon::prelude::*;

use crate::device::{host_values, Dev, Scalar, Taped, Tensor1, Tensor2};
use crate::nn::{exp, ln, vectorized};

/// Rows handed to one rayon task.
const ROWS_PER_TASK: usize = 16;

/// `scale · Σ (pred − target)²` over every element of `(batch, width)` `pred`. Backward:
/// `dpred = 2 · scale · (pred − target) · g`.
pub(crate) fn squared_error<T: Taped>(pred: Tensor2<T>, target: &Tensor2, scale: f32) -> Scalar<T> {
    let dev: Dev = pred.device().clone();
    let (pred, mut tape) = pred.split_tape();
    let total: f64 = {
        let (p, t) = (host_values(&pred), host_values(target));
        let block = (pred.shape().1 * ROWS_PER_TASK).max(1);
        let partials: Vec<f64> = p
            .par_chunks(block)
            .zip(t.par_chunks(block))
            .map(|(p, t)| {
                p.iter()
                    .zip(t)
                    .map(|(a, b)| f64::from((a - b) * (a - b)))
                    .sum()
            })
            .collect();
        partials.iter().sum()
    };
    let out = dev.tensor_from_vec(vec![(total * f64::from(scale)) as f32], ());
    if T::OWNS_TAPE {
        let (result, target) = (out.clone(), target.clone());
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&pred)?;
            grads.try_alloc_for(&result)?;
            let g = grads.get_or_alloc_mut(&result)?[0] * 2.0 * scale;
            let (p, t) = (host_values(&pred), host_values(&target));
            let block = (pred.shape().1 * ROWS_PER_TASK).max(1);
            grads
                .get_or_alloc_mut(&pred)?
                .par_chunks_mut(block)
                .zip(p.par_chunks(block).zip(t.par_chunks(block)))
                .for_each(|(d, (p, t))| {
                    for ((d, a), b) in d.iter_mut().zip(p).zip(t) {
                        *d += g * (a - b);
                    }
                });
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// The observed values the Gaussian NLL compares with, and whether zeros are a separate
/// (hurdle) component with these `(batch, genes)` logits.
pub(crate) struct Observed<'a, T: Taped> {
    /// `(batch · genes)` observed values, row-major.
    pub x: &'a [f32],
    /// Zero logits of the hurdle model, `(batch, genes)`; `None` for the plain Gaussian.
    pub zero_logit: Option<Tensor2<T>>,
}

/// One element's terms: `(loss, d loss/d x̂, d loss/d log σ, d loss/d zero logit)` before the
/// `1 / batch` factor, for mean `x̂`, observation `x`, `log σ` with precision `e^{−2 log σ}`.
/// Branch-free (the vectorizable [`exp`] and [`ln`], selects), so a row's loop vectorizes.
#[inline(always)]
fn element(
    x_hat: f32,
    x: f32,
    log_sigma: f32,
    precision: f32,
    zero_logit: Option<f32>,
) -> [f32; 4] {
    let d = x_hat - x;
    let gaussian = 0.5 * d * d * precision;
    match zero_logit {
        None => [gaussian, d * precision, -d * d * precision, 0.0],
        Some(l) => {
            let zero = if x > 0.0 { 0.0 } else { 1.0 };
            // dfdx's `bce_with_logits`: max(l, 0) − l z + ln(1 + e^{−|l|}); d/dl = σ(l) − z,
            // with σ(l) = 1 / (1 + t) for l ≥ 0 and t / (1 + t) below, t = e^{−|l|} ≤ 1.
            let t = exp(-l.abs());
            let bce = l.max(0.0) - l * zero + ln(1.0 + t);
            let sigmoid = if l >= 0.0 { 1.0 } else { t } / (1.0 + t);
            let d_logit = sigmoid - zero;
            if x > 0.0 {
                [
                    gaussian + log_sigma + bce,
                    d * precision,
                    1.0 - d * d * precision,
                    d_logit,
                ]
            } else {
                [bce, 0.0, 0.0, d_logit]
            }
        }
    }
}

/// The loss terms of one row (`x̂`, `x`, zero logits when the model has them) into `terms`.
#[inline(always)]
fn row_losses(xh: &[f32], x: &[f32], zl: Option<&[f32]>, params: Params<'_>, terms: &mut [f32]) {
    let per_gene = params.log_sigma.iter().zip(params.precision);
    let rows = terms.iter_mut().zip(xh.iter().zip(x)).zip(per_gene);
    match zl {
        None => {
            for ((t, (&a, &b)), (&l, &p)) in rows {
                *t = element(a, b, l, p, None)[0];
            }
        }
        Some(zl) => {
            for (((t, (&a, &b)), (&l, &p)), &z) in rows.zip(zl) {
                *t = element(a, b, l, p, Some(z))[0];
            }
        }
    }
}

/// `log σ` and the precision `e^{−2 log σ}` per gene.
#[derive(Clone, Copy)]
struct Params<'a> {
    log_sigma: &'a [f32],
    precision: &'a [f32],
}

/// One row's gradients: `d_xh += per_row · d/dx̂`, `d_ls += d/d log σ` (before `per_row`), and
/// `d_logit = per_row · d/dl` when the model has zero logits `zl`.
#[inline(always)]
fn row_gradients(
    (xh, x, zl): (&[f32], &[f32], Option<&[f32]>),
    params: Params<'_>,
    per_row: f32,
    (d_xh, d_ls, d_logit): (&mut [f32], &mut [f32], &mut [f32]),
) {
    let per_gene = params.log_sigma.iter().zip(params.precision);
    let rows = d_xh.iter_mut().zip(d_ls.iter_mut()).zip(xh.iter().zip(x));
    match zl {
        None => {
            for (((dx, ds), (&a, &b)), (&l, &p)) in rows.zip(per_gene) {
                let [_, da, dls, _] = element(a, b, l, p, None);
                *dx += per_row * da;
                *ds += dls;
            }
        }
        Some(zl) => {
            let logits = zl.iter().zip(d_logit.iter_mut());
            for ((((dx, ds), (&a, &b)), (&l, &p)), (&z, dz)) in rows.zip(per_gene).zip(logits) {
                let [_, da, dls, dl] = element(a, b, l, p, Some(z));
                *dx += per_row * da;
                *ds += dls;
                *dz = per_row * dl;
            }
        }
    }
}

/// The Gaussian negative log-likelihood of [`crate::likelihood::gaussian_nll`] (no zero logits:
/// `Σ 0.5 (x − x̂)² e^{−2 log σ} / batch + Σ_genes log σ`) or the hurdle Gaussian of
/// [`crate::likelihood::hurdle_gaussian_nll`] (with them), for `(batch, genes)` `x_hat` and
/// `(genes,)` `log_sigma`.
pub(crate) fn gaussian_nll<T: Taped>(
    x_hat: Tensor2<T>,
    observed: Observed<'_, T>,
    log_sigma: Tensor1<T>,
) -> Scalar<T> {
    let (batch, genes) = *x_hat.shape();
    let dev: Dev = x_hat.device().clone();
    let (x_hat, tape) = x_hat.split_tape();
    let (log_sigma, ls_tape) = log_sigma.split_tape();
    let mut tape = tape.merge(ls_tape);
    let zero_logit = observed.zero_logit.map(|z| {
        let (z, z_tape) = z.split_tape();
        tape = std::mem::take(&mut tape).merge(z_tape);
        z
    });
    let ls: Vec<f32> = host_values(&log_sigma).into_owned();
    let precision: Vec<f32> = ls.iter().map(|l| (-2.0 * l).exp()).collect();
    let params = Params {
        log_sigma: &ls,
        precision: &precision,
    };
    let block = (genes * ROWS_PER_TASK).max(1);
    let total: f64 = {
        let xh = host_values(&x_hat);
        let zl = zero_logit.as_ref().map(host_values);
        let partials: Vec<f64> = xh
            .par_chunks(block)
            .zip(observed.x.par_chunks(block))
            .enumerate()
            .map(|(task, (xh, x))| {
                let mut sum = 0.0f64;
                let mut terms = vec![0.0f32; genes];
                let rows = xh.chunks(genes.max(1)).zip(x.chunks(genes.max(1)));
                for (r, (xh, x)) in rows.enumerate() {
                    let start = task * block + r * genes;
                    let z = zl.as_ref().map(|z| &z[start..start + genes]);
                    vectorized(
                        #[inline(always)]
                        || row_losses(xh, x, z, params, &mut terms),
                    );
                    for &t in &terms {
                        sum += f64::from(t);
                    }
                }
                sum
            })
            .collect();
        let sum: f64 = partials.iter().sum();
        sum / batch as f64
            + if zero_logit.is_none() {
                ls.iter().map(|&l| f64::from(l)).sum::<f64>()
            } else {
                0.0
            }
    };
    let out = dev.tensor_from_vec(vec![total as f32], ());
    if T::OWNS_TAPE {
        let result = out.clone();
        let x: Vec<f32> = observed.x.to_vec();
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&x_hat)?;
            grads.try_alloc_for(&log_sigma)?;
            grads.try_alloc_for(&result)?;
            let g = grads.get_or_alloc_mut(&result)?[0];
            let per_row = g / batch as f32;
            let params = Params {
                log_sigma: &ls,
                precision: &precision,
            };
            let xh = host_values(&x_hat);
            let zl = zero_logit.as_ref().map(host_values);
            let mut d_logit = vec![0.0f32; if zl.is_some() { batch * genes } else { 0 }];
            // Per-task partial gradients of log σ, added in task order below.
            let d_ls_partials: Vec<Vec<f32>> = {
                let d_xh = grads.get_or_alloc_mut(&x_hat)?;
                let mut dl_blocks: Vec<&mut [f32]> = d_logit.chunks_mut(block).collect();
                dl_blocks.resize_with(d_xh.len().div_ceil(block), Default::default);
                d_xh.par_chunks_mut(block)
                    .zip(dl_blocks.into_par_iter())
                    .zip(xh.par_chunks(block).zip(x.par_chunks(block)))
                    .enumerate()
                    .map(|(task, ((dxh, dl), (xh, x)))| {
                        let mut d_ls = vec![0.0f32; genes];
                        let g1 = genes.max(1);
                        let rows = dxh.chunks_mut(g1).zip(xh.chunks(g1).zip(x.chunks(g1)));
                        for (r, (dxh, (xh, x))) in rows.enumerate() {
                            let (start, row) =
                                (task * block + r * genes, r * genes..(r + 1) * genes);
                            let z = zl.as_ref().map(|z| &z[start..start + genes]);
                            let dl = dl.get_mut(row).unwrap_or_default();
                            vectorized(
                                #[inline(always)]
                                || row_gradients((xh, x, z), params, per_row, (dxh, &mut d_ls, dl)),
                            );
                        }
                        d_ls
                    })
                    .collect()
            };
            let d_ls = grads.get_or_alloc_mut(&log_sigma)?;
            for partial in &d_ls_partials {
                for (d, p) in d_ls.iter_mut().zip(partial) {
                    *d += per_row * p;
                }
            }
            if zl.is_none() {
                for d in d_ls.iter_mut() {
                    *d += g;
                }
            }
            if let Some(z) = &zero_logit {
                grads.try_alloc_for(z)?;
                for (d, v) in grads.get_or_alloc_mut(z)?.iter_mut().zip(&d_logit) {
                    *d += v;
                }
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{device, tensor1, tensor2, TrainTape};

    fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
        crate::testing::spread_values(n, seed, scale)
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (u, v) in a.iter().zip(b) {
            assert!((u - v).abs() <= tol * (1.0 + v.abs()), "{u} vs {v}");
        }
    }

    /// The fused squared error equals dfdx's `(pred − target)².sum() · scale`, value and gradient.
    #[test]
    fn squared_error_matches_the_composite_ops() {
        let dev = device(0).unwrap();
        let (batch, width) = (37, 11);
        let p = tensor2(&dev, &values(batch * width, 1, 2.0), batch, width).unwrap();
        let t = tensor2(&dev, &values(batch * width, 2, 2.0), batch, width).unwrap();
        let run = |fused: bool| {
            let pt = p.clone().retaped::<TrainTape>();
            let loss = if fused {
                squared_error(pt, &t, 0.3)
            } else {
                (pt - t.clone()).square().sum::<(), _>() * 0.3
            };
            let value = loss.array();
            let grads = loss.backward();
            (value, grads.get(&p).as_vec())
        };
        let (v0, g0) = run(false);
        let (v1, g1) = run(true);
        close(&[v1], &[v0], 1e-5);
        close(&g1, &g0, 1e-5);
    }

    /// The fused Gaussian and hurdle-Gaussian NLLs equal the composite ops they replace
    /// (values and the gradients of the mean, log σ and the zero logits), with exact zeros among
    /// the observations.
    #[test]
    fn gaussian_nlls_match_the_composite_ops() {
        let dev = device(0).unwrap();
        let (batch, genes) = (40, 9);
        let x: Vec<f32> = values(batch * genes, 3, 2.0)
            .iter()
            .map(|v| v.max(0.0))
            .collect();
        assert!(x.contains(&0.0) && x.iter().any(|v| *v > 0.0));
        let xh = tensor2(&dev, &values(batch * genes, 4, 2.0), batch, genes).unwrap();
        let zl = tensor2(&dev, &values(batch * genes, 5, 3.0), batch, genes).unwrap();
        let ls = tensor1(&dev, &values(genes, 6, 0.5));
        let xt = tensor2(&dev, &x, batch, genes).unwrap();
        for hurdle in [false, true] {
            let run = |fused: bool| {
                let (a, l) = (xh.retaped::<TrainTape>(), ls.retaped::<TrainTape>());
                let z = zl.retaped::<TrainTape>();
                let loss = match (fused, hurdle) {
                    (true, _) => gaussian_nll(
                        a,
                        Observed {
                            x: &x,
                            zero_logit: hurdle.then_some(z),
                        },
                        l,
                    ),
                    (false, false) => crate::likelihood::composite_gaussian_nll(a, xt.clone(), l),
                    (false, true) => crate::likelihood::composite_hurdle_gaussian_nll(a, z, &x, l),
                };
                let value = loss.array();
                let mut grads = loss.backward();
                grads.try_alloc_for(&zl).unwrap();
                (
                    value,
                    grads.get(&xh).as_vec(),
                    grads.get(&ls).as_vec(),
                    grads.get(&zl).as_vec(),
                )
            };
            let (v0, a0, l0, z0) = run(false);
            let (v1, a1, l1, z1) = run(true);
            close(&[v1], &[v0], 1e-5);
            close(&a1, &a0, 1e-5);
            close(&l1, &l0, 1e-4);
            close(&z1, &z0, 1e-5);
        }
    }
}
