//! Shared probabilistic math for autoencoders: reparameterization, KL to the standard normal,
//! Gaussian reconstruction, and (host-side) negative-binomial / zero-inflated NB log-likelihoods.

use dfdx::prelude::*;

use crate::device::{Scalar, Taped, Tensor2};

/// KL(N(mu, exp(log_var)) || N(0, I)) summed over latent dims, averaged over the batch:
/// `-0.5 * Σ (1 + log_var - mu² - exp(log_var))`.
pub fn kl_standard_normal<T: Taped>(mu: Tensor2<T>, log_var: Tensor2<T>) -> Scalar<T> {
    let (batch, _) = *mu.shape();
    let e = log_var.with_empty_tape().exp();
    let inner = log_var + 1.0 - mu.square() - e;
    inner.sum::<(), _>() * (-0.5 / batch as f32)
}

/// Gaussian reconstruction loss with unit variance up to a constant: `0.5 * Σ_genes (x - x̂)²`
/// averaged over the batch.
pub fn gaussian_reconstruction<T: Taped>(x_hat: Tensor2<T>, x: Tensor2) -> Scalar<T> {
    let (batch, _) = *x_hat.shape();
    squared_error(x_hat, x, 0.5 / batch as f32)
}

/// Mean squared error over every element of `(batch, width)` `out` and `target` (a denoiser's
/// training loss).
pub fn mean_squared_error<T: Taped>(out: Tensor2<T>, target: Tensor2) -> Scalar<T> {
    let (batch, width) = *out.shape();
    squared_error(out, target, 1.0 / (batch * width).max(1) as f32)
}

/// `scale · Σ (a − b)²`: one fused pass on the CPU build (`crate::likelihood_cpu`).
fn squared_error<T: Taped>(a: Tensor2<T>, b: Tensor2, scale: f32) -> Scalar<T> {
    #[cfg(not(feature = "cuda"))]
    {
        crate::likelihood_cpu::squared_error(a, &b, scale)
    }
    #[cfg(feature = "cuda")]
    {
        (a - b).square().sum::<(), _>() * scale
    }
}

/// Gaussian negative log-likelihood with a learned per-gene log standard deviation, up to the
/// constant `0.5 log 2π` per gene: `Σ_genes [0.5 (x − x̂)² e^{−2 log σ} + log σ]`, averaged over
/// the batch. `log_sigma` is `(genes,)`.
pub fn gaussian_nll<T: Taped>(
    x_hat: Tensor2<T>,
    x: Tensor2,
    log_sigma: crate::device::Tensor1<T>,
) -> Scalar<T> {
    #[cfg(not(feature = "cuda"))]
    {
        let values = crate::device::host_values(&x);
        crate::likelihood_cpu::gaussian_nll(
            x_hat,
            crate::likelihood_cpu::Observed {
                x: &values,
                zero_logit: None,
            },
            log_sigma,
        )
    }
    #[cfg(feature = "cuda")]
    {
        composite_gaussian_nll(x_hat, x, log_sigma)
    }
}

/// [`gaussian_nll`] composed from dfdx ops (the CUDA build's path; the CPU kernel's reference).
#[cfg(any(feature = "cuda", test))]
pub(crate) fn composite_gaussian_nll<T: Taped>(
    x_hat: Tensor2<T>,
    x: Tensor2,
    log_sigma: crate::device::Tensor1<T>,
) -> Scalar<T> {
    let (batch, genes) = *x_hat.shape();
    let (ls_a, ls_b) = crate::nn::fork(log_sigma);
    let precision = (ls_a * -2.0)
        .exp()
        .broadcast_like::<_, Axis<0>>(&(batch, genes));
    let sq = (x_hat - x).square() * precision * 0.5;
    sq.sum::<(), _>() / batch as f32 + ls_b.sum::<(), _>()
}

/// Hurdle ("zero-inflated") Gaussian negative log-likelihood for non-negative continuous data
/// such as log-normalized expression: each value is zero with probability `sigmoid(zero_logit)`,
/// otherwise Gaussian with mean `x̂` and per-gene `exp(log_sigma)`. Returns
/// `Σ_genes [BCE(zero_logit, 1[x = 0]) + 1[x > 0] (0.5 (x − x̂)² e^{−2 log σ} + log σ)]` averaged
/// over the batch (constants dropped).
pub fn hurdle_gaussian_nll<T: Taped>(
    x_hat: Tensor2<T>,
    zero_logit: Tensor2<T>,
    x: &[f32],
    log_sigma: crate::device::Tensor1<T>,
) -> Scalar<T> {
    #[cfg(not(feature = "cuda"))]
    {
        crate::likelihood_cpu::gaussian_nll(
            x_hat,
            crate::likelihood_cpu::Observed {
                x,
                zero_logit: Some(zero_logit),
            },
            log_sigma,
        )
    }
    #[cfg(feature = "cuda")]
    {
        composite_hurdle_gaussian_nll(x_hat, zero_logit, x, log_sigma)
    }
}

/// [`hurdle_gaussian_nll`] composed from dfdx ops (the CUDA build's path; the CPU kernel's
/// reference).
#[cfg(any(feature = "cuda", test))]
pub(crate) fn composite_hurdle_gaussian_nll<T: Taped>(
    x_hat: Tensor2<T>,
    zero_logit: Tensor2<T>,
    x: &[f32],
    log_sigma: crate::device::Tensor1<T>,
) -> Scalar<T> {
    let (batch, genes) = *x_hat.shape();
    let dev = x_hat.device().clone();
    let positive: Vec<f32> = x.iter().map(|&v| if v > 0.0 { 1.0 } else { 0.0 }).collect();
    let is_zero: Vec<f32> = positive.iter().map(|p| 1.0 - p).collect();
    let mut mask: Tensor2 = dev.zeros_like(&(batch, genes));
    mask.copy_from(&positive);
    let mut zero_target: Tensor2 = dev.zeros_like(&(batch, genes));
    zero_target.copy_from(&is_zero);
    let mut xt: Tensor2 = dev.zeros_like(&(batch, genes));
    xt.copy_from(x);
    let (ls_a, ls_b) = crate::nn::fork(log_sigma);
    let precision = (ls_a * -2.0)
        .exp()
        .broadcast_like::<_, Axis<0>>(&(batch, genes));
    let ls = ls_b.broadcast_like::<_, Axis<0>>(&(batch, genes));
    let gaussian = ((x_hat - xt).square() * precision * 0.5 + ls) * mask;
    let bce = zero_logit.bce_with_logits(zero_target);
    (gaussian.sum::<(), _>() + bce.sum::<(), _>()) / batch as f32
}

/// Natural log of the gamma function (Lanczos, g = 7, n = 9; |error| < 1e-13 for x > 0).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Digamma ψ(x) for x > 0 (recurrence to x ≥ 6, then the asymptotic series).
pub fn digamma(mut x: f64) -> f64 {
    let mut result = 0.0;
    while x < 6.0 {
        result -= 1.0 / x;
        x += 1.0;
    }
    let f = 1.0 / (x * x);
    result + x.ln()
        - 0.5 / x
        - f * (1.0 / 12.0 - f * (1.0 / 120.0 - f * (1.0 / 252.0 - f * (1.0 / 240.0 - f / 132.0))))
}

/// log NB(x; mean mu, inverse dispersion theta) as in scvi-tools' `log_nb_positive`:
/// `lgamma(x+θ) − lgamma(θ) − lgamma(x+1) + θ(log θ − log(θ+μ)) + x(log μ − log(θ+μ))`.
pub fn nb_log_likelihood(x: f64, mu: f64, theta: f64) -> f64 {
    let eps = 1e-8;
    let log_theta_mu = (theta + mu + eps).ln();
    theta * ((theta + eps).ln() - log_theta_mu)
        + x * ((mu + eps).ln() - log_theta_mu)
        + ln_gamma(x + theta)
        - ln_gamma(theta)
        - ln_gamma(x + 1.0)
}

/// Gradients of [`nb_log_likelihood`] with respect to `mu` and `theta`.
pub fn nb_log_likelihood_grad(x: f64, mu: f64, theta: f64) -> (f64, f64) {
    let eps = 1e-8;
    let d_mu = x / (mu + eps) - (x + theta) / (theta + mu + eps);
    let d_theta = ((theta + eps).ln() - (theta + mu + eps).ln()) + 1.0
        - (x + theta) / (theta + mu + eps)
        + digamma(x + theta)
        - digamma(theta);
    (d_mu, d_theta)
}

/// log ZINB(x; mu, theta, pi) with zero-inflation logit `pi_logit` (scvi-tools' `log_zinb_positive`).
pub fn zinb_log_likelihood(x: f64, mu: f64, theta: f64, pi_logit: f64) -> f64 {
    let softplus = |v: f64| if v > 30.0 { v } else { v.exp().ln_1p() };
    let nb = nb_log_likelihood(x, mu, theta);
    if x < 0.5 {
        // log(π + (1-π) NB(0)) with π = sigmoid(pi_logit)
        let log_nb0 = nb;
        let a = -softplus(-pi_logit); // log π
        let b = -softplus(pi_logit) + log_nb0; // log (1-π) + log NB(0)
        let m = a.max(b);
        m + ((a - m).exp() + (b - m).exp()).ln()
    } else {
        -softplus(pi_logit) + nb
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_reference_values() {
        // ln Γ(1) = 0, ln Γ(5) = ln 24, ln Γ(0.5) = ln √π, ln Γ(10.5) = 13.940625219403763 (scipy.special.gammaln)
        assert!(ln_gamma(1.0).abs() < 1e-12);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
        assert!((ln_gamma(10.5) - 13.940_625_219_403_763).abs() < 1e-10);
    }

    #[test]
    fn digamma_reference_values() {
        // ψ(1) = −γ, ψ(0.5) = −γ − 2 ln 2
        let gamma = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + gamma).abs() < 1e-10);
        assert!((digamma(0.5) + gamma + 2.0 * 2f64.ln()).abs() < 1e-10);
    }

    #[test]
    fn nb_matches_hand_formula_and_gradients_match_finite_differences() {
        // x = 3, mu = 2, theta = 5: Γ(8)/(Γ(5) 3!) (5/7)^5 (2/7)^3 = 35 * 0.1859 * 0.02332
        let expect =
            (5040.0f64 / (24.0 * 6.0) * (5.0f64 / 7.0).powi(5) * (2.0f64 / 7.0).powi(3)).ln();
        assert!((nb_log_likelihood(3.0, 2.0, 5.0) - expect).abs() < 1e-6);
        let (dm, dt) = nb_log_likelihood_grad(3.0, 2.0, 5.0);
        let h = 1e-5;
        let fd_m = (nb_log_likelihood(3.0, 2.0 + h, 5.0) - nb_log_likelihood(3.0, 2.0 - h, 5.0))
            / (2.0 * h);
        let fd_t = (nb_log_likelihood(3.0, 2.0, 5.0 + h) - nb_log_likelihood(3.0, 2.0, 5.0 - h))
            / (2.0 * h);
        assert!(
            (dm - fd_m).abs() < 1e-6 && (dt - fd_t).abs() < 1e-6,
            "{dm} {fd_m} {dt} {fd_t}"
        );
    }

    #[test]
    fn zinb_reduces_to_nb_without_inflation_and_sums_to_one() {
        assert!(
            (zinb_log_likelihood(4.0, 3.0, 2.0, -40.0) - nb_log_likelihood(4.0, 3.0, 2.0)).abs()
                < 1e-9
        );
        let total: f64 = (0..200)
            .map(|k| zinb_log_likelihood(k as f64, 3.0, 2.0, 0.3).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
    }
}

/// Per-element negative-binomial (optionally zero-inflated) terms for a batch, computed on the
/// host: the summed negative log-likelihood and its gradients with respect to the mean `mu`, the
/// inverse dispersion `theta` and the zero-inflation logit. Used to train count decoders without
/// a log-gamma autodiff op (the gradients enter the graph through a linear surrogate).
#[derive(Debug, Clone)]
pub struct CountTerms {
    /// Σ −log p(x).
    pub nll: f64,
    /// ∂(−log p)/∂mu per element.
    pub d_mu: Vec<f32>,
    /// ∂(−log p)/∂theta per element.
    pub d_theta: Vec<f32>,
    /// ∂(−log p)/∂pi_logit per element (zero-inflated only).
    pub d_pi: Option<Vec<f32>>,
}

/// Computes [`CountTerms`] for counts `x`, means `mu`, per-element `theta` and optional
/// zero-inflation logits (all the same length).
pub fn count_terms(x: &[f32], mu: &[f32], theta: &[f32], pi_logit: Option<&[f32]>) -> CountTerms {
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    let mut nll = 0.0;
    let mut d_mu = vec![0.0f32; x.len()];
    let mut d_theta = vec![0.0f32; x.len()];
    let mut d_pi = pi_logit.map(|_| vec![0.0f32; x.len()]);
    for i in 0..x.len() {
        let (xi, mi, ti) = (
            x[i] as f64,
            (mu[i] as f64).max(1e-8),
            (theta[i] as f64).max(1e-8),
        );
        let nb = nb_log_likelihood(xi, mi, ti);
        let (gm, gt) = nb_log_likelihood_grad(xi, mi, ti);
        match (pi_logit, d_pi.as_mut()) {
            (Some(pl), Some(dp)) => {
                let p = pl[i] as f64;
                let ll = zinb_log_likelihood(xi, mi, ti, p);
                nll -= ll;
                if xi < 0.5 {
                    // ll = logsumexp(a, b), a = log π, b = log(1 − π) + log NB(0)
                    let softplus = |v: f64| if v > 30.0 { v } else { v.exp().ln_1p() };
                    let a = -softplus(-p);
                    let wa = (a - ll).exp();
                    let wb = 1.0 - wa;
                    d_mu[i] = -(wb * gm) as f32;
                    d_theta[i] = -(wb * gt) as f32;
                    dp[i] = -(wa * sigmoid(-p) - wb * sigmoid(p)) as f32;
                } else {
                    d_mu[i] = -gm as f32;
                    d_theta[i] = -gt as f32;
                    dp[i] = sigmoid(p) as f32;
                }
            }
            _ => {
                nll -= nb;
                d_mu[i] = -gm as f32;
                d_theta[i] = -gt as f32;
            }
        }
    }
    CountTerms {
        nll,
        d_mu,
        d_theta,
        d_pi,
    }
}

#[cfg(test)]
mod count_tests {
    use super::*;

    #[test]
    fn count_gradients_match_finite_differences() {
        let h = 1e-4;
        for &(x, mu, theta, pl) in &[
            (0.0f32, 1.5f32, 2.0f32, 0.3f32),
            (3.0, 2.0, 5.0, -1.0),
            (0.0, 0.2, 0.5, 1.2),
        ] {
            for zero_inflated in [false, true] {
                let pis = [pl];
                let p = zero_inflated.then_some(&pis[..]);
                let t = count_terms(&[x], &[mu], &[theta], p);
                let f = |m: f32, th: f32, q: f32| {
                    count_terms(&[x], &[m], &[th], zero_inflated.then_some(&[q][..])).nll
                };
                let fd_mu = (f(mu + h, theta, pl) - f(mu - h, theta, pl)) / (2.0 * h as f64);
                let fd_th = (f(mu, theta + h, pl) - f(mu, theta - h, pl)) / (2.0 * h as f64);
                assert!(
                    (t.d_mu[0] as f64 - fd_mu).abs() < 1e-3,
                    "mu {x} {zero_inflated}: {} vs {fd_mu}",
                    t.d_mu[0]
                );
                assert!(
                    (t.d_theta[0] as f64 - fd_th).abs() < 1e-3,
                    "theta {x} {zero_inflated}: {} vs {fd_th}",
                    t.d_theta[0]
                );
                if let Some(dp) = &t.d_pi {
                    let fd_p = (f(mu, theta, pl + h) - f(mu, theta, pl - h)) / (2.0 * h as f64);
                    assert!(
                        (dp[0] as f64 - fd_p).abs() < 1e-3,
                        "pi {x}: {} vs {fd_p}",
                        dp[0]
                    );
                }
            }
        }
    }
}

/// Draws from the hurdle Gaussian observation model (see [`hurdle_gaussian_nll`]): each value is
/// zero with probability `zero_prob[i]`, otherwise `max(mean[i] + sigma[gene] · ε, 0)`. Without
/// `zero_prob`, a plain Gaussian draw (not clipped). `sigma` has one entry per gene.
pub fn sample_hurdle_gaussian(
    mean: &[f32],
    zero_prob: Option<&[f32]>,
    sigma: &[f32],
    rng: &mut dyn rand::RngCore,
) -> Vec<f32> {
    use rand::Rng;
    let g = sigma.len().max(1);
    let mut out = Vec::with_capacity(mean.len());
    for (i, m) in mean.iter().enumerate() {
        if let Some(p) = zero_prob {
            if rng.gen::<f32>() < p[i] {
                out.push(0.0);
                continue;
            }
        }
        let noise: f32 = rng.sample(rand_distr::StandardNormal);
        let v = m + sigma.get(i % g).copied().unwrap_or(0.0) * noise;
        out.push(if zero_prob.is_some() { v.max(0.0) } else { v });
    }
    out
}
