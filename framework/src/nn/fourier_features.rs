//! Random Fourier features (Tancik et al. 2020) for low-dimensional continuous inputs such as
//! spatial coordinates: `[sin(2π B x), cos(2π B x)]` with a fixed Gaussian matrix `B`
//! (`features × inputs`, entries N(0, σ²)) drawn from a seed, so a loaded model rebuilds the same
//! map without storing it.

use crate::device::{tensor2, Dev, Tensor2};
use crate::{LatentError, Result};

/// A fixed random Fourier feature map `inputs → 2 · features`.
#[derive(Debug, Clone)]
pub struct FourierFeatures {
    inputs: usize,
    features: usize,
    /// Row-major `(features, inputs)` frequency matrix.
    frequencies: Vec<f32>,
}

impl FourierFeatures {
    /// Draws the frequency matrix with scale `sigma` from `seed`.
    ///
    /// # Errors
    /// [`LatentError::InvalidConfig`] for zero sizes or a non-positive scale.
    pub fn new(inputs: usize, features: usize, sigma: f32, seed: u64) -> Result<Self> {
        if inputs == 0 || features == 0 || sigma.is_nan() || sigma <= 0.0 {
            return Err(LatentError::config(
                "nn.fourier_features",
                "features/scale",
                "inputs, features > 0 and scale > 0",
                format!("{inputs} inputs, {features} features, scale {sigma}"),
            ));
        }
        let mut rng = crate::rng::stream(seed, "fourier_features");
        let mut frequencies = vec![0.0f32; inputs * features];
        crate::rng::fill_normal(&mut rng, &mut frequencies);
        for f in &mut frequencies {
            *f *= sigma;
        }
        Ok(Self {
            inputs,
            features,
            frequencies,
        })
    }

    /// Output width (`2 · features`).
    pub fn outputs(&self) -> usize {
        2 * self.features
    }

    /// Maps row-major `values (n, inputs)` to `(n, 2 · features)` on the host.
    ///
    /// # Errors
    /// [`LatentError::Shape`] when `values.len()` is not a multiple of the input width.
    pub fn map(&self, values: &[f32]) -> Result<Vec<f32>> {
        if !values.len().is_multiple_of(self.inputs) {
            return Err(LatentError::shape(
                "FourierFeatures",
                format!("a multiple of {}", self.inputs),
                values.len(),
            ));
        }
        let n = values.len() / self.inputs;
        let out_dim = self.outputs();
        let mut out = vec![0.0f32; n * out_dim];
        for (row, x) in values.chunks_exact(self.inputs).enumerate() {
            for k in 0..self.features {
                let b = &self.frequencies[k * self.inputs..(k + 1) * self.inputs];
                let arg: f32 =
                    std::f32::consts::TAU * b.iter().zip(x).map(|(b, x)| b * x).sum::<f32>();
                out[row * out_dim + k] = arg.sin();
                out[row * out_dim + self.features + k] = arg.cos();
            }
        }
        Ok(out)
    }

    /// [`FourierFeatures::map`] as a device tensor.
    ///
    /// # Errors
    /// Shape errors as in [`FourierFeatures::map`].
    pub fn tensor(&self, dev: &Dev, values: &[f32]) -> Result<Tensor2> {
        let mapped = self.map(values)?;
        tensor2(dev, &mapped, values.len() / self.inputs, self.outputs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_bounded_and_origin_maps_to_sin0_cos1() {
        let a = FourierFeatures::new(2, 8, 1.0, 5).unwrap();
        let b = FourierFeatures::new(2, 8, 1.0, 5).unwrap();
        let x = [0.3, -0.7, 0.0, 0.0];
        let fa = a.map(&x).unwrap();
        assert_eq!(fa, b.map(&x).unwrap());
        assert_eq!(fa.len(), 2 * 16);
        assert!(fa.iter().all(|v| v.abs() <= 1.0));
        assert!(fa[16..24].iter().all(|v| v.abs() < 1e-7));
        assert!(fa[24..32].iter().all(|v| (v - 1.0).abs() < 1e-7));
        assert!(a.map(&[1.0, 2.0, 3.0]).is_err());
        assert!(FourierFeatures::new(2, 8, 0.0, 5).is_err());
    }
}
