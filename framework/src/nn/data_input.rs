//! The data tensor a training pass feeds a network: no parameter produced it, so nothing reads
//! its gradient, and a linear layer that takes it directly can skip its input gradient (a
//! gene-space denoiser's 2,000-wide first layer: a product as large as its forward pass).
//!
//! The trainer knows which tensor is data (stage 2's noisy inputs; not in joint fine-tuning,
//! where they come from the encoder), the plugins do not: the trainer names it for the length of
//! the forward pass with [`with_data_input`], and the CPU linear kernel checks the tensor it is
//! given against it. The plugin API is unchanged, and a layer fed anything computed from the
//! data (a reshape, a sum with a parameter) still computes its input gradient.

use std::cell::RefCell;

use dfdx::tensor::UniqueId;

thread_local! {
    /// The data tensor of the forward pass running on this thread, if the trainer named one.
    static DATA_INPUT: RefCell<Option<UniqueId>> = const { RefCell::new(None) };
}

/// Runs `f` (a network's training forward pass) with `data` named as its data input: the tensor
/// with that id (and its retaped copies, which share it) depends on no parameter.
pub fn with_data_input<R>(data: UniqueId, f: impl FnOnce() -> R) -> R {
    super::thread_scope::with_replaced(&DATA_INPUT, Some(data), f).0
}

/// Whether `id` is the data input named on this thread by [`with_data_input`].
#[cfg(not(feature = "cuda"))]
pub(crate) fn is_data_input(id: UniqueId) -> bool {
    DATA_INPUT.with(|d| *d.borrow() == Some(id))
}

#[cfg(test)]
#[cfg(not(feature = "cuda"))]
mod tests {
    use super::*;
    use crate::device::{device, tensor2, Dev, Tensor2, TrainTape};
    use crate::nn::{Init, Linear};
    use crate::testing::spread_values;
    use dfdx::prelude::*;
    use rand::SeedableRng;

    fn layer(dev: &Dev) -> Linear {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        Linear::new(dev, 6, 5, Init::KaimingUniform, &mut rng).unwrap()
    }

    fn data(dev: &Dev, seed: u32) -> Tensor2 {
        tensor2(dev, &spread_values(4 * 6, seed, 1.0), 4, 6).unwrap()
    }

    /// `Σ layer(input) ⊙ r` and its gradients; `named` runs the forward pass with `x` named
    /// as the data input.
    fn gradients(
        layer: &Linear,
        x: &Tensor2,
        input: Tensor2<TrainTape>,
        named: bool,
    ) -> Gradients<f32, Dev> {
        let dev = x.device().clone();
        let r = tensor2(&dev, &spread_values(4 * 5, 9, 1.0), 4, 5).unwrap();
        let forward = || layer.forward(input).unwrap();
        let y = if named {
            with_data_input(x.unique_id(), forward)
        } else {
            forward()
        };
        (y * r).sum().backward()
    }

    /// Named as data, the layer's input gets no gradient while the weight and bias get the same
    /// bits as without the name.
    #[test]
    fn a_named_data_input_gets_no_gradient_and_changes_no_other() {
        let dev = device(0).unwrap();
        let layer = layer(&dev);
        let x = data(&dev, 1);
        let plain = gradients(&layer, &x, x.retaped(), false);
        let named = gradients(&layer, &x, x.retaped(), true);
        assert!(plain.contains(&x));
        assert!(
            !named.contains(&x),
            "the data input's gradient was computed"
        );
        assert_eq!(
            plain.get(&layer.weight).as_vec(),
            named.get(&layer.weight).as_vec()
        );
        assert_eq!(
            plain.get(&layer.bias).as_vec(),
            named.get(&layer.bias).as_vec()
        );
        assert!(!is_data_input(x.unique_id()), "the name ends with the pass");
    }

    /// A layer fed something computed from the data (here the data plus a parameter) still
    /// passes the gradient on: the name covers only the data tensor itself.
    #[test]
    fn a_tensor_computed_from_the_data_keeps_its_gradient() {
        let dev = device(0).unwrap();
        let layer = layer(&dev);
        let x = data(&dev, 1);
        let p = data(&dev, 2);
        let input = || x.retaped::<TrainTape>() + p.retaped::<TrainTape>();
        let plain = gradients(&layer, &x, input(), false);
        let named = gradients(&layer, &x, input(), true);
        assert_eq!(plain.get(&p).as_vec(), named.get(&p).as_vec());
        assert!(named.get(&p).as_vec().iter().any(|&v| v != 0.0));
    }
}
