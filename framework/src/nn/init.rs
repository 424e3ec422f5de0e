//! Weight initializers (host-side, seeded) for runtime-shaped layers.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How a weight matrix `(fan_in, fan_out)` is initialized.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Kaiming/He uniform as PyTorch's `nn.Linear` default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    #[default]
    KaimingUniform,
    /// Xavier/Glorot uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)).
    XavierUniform,
    /// All zeros (adaLN-Zero modulation and output layers).
    Zeros,
}

impl Init {
    /// Draws `fan_in * fan_out` values (row-major `(fan_in, fan_out)`).
    pub fn sample(self, fan_in: usize, fan_out: usize, rng: &mut impl Rng) -> Vec<f32> {
        let n = fan_in * fan_out;
        let bound = match self {
            Init::KaimingUniform => 1.0 / (fan_in.max(1) as f32).sqrt(),
            Init::XavierUniform => (6.0 / (fan_in + fan_out).max(1) as f32).sqrt(),
            Init::Zeros => return vec![0.0; n],
        };
        (0..n).map(|_| rng.gen_range(-bound..=bound)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn bounds_and_variance_match_formulas() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let w = Init::XavierUniform.sample(100, 50, &mut rng);
        let a = (6.0f32 / 150.0).sqrt();
        assert!(w.iter().all(|v| v.abs() <= a));
        let var = w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        // Var of U(-a, a) = a^2 / 3 = 2 / (fan_in + fan_out).
        assert!((var - 2.0 / 150.0).abs() < 0.1 * 2.0 / 150.0, "{var}");
        assert!(Init::Zeros.sample(3, 4, &mut rng).iter().all(|v| *v == 0.0));
    }
}
