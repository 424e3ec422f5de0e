//! Pieces of adversarial (GAN) training shared by autoencoders with a critic: the generator and
//! critic objectives, and the adaptive weight of Esser et al. (2021),
//! λ = ‖∇_{G_L} L_rec‖ / (‖∇_{G_L} L_adv‖ + 10⁻⁴), computed at the generator's last layer `G_L`.

use dfdx::prelude::*;
use serde::{Deserialize, Serialize};

use super::fork;
use crate::device::{Dev, Scalar, Taped, Tensor2, TrainTape};
use crate::{LatentError, Result};

/// The adversarial objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AdversarialLoss {
    /// Hinge: critic `E[relu(1 − D(x))] + E[relu(1 + D(x̂))]`, generator `−E[D(x̂)]` (the default).
    #[default]
    Hinge,
    /// Non-saturating: critic `E[softplus(−D(x))] + E[softplus(D(x̂))]`, generator
    /// `E[softplus(−D(x̂))]`.
    NonSaturating,
}

impl AdversarialLoss {
    /// Generator objective on the critic's scores `(n, 1)` of generated samples (mean over cells).
    pub fn generator<T: Taped>(self, fake_scores: Tensor2<T>) -> Scalar<T> {
        match self {
            AdversarialLoss::Hinge => fake_scores.mean() * -1.0,
            AdversarialLoss::NonSaturating => softplus(fake_scores.negate()).mean(),
        }
    }

    /// Critic objective (to minimize) on the scores of real and generated samples.
    pub fn critic<T: Taped>(self, real_scores: Tensor2<T>, fake_scores: Tensor2<T>) -> Scalar<T> {
        match self {
            AdversarialLoss::Hinge => {
                (real_scores.negate() + 1.0).relu().mean() + (fake_scores + 1.0).relu().mean()
            }
            AdversarialLoss::NonSaturating => {
                softplus(real_scores.negate()).mean() + softplus(fake_scores).mean()
            }
        }
    }
}

/// `log(1 + eˣ)` computed stably as `relu(x) + log(1 + e^{−|x|})`.
pub fn softplus<T: Taped>(x: Tensor2<T>) -> Tensor2<T> {
    let (a, b) = fork(x);
    a.relu() + (b.abs().negate().exp() + 1.0).ln()
}

/// Gradient of `loss` with respect to one parameter (a separate backward pass).
///
/// # Errors
/// [`LatentError::NonFinite`] when the loss is not finite or the gradient cannot be read.
pub fn gradient_of(loss: Scalar<TrainTape>, param: &Tensor2) -> Result<Vec<f32>> {
    let value = loss.array();
    if !value.is_finite() {
        return Err(LatentError::NonFinite(format!(
            "loss ({value}) in a gradient-norm ratio"
        )));
    }
    let mut grads: Gradients<f32, Dev> = loss.backward();
    grads
        .try_alloc_for(param)
        .map_err(|e| LatentError::NonFinite(format!("gradient allocation failed: {e:?}")))?;
    Ok(grads.get(param).as_vec())
}

/// Adaptive adversarial weight `‖g_rec‖ / (‖g_adv‖ + 10⁻⁴)` clamped to `[0, max]` (0 when either
/// gradient is not finite).
pub fn adaptive_weight(g_rec: &[f32], g_adv: &[f32], max: f32) -> f32 {
    let norm = |g: &[f32]| {
        g.iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt()
    };
    let ratio = norm(g_rec) / (norm(g_adv) + 1e-4);
    if ratio.is_finite() {
        (ratio as f32).clamp(0.0, max)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{device, tensor2};

    #[test]
    fn objectives_match_their_formulas() {
        let dev = device(0).unwrap();
        let real = tensor2(&dev, &[2.0, -0.5], 2, 1).unwrap();
        let fake = tensor2(&dev, &[0.5, -3.0], 2, 1).unwrap();
        let h = AdversarialLoss::Hinge;
        // relu(1-2)=0, relu(1.5)=1.5 → 0.75; relu(1.5)=1.5, relu(-2)=0 → 0.75.
        assert!((h.critic(real.clone(), fake.clone()).array() - 1.5).abs() < 1e-6);
        assert!((h.generator(fake.clone()).array() - 1.25).abs() < 1e-6);
        let sp = |x: f32| (1.0 + x.exp()).ln();
        let ns = AdversarialLoss::NonSaturating;
        let c = (sp(-2.0) + sp(0.5)) / 2.0 + (sp(0.5) + sp(-3.0)) / 2.0;
        assert!((ns.critic(real, fake.clone()).array() - c).abs() < 1e-6);
        let g = (sp(-0.5) + sp(3.0)) / 2.0;
        assert!((ns.generator(fake).array() - g).abs() < 1e-6);
        let big = tensor2(&dev, &[200.0, -200.0], 2, 1).unwrap();
        assert_eq!(softplus(big).as_vec(), vec![200.0, 0.0]);
    }

    #[test]
    fn adaptive_weight_is_a_clamped_norm_ratio() {
        assert!((adaptive_weight(&[3.0, 4.0], &[0.0, 1.0], 1e4) - 5.0 / 1.0001).abs() < 1e-5);
        assert_eq!(adaptive_weight(&[1.0], &[0.0], 100.0), 100.0);
        assert_eq!(adaptive_weight(&[f32::NAN], &[1.0], 100.0), 0.0);
    }

    #[test]
    fn gradient_of_one_parameter() {
        let dev = device(0).unwrap();
        let w = tensor2(&dev, &[1.0, 2.0], 1, 2).unwrap();
        let x = tensor2(&dev, &[3.0], 1, 1).unwrap();
        let loss = x
            .retaped::<TrainTape>()
            .matmul(w.retaped::<TrainTape>())
            .square()
            .sum();
        // y = (3, 6); d/dw = 2 y · 3 = (18, 36).
        assert_eq!(gradient_of(loss, &w).unwrap(), vec![18.0, 36.0]);
    }
}
