//! Sinusoidal embedding of a scalar (diffusion time, pseudotime) as in "Attention is all you need"
//! and diffusers' `get_timestep_embedding` (flip_sin_to_cos = true, shift = 0).

use crate::device::{tensor2, Dev, Tensor2};
use crate::Result;

/// Embeds each value `t` as `[cos(t * f_0), ..., cos(t * f_{h-1}), sin(t * f_0), ..., sin(t * f_{h-1})]`
/// with `f_k = exp(-ln(max_period) * k / h)`, `h = dim / 2` (a trailing zero column if `dim` is odd).
/// Returns row-major `(values.len(), dim)`.
pub fn sinusoidal_embedding(values: &[f32], dim: usize, max_period: f32) -> Vec<f32> {
    let half = dim / 2;
    let mut out = vec![0.0f32; values.len() * dim];
    for (row, &t) in values.iter().enumerate() {
        for k in 0..half {
            let freq = (-(max_period.ln()) * k as f32 / half as f32).exp();
            let arg = t * freq;
            out[row * dim + k] = arg.cos();
            out[row * dim + half + k] = arg.sin();
        }
    }
    out
}

/// [`sinusoidal_embedding`] as a device tensor `(values.len(), dim)`.
///
/// # Errors
/// Never in practice (sizes are consistent by construction).
pub fn sinusoidal_tensor(
    dev: &Dev,
    values: &[f32],
    dim: usize,
    max_period: f32,
) -> Result<Tensor2> {
    tensor2(
        dev,
        &sinusoidal_embedding(values, dim, max_period),
        values.len(),
        dim,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_numbers() {
        let e = sinusoidal_embedding(&[0.0, 2.0], 4, 10_000.0);
        // f = [1, 0.01]
        let expect = [
            1.0,
            1.0,
            0.0,
            0.0,
            2f32.cos(),
            0.02f32.cos(),
            2f32.sin(),
            0.02f32.sin(),
        ];
        for (a, b) in e.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
