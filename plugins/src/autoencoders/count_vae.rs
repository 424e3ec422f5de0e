//! Count VAEs (scVI-style): the encoder sees `log1p(x / library · 1e4)`, the decoder outputs gene
//! proportions (softmax) scaled by each cell's library size as the negative-binomial mean, with a
//! learned per-gene inverse dispersion θ; `zinb_vae` adds a per-cell, per-gene zero-inflation
//! logit. Registered as `nb_vae` and `zinb_vae` (one algorithm, two likelihoods). Non-integer
//! input is refused at build.
//!
//! The NB/ZINB log-likelihood and its gradients are computed on the host
//! (`framework::likelihood::count_terms`) and enter the graph through a linear surrogate whose
//! gradient equals the true one; the reported loss is the true negative log-likelihood + KL.

use dfdx::prelude::*;
use latentlab_framework::device::{tensor1, tensor2, Dev, Tensor1, Tensor2, TrainTape};
use latentlab_framework::likelihood::count_terms;
use latentlab_framework::nn::{fork, kl_warmup, Activation, GaussianPosterior, Init, Linear, Mlp};
use latentlab_framework::plugin::{
    Autoencoder, AutoencoderConfig, AutoencoderContext, AutoencoderLoss, ExpressionBatch, InputKind,
};
use latentlab_framework::rng::{fill_normal, stream};
use latentlab_framework::{parameters, register_plugin, LatentError, Result};
use rand::{Rng, RngCore};
use rand_distr::{Distribution, Gamma, Poisson};
use serde::{Deserialize, Serialize};

/// Config shared by `nb_vae` and `zinb_vae`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CountVaeConfig {
    /// Latent width. Default 16.
    pub latent_dim: usize,
    /// Encoder hidden widths (the decoder mirrors them). Default [256, 128].
    pub hidden: Vec<usize>,
    /// Nonlinearity. Default `silu`.
    pub activation: Activation,
    /// LayerNorm after each hidden layer. Default true.
    pub layer_norm: bool,
    /// Dropout after each hidden layer. Default 0.1.
    pub dropout: f32,
    /// Weight of the KL term after warm-up. Default 1.0.
    pub kl_weight: f32,
    /// Steps over which the KL weight ramps linearly from 0. Default 500.
    pub kl_warmup_steps: u64,
}

impl Default for CountVaeConfig {
    fn default() -> Self {
        Self {
            latent_dim: 16,
            hidden: vec![256, 128],
            activation: Activation::Silu,
            layer_norm: true,
            dropout: 0.1,
            kl_weight: 1.0,
            kl_warmup_steps: 500,
        }
    }
}

/// Config of `nb_vae` (negative-binomial likelihood).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NbVaeConfig(pub CountVaeConfig);

/// Config of `zinb_vae` (zero-inflated negative-binomial likelihood).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ZinbVaeConfig(pub CountVaeConfig);

#[typetag::serde(name = "nb_vae")]
impl AutoencoderConfig for NbVaeConfig {
    fn build(&self, ctx: &AutoencoderContext) -> Result<Box<dyn Autoencoder>> {
        build(&self.0, ctx, false)
    }
}

#[typetag::serde(name = "zinb_vae")]
impl AutoencoderConfig for ZinbVaeConfig {
    fn build(&self, ctx: &AutoencoderContext) -> Result<Box<dyn Autoencoder>> {
        build(&self.0, ctx, true)
    }
}

register_plugin!(
    Autoencoder,
    "nb_vae",
    "Count VAE with a library-size–scaled negative-binomial likelihood and gene-wise dispersion",
    "type = \"nb_vae\"\nlatent_dim = 8\nhidden = [64, 32]"
);
register_plugin!(
    Autoencoder,
    "zinb_vae",
    "Count VAE with a zero-inflated negative-binomial likelihood",
    "type = \"zinb_vae\"\nlatent_dim = 8\nhidden = [64, 32]"
);

fn build(
    c: &CountVaeConfig,
    ctx: &AutoencoderContext,
    zero_inflated: bool,
) -> Result<Box<dyn Autoencoder>> {
    let p = if zero_inflated {
        "autoencoder.zinb_vae"
    } else {
        "autoencoder.nb_vae"
    };
    if ctx.input != InputKind::Counts {
        return Err(LatentError::config(
            p,
            "data.matrix",
            "raw integer counts for a count likelihood (e.g. matrix = \"layers/counts\" or \"raw\", without normalize_total/log1p)",
            "non-integer values",
        ));
    }
    if c.latent_dim == 0 || c.hidden.is_empty() || c.hidden.contains(&0) {
        return Err(LatentError::config(
            p,
            "latent_dim/hidden",
            "positive sizes",
            format!("{}/{:?}", c.latent_dim, c.hidden),
        ));
    }
    if !(0.0..1.0).contains(&c.dropout) || c.kl_weight < 0.0 {
        return Err(LatentError::config(
            p,
            "dropout/kl_weight",
            "dropout in [0, 1) and kl_weight ≥ 0",
            format!("{}/{}", c.dropout, c.kl_weight),
        ));
    }
    let dev = &ctx.dev;
    let mut rng = stream(ctx.seed, p);
    let top = c.hidden[c.hidden.len() - 1];
    let reversed: Vec<usize> = c.hidden.iter().rev().copied().collect();
    Ok(Box::new(CountVae {
        config: c.clone(),
        n_genes: ctx.n_genes,
        dev: dev.clone(),
        encoder: Mlp::new(
            dev,
            ctx.n_genes,
            &c.hidden,
            c.activation,
            c.layer_norm,
            c.dropout,
            &mut rng,
        )?,
        posterior: GaussianPosterior::new(dev, top, c.latent_dim, &mut rng)?,
        decoder: Mlp::new(
            dev,
            c.latent_dim,
            &reversed,
            c.activation,
            c.layer_norm,
            c.dropout,
            &mut rng,
        )?,
        proportions: Linear::new(
            dev,
            c.hidden[0],
            ctx.n_genes,
            Init::KaimingUniform,
            &mut rng,
        )?,
        log_theta: tensor1(dev, &vec![0.0; ctx.n_genes]),
        zero_logits: if zero_inflated {
            Some(Linear::new(
                dev,
                c.hidden[0],
                ctx.n_genes,
                Init::KaimingUniform,
                &mut rng,
            )?)
        } else {
            None
        },
    }))
}

/// Decoded observation-model parameters, each `(n, genes)` row-major.
struct Decoded {
    /// NB means.
    mu: Vec<f32>,
    /// Inverse dispersion per element.
    theta: Vec<f32>,
    /// Zero probability per element (ZINB only).
    pi: Option<Vec<f32>>,
}

/// An NB or ZINB VAE.
pub struct CountVae {
    config: CountVaeConfig,
    n_genes: usize,
    dev: Dev,
    encoder: Mlp,
    posterior: GaussianPosterior,
    decoder: Mlp,
    proportions: Linear,
    /// Per-gene log inverse dispersion.
    log_theta: Tensor1,
    zero_logits: Option<Linear>,
}
parameters!(CountVae {
    encoder,
    posterior,
    decoder,
    proportions,
    log_theta,
    zero_logits
});

impl CountVae {
    fn check(&self, batch: &ExpressionBatch) -> Result<()> {
        if batch.x.len() != batch.n * self.n_genes || batch.library_size.len() != batch.n {
            return Err(LatentError::shape(
                "count vae input",
                format!("{} cells x {} genes", batch.n, self.n_genes),
                batch.x.len(),
            ));
        }
        Ok(())
    }

    /// `log1p(x / library · 1e4)` as the encoder input.
    fn encoder_input(&self, batch: &ExpressionBatch) -> Result<Tensor2> {
        let g = self.n_genes;
        let v: Vec<f32> = batch
            .x
            .iter()
            .enumerate()
            .map(|(i, &x)| (x / batch.library_size[i / g].max(1.0) * 1e4).ln_1p())
            .collect();
        tensor2(&self.dev, &v, batch.n, g)
    }

    fn library_tensor(&self, library: &[f32], n: usize) -> Result<Tensor2> {
        let v: Vec<f32> = (0..n * self.n_genes)
            .map(|i| {
                library
                    .get(i / self.n_genes)
                    .copied()
                    .unwrap_or(1.0)
                    .max(1.0)
            })
            .collect();
        tensor2(&self.dev, &v, n, self.n_genes)
    }

    /// NB means, θ per element and zero probabilities for latents `z`.
    fn decode_parts(&self, z: &[f32], n: usize, library: &[f32]) -> Result<Decoded> {
        let z = tensor2(&self.dev, z, n, self.config.latent_dim)?;
        let h = self.decoder.forward(z, false)?;
        let rho = self.proportions.forward(h.clone())?.softmax::<Axis<1>>();
        let mu = (rho * self.library_tensor(library, n)?).as_vec();
        let theta: Vec<f32> = self.log_theta.as_vec().iter().map(|l| l.exp()).collect();
        let theta_full = (0..n * self.n_genes)
            .map(|i| theta[i % self.n_genes])
            .collect();
        let pi = match &self.zero_logits {
            Some(zl) => Some(
                zl.forward(h)?
                    .as_vec()
                    .iter()
                    .map(|l| 1.0 / (1.0 + (-l).exp()))
                    .collect(),
            ),
            None => None,
        };
        Ok(Decoded {
            mu,
            theta: theta_full,
            pi,
        })
    }
}

impl Autoencoder for CountVae {
    fn latent_dim(&self) -> usize {
        self.config.latent_dim
    }
    fn n_genes(&self) -> usize {
        self.n_genes
    }

    fn loss(
        &mut self,
        batch: &ExpressionBatch,
        step: u64,
        rng: &mut dyn RngCore,
    ) -> Result<AutoencoderLoss> {
        self.check(batch)?;
        let (n, g) = (batch.n, self.n_genes);
        let h = self
            .encoder
            .forward_data(self.encoder_input(batch)?.retaped::<TrainTape>(), true)?;
        let posterior = self.posterior.sample(h, rng)?;
        let (kl, latent) = (posterior.kl, posterior.mean);
        let h = self.decoder.forward(posterior.z, true)?;
        let (h_mu, h_pi) = fork(h);
        let mu = self.proportions.forward(h_mu)?.softmax::<Axis<1>>()
            * self.library_tensor(&batch.library_size, n)?;
        let theta = self
            .log_theta
            .retaped::<TrainTape>()
            .exp()
            .broadcast_like::<_, Axis<0>>(&(n, g));
        let pi_logits = match &self.zero_logits {
            Some(zl) => Some(zl.forward(h_pi)?),
            None => None,
        };
        let (mu_v, theta_v) = (mu.as_vec(), theta.as_vec());
        let pi_v = pi_logits.as_ref().map(|p| p.as_vec());
        let terms = count_terms(&batch.x, &mu_v, &theta_v, pi_v.as_deref());
        let scale = 1.0 / n as f32;
        // Linear surrogate: its gradient is the true gradient of the mean negative log-likelihood.
        let mut surrogate = (mu * tensor2(&self.dev, &terms.d_mu, n, g)?).sum::<(), _>() * scale
            + (theta * tensor2(&self.dev, &terms.d_theta, n, g)?).sum::<(), _>() * scale;
        if let (Some(p), Some(dp)) = (pi_logits, &terms.d_pi) {
            surrogate = surrogate + (p * tensor2(&self.dev, dp, n, g)?).sum::<(), _>() * scale;
        }
        let nll = (terms.nll / n as f64) as f32;
        let kl_value = kl.array();
        let offset = surrogate.array() - nll;
        let total = surrogate - offset
            + kl * kl_warmup(self.config.kl_weight, self.config.kl_warmup_steps, step);
        Ok(AutoencoderLoss {
            total,
            components: vec![("reconstruction_nll".into(), nll), ("kl".into(), kl_value)],
            latent: Some(latent),
        })
    }

    fn encode(&self, batch: &ExpressionBatch) -> Result<Vec<f32>> {
        self.check(batch)?;
        Ok(self
            .posterior
            .means(
                self.encoder
                    .forward_data(self.encoder_input(batch)?, false)?,
            )?
            .as_vec())
    }

    fn decode_mean(&self, z: &[f32], n: usize, library_size: &[f32]) -> Result<Vec<f32>> {
        let Decoded { mu, pi, .. } = self.decode_parts(z, n, library_size)?;
        Ok(match pi {
            Some(p) => mu.iter().zip(&p).map(|(m, p)| (1.0 - p) * m).collect(),
            None => mu,
        })
    }

    fn decode_sample(
        &self,
        z: &[f32],
        n: usize,
        library_size: &[f32],
        rng: &mut dyn RngCore,
    ) -> Result<Vec<f32>> {
        let Decoded { mu, theta, pi } = self.decode_parts(z, n, library_size)?;
        let mut out = Vec::with_capacity(mu.len());
        for i in 0..mu.len() {
            if let Some(p) = &pi {
                if rng.gen::<f32>() < p[i] {
                    out.push(0.0);
                    continue;
                }
            }
            // Gamma–Poisson mixture: λ ~ Gamma(θ, μ/θ), x ~ Poisson(λ).
            let (m, t) = (mu[i].max(1e-8) as f64, theta[i].max(1e-8) as f64);
            let lambda = Gamma::new(t, m / t)
                .map(|d| d.sample(&mut *rng))
                .unwrap_or(m);
            let x = if lambda > 0.0 {
                Poisson::new(lambda)
                    .map(|d| d.sample(&mut *rng))
                    .unwrap_or(0.0)
            } else {
                0.0
            };
            out.push(x as f32);
        }
        Ok(out)
    }

    fn prior_sample(&self, n: usize, rng: &mut dyn RngCore) -> Option<Vec<f32>> {
        let mut z = vec![0.0; n * self.config.latent_dim];
        fill_normal(&mut &mut *rng, &mut z);
        Some(z)
    }
}
