//! Output head for continuous expression decoders: a Gaussian with learned per-gene σ, optionally
//! with a per-value probability of an exact zero (hurdle model). Shared by `vae` and `vq_vae`.

use rand::{Rng, RngCore};

use super::{fork, Init, Linear};
use crate::device::{tensor1, Dev, Taped, Tensor1, Tensor2, TrainTape};
use crate::likelihood::{gaussian_nll, hurdle_gaussian_nll, sample_hurdle_gaussian};
use crate::Result;

/// Decoder output layer(s) and observation noise for `genes` genes.
#[derive(Debug, Clone)]
pub struct ExpressionHead {
    /// Mean projection `(hidden, genes)`.
    pub mean: Linear,
    /// Per-gene log standard deviation.
    pub log_sigma: Tensor1,
    /// Zero-probability logits `(hidden, genes)` when zero-inflated.
    pub zero_logits: Option<Linear>,
}
crate::parameters!(ExpressionHead {
    mean,
    log_sigma,
    zero_logits
});

impl ExpressionHead {
    /// Creates the head.
    ///
    /// # Errors
    /// Zero sizes.
    pub fn new(
        dev: &Dev,
        hidden: usize,
        genes: usize,
        zero_inflation: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        Ok(Self {
            mean: Linear::new(dev, hidden, genes, Init::KaimingUniform, rng)?,
            log_sigma: tensor1(dev, &vec![0.0; genes]),
            zero_logits: if zero_inflation {
                Some(Linear::new(dev, hidden, genes, Init::KaimingUniform, rng)?)
            } else {
                None
            },
        })
    }

    /// Negative log-likelihood of the batch `x` (host values and the same as a tensor) given the
    /// decoder's last hidden layer `h`, averaged over cells.
    ///
    /// # Errors
    /// Shape errors.
    pub fn loss(
        &self,
        h: Tensor2<TrainTape>,
        x: &[f32],
        x_tensor: Tensor2,
    ) -> Result<crate::device::Scalar<TrainTape>> {
        Ok(match &self.zero_logits {
            Some(zl) => {
                let (h1, h2) = fork(h);
                hurdle_gaussian_nll(
                    self.mean.forward(h1)?,
                    zl.forward(h2)?,
                    x,
                    self.log_sigma.retaped::<TrainTape>(),
                )
            }
            None => gaussian_nll(
                self.mean.forward(h)?,
                x_tensor,
                self.log_sigma.retaped::<TrainTape>(),
            ),
        })
    }

    /// Mean and zero probability (when zero-inflated) for hidden states `h`.
    ///
    /// # Errors
    /// Shape errors.
    pub fn parts(&self, h: Tensor2) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let mean = self.mean.forward(h.clone())?.as_vec();
        let zero = match &self.zero_logits {
            Some(zl) => Some(
                zl.forward(h)?
                    .as_vec()
                    .iter()
                    .map(|l| 1.0 / (1.0 + (-l).exp()))
                    .collect(),
            ),
            None => None,
        };
        Ok((mean, zero))
    }

    /// Expected expression `(1 − π) max(μ, 0)` (or μ without zero inflation).
    ///
    /// # Errors
    /// Shape errors.
    pub fn expected(&self, h: Tensor2) -> Result<Vec<f32>> {
        let (mean, zero) = self.parts(h)?;
        Ok(match zero {
            Some(p) => mean
                .iter()
                .zip(&p)
                .map(|(m, p)| (1.0 - p) * m.max(0.0))
                .collect(),
            None => mean,
        })
    }

    /// Differentiable expected expression `(1 − π) relu(μ)` (or μ without zero inflation) for
    /// hidden states `h`: what an adversarial critic sees of a reconstruction.
    ///
    /// # Errors
    /// Shape errors.
    pub fn expected_taped<T: Taped>(&self, h: Tensor2<T>) -> Result<Tensor2<T>> {
        Ok(match &self.zero_logits {
            Some(zl) => {
                let (h1, h2) = fork(h);
                self.mean.forward(h1)?.relu() * zl.forward(h2)?.negate().sigmoid()
            }
            None => self.mean.forward(h)?,
        })
    }

    /// A draw from the observation model.
    ///
    /// # Errors
    /// Shape errors.
    pub fn sample(&self, h: Tensor2, rng: &mut dyn RngCore) -> Result<Vec<f32>> {
        let (mean, zero) = self.parts(h)?;
        let sigma: Vec<f32> = self.log_sigma.as_vec().iter().map(|l| l.exp()).collect();
        Ok(sample_hurdle_gaussian(&mean, zero.as_deref(), &sigma, rng))
    }
}
