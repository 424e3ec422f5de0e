//! Weight gradients of [`super::Linear`] layers left for after a data-parallel step's backward
//! passes (decision 0020).
//!
//! While a training shard runs its backward pass inside [`collect_weight_products`], the CPU
//! linear kernel hands over its weight-gradient product `xᵀ g` (the layer's input and its output
//! gradient) instead of computing it. Once every shard is done, [`sum_weight_products`] computes
//! each weight's gradient in one buffer from the shards' products in shard order: the first
//! product writes it, the others add to it while it is still in cache. This saves the per-shard
//! zero-filled gradient buffers, their cold reads and the pass that summed them. Each product is
//! the same `gemm` call as before; for shards of at most 512 rows its sum is one block of
//! `gemm`'s, added to the destination once, so a weight used once per shard gets exactly the bits
//! of the per-shard gradients summed in shard order. Longer shards (a DiT's token rows) add
//! their blocks onto the running sum: other bits, in an order as fixed, so results still do not
//! depend on the thread count.

use std::cell::RefCell;

use dfdx::prelude::*;
use dfdx::tensor::UniqueId;

use super::sparse_rows::SparseRows;
use crate::device::{host_values, Tensor1, Tensor2};

/// One weight-gradient product `xᵀ g` of a linear layer: `x (rows, inputs)` its input (with its
/// non-zeros when the forward pass found it sparse), `g (rows, outputs)` the gradient of its
/// output.
pub(crate) struct WeightProduct {
    x: Tensor2,
    sparse: Option<SparseRows>,
    g: Vec<f32>,
    outputs: usize,
}

impl WeightProduct {
    /// The product of `x (rows, inputs)` and `g` (row-major `(rows, outputs)`); `sparse`, when
    /// given, holds `x`'s non-zeros ([`SparseRows::of`]) and the product runs over them.
    pub(crate) fn new(x: Tensor2, sparse: Option<SparseRows>, g: Vec<f32>, outputs: usize) -> Self {
        Self {
            x,
            sparse,
            g,
            outputs,
        }
    }

    /// `(rows, inputs, outputs)`.
    fn dims(&self) -> (usize, usize, usize) {
        let (rows, inputs) = *self.x.shape();
        (rows, inputs, self.outputs)
    }

    /// `xᵀ g` in a new row-major `(inputs, outputs)` buffer (not zero-filled first, except for
    /// the products over non-zeros, which add into it).
    pub(crate) fn new_gradient(&self) -> Vec<f32> {
        if self.sparse.is_some() {
            let (_, inputs, outputs) = self.dims();
            let mut dst = vec![0.0; inputs * outputs];
            self.apply(&mut dst, true);
            return dst;
        }
        super::linear_cpu::new_weight_gradient(&host_values(&self.x), &self.g, self.dims())
    }

    /// Writes (or, when `accumulate`, adds) `xᵀ g` into `dst` (row-major `(inputs, outputs)`).
    pub(crate) fn apply(&self, dst: &mut [f32], accumulate: bool) {
        if let Some(sparse) = &self.sparse {
            sparse.transposed_product(&self.g, self.outputs, dst, accumulate);
            return;
        }
        super::linear_cpu::weight_gradient(
            dst,
            accumulate,
            &host_values(&self.x),
            &self.g,
            self.dims(),
        );
    }
}

/// The products deferred on this thread: `None` outside [`collect_weight_products`].
type Collected = Option<Vec<(UniqueId, WeightProduct)>>;

thread_local! {
    static COLLECTED: RefCell<Collected> = const { RefCell::new(None) };
}

/// Runs `f` while this thread collects the weight-gradient products of the linear layers whose
/// backward passes run in it; returns `f`'s result and the products (with the weight each
/// belongs to) in the order they were deferred.
pub(crate) fn collect_weight_products<R>(
    f: impl FnOnce() -> R,
) -> (R, Vec<(UniqueId, WeightProduct)>) {
    let (result, products) = super::thread_scope::with_replaced(&COLLECTED, Some(Vec::new()), f);
    (result, products.unwrap_or_default())
}

/// Hands `product` (of the weight `weight`) to this thread's collection; gives it back when
/// nothing collects, so that the caller computes it at once.
pub(crate) fn defer_weight_product(
    weight: UniqueId,
    product: WeightProduct,
) -> Option<WeightProduct> {
    COLLECTED.with(|c| match c.borrow_mut().as_mut() {
        Some(products) => {
            products.push((weight, product));
            None
        }
        None => Some(product),
    })
}

/// One weight's gradient from its products (in shard order), as a flat `(inputs · outputs,)`
/// vector; `None` for no products.
pub(crate) fn sum_weight_products(products: &[WeightProduct]) -> Option<Tensor1> {
    let (first, rest) = products.split_first()?;
    let (_, inputs, outputs) = first.dims();
    let mut dst = first.new_gradient();
    for p in rest {
        p.apply(&mut dst, true);
    }
    Some(first.x.device().tensor_from_vec(dst, (inputs * outputs,)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{device, tensor1, tensor2, Dev, TrainTape};
    use crate::nn::{ParamMut, ParamRef, Parameters};
    use crate::optim::NamedGradients;
    use crate::testing::spread_values;

    /// A linear layer applied once, or twice in a row when `twice` is set; its weight also
    /// enters the loss outside [`super::super::linear_cpu`] (through dfdx's own matmul) when
    /// `shared` is set: its gradient then has a part that dfdx sums besides the deferred products.
    struct Layer {
        w: Tensor2,
        b: Tensor1,
        twice: bool,
        shared: bool,
    }

    impl Parameters for Layer {
        fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ParamRef<'_>)) {
            f(&format!("{prefix}w"), ParamRef::Matrix(&self.w));
            f(&format!("{prefix}b"), ParamRef::Vector(&self.b));
        }
        fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
            f(&format!("{prefix}w"), ParamMut::Matrix(&mut self.w));
            f(&format!("{prefix}b"), ParamMut::Vector(&mut self.b));
        }
    }

    const INPUTS: usize = 24;
    const OUTPUTS: usize = 24;

    impl Layer {
        fn new(dev: &Dev, twice: bool, shared: bool) -> Self {
            Self {
                w: tensor2(
                    dev,
                    &spread_values(INPUTS * OUTPUTS, 1, 0.3),
                    INPUTS,
                    OUTPUTS,
                )
                .unwrap(),
                b: tensor1(dev, &spread_values(OUTPUTS, 2, 0.1)),
                twice,
                shared,
            }
        }

        /// `Σ (layer([layer](x)) [+ x W]) ⊙ r` over a shard of `rows` rows.
        fn loss(&self, dev: &Dev, rows: usize, seed: u32) -> crate::device::Scalar<TrainTape> {
            let x = tensor2(dev, &spread_values(rows * INPUTS, seed, 1.0), rows, INPUTS).unwrap();
            let r = tensor2(
                dev,
                &spread_values(rows * OUTPUTS, seed + 1, 1.0),
                rows,
                OUTPUTS,
            )
            .unwrap();
            let mut y = super::super::linear_cpu::linear(
                x.clone().retaped::<TrainTape>(),
                &self.w,
                &self.b,
                super::super::linear_cpu::LayerInput::Data,
            );
            if self.twice {
                y = super::super::linear_cpu::linear(
                    y,
                    &self.w,
                    &self.b,
                    super::super::linear_cpu::LayerInput::Hidden,
                );
            }
            if self.shared {
                y = y + x
                    .retaped::<TrainTape>()
                    .matmul(self.w.retaped::<TrainTape>());
            }
            (y * r).sum()
        }
    }

    /// Shards of 150, 90 and 200 rows: the sum over shards of ordinary backward passes, and the
    /// shard gradients with deferred weight products summed by `NamedGradients::sum_shards`.
    fn both_ways(twice: bool, shared: bool) -> (NamedGradients, NamedGradients) {
        let dev = device(0).unwrap();
        let layer = Layer::new(&dev, twice, shared);
        let shards = [(150, 3), (90, 7), (200, 11)];
        let mut summed: Option<NamedGradients> = None;
        let mut parts = Vec::new();
        for &(rows, seed) in &shards {
            let (_, g) =
                NamedGradients::backward(layer.loss(&dev, rows, seed), &layer, "").unwrap();
            match summed.as_mut() {
                Some(s) => s.add_assign(&g).unwrap(),
                None => summed = Some(g),
            }
            let (_, part) =
                NamedGradients::backward_shard(layer.loss(&dev, rows, seed), &layer, "").unwrap();
            parts.push(part);
        }
        (summed.unwrap(), NamedGradients::sum_shards(parts).unwrap())
    }

    /// A weight that only the linear kernel uses gets, from its deferred products, exactly the
    /// bits of the per-shard gradients summed in shard order (each product is one block of
    /// `gemm`'s sum, written or added once); the bias is summed as before.
    #[test]
    fn deferred_products_give_the_per_shard_sum_bit_for_bit() {
        let (summed, deferred) = both_ways(false, false);
        assert_eq!(summed.by_name.keys().collect::<Vec<_>>(), ["b", "w"]);
        for name in ["w", "b"] {
            assert_eq!(
                summed.by_name[name].as_vec(),
                deferred.by_name[name].as_vec(),
                "{name}"
            );
        }
    }

    /// A weight used twice by the linear kernel sums all its products (in another order than
    /// per shard first, so not to the same bits), and one that also enters the loss through
    /// another op keeps that part (summed over shards by dfdx's gradients) and adds its
    /// products to it.
    #[test]
    fn weights_used_twice_or_elsewhere_get_their_whole_gradient() {
        for (twice, shared) in [(true, false), (false, true), (true, true)] {
            let (summed, deferred) = both_ways(twice, shared);
            for name in ["w", "b"] {
                let (a, b) = (
                    summed.by_name[name].as_vec(),
                    deferred.by_name[name].as_vec(),
                );
                let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                assert!(scale > 0.0);
                for (u, v) in a.iter().zip(&b) {
                    assert!((u - v).abs() <= 1e-5 * scale, "{name}: {u} vs {v}");
                }
            }
        }
    }

    /// Products go to the innermost collection on the thread; outside any, the linear kernel
    /// computes the weight gradient at once.
    #[test]
    fn collections_nest_and_products_outside_them_are_given_back() {
        let dev = device(0).unwrap();
        let layer = Layer::new(&dev, true, false);
        let ((inner, grads), outer) = collect_weight_products(|| {
            let _ = layer.loss(&dev, 5, 1).backward();
            let (grads, inner) = collect_weight_products(|| layer.loss(&dev, 5, 2).backward());
            let _ = layer.loss(&dev, 5, 3).backward();
            (inner, grads)
        });
        assert_eq!(inner.len(), 2, "two uses of the weight in the inner pass");
        assert_eq!(outer.len(), 4, "two uses in each of the outer passes");
        assert!(inner
            .iter()
            .chain(&outer)
            .all(|(id, _)| *id == layer.w.unique_id()));
        assert!(!grads.contains(&layer.w) && grads.contains(&layer.b));
        let grads = layer.loss(&dev, 5, 4).backward();
        assert!(grads.contains(&layer.w));
        let product =
            WeightProduct::new(layer.w.clone(), None, vec![0.0; INPUTS * OUTPUTS], OUTPUTS);
        assert!(defer_weight_product(layer.w.unique_id(), product).is_some());
    }
}
