//! A plain feed-forward stack `Linear → [LayerNorm] → activation → [dropout]` per hidden layer,
//! used by encoders, decoders and classifiers.

use rand::Rng;

use super::{dropout, Activation, Init, LayerNorm, Linear};
use crate::device::{Dev, Taped, Tensor2};
use crate::Result;

/// Hidden layers of a feed-forward network (no output layer).
#[derive(Debug, Clone)]
pub struct Mlp {
    /// Linear layers, one per hidden width.
    pub layers: Vec<Linear>,
    /// Optional LayerNorm after each linear layer.
    pub norms: Vec<Option<LayerNorm>>,
    /// Nonlinearity after each hidden layer.
    pub activation: Activation,
    /// Dropout after each hidden layer (training only).
    pub dropout: f32,
}
crate::parameters!(Mlp { layers, norms });

impl Mlp {
    /// Builds hidden layers `inputs → hidden[0] → … → hidden[last]`.
    ///
    /// # Errors
    /// Zero sizes.
    pub fn new(
        dev: &Dev,
        inputs: usize,
        hidden: &[usize],
        activation: Activation,
        layer_norm: bool,
        dropout: f32,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let mut layers = Vec::with_capacity(hidden.len());
        let mut norms = Vec::with_capacity(hidden.len());
        let mut width = inputs;
        for &h in hidden {
            layers.push(Linear::new(dev, width, h, Init::KaimingUniform, rng)?);
            norms.push(layer_norm.then(|| LayerNorm::new(dev, h)));
            width = h;
        }
        Ok(Self {
            layers,
            norms,
            activation,
            dropout,
        })
    }

    /// Output width (the last hidden width, or the input width when there are no layers).
    pub fn outputs(&self, inputs: usize) -> usize {
        self.layers.last().map_or(inputs, Linear::outputs)
    }

    /// `(batch, inputs) -> (batch, hidden[last])`.
    ///
    /// # Errors
    /// Shape errors.
    pub fn forward<T: Taped>(&self, x: Tensor2<T>, train: bool) -> Result<Tensor2<T>> {
        self.forward_with(x, train, false)
    }

    /// [`Mlp::forward`] for data input (an encoder's cells, in training and when encoding): the
    /// first layer computes no input gradient and runs over a sparse input's non-zeros
    /// ([`Linear::forward_data`]). Use it only where `x` depends on no parameter.
    ///
    /// # Errors
    /// Shape errors.
    pub fn forward_data<T: Taped>(&self, x: Tensor2<T>, train: bool) -> Result<Tensor2<T>> {
        self.forward_with(x, train, true)
    }

    fn forward_with<T: Taped>(
        &self,
        mut x: Tensor2<T>,
        train: bool,
        data: bool,
    ) -> Result<Tensor2<T>> {
        for (i, (layer, norm)) in self.layers.iter().zip(&self.norms).enumerate() {
            x = if data && i == 0 {
                layer.forward_data(x)?
            } else {
                layer.forward(x)?
            };
            if let Some(n) = norm {
                x = n.forward(x)?;
            }
            x = dropout(self.activation.forward(x), self.dropout, train);
        }
        Ok(x)
    }
}
