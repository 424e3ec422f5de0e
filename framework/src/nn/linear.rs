//! Fully connected layer `y = x W + b` with runtime sizes.

use dfdx::prelude::*;
use rand::Rng;

use super::init::Init;
use crate::device::{tensor1, tensor2, Dev, Taped, Tensor1, Tensor2};
use crate::{LatentError, Result};

/// What the CPU kernel (`linear_cpu`) may assume about a layer's input.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum LayerInput {
    /// Any input; it gets its gradient.
    Hidden,
    /// Data: no input gradient; a mostly-zero input runs its products over its non-zeros.
    Data,
    /// Rows that often repeat bit for bit (a categorical condition's embedding): the forward
    /// product and the weight gradient run once per distinct row when at most half the rows are
    /// distinct ([`super::RowGroups::worthwhile`]); the input gradient stays per row.
    RepeatedRows,
}

/// Fully connected layer. `weight` is stored `(in, out)` so the forward pass is one matmul.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Weight `(in, out)`.
    pub weight: Tensor2,
    /// Bias `(out,)`.
    pub bias: Tensor1,
}
crate::parameters!(Linear { weight, bias });

impl Linear {
    /// Creates a layer; the bias follows PyTorch (uniform ±1/sqrt(in)) unless `init` is `Zeros`.
    ///
    /// # Errors
    /// [`LatentError::InvalidConfig`] when a size is zero.
    pub fn new(
        dev: &Dev,
        inputs: usize,
        outputs: usize,
        init: Init,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        if inputs == 0 || outputs == 0 {
            return Err(LatentError::config(
                "nn.linear",
                "size",
                "inputs and outputs > 0",
                format!("{inputs}x{outputs}"),
            ));
        }
        let w = init.sample(inputs, outputs, rng);
        let b = match init {
            Init::Zeros => vec![0.0; outputs],
            _ => Init::KaimingUniform.sample(inputs, outputs, rng)[..outputs].to_vec(),
        };
        Ok(Self {
            weight: tensor2(dev, &w, inputs, outputs)?,
            bias: tensor1(dev, &b),
        })
    }

    /// Input size.
    pub fn inputs(&self) -> usize {
        self.weight.shape().0
    }
    /// Output size.
    pub fn outputs(&self) -> usize {
        self.weight.shape().1
    }

    /// `(batch, in) -> (batch, out)`.
    ///
    /// # Errors
    /// [`LatentError::Shape`] when the input width differs from `in`.
    pub fn forward<T: Taped>(&self, x: Tensor2<T>) -> Result<Tensor2<T>> {
        self.forward_with(x, LayerInput::Hidden)
    }

    /// [`Linear::forward`] for a layer fed with data, whose input needs no gradient: the
    /// backward pass skips the input gradient (on the CPU; the CUDA build computes and drops
    /// it), and on the CPU an input with at most 25 % non-zeros (expression values) runs its
    /// products over its non-zeros (decision 0023), training or not. Use it only where `x`
    /// depends on no parameter.
    ///
    /// # Errors
    /// [`LatentError::Shape`] when the input width differs from `in`.
    pub fn forward_data<T: Taped>(&self, x: Tensor2<T>) -> Result<Tensor2<T>> {
        self.forward_with(x, LayerInput::Data)
    }

    /// [`Linear::forward`] for an input whose rows repeat bit for bit (a categorical condition's
    /// embedding: one row per class among a batch's cells). On the CPU, when at most half the
    /// rows are distinct, the product and the weight gradient run once per distinct row; the
    /// input gradient stays per row, so the values and gradients are [`Linear::forward`]'s
    /// whatever produced the rows (the weight gradient up to the order of its sums). Other
    /// inputs, and the CUDA build, take [`Linear::forward`]'s path.
    ///
    /// # Errors
    /// [`LatentError::Shape`] when the input width differs from `in`.
    pub fn forward_repeated_rows<T: Taped>(&self, x: Tensor2<T>) -> Result<Tensor2<T>> {
        self.forward_with(x, LayerInput::RepeatedRows)
    }

    fn forward_with<T: Taped>(&self, x: Tensor2<T>, input: LayerInput) -> Result<Tensor2<T>> {
        let (batch, width) = *x.shape();
        if width != self.inputs() {
            return Err(LatentError::shape(
                "Linear",
                format!("(batch, {})", self.inputs()),
                format!("({batch}, {width})"),
            ));
        }
        #[cfg(not(feature = "cuda"))]
        {
            Ok(super::linear_cpu::linear(
                x,
                &self.weight,
                &self.bias,
                input,
            ))
        }
        #[cfg(feature = "cuda")]
        {
            let _ = input;
            let y = x.matmul(self.weight.retaped::<T>());
            let b = self
                .bias
                .retaped::<T>()
                .broadcast_like::<_, Axis<0>>(y.shape());
            Ok(y + b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::device;
    use rand::SeedableRng;

    #[test]
    fn reference_numbers() {
        let dev = device(0).unwrap();
        let mut layer = Linear::new(
            &dev,
            2,
            3,
            Init::Zeros,
            &mut rand::rngs::StdRng::seed_from_u64(0),
        )
        .unwrap();
        layer.weight = tensor2(&dev, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3).unwrap();
        layer.bias = tensor1(&dev, &[0.5, -0.5, 1.0]);
        let x = tensor2(&dev, &[1.0, -1.0, 0.5, 2.0], 2, 2).unwrap();
        let y = layer.forward(x).unwrap().as_vec();
        // [1,-1]·W = [1-4, 2-5, 3-6] = [-3,-3,-3]; [0.5,2]·W = [8.5, 11, 13.5]
        assert_eq!(y, vec![-2.5, -3.5, -2.0, 9.0, 10.5, 14.5]);
    }

    #[test]
    fn wrong_width_is_an_error() {
        let dev = device(0).unwrap();
        let layer = Linear::new(
            &dev,
            4,
            3,
            Init::KaimingUniform,
            &mut rand::rngs::StdRng::seed_from_u64(0),
        )
        .unwrap();
        let x: Tensor2 = dev.zeros_like(&(2, 5));
        assert!(matches!(layer.forward(x), Err(LatentError::Shape { .. })));
    }
}
