//! The CPU kernel of multi-head attention: `softmax(q_h k_hᵀ · scale) v_h` for every head `h` of
//! every sequence of a batch, read from the joined projections (all heads' queries in one
//! matrix, all keys and values in another), one pass forward and one pass backward, split over
//! rayon's threads by sequence. dfdx composes one head from a batched product (a `gemm` call per
//! sequence: 256 calls of 16 × 32 × 16 at the DiT reference shape), a scale, a softmax of five
//! element-wise ops and a second batched product, each single-threaded and allocating.
//! Sequences are independent, so results do not depend on the thread count.
//!
//! Each head's products run in registers ([`super::small_product`]) on the head's columns in
//! place; only the keys (forward) or values (backward) are copied, transposed, as the right
//! factor of `q kᵀ` and `g vᵀ`. The next sequence's rows are prefetched: the projections were
//! written a whole `(rows, dim)` product earlier, and waiting for them cost more than the
//! arithmetic.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::elementary::exp;
use super::simd::vectorized;
use super::small_product::{prefetch, product, Rows, RowsMut, Strided, Write};
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
    /// Head `h`'s queries (outputs, their gradients) in a sequence's `(tokens, dim)` rows: the
    /// left factor of a product.
    fn query<'a>(&self, h: usize, q: &'a [f32]) -> Strided<'a> {
        Strided {
            values: &q[h * self.width..],
            row: self.dim(),
            col: 1,
        }
    }
    /// Head `h`'s queries (output gradients) as the right factor of a product.
    fn query_right<'a>(&self, h: usize, q: &'a [f32]) -> Rows<'a> {
        Rows {
            values: &q[h * self.width..],
            stride: self.dim(),
        }
    }
    /// Where head `h`'s key (`value = false`) or value columns start in a row of a sequence's
    /// keys and values (keys in the first `dim` columns, values in the next).
    fn key_value_offset(&self, h: usize, value: bool) -> usize {
        (if value { self.dim() } else { 0 }) + h * self.width
    }
    /// Head `h`'s keys in a sequence's keys and values: the right factor of a product.
    fn key<'a>(&self, h: usize, kv: &'a [f32]) -> Rows<'a> {
        Rows {
            values: &kv[self.key_value_offset(h, false)..],
            stride: 2 * self.dim(),
        }
    }
    /// Head `h`'s values in a sequence's keys and values: the right factor of a product.
    fn value<'a>(&self, h: usize, kv: &'a [f32]) -> Rows<'a> {
        Rows {
            values: &kv[self.key_value_offset(h, true)..],
            stride: 2 * self.dim(),
        }
    }
    /// Head `h`'s columns of a sequence's `(tokens, dim)` outputs or query gradients, written.
    fn query_out<'a>(&self, h: usize, q: &'a mut [f32]) -> RowsMut<'a> {
        RowsMut {
            values: &mut q[h * self.width..],
            stride: self.dim(),
        }
    }
    /// Head `h`'s key (`value = false`) or value columns of a sequence's key and value
    /// gradients, written.
    fn key_value_out<'a>(&self, h: usize, value: bool, kv: &'a mut [f32]) -> RowsMut<'a> {
        RowsMut {
            values: &mut kv[self.key_value_offset(h, value)..],
            stride: 2 * self.dim(),
        }
    }
    /// Copies head `h`'s keys (`value = false`) or values of a sequence's keys and values
    /// transposed into the contiguous `(width, keys)` `dst`.
    #[inline(always)]
    fn transposed(&self, h: usize, value: bool, kv: &[f32], dst: &mut [f32]) {
        let offset = self.key_value_offset(h, value);
        let stride = 2 * self.dim();
        for r in 0..self.keys {
            let at = r * stride + offset;
            for (c, &v) in kv[at..at + self.width].iter().enumerate() {
                dst[c * self.keys + r] = v;
            }
        }
    }
}

/// A row-major `(rows, width)` matrix as a factor of a product.
fn rows(values: &[f32], width: usize) -> Strided<'_> {
    Strided {
        values,
        row: width,
        col: 1,
    }
}

/// The transpose of a row-major matrix of `width` columns as the left factor of a product.
fn columns(values: &[f32], width: usize) -> Strided<'_> {
    Strided {
        values,
        row: 1,
        col: width,
    }
}

/// A contiguous row-major matrix of `width` columns as the right factor of a product.
fn right(values: &[f32], width: usize) -> Rows<'_> {
    Rows {
        values,
        stride: width,
    }
}

/// A contiguous row-major matrix of `width` columns, written.
fn out(values: &mut [f32], width: usize) -> RowsMut<'_> {
    RowsMut {
        values,
        stride: width,
    }
}

/// One head's scratch: its keys (forward) or values (backward) transposed, `(width, keys)`, the
/// only operand the products cannot read in place, and the score gradients `(tokens, keys)`.
struct Scratch {
    transposed: Vec<f32>,
    ds: Vec<f32>,
}

impl Scratch {
    fn new(d: Dims) -> Self {
        Scratch {
            transposed: vec![0.0; d.width * d.keys],
            ds: vec![0.0; d.tokens * d.keys],
        }
    }
}

/// Lanes of the row loops: an 8-wide AVX2 vector. The rows are short (16 keys at the DiT
/// reference shape), shorter than the unrolled vector loops the compiler emits for a slice of
/// unknown length, which then ran element by element; fixed chunks of 8 vectorize, and a strict
/// left-to-right sum or maximum would not.
const LANES: usize = 8;

/// `x_i = f(x_i)`, eight lanes at a time.
#[inline(always)]
fn each(x: &mut [f32], f: impl Fn(f32) -> f32) {
    let (chunks, tail) = x.as_chunks_mut::<LANES>();
    for chunk in chunks {
        for v in chunk {
            *v = f(*v);
        }
    }
    for v in tail {
        *v = f(*v);
    }
}

/// `a_i = f(a_i, b_i)`, eight lanes at a time (`a` and `b` of one length).
#[inline(always)]
fn each_with(a: &mut [f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    let (ac, at) = a.as_chunks_mut::<LANES>();
    let (bc, bt) = b.as_chunks::<LANES>();
    for (x, y) in ac.iter_mut().zip(bc) {
        for (x, &y) in x.iter_mut().zip(y) {
            *x = f(*x, y);
        }
    }
    for (x, &y) in at.iter_mut().zip(bt) {
        *x = f(*x, y);
    }
}

/// The largest value of `x` (−∞ when empty; NaNs are skipped), in eight lanes.
#[inline(always)]
fn largest(x: &[f32]) -> f32 {
    let larger = |m: f32, v: f32| if v > m { v } else { m };
    let (chunks, tail) = x.as_chunks::<LANES>();
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = larger(*m, v);
        }
    }
    let tail = tail.iter().fold(f32::NEG_INFINITY, |m, &v| larger(m, v));
    lanes.iter().fold(tail, |m, &v| larger(m, v))
}

/// `Σ a_i · b_i` in eight interleaved partial sums (`a` and `b` of one length).
#[inline(always)]
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let (ac, at) = a.as_chunks::<LANES>();
    let (bc, bt) = b.as_chunks::<LANES>();
    let mut lanes = [0.0f32; LANES];
    for (x, y) in ac.iter().zip(bc) {
        for ((s, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    let tail: f32 = at.iter().zip(bt).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

/// `Σ x_i` in eight interleaved partial sums.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    let (chunks, tail) = x.as_chunks::<LANES>();
    let mut lanes = [0.0f32; LANES];
    for chunk in chunks {
        for (s, &v) in lanes.iter_mut().zip(chunk) {
            *s += v;
        }
    }
    lanes.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// Head `h` of one sequence forward: from its queries `q` and keys and values `kv`, the
/// attention weights `p (tokens, keys)` and the head's columns of the output `o`.
#[inline(always)]
fn forward_head(
    d: Dims,
    h: usize,
    scale: f32,
    (q, kv): (&[f32], &[f32]),
    s: &mut Scratch,
    p: &mut [f32],
    o: &mut [f32],
) {
    let (t, k, w) = (d.tokens, d.keys, d.width);
    d.transposed(h, false, kv, &mut s.transposed);
    product(
        (t, k, w),
        d.query(h, q),
        right(&s.transposed, k),
        out(p, k),
        Write::Set,
    );
    for pi in p.chunks_exact_mut(k.max(1)) {
        each(pi, |x| x * scale);
        let max = largest(pi);
        each(pi, |x| exp(x - max));
        let inv = 1.0 / lane_sum(pi);
        each(pi, |x| x * inv);
    }
    product(
        (t, w, k),
        rows(p, k),
        d.value(h, kv),
        d.query_out(h, o),
        Write::Set,
    );
}

/// Head `h` of one sequence backward: from its queries `q`, keys and values `kv`, forward
/// weights `p` and output gradient `g`, adds the head's gradients to `dq` and `dkv`.
#[inline(always)]
fn backward_head(
    d: Dims,
    h: usize,
    scale: f32,
    (q, kv, p, g): (&[f32], &[f32], &[f32], &[f32]),
    s: &mut Scratch,
    (dq, dkv): (&mut [f32], &mut [f32]),
) {
    let (t, k, w) = (d.tokens, d.keys, d.width);
    // dP = g vᵀ; dS_ij = P_ij (dP_ij − Σ_j' P_ij' dP_ij') · scale.
    d.transposed(h, true, kv, &mut s.transposed);
    product(
        (t, k, w),
        d.query(h, g),
        right(&s.transposed, k),
        out(&mut s.ds, k),
        Write::Set,
    );
    for (dsi, pi) in
        s.ds.chunks_exact_mut(k.max(1))
            .zip(p.chunks_exact(k.max(1)))
    {
        let weighted = lane_dot(pi, dsi);
        each_with(dsi, pi, |x, pij| pij * (x - weighted) * scale);
    }
    // dV = Pᵀ g, dQ = dS k, dK = dSᵀ q.
    product(
        (k, w, t),
        columns(p, k),
        d.query_right(h, g),
        d.key_value_out(h, true, dkv),
        Write::Add,
    );
    product(
        (t, w, k),
        rows(&s.ds, k),
        d.key(h, kv),
        d.query_out(h, dq),
        Write::Add,
    );
    product(
        (k, w, t),
        columns(&s.ds, k),
        d.query_right(h, q),
        d.key_value_out(h, false, dkv),
        Write::Add,
    );
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
                || Scratch::new(d),
                |scratch, (b, (ob, pb))| {
                    let (qb, kvb) = (&qv[b * qs..(b + 1) * qs], &kvv[b * kvs..(b + 1) * kvs]);
                    prefetch(qv.get((b + 1) * qs..(b + 2) * qs).unwrap_or(&[]));
                    prefetch(kvv.get((b + 1) * kvs..(b + 2) * kvs).unwrap_or(&[]));
                    vectorized(
                        #[inline(always)]
                        || {
                            for (h, ph) in pb.chunks_exact_mut(hs.max(1)).enumerate() {
                                forward_head(d, h, scale, (qb, kvb), scratch, ph, ob);
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
            // Each head adds into its own columns of its sequence's rows, straight into the
            // gradient buffers (taken out to hold both, put back after).
            grads.try_alloc_for(&q)?;
            grads.try_alloc_for(&kv)?;
            let mut dq = std::mem::take(&mut **grads.get_or_alloc_mut(&q)?);
            let mut dkv = std::mem::take(&mut **grads.get_or_alloc_mut(&kv)?);
            dq.par_chunks_mut(qs.max(1))
                .zip(dkv.par_chunks_mut(kvs.max(1)))
                .enumerate()
                .for_each_init(
                    || Scratch::new(d),
                    |scratch, (b, (dqb, dkvb))| {
                        let (qb, kvb) = (&qv[b * qs..(b + 1) * qs], &kvv[b * kvs..(b + 1) * kvs]);
                        let (pb, gb) = (&p[b * ps..(b + 1) * ps], &g[b * qs..(b + 1) * qs]);
                        prefetch(qv.get((b + 1) * qs..(b + 2) * qs).unwrap_or(&[]));
                        prefetch(kvv.get((b + 1) * kvs..(b + 2) * kvs).unwrap_or(&[]));
                        prefetch(g.get((b + 1) * qs..(b + 2) * qs).unwrap_or(&[]));
                        vectorized(
                            #[inline(always)]
                            || {
                                for (h, ph) in pb.chunks_exact(hs.max(1)).enumerate() {
                                    let inputs = (qb, kvb, ph, gb);
                                    backward_head(d, h, scale, inputs, scratch, (dqb, dkvb));
                                }
                            },
                        )
                    },
                );
            **grads.get_or_alloc_mut(&q)? = dq;
            **grads.get_or_alloc_mut(&kv)? = dkv;
            Ok(())
        });
    }
    out.put_tape(tape)
}
