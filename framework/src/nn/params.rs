//! The parameter visitor: every trainable tensor is reached by a stable dotted name
//! (`denoiser.blocks.2.linear1.weight`), which the optimizer, clipping, EMA and checkpoints use.

use dfdx::prelude::*;

use crate::device::{dense_values, Tensor1, Tensor2};

/// A borrowed trainable tensor.
pub enum ParamRef<'a> {
    /// A vector parameter (bias, norm scale).
    Vector(&'a Tensor1),
    /// A matrix parameter (weight, embedding table).
    Matrix(&'a Tensor2),
}

/// A mutably borrowed trainable tensor.
pub enum ParamMut<'a> {
    /// A vector parameter (bias, norm scale).
    Vector(&'a mut Tensor1),
    /// A matrix parameter (weight, embedding table).
    Matrix(&'a mut Tensor2),
}

impl ParamRef<'_> {
    /// Shape as a list of dimensions.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            ParamRef::Vector(t) => vec![t.shape().0],
            ParamRef::Matrix(t) => vec![t.shape().0, t.shape().1],
        }
    }
    /// Values copied to the host (row-major).
    pub fn to_vec(&self) -> Vec<f32> {
        match self {
            ParamRef::Vector(t) => dense_values(*t),
            ParamRef::Matrix(t) => dense_values(*t),
        }
    }
    /// The values as a flat vector on the parameter's device, sharing its storage (no copy;
    /// an in-place update of either copies first).
    pub fn flat(&self) -> Tensor1 {
        match self {
            ParamRef::Vector(t) => (*t).clone(),
            ParamRef::Matrix(t) => {
                let n = t.shape().0 * t.shape().1;
                (*t).clone().reshape_like(&(n,))
            }
        }
    }
}

impl ParamMut<'_> {
    /// Shape as a list of dimensions.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            ParamMut::Vector(t) => vec![t.shape().0],
            ParamMut::Matrix(t) => vec![t.shape().0, t.shape().1],
        }
    }
    /// Values copied to the host (row-major).
    pub fn to_vec(&self) -> Vec<f32> {
        match self {
            ParamMut::Vector(t) => dense_values(&**t),
            ParamMut::Matrix(t) => dense_values(&**t),
        }
    }
    /// The values as a mutable row-major slice of the tensor's own storage (CPU build; `None`
    /// on CUDA, where values live on the device). Writes change the parameter in place.
    pub fn values_mut(&mut self) -> Option<&mut [f32]> {
        #[cfg(not(feature = "cuda"))]
        {
            match self {
                ParamMut::Vector(t) => t.dense_slice_mut(),
                ParamMut::Matrix(t) => t.dense_slice_mut(),
            }
        }
        #[cfg(feature = "cuda")]
        {
            None
        }
    }
    /// Overwrites the values in place (the tensor keeps its identity, so gradients still match).
    ///
    /// # Errors
    /// [`crate::LatentError::Shape`] when the length differs.
    pub fn set(&mut self, values: &[f32]) -> crate::Result<()> {
        let n: usize = self.shape().iter().product();
        if n != values.len() {
            return Err(crate::LatentError::shape(
                "ParamMut::set",
                format!("{n} values"),
                values.len(),
            ));
        }
        match self {
            ParamMut::Vector(t) => t.copy_from(values),
            ParamMut::Matrix(t) => t.copy_from(values),
        }
        Ok(())
    }
}

/// Something that owns trainable tensors and can list them by name.
pub trait Parameters {
    /// Calls `f(name, tensor)` for every parameter, names prefixed by `prefix`.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ParamRef<'_>));
    /// Calls `f(name, tensor)` for every parameter with mutable access.
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>));

    /// Total number of scalar parameters.
    fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit("", &mut |_, p| n += p.shape().iter().product::<usize>());
        n
    }
    /// All parameter names in visiting order.
    fn param_names(&self, prefix: &str) -> Vec<String> {
        let mut names = Vec::new();
        self.visit(prefix, &mut |name, _| names.push(name.to_string()));
        names
    }
}

/// Multiply-accumulates per input row of every linear layer of `model`: the sum of `in × out`
/// over its 2-D parameters named `weight` (PyTorch's peer counts `nn.Linear` layers the same way;
/// embedding tables, attention products and element-wise work are not counted).
pub fn linear_macs(model: &(impl Parameters + ?Sized)) -> usize {
    let mut macs = 0;
    model.visit("", &mut |name, p| {
        let shape = p.shape();
        if shape.len() == 2 && (name == "weight" || name.ends_with(".weight")) {
            macs += shape[0] * shape[1];
        }
    });
    macs
}

/// Joins a prefix and a field name with a dot (no leading dot for an empty prefix).
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

impl Parameters for Tensor2 {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ParamRef<'_>)) {
        f(prefix, ParamRef::Matrix(self));
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        f(prefix, ParamMut::Matrix(self));
    }
}

impl Parameters for Tensor1 {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ParamRef<'_>)) {
        f(prefix, ParamRef::Vector(self));
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        f(prefix, ParamMut::Vector(self));
    }
}

impl<P: Parameters> Parameters for Vec<P> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ParamRef<'_>)) {
        for (i, p) in self.iter().enumerate() {
            p.visit(&join(prefix, &i.to_string()), f);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        for (i, p) in self.iter_mut().enumerate() {
            p.visit_mut(&join(prefix, &i.to_string()), f);
        }
    }
}

impl<P: Parameters + ?Sized> Parameters for Box<P> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ParamRef<'_>)) {
        (**self).visit(prefix, f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        (**self).visit_mut(prefix, f);
    }
}

impl<P: Parameters> Parameters for Option<P> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ParamRef<'_>)) {
        if let Some(p) = self {
            p.visit(prefix, f);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        if let Some(p) = self {
            p.visit_mut(prefix, f);
        }
    }
}

/// Implements [`Parameters`] for a struct by listing its parameter-owning fields; each field is
/// visited under its own name.
///
/// ```ignore
/// latentlab_framework::parameters!(MyBlock { norm, linear1, linear2 });
/// ```
#[macro_export]
macro_rules! parameters {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        impl $crate::nn::Parameters for $ty {
            fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, $crate::nn::ParamRef<'_>)) {
                $( $crate::nn::Parameters::visit(&self.$field, &$crate::nn::join(prefix, stringify!($field)), f); )*
            }
            fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, $crate::nn::ParamMut<'_>)) {
                $( $crate::nn::Parameters::visit_mut(&mut self.$field, &$crate::nn::join(prefix, stringify!($field)), f); )*
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::device;
    use crate::nn::{Activation, ResidualBlock};

    /// A residual block counts its two linear layers (8 × 16 and 16 × 8), not its LayerNorm's
    /// vectors or the biases.
    #[test]
    fn linear_macs_counts_linear_weights_only() {
        let dev = device(0).unwrap();
        let mut rng = crate::rng::stream(0, "test");
        let block = ResidualBlock::new(&dev, 8, 16, Activation::Silu, true, 0.0, &mut rng).unwrap();
        assert!(block.num_params() > 256);
        assert_eq!(linear_macs(&block), 8 * 16 + 16 * 8);
    }
}
