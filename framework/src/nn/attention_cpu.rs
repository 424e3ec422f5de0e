//! The CPU kernel of one attention head: `softmax(q kᵀ · scale) v` for every sequence of a batch,
//! one pass forward and one pass backward, split over rayon's threads by sequence. dfdx composes
//! it from a batched product (a `gemm` call per sequence: 256 calls of 16 × 32 × 16 at the DiT
//! reference shape), a scale, a softmax of five element-wise ops and a second batched product,
//! each single-threaded and allocating. Sequences are independent, so results do not depend on
//! the thread count.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::rowwise_cpu::exp;
use crate::device::{host_values, Dev, Taped, Tensor2};

/// Shapes of one call: `sequences` sequences of `tokens` queries and `keys` keys/values, each
/// row `width` wide.
#[derive(Clone, Copy)]
struct Dims {
    tokens: usize,
    keys: usize,
    width: usize,
}

/// `a · b` in eight interleaved partial sums (a strict left-to-right sum does not vectorize).
/// One sequence's queries `(tokens, width)`, keys and values `(keys, width)`.
struct Sequence<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
}

impl Dims {
    /// Sequence `b`'s rows of the batch-wide `q`, `k`, `v`.
    fn sequence<'a>(&self, b: usize, q: &'a [f32], k: &'a [f32], v: &'a [f32]) -> Sequence<'a> {
        let (qs, ks) = (self.tokens * self.width, self.keys * self.width);
        Sequence {
            q: &q[b * qs..(b + 1) * qs],
            k: &k[b * ks..(b + 1) * ks],
            v: &v[b * ks..(b + 1) * ks],
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `o += w · v` over a row.
fn axpy(o: &mut [f32], w: f32, v: &[f32]) {
    for (o, &v) in o.iter_mut().zip(v) {
        *o += w * v;
    }
}

/// One sequence forward: the attention weights `p (tokens, keys)` and the output `o (tokens,
/// width)`, added into `o` (zeroed by the caller).
fn forward_sequence(d: Dims, scale: f32, s: Sequence<'_>, p: &mut [f32], o: &mut [f32]) {
    let Sequence { q, k, v } = s;
    for i in 0..d.tokens {
        let qi = &q[i * d.width..(i + 1) * d.width];
        let pi = &mut p[i * d.keys..(i + 1) * d.keys];
        for (j, s) in pi.iter_mut().enumerate() {
            *s = scale * dot(qi, &k[j * d.width..(j + 1) * d.width]);
        }
        let max = pi.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for s in pi.iter_mut() {
            *s = exp(*s - max);
        }
        let inv = 1.0 / pi.iter().sum::<f32>();
        let oi = &mut o[i * d.width..(i + 1) * d.width];
        for (j, s) in pi.iter_mut().enumerate() {
            *s *= inv;
            axpy(oi, *s, &v[j * d.width..(j + 1) * d.width]);
        }
    }
}

/// One sequence backward from the output gradient `g`: adds into `dq`, `dk`, `dv` (zeroed by
/// the caller); `ds (keys)` is scratch space.
fn backward_sequence(
    d: Dims,
    scale: f32,
    s: Sequence<'_>,
    (p, g): (&[f32], &[f32]),
    ds: &mut [f32],
    (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
) {
    let Sequence { q, k, v } = s;
    for i in 0..d.tokens {
        let gi = &g[i * d.width..(i + 1) * d.width];
        let pi = &p[i * d.keys..(i + 1) * d.keys];
        // dP_ij = g_i · v_j; dS_ij = P_ij (dP_ij − Σ_j' P_ij' dP_ij').
        let mut weighted = 0.0f32;
        for (j, s) in ds.iter_mut().enumerate() {
            *s = dot(gi, &v[j * d.width..(j + 1) * d.width]);
            weighted += pi[j] * *s;
        }
        for (s, &pij) in ds.iter_mut().zip(pi) {
            *s = pij * (*s - weighted) * scale;
        }
        let qi = &q[i * d.width..(i + 1) * d.width];
        let dqi = &mut dq[i * d.width..(i + 1) * d.width];
        for j in 0..d.keys {
            let rows = j * d.width..(j + 1) * d.width;
            axpy(&mut dv[rows.clone()], pi[j], gi);
            axpy(dqi, ds[j], &k[rows.clone()]);
            axpy(&mut dk[rows], ds[j], qi);
        }
    }
}

/// `softmax(q kᵀ · scale) v` per sequence: `q (sequences · tokens, width)`, `k` and `v`
/// `(sequences · keys, width)`, result `(sequences · tokens, width)`. Backward adds the gradients
/// of `q`, `k` and `v`. The caller checks that the row counts divide by `sequences`.
pub(crate) fn attention_head<T: Taped>(
    q: Tensor2<T>,
    k: Tensor2<T>,
    v: Tensor2<T>,
    sequences: usize,
    scale: f32,
) -> Tensor2<T> {
    let (rows, width) = *q.shape();
    let d = Dims {
        tokens: rows / sequences.max(1),
        keys: k.shape().0 / sequences.max(1),
        width,
    };
    let dev: Dev = q.device().clone();
    let (q, tq) = q.split_tape();
    let (k, tk) = k.split_tape();
    let (v, tv) = v.split_tape();
    let mut tape = tq.merge(tk).merge(tv);
    let mut o = vec![0.0f32; rows * width];
    let mut p = vec![0.0f32; sequences * d.tokens * d.keys];
    {
        let (qv, kv, vv) = (host_values(&q), host_values(&k), host_values(&v));
        let qs = d.tokens * width;
        o.par_chunks_mut(qs.max(1))
            .zip(p.par_chunks_mut((d.tokens * d.keys).max(1)))
            .enumerate()
            .for_each(|(b, (ob, pb))| {
                forward_sequence(d, scale, d.sequence(b, &qv, &kv, &vv), pb, ob);
            });
    }
    let out = dev.tensor_from_vec(o, (rows, width));
    if T::OWNS_TAPE {
        let result = out.clone();
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&result)?;
            let g = std::mem::take(&mut **grads.get_or_alloc_mut(&result)?);
            let (qv, kv, vv) = (host_values(&q), host_values(&k), host_values(&v));
            let (qs, ks) = (d.tokens * width, d.keys * width);
            let mut dq = vec![0.0f32; qv.len()];
            let mut dk = vec![0.0f32; kv.len()];
            let mut dv = vec![0.0f32; vv.len()];
            dq.par_chunks_mut(qs.max(1))
                .zip(dk.par_chunks_mut(ks.max(1)))
                .zip(dv.par_chunks_mut(ks.max(1)))
                .enumerate()
                .for_each_init(
                    || vec![0.0f32; d.keys],
                    |ds, (b, ((dqb, dkb), dvb))| {
                        let pr = b * d.tokens * d.keys..(b + 1) * d.tokens * d.keys;
                        backward_sequence(
                            d,
                            scale,
                            d.sequence(b, &qv, &kv, &vv),
                            (&p[pr], &g[b * qs..(b + 1) * qs]),
                            ds,
                            (dqb, dkb, dvb),
                        );
                    },
                );
            for (t, dt) in [(&q, dq), (&k, dk), (&v, dv)] {
                let acc = grads.get_or_alloc_mut(t)?;
                acc.par_iter_mut()
                    .zip(dt.par_iter())
                    .for_each(|(a, b)| *a += b);
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{device, tensor2, TrainTape};

    /// Values and the gradients of `q`, `k` and `v` equal dfdx's composition (batched products
    /// and softmax), also with more keys than queries (cross-attention).
    #[test]
    fn matches_the_composite_ops_forward_and_backward() {
        let dev = device(0).unwrap();
        for (sequences, tokens, keys, width) in [(3, 4, 4, 5), (2, 3, 6, 4), (5, 16, 16, 32)] {
            let matrix = |rows: usize, seed: u32| {
                let values = crate::testing::spread_values(rows * width, seed, 1.5);
                tensor2(&dev, &values, rows, width).unwrap()
            };
            let (q, k) = (matrix(sequences * tokens, 1), matrix(sequences * keys, 2));
            let (v, r) = (matrix(sequences * keys, 3), matrix(sequences * tokens, 4));
            let scale = 1.0 / (width as f32).sqrt();
            let run = |fused: bool| {
                let (qt, kt, vt) = (
                    q.retaped::<TrainTape>(),
                    k.clone().retaped::<TrainTape>(),
                    v.clone().retaped::<TrainTape>(),
                );
                let y = if fused {
                    attention_head(qt, kt, vt, sequences, scale)
                } else {
                    let qb = qt.reshape_like(&(sequences, tokens, width));
                    let kb = kt.reshape_like(&(sequences, keys, width));
                    let vb = vt.reshape_like(&(sequences, keys, width));
                    let w =
                        (qb.matmul(kb.permute::<_, Axes3<0, 2, 1>>()) * scale).softmax::<Axis<2>>();
                    w.matmul(vb).reshape_like(&(sequences * tokens, width))
                };
                let y_values = y.as_vec();
                let grads = (y * r.clone()).sum::<(), _>().backward();
                (
                    y_values,
                    grads.get(&q).as_vec(),
                    grads.get(&k).as_vec(),
                    grads.get(&v).as_vec(),
                )
            };
            let (y0, gq0, gk0, gv0) = run(false);
            let (y1, gq1, gk1, gv1) = run(true);
            let close = |a: &[f32], b: &[f32], what: &str| {
                assert_eq!(a.len(), b.len());
                for (u, w) in a.iter().zip(b) {
                    assert!(
                        (u - w).abs() <= 1e-5 * (1.0 + u.abs()),
                        "{what}: {u} vs {w}"
                    );
                }
            };
            close(&y0, &y1, "output");
            close(&gq0, &gq1, "dq");
            close(&gk0, &gk1, "dk");
            close(&gv0, &gv1, "dv");
        }
    }
}
