//! Elementwise activations chosen by config.

#[cfg(feature = "cuda")]
use dfdx::prelude::*;
use serde::{Deserialize, Serialize};

use crate::device::{Taped, Tensor2};

/// A pointwise nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(x)` (a.k.a. swish), the default in diffusion networks.
    #[default]
    Silu,
    /// Gaussian error linear unit (tanh approximation, as PyTorch `approximate="tanh"`).
    Gelu,
    /// `max(0, x)`.
    Relu,
}

impl Activation {
    /// Applies the activation to `(batch, dim)`.
    pub fn forward<T: Taped>(self, x: Tensor2<T>) -> Tensor2<T> {
        match self {
            #[cfg(not(feature = "cuda"))]
            Activation::Silu => super::rowwise_cpu::silu(x),
            #[cfg(feature = "cuda")]
            Activation::Silu => {
                let s = x.with_empty_tape().sigmoid();
                x * s
            }
            #[cfg(not(feature = "cuda"))]
            Activation::Gelu => super::rowwise_cpu::gelu_tanh(x),
            #[cfg(feature = "cuda")]
            Activation::Gelu => x.fast_gelu(),
            Activation::Relu => x.relu(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{device, tensor2};

    #[test]
    fn reference_numbers() {
        let dev = device(0).unwrap();
        let x = tensor2(&dev, &[-1.0, 0.0, 2.0], 1, 3).unwrap();
        let silu = Activation::Silu.forward(x.clone()).as_vec();
        let expect = [-1.0 / (1.0 + 1f32.exp()), 0.0, 2.0 / (1.0 + (-2f32).exp())];
        for (a, b) in silu.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6);
        }
        assert_eq!(
            Activation::Relu.forward(x.clone()).as_vec(),
            vec![0.0, 0.0, 2.0]
        );
        let gelu = Activation::Gelu.forward(x).as_vec();
        // torch.nn.functional.gelu(torch.tensor([-1., 0., 2.]), approximate="tanh")
        let expect = [-0.158_808, 0.0, 1.954_597_7];
        for (a, b) in gelu.iter().zip(expect) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
