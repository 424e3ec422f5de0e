//! The CPU kernel of multi-head attention: `softmax(q_h k_hᵀ · scale) v_h` for every head `h` of
//! every sequence of a batch, read from the joined projections (all heads' queries in one
//! matrix, all keys and values in another), one pass forward and one pass backward, split over
//! rayon's threads by sequence. dfdx composes one head from a batched product (a `gemm` call per
//! sequence: 256 calls of 16 × 32 × 16 at the DiT reference shape), a scale, a softmax of five
//! element-wise ops and a second batched product, each single-threaded and allocating.
//! Sequences are independent, so results do not depend on the thread count.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::rowwise_cpu::exp;
use super::simd::vectorized;
use crate::device::{host_values, Dev, Taped, Tensor2};

/// Shapes of one call: `tokens` queries and `keys` keys/values per sequence, `heads` heads of
/// `width` values each. Per sequence, queries (and outputs) are `(tokens, heads · width)` with
/// head `h` in columns `h · width ..`, keys and values `(keys, 2 · heads · width)`: all heads'
/// keys, then all heads' values.
#[derive(Clone, Copy)]
struct Dims {
    tokens: usize,
    keys: usize,
    width: usize,
    heads: usize,
}

impl Dims {
    /// Width of all heads together.
    fn dim(&self) -> usize {
        self.heads * self.width
    }
    /// Head `h`'s columns of a sequence's queries (outputs, their gradients).
    fn query(&self, h: usize) -> Columns {
        Columns {
            rows: self.tokens,
            stride: self.dim(),
            offset: h * self.width,
            width: self.width,
        }
    }
    /// Head `h`'s keys in a sequence's keys and values.
    fn key(&self, h: usize) -> Columns {
        Columns {
            rows: self.keys,
            stride: 2 * self.dim(),
            offset: h * self.width,
            width: self.width,
        }
    }
    /// Head `h`'s values in a sequence's keys and values.
    fn value(&self, h: usize) -> Columns {
        Columns {
            offset: self.dim() + h * self.width,
            ..self.key(h)
        }
    }
}

/// One head's columns of a row-major matrix: `rows` rows of `width` values starting at column
/// `offset` of rows `stride` values apart.
#[derive(Clone, Copy)]
struct Columns {
    rows: usize,
    stride: usize,
    offset: usize,
    width: usize,
}

impl Columns {
    /// Copies the head's columns of `src` into the contiguous `(rows, width)` `dst`.
    fn gather(&self, src: &[f32], dst: &mut [f32]) {
        for (r, d) in dst.chunks_exact_mut(self.width).take(self.rows).enumerate() {
            let at = r * self.stride + self.offset;
            d.copy_from_slice(&src[at..at + self.width]);
        }
    }
    /// Copies the contiguous `(rows, width)` `src` into the head's columns of `dst`.
    fn scatter(&self, src: &[f32], dst: &mut [f32]) {
        for (r, s) in src.chunks_exact(self.width).take(self.rows).enumerate() {
            let at = r * self.stride + self.offset;
            dst[at..at + self.width].copy_from_slice(s);
        }
    }
}

/// One head of one sequence, contiguous: its strided columns in the joined matrices map to the
/// same few cache sets (rows 512 B–1 KiB apart), which made the kernel half again as slow as
/// on these copies.
#[derive(Default)]
struct Head {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// The output forward, its gradient backward.
    o: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    /// One query's score gradients.
    ds: Vec<f32>,
}

impl Head {
    fn new(d: Dims) -> Self {
        let (qs, ks) = (d.tokens * d.width, d.keys * d.width);
        Head {
            q: vec![0.0; qs],
            k: vec![0.0; ks],
            v: vec![0.0; ks],
            o: vec![0.0; qs],
            dq: vec![0.0; qs],
            dk: vec![0.0; ks],
            dv: vec![0.0; ks],
            ds: vec![0.0; d.keys],
        }
    }
    /// Copies head `h` of one sequence's queries `q` and keys/values `kv`.
    fn load(&mut self, d: Dims, h: usize, q: &[f32], kv: &[f32]) {
        d.query(h).gather(q, &mut self.q);
        d.key(h).gather(kv, &mut self.k);
        d.value(h).gather(kv, &mut self.v);
    }
}

/// `a · b` in eight interleaved partial sums (a strict left-to-right sum does not vectorize).
#[inline(always)]
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
#[inline(always)]
fn axpy(o: &mut [f32], w: f32, v: &[f32]) {
    for (o, &v) in o.iter_mut().zip(v) {
        *o += w * v;
    }
}

/// One head of one sequence forward (`s.q`, `s.k`, `s.v` loaded): the attention weights `p
/// (tokens, keys)` and the output `s.o (tokens, width)`.
#[inline(always)]
fn forward_head(d: Dims, scale: f32, s: &mut Head, p: &mut [f32]) {
    let w = d.width;
    s.o.fill(0.0);
    for i in 0..d.tokens {
        let qi = &s.q[i * w..(i + 1) * w];
        let pi = &mut p[i * d.keys..(i + 1) * d.keys];
        for (j, x) in pi.iter_mut().enumerate() {
            *x = scale * dot(qi, &s.k[j * w..(j + 1) * w]);
        }
        let max = pi.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for x in pi.iter_mut() {
            *x = exp(*x - max);
        }
        let inv = 1.0 / pi.iter().sum::<f32>();
        let oi = &mut s.o[i * w..(i + 1) * w];
        for (j, x) in pi.iter_mut().enumerate() {
            *x *= inv;
            axpy(oi, *x, &s.v[j * w..(j + 1) * w]);
        }
    }
}

/// One head of one sequence backward (`s.q`, `s.k`, `s.v` and the output gradient `s.o`
/// loaded, `p` its forward weights): the gradients `s.dq`, `s.dk`, `s.dv`.
#[inline(always)]
fn backward_head(d: Dims, scale: f32, s: &mut Head, p: &[f32]) {
    let w = d.width;
    for buffer in [&mut s.dq, &mut s.dk, &mut s.dv] {
        buffer.fill(0.0);
    }
    for i in 0..d.tokens {
        let gi = &s.o[i * w..(i + 1) * w];
        let pi = &p[i * d.keys..(i + 1) * d.keys];
        // dP_ij = g_i · v_j; dS_ij = P_ij (dP_ij − Σ_j' P_ij' dP_ij').
        let mut weighted = 0.0f32;
        for (j, x) in s.ds.iter_mut().enumerate() {
            *x = dot(gi, &s.v[j * w..(j + 1) * w]);
            weighted += pi[j] * *x;
        }
        for (x, &pij) in s.ds.iter_mut().zip(pi) {
            *x = pij * (*x - weighted) * scale;
        }
        let qi = &s.q[i * w..(i + 1) * w];
        let dqi = &mut s.dq[i * w..(i + 1) * w];
        for (j, (&pij, &dsj)) in pi.iter().zip(&s.ds).enumerate() {
            let rows = j * w..(j + 1) * w;
            axpy(&mut s.dv[rows.clone()], pij, gi);
            axpy(dqi, dsj, &s.k[rows.clone()]);
            axpy(&mut s.dk[rows], dsj, qi);
        }
    }
}

/// Multi-head `softmax(q_h k_hᵀ · scale) v_h` per sequence: `q (sequences · tokens, heads ·
/// width)` with head `h` in columns `h · width ..`, `kv (sequences · keys, 2 · heads · width)`
/// with all heads' keys before all heads' values; result `(sequences · tokens, heads · width)`,
/// head `h` in its columns. Backward adds the gradients of `q` and `kv`. The caller checks that
/// the row counts divide by `sequences` and the widths by `heads`.
pub(crate) fn attention_heads<T: Taped>(
    q: Tensor2<T>,
    kv: Tensor2<T>,
    heads: usize,
    sequences: usize,
    scale: f32,
) -> Tensor2<T> {
    let (rows, dim) = *q.shape();
    let d = Dims {
        tokens: rows / sequences.max(1),
        keys: kv.shape().0 / sequences.max(1),
        width: dim / heads.max(1),
        heads,
    };
    let dev: Dev = q.device().clone();
    let (q, tq) = q.split_tape();
    let (kv, tkv) = kv.split_tape();
    let mut tape = tq.merge(tkv);
    // Per sequence: queries (outputs), keys and values, attention weights of all heads, and
    // attention weights of one head.
    let (qs, kvs, hs) = (d.tokens * dim, 2 * d.keys * dim, d.tokens * d.keys);
    let ps = heads * hs;
    let mut o = vec![0.0f32; rows * dim];
    let mut p = vec![0.0f32; sequences * ps];
    {
        let (qv, kvv) = (host_values(&q), host_values(&kv));
        o.par_chunks_mut(qs.max(1))
            .zip(p.par_chunks_mut(ps.max(1)))
            .enumerate()
            .for_each_init(
                || Head::new(d),
                |head, (b, (ob, pb))| {
                    let (qb, kvb) = (&qv[b * qs..(b + 1) * qs], &kvv[b * kvs..(b + 1) * kvs]);
                    vectorized(
                        #[inline(always)]
                        || {
                            for (h, ph) in pb.chunks_exact_mut(hs.max(1)).enumerate() {
                                head.load(d, h, qb, kvb);
                                forward_head(d, scale, head, ph);
                                d.query(h).scatter(&head.o, ob);
                            }
                        },
                    )
                },
            );
    }
    let out = dev.tensor_from_vec(o, (rows, dim));
    if T::OWNS_TAPE {
        let result = out.clone();
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&result)?;
            let g = std::mem::take(&mut **grads.get_or_alloc_mut(&result)?);
            let (qv, kvv) = (host_values(&q), host_values(&kv));
            // Every value is written once, by its head.
            let mut dq = vec![0.0f32; qv.len()];
            let mut dkv = vec![0.0f32; kvv.len()];
            dq.par_chunks_mut(qs.max(1))
                .zip(dkv.par_chunks_mut(kvs.max(1)))
                .enumerate()
                .for_each_init(
                    || Head::new(d),
                    |head, (b, (dqb, dkvb))| {
                        let (qb, kvb) = (&qv[b * qs..(b + 1) * qs], &kvv[b * kvs..(b + 1) * kvs]);
                        let (pb, gb) = (&p[b * ps..(b + 1) * ps], &g[b * qs..(b + 1) * qs]);
                        vectorized(
                            #[inline(always)]
                            || {
                                for (h, ph) in pb.chunks_exact(hs.max(1)).enumerate() {
                                    head.load(d, h, qb, kvb);
                                    d.query(h).gather(gb, &mut head.o);
                                    backward_head(d, scale, head, ph);
                                    d.query(h).scatter(&head.dq, dqb);
                                    d.key(h).scatter(&head.dk, dkvb);
                                    d.value(h).scatter(&head.dv, dkvb);
                                }
                            },
                        )
                    },
                );
            for (t, dt) in [(&q, dq), (&kv, dkv)] {
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
