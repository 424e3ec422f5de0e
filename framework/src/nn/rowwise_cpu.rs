//! CPU kernels for the per-element and per-row operations of every block: row normalization
//! (LayerNorm without its affine part) and SiLU, each one pass forward and one pass backward,
//! split over rayon's threads by rows. dfdx composes them from 3–8 single-threaded elementwise
//! ops, each allocating its result and its gradient, which at the reference shapes costs as much
//! as the matrix products on two threads. Rows are independent, so results do not depend on
//! the thread count.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::elementary::exp;
use super::simd::vectorized;
use crate::device::{host_values, Dev, Taped, Tensor1, Tensor2};

/// Rows handed to one rayon task (a few KiB of work each at the reference widths).
const ROWS_PER_TASK: usize = 16;

/// Runs `f(row_index, rows…)` over row-chunks of the `(rows, width)` buffers in parallel.
fn for_rows<F>(width: usize, out: &mut [f32], f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let width = width.max(1);
    out.par_chunks_mut(width * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, block)| {
            vectorized(
                #[inline(always)]
                || {
                    for (k, row) in block.chunks_mut(width).enumerate() {
                        f(task * ROWS_PER_TASK + k, row);
                    }
                },
            )
        });
}

/// In a backward op of `result = f(x)`: a copy of the gradient reaching `result`, and the
/// gradient buffer of `x` to add into.
pub(super) fn output_and_input_gradients<'g>(
    grads: &'g mut Gradients<f32, Dev>,
    result: &Tensor2,
    x: &Tensor2,
) -> Result<(Vec<f32>, &'g mut [f32]), <Dev as HasErr>::Err> {
    grads.try_alloc_for(x)?;
    grads.try_alloc_for(result)?;
    // The result's gradient is complete when its producer's backward op runs, and nothing reads
    // it afterwards: move the buffer out instead of copying it.
    let g = std::mem::take(&mut **grads.get_or_alloc_mut(result)?);
    Ok((g, grads.get_or_alloc_mut(x)?))
}

/// The mean and `1 / sqrt(var + eps)` (biased variance) of each of `R` rows of one width, in
/// `f64`. Each row's sums run in order from −0.0, as `Iterator::sum` does, so the bits are a
/// row-by-row loop's; the `R` rows' additions are interleaved so that they overlap instead of
/// waiting on one another (a row's sum alone is bound by the addition's latency).
#[inline(always)]
fn row_moments<const R: usize>(rows: [&[f32]; R], eps: f64) -> [(f64, f64); R] {
    let width = rows.first().map_or(0, |r| r.len());
    let n = width.max(1) as f64;
    let mut sum = [-0.0f64; R];
    for j in 0..width {
        for (s, row) in sum.iter_mut().zip(&rows) {
            *s += f64::from(row[j]);
        }
    }
    let mean = sum.map(|s| s / n);
    let mut squares = [-0.0f64; R];
    for j in 0..width {
        for ((s, row), &m) in squares.iter_mut().zip(&rows).zip(&mean) {
            *s += (f64::from(row[j]) - m).powi(2);
        }
    }
    std::array::from_fn(|k| (mean[k], 1.0 / (squares[k] / n + eps).sqrt()))
}

/// `(x - mean) / sqrt(var + eps)` over each row of `(batch, width)` (biased variance, as
/// LayerNorm). Backward: `dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))` per row.
pub(crate) fn normalize_rows<T: Taped>(x: Tensor2<T>, eps: f64) -> Tensor2<T> {
    let (batch, width) = *x.shape();
    let dev: Dev = x.device().clone();
    let (x, mut tape) = x.split_tape();
    let xv = host_values(&x);
    let mut y = vec![0.0f32; batch * width];
    let mut rstd = vec![0.0f32; batch];
    let w = width.max(1);
    let n = w as f64;
    y.par_chunks_mut(w * ROWS_PER_TASK)
        .zip(rstd.par_chunks_mut(ROWS_PER_TASK))
        .zip(xv.par_chunks(w * ROWS_PER_TASK))
        .for_each(|((out, r), x)| {
            let mut first = 0;
            while first < r.len() {
                let group = if r.len() - first >= 4 { 4 } else { 1 };
                let mut normalize = |row: usize, mean: f64, s: f64| {
                    let (x, out) = (&x[row * w..(row + 1) * w], &mut out[row * w..(row + 1) * w]);
                    for (o, &v) in out.iter_mut().zip(x) {
                        *o = ((f64::from(v) - mean) * s) as f32;
                    }
                };
                if group == 4 {
                    let rows = std::array::from_fn(|k| &x[(first + k) * w..(first + k + 1) * w]);
                    for (k, (mean, s)) in row_moments::<4>(rows, eps).into_iter().enumerate() {
                        r[first + k] = s as f32;
                        normalize(first + k, mean, s);
                    }
                } else {
                    let [(mean, s)] = row_moments::<1>([&x[first * w..(first + 1) * w]], eps);
                    r[first] = s as f32;
                    normalize(first, mean, s);
                }
                first += group;
            }
        });
    let out = dev.tensor_from_vec(y, (batch, width));
    if T::OWNS_TAPE {
        let result = out.clone();
        tape.add_backward_op(move |grads| {
            let (g, gx) = output_and_input_gradients(grads, &result, &x)?;
            let y = host_values(&result);
            for_rows(
                width,
                gx,
                #[inline(always)]
                |i, dx| {
                    let (gr, yr) = (row(&g, width, i), row(&y, width, i));
                    let mean_g = gr.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
                    let mean_gy = gr
                        .iter()
                        .zip(yr)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum::<f64>()
                        / n;
                    let s = f64::from(rstd[i]);
                    for ((d, &a), &b) in dx.iter_mut().zip(gr).zip(yr) {
                        *d += (s * (f64::from(a) - mean_g - f64::from(b) * mean_gy)) as f32;
                    }
                },
            );
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// LayerNorm's affine part `y · gamma + beta` over each row of `(batch, width)` `y`, `gamma` and
/// `beta (width,)` parameters (gradients accumulated into theirs). Backward: `dy = g · gamma`,
/// `dgamma = Σ_rows g · y`, `dbeta = Σ_rows g`, the parameter sums row by row in order, so
/// forward and gradients have the bits of dfdx's broadcast `mul` and `add` they replace (which
/// ran single-threaded, each allocating its result and its gradient).
pub(crate) fn scale_and_shift<T: Taped>(
    y: Tensor2<T>,
    gamma: &Tensor1,
    beta: &Tensor1,
) -> Tensor2<T> {
    let (batch, width) = *y.shape();
    let dev: Dev = y.device().clone();
    let (y, mut tape) = y.split_tape();
    let (gv, bv) = (host_values(gamma), host_values(beta));
    let yv = host_values(&y);
    let mut out = vec![0.0f32; batch * width];
    for_rows(
        width,
        &mut out,
        #[inline(always)]
        |i, o| {
            for ((o, &v), (&g, &b)) in o
                .iter_mut()
                .zip(row(&yv, width, i))
                .zip(gv.iter().zip(&*bv))
            {
                *o = v * g + b;
            }
        },
    );
    drop((gv, bv, yv));
    let out = dev.tensor_from_vec(out, (batch, width));
    if T::OWNS_TAPE {
        let (gamma, beta, result) = (gamma.clone(), beta.clone(), out.clone());
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&gamma)?;
            grads.try_alloc_for(&beta)?;
            let (g, dy) = output_and_input_gradients(grads, &result, &y)?;
            let gv = host_values(&gamma);
            for_rows(
                width,
                dy,
                #[inline(always)]
                |i, d| add_products(d, row(&g, width, i), &gv),
            );
            let yv = host_values(&y);
            vectorized(
                #[inline(always)]
                || {
                    let d_gamma = grads.get_or_alloc_mut(&gamma)?;
                    for i in 0..batch {
                        add_products(d_gamma, row(&g, width, i), row(&yv, width, i));
                    }
                    let d_beta = grads.get_or_alloc_mut(&beta)?;
                    for i in 0..batch {
                        add_row(d_beta, row(&g, width, i));
                    }
                    Ok(())
                },
            )
        });
    }
    out.put_tape(tape)
}

/// `x · sigmoid(x)`. Backward: `dx = g · σ(x) · (1 + x · (1 − σ(x)))`.
pub(crate) fn silu<T: Taped>(x: Tensor2<T>) -> Tensor2<T> {
    let (batch, width) = *x.shape();
    let dev: Dev = x.device().clone();
    let (x, mut tape) = x.split_tape();
    let xv = host_values(&x);
    let mut y = vec![0.0f32; batch * width];
    for_rows(
        width,
        &mut y,
        #[inline(always)]
        |i, out| {
            for (o, &v) in out.iter_mut().zip(row(&xv, width, i)) {
                *o = v / (1.0 + exp(-v));
            }
        },
    );
    let out = dev.tensor_from_vec(y, (batch, width));
    if T::OWNS_TAPE {
        let result = out.clone();
        tape.add_backward_op(move |grads| {
            let (g, gx) = output_and_input_gradients(grads, &result, &x)?;
            let xv = host_values(&x);
            for_rows(
                width,
                gx,
                #[inline(always)]
                |i, dx| {
                    let rows = row(&g, width, i).iter().zip(row(&xv, width, i));
                    for (d, (&a, &v)) in dx.iter_mut().zip(rows) {
                        let s = 1.0 / (1.0 + exp(-v));
                        *d += a * s * (1.0 + v * (1.0 - s));
                    }
                },
            );
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// Every row of `x (batch, width)` repeated `times` times in place: `(batch · times, width)`,
/// row `r` of the result being row `r / times` of `x` (a per-sample vector copied to each of
/// its tokens). Backward: each input row's gradient is the sum of its copies' gradients.
pub(crate) fn repeat_rows<T: Taped>(x: Tensor2<T>, times: usize) -> Tensor2<T> {
    let (batch, width) = *x.shape();
    let dev: Dev = x.device().clone();
    let (x, mut tape) = x.split_tape();
    let xv = host_values(&x);
    let mut y = vec![0.0f32; batch * times * width];
    if width > 0 && times > 0 {
        y.par_chunks_mut(width * times)
            .zip(xv.par_chunks(width))
            .for_each(|(copies, row)| {
                for copy in copies.chunks_exact_mut(width) {
                    copy.copy_from_slice(row);
                }
            });
    }
    let out = dev.tensor_from_vec(y, (batch * times, width));
    if T::OWNS_TAPE {
        let result = out.clone();
        tape.add_backward_op(move |grads| {
            let (g, gx) = output_and_input_gradients(grads, &result, &x)?;
            if width > 0 && times > 0 {
                gx.par_chunks_mut(width)
                    .zip(g.par_chunks(width * times))
                    .for_each(|(dx, copies)| {
                        for copy in copies.chunks_exact(width) {
                            for (d, &v) in dx.iter_mut().zip(copy) {
                                *d += v;
                            }
                        }
                    });
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// Row `r` of a per-sample `(batch, width)` input broadcast over `tokens` rows per sample:
/// its row `r / tokens`.
fn sample_row(values: &[f32], width: usize, tokens: usize, r: usize) -> &[f32] {
    row(values, width, r / tokens.max(1))
}

/// Row `r` of a row-major matrix `width` values wide.
fn row(values: &[f32], width: usize, r: usize) -> &[f32] {
    &values[r * width..(r + 1) * width]
}

/// `d += g` over a row.
fn add_row(d: &mut [f32], g: &[f32]) {
    for (d, &g) in d.iter_mut().zip(g) {
        *d += g;
    }
}

/// `d += g · h` over a row (element-wise).
fn add_products(d: &mut [f32], g: &[f32], h: &[f32]) {
    for (d, (&g, &h)) in d.iter_mut().zip(g.iter().zip(h)) {
        *d += g * h;
    }
}

/// In a backward op: adds `Σ_t f(token row bT+t)` to row `b` of the per-sample gradient `dst`
/// (`(batch, width)`), over each sample's `tokens` rows in token order (the order in which
/// summing the gradients of [`repeat_rows`]'s copies adds them, so the bits are the same).
fn add_over_tokens<F>(dst: &mut [f32], width: usize, tokens: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let tokens = tokens.max(1);
    for_rows(
        width,
        dst,
        #[inline(always)]
        |b, d| {
            for t in 0..tokens {
                f(b * tokens + t, d);
            }
        },
    );
}

/// adaLN's modulation `h · (1 + scale) + shift`, `h (batch · tokens, width)`, `scale` and
/// `shift (batch, width)` broadcast over each sample's `tokens` rows (a transformer's tokens;
/// 1 for per-row modulation). Backward: `dh = g · (1 + scale)`, `dscale = Σ_tokens g · h`,
/// `dshift = Σ_tokens g`.
pub(crate) fn modulate<T: Taped>(
    h: Tensor2<T>,
    scale: Tensor2<T>,
    shift: Tensor2<T>,
    tokens: usize,
) -> Tensor2<T> {
    let shape = *h.shape();
    let width = shape.1;
    let dev: Dev = h.device().clone();
    let (h, tape) = h.split_tape();
    let (scale, scale_tape) = scale.split_tape();
    let (shift, shift_tape) = shift.split_tape();
    let mut tape = tape.merge(scale_tape).merge(shift_tape);
    let mut y = vec![0.0f32; shape.0 * shape.1];
    {
        let (hv, sv, bv) = (host_values(&h), host_values(&scale), host_values(&shift));
        for_rows(
            width,
            &mut y,
            #[inline(always)]
            |r, out| {
                let (hr, sr) = (row(&hv, width, r), sample_row(&sv, width, tokens, r));
                let br = sample_row(&bv, width, tokens, r);
                for (((o, &h), &s), &b) in out.iter_mut().zip(hr).zip(sr).zip(br) {
                    *o = h * (1.0 + s) + b;
                }
            },
        );
    }
    let out = dev.tensor_from_vec(y, shape);
    if T::OWNS_TAPE {
        let result = out.clone();
        tape.add_backward_op(move |grads| {
            let (g, gh) = output_and_input_gradients(grads, &result, &h)?;
            let (sv, hv) = (host_values(&scale), host_values(&h));
            for_rows(
                width,
                gh,
                #[inline(always)]
                |r, d| {
                    let gr = row(&g, width, r);
                    for ((d, &g), &s) in d.iter_mut().zip(gr).zip(sample_row(&sv, width, tokens, r))
                    {
                        *d += g * (1.0 + s);
                    }
                },
            );
            add_over_tokens(
                grads.get_or_alloc_mut(&scale)?,
                width,
                tokens,
                #[inline(always)]
                |r, d| {
                    add_products(d, row(&g, width, r), row(&hv, width, r));
                },
            );
            add_over_tokens(
                grads.get_or_alloc_mut(&shift)?,
                width,
                tokens,
                #[inline(always)]
                |r, d| {
                    add_row(d, row(&g, width, r));
                },
            );
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// The residual update `x + h · gate` (`x + h` without a gate), `x` and `h (batch · tokens,
/// width)`, `gate (batch, width)` broadcast over each sample's `tokens` rows. Backward:
/// `dx = g`, `dh = g · gate` (`g`), `dgate = Σ_tokens g · h`.
pub(crate) fn residual<T: Taped>(
    x: Tensor2<T>,
    h: Tensor2<T>,
    gate: Option<Tensor2<T>>,
    tokens: usize,
) -> Tensor2<T> {
    let shape = *x.shape();
    let width = shape.1;
    let dev: Dev = x.device().clone();
    let (x, tape) = x.split_tape();
    let (h, h_tape) = h.split_tape();
    let mut tape = tape.merge(h_tape);
    let gate = gate.map(|g| {
        let (g, g_tape) = g.split_tape();
        tape = std::mem::take(&mut tape).merge(g_tape);
        g
    });
    let mut y = vec![0.0f32; shape.0 * shape.1];
    {
        let (xv, hv) = (host_values(&x), host_values(&h));
        let gv = gate.as_ref().map(host_values);
        for_rows(
            width,
            &mut y,
            #[inline(always)]
            |r, out| {
                let rows = row(&xv, width, r).iter().zip(row(&hv, width, r));
                match &gv {
                    Some(gv) => {
                        let gr = sample_row(gv, width, tokens, r);
                        for ((o, (&x, &h)), &g) in out.iter_mut().zip(rows).zip(gr) {
                            *o = x + h * g;
                        }
                    }
                    None => {
                        for (o, (&x, &h)) in out.iter_mut().zip(rows) {
                            *o = x + h;
                        }
                    }
                }
            },
        );
    }
    let out = dev.tensor_from_vec(y, shape);
    if T::OWNS_TAPE {
        let result = out.clone();
        tape.add_backward_op(move |grads| {
            let (g, gx) = output_and_input_gradients(grads, &result, &x)?;
            for_rows(
                width,
                gx,
                #[inline(always)]
                |r, d| add_row(d, row(&g, width, r)),
            );
            let gv = gate.as_ref().map(host_values);
            for_rows(
                width,
                grads.get_or_alloc_mut(&h)?,
                #[inline(always)]
                |r, d| {
                    let gr = row(&g, width, r);
                    match &gv {
                        Some(gv) => {
                            let sr = sample_row(gv, width, tokens, r);
                            for ((d, &g), &s) in d.iter_mut().zip(gr).zip(sr) {
                                *d += g * s;
                            }
                        }
                        None => add_row(d, gr),
                    }
                },
            );
            if let Some(gate) = &gate {
                let hv = host_values(&h);
                add_over_tokens(
                    grads.get_or_alloc_mut(gate)?,
                    width,
                    tokens,
                    #[inline(always)]
                    |r, d| {
                        add_products(d, row(&g, width, r), row(&hv, width, r));
                    },
                );
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// `√(2/π)`, the tanh approximation's scale.
const GELU_SCALE: f32 = 0.797_884_6;
/// The tanh approximation's cubic coefficient.
const GELU_CUBIC: f32 = 0.044_715;

/// GELU, tanh approximation (`torch.nn.functional.gelu(x, approximate="tanh")`, dfdx's
/// `fast_gelu`): `y = x/2 · (1 + tanh(u))`, `u = √(2/π) (x + 0.044715 x³)`. The forward pass
/// keeps `tanh(u)` for the backward pass: `dx = g · (½ (1 + tanh u) + ½ x (1 − tanh² u) u′)`,
/// `u′ = √(2/π) (1 + 3 · 0.044715 x²)`.
pub(crate) fn gelu_tanh<T: Taped>(x: Tensor2<T>) -> Tensor2<T> {
    let (batch, width) = *x.shape();
    let dev: Dev = x.device().clone();
    let (x, mut tape) = x.split_tape();
    let xv = host_values(&x);
    let mut y = vec![0.0f32; batch * width];
    // tanh(u) = 1 − 2 / (1 + e^{2u}): one `exp` instead of libm's slower `tanhf`; the absolute
    // error (≤ 2 ulp of 1) is far below what the approximation itself differs from GELU.
    let tanh_of = |v: f32| {
        let u = GELU_SCALE * (v + GELU_CUBIC * v * v * v);
        1.0 - 2.0 / (1.0 + exp(2.0 * u))
    };
    let chunk = width.max(1) * ROWS_PER_TASK;
    // tanh(u) is kept only when a backward pass will need it.
    let mut tanh = vec![0.0f32; if T::OWNS_TAPE { batch * width } else { 0 }];
    if T::OWNS_TAPE {
        y.par_chunks_mut(chunk)
            .zip(tanh.par_chunks_mut(chunk))
            .zip(xv.par_chunks(chunk))
            .for_each(|((out, th), row)| {
                vectorized(
                    #[inline(always)]
                    || {
                        for ((o, t), &v) in out.iter_mut().zip(th).zip(row) {
                            *t = tanh_of(v);
                            *o = 0.5 * v * (1.0 + *t);
                        }
                    },
                )
            });
    } else {
        y.par_chunks_mut(chunk)
            .zip(xv.par_chunks(chunk))
            .for_each(|(out, row)| {
                vectorized(
                    #[inline(always)]
                    || {
                        for (o, &v) in out.iter_mut().zip(row) {
                            *o = 0.5 * v * (1.0 + tanh_of(v));
                        }
                    },
                )
            });
    }
    let out = dev.tensor_from_vec(y, (batch, width));
    if T::OWNS_TAPE {
        let result = out.clone();
        tape.add_backward_op(move |grads| {
            let (g, gx) = output_and_input_gradients(grads, &result, &x)?;
            let xv = host_values(&x);
            for_rows(
                width,
                gx,
                #[inline(always)]
                |i, dx| {
                    let rows = row(&g, width, i)
                        .iter()
                        .zip(row(&xv, width, i))
                        .zip(row(&tanh, width, i));
                    for (d, ((&a, &v), &t)) in dx.iter_mut().zip(rows) {
                        let du = GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * v * v);
                        *d += a * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du);
                    }
                },
            );
            Ok(())
        });
    }
    out.put_tape(tape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{device, tensor2, TrainTape};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        crate::testing::spread_values(n, seed, 2.0)
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (u, v) in a.iter().zip(b) {
            assert!((u - v).abs() < tol, "{u} vs {v}");
        }
    }

    /// Output and input gradient of `op` against dfdx's composite version, on 37 rows (more
    /// than one rayon task) of width 24.
    fn check(
        fused: impl Fn(Tensor2<TrainTape>) -> Tensor2<TrainTape>,
        composite: impl Fn(Tensor2<TrainTape>) -> Tensor2<TrainTape>,
    ) {
        let dev = device(0).unwrap();
        let (rows, width) = (37, 24);
        let x = tensor2(&dev, &values(rows * width, 1), rows, width).unwrap();
        let r = tensor2(&dev, &values(rows * width, 2), rows, width).unwrap();
        let run = |f: &dyn Fn(Tensor2<TrainTape>) -> Tensor2<TrainTape>| {
            let y = f(x.clone().retaped::<TrainTape>());
            let values = y.as_vec();
            let grads = (y * r.clone()).sum::<(), _>().backward();
            (values, grads.get(&x).as_vec())
        };
        let (y0, g0) = run(&composite);
        let (y1, g1) = run(&fused);
        close(&y0, &y1, 1e-5);
        close(&g0, &g1, 1e-4);
    }

    /// The fused affine part gives the bits of dfdx's broadcast `y · gamma + beta`: values and
    /// the gradients of `y`, `gamma` and `beta` (the last two used twice, as a shared layer's).
    #[test]
    fn scale_and_shift_has_the_bits_of_the_composite_ops() {
        let dev = device(0).unwrap();
        let (rows, width) = (37, 24);
        let y = tensor2(&dev, &values(rows * width, 1), rows, width).unwrap();
        let r = tensor2(&dev, &values(rows * width, 2), rows, width).unwrap();
        let gamma = crate::device::tensor1(&dev, &values(width, 3));
        let beta = crate::device::tensor1(&dev, &values(width, 4));
        let run = |fused: bool| {
            let apply = |x: Tensor2<TrainTape>| {
                if fused {
                    scale_and_shift(x, &gamma, &beta)
                } else {
                    let shape = *x.shape();
                    let g = gamma
                        .retaped::<TrainTape>()
                        .broadcast_like::<_, Axis<0>>(&shape);
                    let b = beta
                        .retaped::<TrainTape>()
                        .broadcast_like::<_, Axis<0>>(&shape);
                    x * g + b
                }
            };
            let out = apply(apply(y.clone().retaped::<TrainTape>()));
            let values = out.as_vec();
            let grads = (out * r.clone()).sum::<(), _>().backward();
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            (
                bits(values),
                bits(grads.get(&y).as_vec()),
                bits(grads.get(&gamma).as_vec()),
                bits(grads.get(&beta).as_vec()),
            )
        };
        assert_eq!(run(true), run(false));
    }

    #[test]
    fn normalize_rows_matches_the_composite_ops() {
        check(
            |x| normalize_rows(x, 1e-5),
            |x| x.normalize::<Axis<1>>(1e-5),
        );
    }

    /// The interleaved rows of the forward give each row the bits of a plain row-by-row loop
    /// (sums in order from −0.0), for groups of four rows and the rows left over in a task,
    /// including a row of negative zeros.
    #[test]
    fn normalize_rows_computes_the_row_by_row_bits() {
        let dev = device(0).unwrap();
        let (rows, width) = (39, 13);
        let mut x = values(rows * width, 4);
        x[5 * width..6 * width].fill(-0.0);
        let y = normalize_rows(tensor2(&dev, &x, rows, width).unwrap(), 1e-5).as_vec();
        let n = width as f64;
        for (row, out) in x.chunks(width).zip(y.chunks(width)) {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = row
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            let s = 1.0 / (var + 1e-5).sqrt();
            for (&v, &o) in row.iter().zip(out) {
                assert_eq!(o.to_bits(), (((f64::from(v) - mean) * s) as f32).to_bits());
            }
        }
    }

    #[test]
    fn gelu_tanh_matches_the_composite_ops() {
        check(gelu_tanh, |x| x.fast_gelu());
        // Without a tape (no tanh kept for a backward pass) the values are the same.
        let dev = device(0).unwrap();
        let x = tensor2(&dev, &values(37 * 24, 1), 37, 24).unwrap();
        close(
            &gelu_tanh(x.clone()).as_vec(),
            &x.fast_gelu().as_vec(),
            1e-5,
        );
    }

    #[test]
    fn repeat_rows_matches_a_gather() {
        let dev = device(0).unwrap();
        let (rows, width, times) = (5, 7, 3);
        let x = tensor2(&dev, &values(rows * width, 3), rows, width).unwrap();
        let r = tensor2(&dev, &values(rows * times * width, 4), rows * times, width).unwrap();
        let owner: Vec<usize> = (0..rows * times).map(|i| i / times).collect();
        let mut idx: Tensor<(usize,), usize, Dev> = dev.zeros_like(&(rows * times,));
        idx.copy_from(&owner);
        let run = |fused: bool| {
            let xt = x.clone().retaped::<TrainTape>();
            let y = if fused {
                repeat_rows(xt, times)
            } else {
                xt.gather(idx.clone())
            };
            let values = y.as_vec();
            let grads = (y * r.clone()).sum::<(), _>().backward();
            (values, grads.get(&x).as_vec())
        };
        let (y0, g0) = run(false);
        let (y1, g1) = run(true);
        close(&y0, &y1, 0.0 + f32::EPSILON);
        close(&g0, &g1, 1e-5);
    }

    /// `modulate` and `residual` against dfdx's composite ops: values and the gradients of all
    /// inputs, on 700 rows of width 24 (two rayon tasks) where every input is distinct.
    #[test]
    fn modulate_and_residual_match_the_composite_ops() {
        let dev = device(0).unwrap();
        let (rows, width) = (700, 24);
        let input = |seed| tensor2(&dev, &values(rows * width, seed), rows, width).unwrap();
        let (a, b, c, r) = (input(1), input(5), input(6), input(2));
        type Op = dyn Fn(
            Tensor2<TrainTape>,
            Tensor2<TrainTape>,
            Tensor2<TrainTape>,
        ) -> Tensor2<TrainTape>;
        let run = |f: &Op| {
            let t = |x: &Tensor2| x.clone().retaped::<TrainTape>();
            let y = f(t(&a), t(&b), t(&c));
            let values = y.as_vec();
            let grads = (y * r.clone()).sum::<(), _>().backward();
            let g = |x: &Tensor2| grads.get(x).as_vec();
            (values, g(&a), g(&b), g(&c))
        };
        let compare = |fused: &Op, composite: &Op| {
            let (y0, ga0, gb0, gc0) = run(composite);
            let (y1, ga1, gb1, gc1) = run(fused);
            close(&y0, &y1, 1e-5);
            close(&ga0, &ga1, 1e-5);
            close(&gb0, &gb1, 1e-5);
            close(&gc0, &gc1, 1e-5);
        };
        compare(&|h, s, b| modulate(h, s, b, 1), &|h, s, b| {
            h.with_empty_tape() * s + h + b
        });
        compare(&|x, h, g| residual(x, h, Some(g), 1), &|x, h, g| x + h * g);
        // Without a gate the third input takes no part: its gradient stays zero.
        compare(&|x, h, g| residual(x, h, None, 1) + g * 0.0, &|x, h, g| {
            x + h + g * 0.0
        });
        // No tape: the same values.
        close(
            &modulate(a.clone(), b.clone(), c.clone(), 1).as_vec(),
            &run(&|h, s, b| modulate(h, s, b, 1)).0,
            f32::EPSILON,
        );
    }

    /// Per-sample modulation and gate over 7 tokens per sample compute the same bits, values
    /// and every gradient, as copying them to the tokens first (`repeat_rows`) and running the
    /// per-row kernels.
    #[test]
    fn per_sample_modulation_over_tokens_equals_repeating_it() {
        let dev = device(0).unwrap();
        let (samples, tokens, width) = (90, 7, 24);
        let rows = samples * tokens;
        let input = |n: usize, seed| tensor2(&dev, &values(n * width, seed), n, width).unwrap();
        let (h, x, r) = (input(rows, 1), input(rows, 2), input(rows, 3));
        let (s, b) = (input(samples, 5), input(samples, 6));
        let t = |v: &Tensor2| v.clone().retaped::<TrainTape>();
        let run = |fused: bool| {
            let y = if fused {
                let m = modulate(t(&h), t(&s), t(&b), tokens);
                residual(t(&x), m, Some(t(&s)), tokens)
            } else {
                let rep = |v: &Tensor2| repeat_rows(t(v), tokens);
                let m = modulate(t(&h), rep(&s), rep(&b), 1);
                residual(t(&x), m, Some(rep(&s)), 1)
            };
            let values = y.as_vec();
            let grads = (y * r.clone()).sum::<(), _>().backward();
            let g = |v: &Tensor2| grads.get(v).as_vec();
            (values, g(&h), g(&x), g(&s), g(&b))
        };
        assert!(run(true) == run(false));
    }

    /// The power of two built in the mantissa equals the one built from the integer exponent
    /// for every whole number, including those clamped to 0 and +∞.
    #[test]
    fn silu_matches_the_composite_ops() {
        check(silu, |x| {
            let s = x.with_empty_tape().sigmoid();
            x * s
        });
    }
}
