//! The CPU kernel of [`super::dropout`]: one pass forward and one backward, split over rayon's
//! threads, with the mask recomputed in the backward pass from a counter-based hash of the
//! seed and the element's index instead of drawn from a sequential generator. dfdx's kernel
//! draws a ChaCha `u64` and a Bernoulli sample per element, twice (forward and backward), on
//! one thread, and divides every kept value: 5.5 % of the README job at one thread.
//!
//! The mask depends only on the seed and the element's position, so it is the same at any
//! thread count.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::rowwise_cpu::output_and_input_gradients;
use super::simd::vectorized_with_64_bit_products;
use crate::device::{host_values, Dev, Taped, Tensor2};

/// Elements handed to one rayon task.
const ELEMENTS_PER_TASK: usize = 1 << 14;

/// 64 random bits for counter `index` of stream `seed`: SplitMix64's output function (its
/// increment and finalizer) applied to `seed + (index + 1) · γ`, the value SplitMix64 seeded
/// with `seed` returns as its `index`-th draw.
#[inline(always)]
fn mixed(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The mask of one dropout call: element `e` is dropped when the `e % 2`-th 32-bit half of
/// `mixed(seed, e / 2)` is below `threshold = round(p · 2³²)`, i.e. with probability `p`
/// rounded to a multiple of 2⁻³²; kept elements are scaled by `1 / (1 − p)`.
#[derive(Clone, Copy)]
struct Mask {
    seed: u64,
    threshold: u64,
    scale: f32,
}

impl Mask {
    fn new(p: f32, seed: u64) -> Self {
        Mask {
            seed,
            threshold: (f64::from(p) * 4_294_967_296.0).round() as u64,
            scale: 1.0 / (1.0 - p),
        }
    }

    /// `out[k] (+)= mask(start + k) · values[k]` over one task's elements (`start` even).
    #[inline(always)]
    fn apply<const ACCUMULATE: bool>(&self, start: usize, values: &[f32], out: &mut [f32]) {
        let first_pair = (start / 2) as u64;
        let (threshold, scale) = (self.threshold, self.scale);
        let keep = |half: u64, v: f32| if half >= threshold { v * scale } else { 0.0 };
        let mut pairs = out.chunks_exact_mut(2).zip(values.chunks_exact(2));
        for (q, (o, v)) in (&mut pairs).enumerate() {
            let h = mixed(self.seed, first_pair + q as u64);
            let (a, b) = (keep(h & 0xFFFF_FFFF, v[0]), keep(h >> 32, v[1]));
            if ACCUMULATE {
                o[0] += a;
                o[1] += b;
            } else {
                o[0] = a;
                o[1] = b;
            }
        }
        if let (Some(o), Some(&v)) = (
            out.chunks_exact_mut(2).into_remainder().first_mut(),
            values.chunks_exact(2).remainder().first(),
        ) {
            let h = mixed(self.seed, first_pair + (values.len() / 2) as u64);
            let a = keep(h & 0xFFFF_FFFF, v);
            if ACCUMULATE {
                *o += a;
            } else {
                *o = a;
            }
        }
    }

    /// [`Mask::apply`] over all of `values`, in parallel.
    fn apply_all<const ACCUMULATE: bool>(&self, values: &[f32], out: &mut [f32]) {
        out.par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(values.par_chunks(ELEMENTS_PER_TASK))
            .enumerate()
            .for_each(|(task, (o, v))| {
                vectorized_with_64_bit_products(
                    #[inline(always)]
                    || self.apply::<ACCUMULATE>(task * ELEMENTS_PER_TASK, v, o),
                )
            });
    }
}

/// Each element of `x` zeroed with probability `p` (in `[0, 1)`), the others scaled by
/// `1 / (1 − p)`, by the mask of `seed`. Backward: the gradient through the same mask.
pub(crate) fn dropout<T: Taped>(x: Tensor2<T>, p: f32, seed: u64) -> Tensor2<T> {
    let shape = *x.shape();
    let dev: Dev = x.device().clone();
    let mask = Mask::new(p, seed);
    let (x, mut tape) = x.split_tape();
    let xv = host_values(&x);
    let mut y = vec![0.0f32; xv.len()];
    mask.apply_all::<false>(&xv, &mut y);
    drop(xv);
    let out = dev.tensor_from_vec(y, shape);
    if T::OWNS_TAPE {
        let result = out.clone();
        tape.add_backward_op(move |grads| {
            let (g, gx) = output_and_input_gradients(grads, &result, &x)?;
            mask.apply_all::<true>(&g, gx);
            Ok(())
        });
    }
    out.put_tape(tape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{device, tensor2, TrainTape};

    /// SplitMix64's published first outputs for seed 1234567 (the reference generator's
    /// `next()` sequence).
    #[test]
    fn the_hash_is_splitmix64() {
        let expected: [u64; 3] = [
            6_457_827_717_110_365_317,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
        ];
        for (i, &e) in expected.iter().enumerate() {
            assert_eq!(mixed(1_234_567, i as u64), e);
        }
    }

    /// The kept share is `1 − p` within sampling error, kept values are scaled, the gradient
    /// goes through the same elements with the same scale, and another seed gives another
    /// mask.
    #[test]
    fn drops_a_share_p_and_passes_gradients_through_the_kept_elements() {
        let dev = device(0).unwrap();
        let (rows, cols) = (300, 333);
        let n = rows * cols;
        let x = tensor2(&dev, &vec![2.0; n], rows, cols).unwrap();
        for p in [0.1f32, 0.5] {
            let y = dropout(x.clone().retaped::<TrainTape>(), p, 42);
            let values = y.as_vec();
            let grads = y.sum::<(), _>().backward();
            let gx = grads.get(&x).as_vec();
            let kept = values.iter().filter(|&&v| v != 0.0).count();
            let share = kept as f64 / n as f64;
            let sd = (f64::from(p) * (1.0 - f64::from(p)) / n as f64).sqrt();
            assert!(
                (share - (1.0 - f64::from(p))).abs() < 5.0 * sd,
                "p={p}: kept {share}"
            );
            let scale = 1.0 / (1.0 - p);
            for (&v, &g) in values.iter().zip(&gx) {
                if v == 0.0 {
                    assert_eq!(g, 0.0);
                } else {
                    assert_eq!(v, 2.0 * scale);
                    assert_eq!(g, scale);
                }
            }
            let other = dropout(x.clone(), p, 43).as_vec();
            assert_ne!(other, values);
            assert_eq!(dropout(x.clone(), p, 42).as_vec(), values);
        }
    }

    /// The mask is the same whether the elements are split over one thread or several.
    #[test]
    fn the_mask_does_not_depend_on_the_thread_count() {
        let dev = device(0).unwrap();
        let n = 3 * ELEMENTS_PER_TASK + 17;
        let x = tensor2(&dev, &crate::testing::spread_values(n, 3, 1.0), 1, n).unwrap();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| dropout(x.clone(), 0.3, 7).as_vec())
        };
        assert_eq!(run(1), run(2));
    }

    /// The dispatched (AVX-512 or AVX2) and the baseline compilations give the same mask, and
    /// an odd length ends with a whole element.
    #[test]
    fn every_instruction_set_gives_the_same_mask() {
        let n = 2 * ELEMENTS_PER_TASK + 5;
        let values = crate::testing::spread_values(n, 5, 3.0);
        let mask = Mask::new(0.25, 1234);
        let mut dispatched = vec![0.0; n];
        mask.apply_all::<false>(&values, &mut dispatched);
        let mut baseline = vec![0.0; n];
        for (k, (o, v)) in baseline
            .chunks_mut(ELEMENTS_PER_TASK)
            .zip(values.chunks(ELEMENTS_PER_TASK))
            .enumerate()
        {
            mask.apply::<false>(k * ELEMENTS_PER_TASK, v, o);
        }
        assert_eq!(dispatched, baseline);
        assert!(dispatched[n - 1] == 0.0 || dispatched[n - 1] == values[n - 1] * mask.scale);
    }

    /// Neighbouring elements (the two halves of one hash) and neighbouring counters are not
    /// correlated: each of the four keep/drop combinations of an element pair has its expected
    /// frequency.
    #[test]
    fn pairs_of_elements_are_independent() {
        let mask = Mask::new(0.5, 99);
        let n = 200_000;
        let mut out = vec![0.0; n];
        mask.apply_all::<false>(&vec![1.0; n], &mut out);
        let mut counts = [0usize; 4];
        for pair in out.windows(2) {
            counts[usize::from(pair[0] != 0.0) * 2 + usize::from(pair[1] != 0.0)] += 1;
        }
        let expected = (n - 1) as f64 / 4.0;
        for c in counts {
            assert!(
                (c as f64 - expected).abs() < 5.0 * (expected * 0.75).sqrt(),
                "{counts:?}"
            );
        }
    }
}
