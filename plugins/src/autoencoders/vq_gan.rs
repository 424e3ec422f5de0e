//! VQ-GAN stage 1 (Esser et al. 2021) for expression profiles: the VQ-VAE encoder, product
//! quantizer ([`VectorQuantizer`]) and decoder, plus a critic MLP that scores expression profiles.
//! The generator minimizes reconstruction NLL + codebook/commitment losses + λ·w·L_adv (hinge or
//! non-saturating) on its expected reconstructions, with the adaptive weight
//! λ = ‖∇_{G_L} L_rec‖ / (‖∇_{G_L} L_adv‖ + 10⁻⁴) at the decoder's last layer (the head's mean
//! projection), clamped to `[0, max_adaptive_weight]`, switched on at `adversarial_start`. An
//! optional feature-matching term compares the critic's last hidden layer on each cell and its
//! reconstruction. The critic is the model's adversary: the trainer updates it with its own
//! optimizer `critic_steps` times after every generator step from `adversarial_start` on, on the
//! batch's real cells against their (eval-mode) reconstructions.
//!
//! The generator's weights are drawn from the same stream as `vq_vae`'s, and the critic never
//! touches the shared random streams, so with `adversarial_weight = 0` and
//! `feature_matching_weight = 0` this plugin trains exactly like `vq_vae` (same seed, same
//! numbers). The latent for stage 2 is the quantized code vectors, as for `vq_vae`.

use dfdx::prelude::*;
use latentlab_framework::config::TrainConfig;
use latentlab_framework::device::{tensor2, Dev, Scalar, Taped, Tensor2, TrainTape};
use latentlab_framework::nn::{
    adaptive_weight, fork, gradient_of, Activation, AdversarialLoss, CodebookUpdate,
    ExpressionHead, Init, Linear, Mlp, Parameters, QuantizerSettings, VectorQuantizer,
};
use latentlab_framework::plugin::{
    Autoencoder, AutoencoderConfig, AutoencoderContext, AutoencoderLoss, ExpressionBatch,
};
use latentlab_framework::rng::stream;
use latentlab_framework::{parameters, register_plugin, LatentError, Result};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Random stream of the generator's initial weights: `vq_vae`'s, so both start identically.
const GENERATOR_STREAM: &str = "autoencoder.vq_vae";

/// Config of the `vq_gan` autoencoder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VqGanConfig {
    /// Codebook entries. Default 256.
    pub codebook_size: usize,
    /// Width of one code vector. Default 4.
    pub code_dim: usize,
    /// Code vectors per cell (latent width = groups · code_dim). Default 8.
    pub groups: usize,
    /// Encoder hidden widths (the decoder mirrors them). Default [256, 128].
    pub hidden: Vec<usize>,
    /// Nonlinearity of encoder, decoder and critic. Default `silu`.
    pub activation: Activation,
    /// Dropout after each encoder/decoder hidden layer. Default 0.1.
    pub dropout: f32,
    /// Weight β of the commitment loss. Default 0.25.
    pub commitment_weight: f32,
    /// Re-initialize codes unused for this many steps (0 = never). Default 100.
    pub restart_after: u64,
    /// How codes learn: `loss` or `ema`. Default `loss`.
    pub codebook_update: CodebookUpdate,
    /// EMA decay γ in [0, 1) for `codebook_update = "ema"`. Default 0.99.
    pub ema_decay: f32,
    /// Model exact zeros (hurdle Gaussian, as in `vae`). Default true.
    pub zero_inflation: bool,
    /// Snap generated latents to their nearest codes before decoding. Default true.
    pub snap_generated: bool,
    /// Critic hidden widths (LayerNorm after each; one score out). Default [128, 64].
    pub critic_hidden: Vec<usize>,
    /// `hinge` or `non_saturating`. Default `hinge`.
    pub adversarial_loss: AdversarialLoss,
    /// Factor w on the adaptively weighted adversarial term (0 = off). Default 0.1.
    pub adversarial_weight: f32,
    /// First generator step with the adversarial and feature-matching terms and critic updates;
    /// must be below `train.autoencoder_steps`. Default 500.
    pub adversarial_start: u64,
    /// Upper clamp of the adaptive weight λ. Default 1e4.
    pub max_adaptive_weight: f32,
    /// Critic updates after each generator step (≥ 1). Default 1.
    pub critic_steps: usize,
    /// Weight of the feature-matching term on the critic's last hidden layer (0 = off). Default 0.
    pub feature_matching_weight: f32,
}

impl Default for VqGanConfig {
    fn default() -> Self {
        Self {
            codebook_size: 256,
            code_dim: 4,
            groups: 8,
            hidden: vec![256, 128],
            activation: Activation::Silu,
            dropout: 0.1,
            commitment_weight: 0.25,
            restart_after: 100,
            codebook_update: CodebookUpdate::Loss,
            ema_decay: 0.99,
            zero_inflation: true,
            snap_generated: true,
            critic_hidden: vec![128, 64],
            adversarial_loss: AdversarialLoss::Hinge,
            adversarial_weight: 0.1,
            adversarial_start: 500,
            max_adaptive_weight: 1e4,
            critic_steps: 1,
            feature_matching_weight: 0.0,
        }
    }
}

const PLUGIN: &str = "autoencoder.vq_gan";

impl VqGanConfig {
    fn quantizer_settings(&self) -> QuantizerSettings {
        QuantizerSettings {
            codebook_size: self.codebook_size,
            code_dim: self.code_dim,
            groups: self.groups,
            commitment_weight: self.commitment_weight,
            restart_after: self.restart_after,
            update: self.codebook_update,
            ema_decay: self.ema_decay,
        }
    }

    fn validate(&self) -> Result<()> {
        self.quantizer_settings().validate(PLUGIN)?;
        let widths_ok = |w: &[usize]| !w.is_empty() && !w.contains(&0);
        if !widths_ok(&self.hidden) || !widths_ok(&self.critic_hidden) {
            return Err(LatentError::config(
                PLUGIN,
                "hidden/critic_hidden",
                "non-empty lists of positive widths",
                format!("{:?}/{:?}", self.hidden, self.critic_hidden),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(LatentError::config(
                PLUGIN,
                "dropout",
                "a value in [0, 1)",
                self.dropout,
            ));
        }
        for (field, v) in [
            ("adversarial_weight", self.adversarial_weight),
            ("feature_matching_weight", self.feature_matching_weight),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(LatentError::config(PLUGIN, field, "a finite value ≥ 0", v));
            }
        }
        if !(self.max_adaptive_weight > 0.0 && self.max_adaptive_weight.is_finite()) {
            return Err(LatentError::config(
                PLUGIN,
                "max_adaptive_weight",
                "a finite value > 0",
                self.max_adaptive_weight,
            ));
        }
        if self.critic_steps == 0 {
            return Err(LatentError::config(PLUGIN, "critic_steps", "≥ 1", 0));
        }
        Ok(())
    }
}

#[typetag::serde(name = "vq_gan")]
impl AutoencoderConfig for VqGanConfig {
    fn build(&self, ctx: &AutoencoderContext) -> Result<Box<dyn Autoencoder>> {
        Ok(Box::new(VqGan::new(self, ctx)?))
    }

    fn check_training(&self, train: &TrainConfig) -> Result<()> {
        if self.adversarial_start >= train.autoencoder_steps {
            return Err(LatentError::config(
                PLUGIN,
                "adversarial_start",
                format!(
                    "a step below train.autoencoder_steps ({})",
                    train.autoencoder_steps
                ),
                self.adversarial_start,
            ));
        }
        Ok(())
    }
}

impl VqGan {
    /// Builds the model (generator first, critic from its own stream).
    fn new(this: &VqGanConfig, ctx: &AutoencoderContext) -> Result<Self> {
        this.validate()?;
        let dev = &ctx.dev;
        let settings = this.quantizer_settings();
        let latent = settings.latent_dim();
        let top = this.hidden[this.hidden.len() - 1];
        let reversed: Vec<usize> = this.hidden.iter().rev().copied().collect();
        // Same draws in the same order as `vq_vae`: codebook, encoder, projection, decoder, head.
        let mut rng = stream(ctx.seed, GENERATOR_STREAM);
        let codebook = VectorQuantizer::new(dev, settings, &mut rng)?;
        let encoder = Mlp::new(
            dev,
            ctx.n_genes,
            &this.hidden,
            this.activation,
            true,
            this.dropout,
            &mut rng,
        )?;
        let to_code = Linear::new(dev, top, latent, Init::KaimingUniform, &mut rng)?;
        let decoder = Mlp::new(
            dev,
            latent,
            &reversed,
            this.activation,
            true,
            this.dropout,
            &mut rng,
        )?;
        let head = ExpressionHead::new(
            dev,
            this.hidden[0],
            ctx.n_genes,
            this.zero_inflation,
            &mut rng,
        )?;
        let mut critic_rng = stream(ctx.seed, "autoencoder.vq_gan.critic");
        let body = Mlp::new(
            dev,
            ctx.n_genes,
            &this.critic_hidden,
            this.activation,
            true,
            0.0,
            &mut critic_rng,
        )?;
        let critic_top = this.critic_hidden[this.critic_hidden.len() - 1];
        let critic = Critic {
            body,
            score: Linear::new(dev, critic_top, 1, Init::KaimingUniform, &mut critic_rng)?,
        };
        Ok(VqGan {
            config: this.clone(),
            n_genes: ctx.n_genes,
            dev: dev.clone(),
            encoder,
            to_code,
            codebook,
            decoder,
            head,
            critic,
            critic_updates: 0,
        })
    }
}

register_plugin!(
    Autoencoder,
    "vq_gan",
    "VQ-GAN: VQ-VAE plus a critic on expression profiles, adaptively weighted hinge/non-saturating adversarial loss, optional feature matching",
    "type = \"vq_gan\"\ncodebook_size = 16\ncode_dim = 2\ngroups = 3\nhidden = [32, 16]\ncritic_hidden = [16]\nadversarial_start = 0"
);

/// Critic: hidden layers (features for feature matching) and a linear score.
struct Critic {
    body: Mlp,
    score: Linear,
}
parameters!(Critic { body, score });

impl Critic {
    fn features<T: Taped>(&self, x: Tensor2<T>) -> Result<Tensor2<T>> {
        self.body.forward(x, false)
    }
    fn scores<T: Taped>(&self, x: Tensor2<T>) -> Result<Tensor2<T>> {
        self.score.forward(self.features(x)?)
    }
}

/// A VQ-GAN.
pub struct VqGan {
    config: VqGanConfig,
    n_genes: usize,
    dev: Dev,
    encoder: Mlp,
    to_code: Linear,
    /// Codebook `(codebook_size, code_dim)` and its training state.
    codebook: VectorQuantizer,
    decoder: Mlp,
    /// Gaussian / hurdle observation model; `head.mean` is the decoder's last layer for λ.
    head: ExpressionHead,
    /// The adversary (not in [`Parameters`]: trained by its own optimizer, not checkpointed).
    critic: Critic,
    /// Critic updates so far.
    critic_updates: u64,
}
// Parameter names match `vq_vae`'s.
parameters!(VqGan {
    encoder,
    to_code,
    codebook,
    decoder,
    head
});

/// The adaptive weight and the two gradient norms it was computed from.
#[derive(Debug, Clone, Copy)]
struct AdaptiveWeight {
    lambda: f32,
    rec_norm: f32,
    adv_norm: f32,
}

impl VqGan {
    fn input(&self, batch: &ExpressionBatch) -> Result<Tensor2> {
        if batch.x.len() != batch.n * self.n_genes {
            return Err(LatentError::shape(
                "vq_gan input",
                format!("{} cells x {} genes", batch.n, self.n_genes),
                batch.x.len(),
            ));
        }
        tensor2(&self.dev, &batch.x, batch.n, self.n_genes)
    }

    fn encode_continuous(&self, batch: &ExpressionBatch) -> Result<Vec<f32>> {
        Ok(self
            .to_code
            .forward(self.encoder.forward_data(self.input(batch)?, false)?)?
            .as_vec())
    }

    /// Whether the adversarial machinery runs at generator step `step`.
    fn adversarial_at(&self, step: u64) -> bool {
        step >= self.config.adversarial_start
            && (self.config.adversarial_weight > 0.0 || self.config.feature_matching_weight > 0.0)
    }

    /// Expected reconstructions of `batch` in eval mode (quantized codes, no dropout, no tape).
    fn reconstruct(&self, batch: &ExpressionBatch) -> Result<Tensor2> {
        let z = self.codebook.snap(&self.encode_continuous(batch)?);
        let h = self
            .decoder
            .forward(tensor2(&self.dev, &z, batch.n, self.latent_dim())?, false)?;
        self.head.expected_taped(h)
    }

    /// Generator adversarial loss given decoder hidden states `h`.
    fn generator_adversarial<T: Taped>(&self, h: Tensor2<T>) -> Result<Scalar<T>> {
        let scores = self.critic.scores(self.head.expected_taped(h)?)?;
        Ok(self.config.adversarial_loss.generator(scores))
    }

    /// λ from separate backward passes of L_rec and L_adv through the head only: the gradient at
    /// the last layer's weight depends on the rest of the network only through its input `h`, so
    /// treating `h` (the decoder's hidden states of this forward pass) as a constant gives the
    /// exact gradients ∇_{G_L} of the full losses.
    fn adaptive_weight(
        &self,
        h: &[f32],
        batch: &ExpressionBatch,
        x: Tensor2,
    ) -> Result<AdaptiveWeight> {
        let h = tensor2(&self.dev, h, batch.n, self.config.hidden[0])?;
        let rec = self
            .head
            .loss(h.clone().retaped::<TrainTape>(), &batch.x, x)?;
        let g_rec = gradient_of(rec, &self.head.mean.weight)?;
        let adv = self.generator_adversarial(h.retaped::<TrainTape>())?;
        let g_adv = gradient_of(adv, &self.head.mean.weight)?;
        let norm = |g: &[f32]| g.iter().map(|v| v * v).sum::<f32>().sqrt();
        Ok(AdaptiveWeight {
            lambda: adaptive_weight(&g_rec, &g_adv, self.config.max_adaptive_weight),
            rec_norm: norm(&g_rec),
            adv_norm: norm(&g_adv),
        })
    }

    /// Decoder hidden states for (optionally snapped) latents `z`.
    fn decoder_hidden(&self, z: &[f32], n: usize) -> Result<Tensor2> {
        let snapped;
        let z = if self.config.snap_generated {
            snapped = self.codebook.snap(z);
            &snapped[..]
        } else {
            z
        };
        self.decoder
            .forward(tensor2(&self.dev, z, n, self.latent_dim())?, false)
    }
}

impl Autoencoder for VqGan {
    fn latent_dim(&self) -> usize {
        self.codebook.latent_dim()
    }
    fn n_genes(&self) -> usize {
        self.n_genes
    }

    fn loss(
        &mut self,
        batch: &ExpressionBatch,
        step: u64,
        _rng: &mut dyn RngCore,
    ) -> Result<AutoencoderLoss> {
        let x = self.input(batch)?;
        let z_e = self
            .to_code
            .forward(self.encoder.forward_data(x.retaped::<TrainTape>(), true)?)?;
        let q = self.codebook.quantize(z_e)?;
        let (z_q, latent) = fork(q.z_q);
        let h = self.decoder.forward(z_q, true)?;
        if !self.adversarial_at(step) {
            // Exactly the `vq_vae` objective.
            let reconstruction = self.head.loss(h, &batch.x, x)?;
            let r = reconstruction.array();
            let (total, parts) = q.losses.add_to(reconstruction);
            let mut components = vec![("reconstruction".to_string(), r)];
            components.extend(parts);
            return Ok(AutoencoderLoss {
                total,
                components,
                latent: Some(latent),
            });
        }
        let h_vals = h.as_vec();
        let (h_rec, h_adv) = fork(h);
        let reconstruction = self.head.loss(h_rec, &batch.x, x.clone())?;
        let r = reconstruction.array();
        let (mut total, parts) = q.losses.add_to(reconstruction);
        let mut components = vec![("reconstruction".to_string(), r)];
        components.extend(parts);
        let (w, fm_w) = (
            self.config.adversarial_weight,
            self.config.feature_matching_weight,
        );
        // The handle that carries the recorded history must be used, so fork only when both are.
        let x_hat = self.head.expected_taped(h_adv)?;
        let (x_adv, x_fm) = if w > 0.0 && fm_w > 0.0 {
            let (a, b) = fork(x_hat);
            (Some(a), Some(b))
        } else if w > 0.0 {
            (Some(x_hat), None)
        } else {
            (None, Some(x_hat))
        };
        if let Some(x_adv) = x_adv {
            let weight = self.adaptive_weight(&h_vals, batch, x)?;
            let adv = self
                .config
                .adversarial_loss
                .generator(self.critic.scores(x_adv)?);
            components.push(("adversarial".into(), adv.array()));
            components.push(("adaptive_weight".into(), weight.lambda));
            components.push(("grad_norm_reconstruction".into(), weight.rec_norm));
            components.push(("grad_norm_adversarial".into(), weight.adv_norm));
            total = total + adv * (weight.lambda * w);
        }
        if let Some(x_fm) = x_fm {
            // ‖f(x) − f(x̂)‖² per cell, averaged over cells and features; real features constant.
            let real =
                self.critic
                    .features(tensor2(&self.dev, &batch.x, batch.n, self.n_genes)?)?;
            let fm = (self.critic.features(x_fm)? - real).square().mean();
            components.push(("feature_matching".into(), fm.array()));
            total = total + fm * fm_w;
        }
        Ok(AutoencoderLoss {
            total,
            components,
            latent: Some(latent),
        })
    }

    fn after_step(&mut self, batch: &ExpressionBatch, rng: &mut dyn RngCore) -> Result<()> {
        let z = self.encode_continuous(batch)?;
        self.codebook.after_step(&z, rng)
    }

    fn adversary_updates(&self, step: u64) -> usize {
        if self.adversarial_at(step) {
            self.config.critic_steps
        } else {
            0
        }
    }

    fn adversary_loss(
        &mut self,
        batch: &ExpressionBatch,
        _step: u64,
        _rng: &mut dyn RngCore,
    ) -> Result<AutoencoderLoss> {
        let real = self
            .critic
            .scores(self.input(batch)?.retaped::<TrainTape>())?;
        let fake = self
            .critic
            .scores(self.reconstruct(batch)?.retaped::<TrainTape>())?;
        let (real_mean, fake_mean) = (real.as_vec(), fake.as_vec());
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
        let total = self.config.adversarial_loss.critic(real, fake);
        self.critic_updates += 1;
        let components = vec![
            ("critic".into(), total.array()),
            ("real_score".into(), mean(&real_mean)),
            ("fake_score".into(), mean(&fake_mean)),
        ];
        Ok(AutoencoderLoss::new(total, components))
    }

    fn adversary_mut(&mut self) -> Option<&mut dyn Parameters> {
        Some(&mut self.critic)
    }

    fn encode(&self, batch: &ExpressionBatch) -> Result<Vec<f32>> {
        Ok(self.codebook.snap(&self.encode_continuous(batch)?))
    }

    fn decode_mean(&self, z: &[f32], n: usize, _library_size: &[f32]) -> Result<Vec<f32>> {
        self.head.expected(self.decoder_hidden(z, n)?)
    }

    fn decode_sample(
        &self,
        z: &[f32],
        n: usize,
        _library_size: &[f32],
        rng: &mut dyn RngCore,
    ) -> Result<Vec<f32>> {
        self.head.sample(self.decoder_hidden(z, n)?, rng)
    }

    fn prior_sample(&self, n: usize, rng: &mut dyn RngCore) -> Option<Vec<f32>> {
        Some(self.codebook.prior_sample(n, rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latentlab_framework::nn::ParamMut;
    use latentlab_framework::plugin::InputKind;
    use latentlab_framework::testing;
    use latentlab_framework::train::{train_autoencoder, Silent};

    fn tiny(extra: impl FnOnce(&mut VqGanConfig)) -> VqGanConfig {
        let mut cfg = VqGanConfig {
            codebook_size: 16,
            code_dim: 2,
            groups: 3,
            hidden: vec![16, 8],
            critic_hidden: vec![8],
            dropout: 0.0,
            adversarial_start: 0,
            adversarial_weight: 1.0,
            ..Default::default()
        };
        extra(&mut cfg);
        cfg
    }

    fn build(cfg: &VqGanConfig) -> VqGan {
        VqGan::new(
            cfg,
            &testing::autoencoder_context(InputKind::Continuous).unwrap(),
        )
        .unwrap()
    }

    fn params(m: &dyn Parameters) -> Vec<(String, Vec<f32>)> {
        let mut out = Vec::new();
        m.visit("", &mut |n, p| out.push((n.to_string(), p.to_vec())));
        out
    }

    fn train_cfg(steps: u64) -> TrainConfig {
        TrainConfig {
            autoencoder_steps: steps,
            batch_size: 16,
            validate_every: 10,
            ..Default::default()
        }
    }

    /// Reconstruction and adversarial losses at the current weights (no tape, eval mode).
    fn losses(m: &VqGan, batch: &ExpressionBatch) -> (f64, f64) {
        let z = m.codebook.snap(&m.encode_continuous(batch).unwrap());
        let h = m
            .decoder
            .forward(tensor2(&m.dev, &z, batch.n, 6).unwrap(), false)
            .unwrap();
        let rec = m
            .head
            .loss(
                h.clone().retaped::<TrainTape>(),
                &batch.x,
                m.input(batch).unwrap(),
            )
            .unwrap()
            .array() as f64;
        let adv = m.generator_adversarial(h).unwrap().array() as f64;
        (rec, adv)
    }

    /// λ against central finite differences of L_rec and L_adv at the head's mean weight. Without
    /// zero inflation the whole ratio is compared; with it, `relu(μ)` has a kink, so entries whose
    /// perturbation can cross it (|μ| < 0.01 for some cell) are left out of the entrywise check.
    #[test]
    fn adaptive_weight_matches_finite_differences() {
        for zero_inflation in [false, true] {
            for loss in [AdversarialLoss::Hinge, AdversarialLoss::NonSaturating] {
                let mut m = build(&tiny(|c| {
                    c.adversarial_loss = loss;
                    c.zero_inflation = zero_inflation;
                }));
                let batch = testing::expression(6, 2, false);
                let z = m.codebook.snap(&m.encode_continuous(&batch).unwrap());
                let ht = m
                    .decoder
                    .forward(tensor2(&m.dev, &z, 6, 6).unwrap(), false)
                    .unwrap();
                let h = ht.as_vec();
                let weight = m
                    .adaptive_weight(&h, &batch, m.input(&batch).unwrap())
                    .unwrap();
                let w0 = m.head.mean.weight.as_vec();
                let (mut g_rec, mut g_adv) = (Vec::new(), Vec::new());
                let eps = 3e-3f32;
                for i in 0..w0.len() {
                    let mut at = |v: f32| {
                        let mut w = w0.clone();
                        w[i] = v;
                        ParamMut::Matrix(&mut m.head.mean.weight).set(&w).unwrap();
                        losses(&m, &batch)
                    };
                    let (rp, ap) = at(w0[i] + eps);
                    let (rm, am) = at(w0[i] - eps);
                    g_rec.push((rp - rm) / (2.0 * eps as f64));
                    g_adv.push((ap - am) / (2.0 * eps as f64));
                }
                ParamMut::Matrix(&mut m.head.mean.weight).set(&w0).unwrap();
                let what = format!("{loss:?}, zero_inflation {zero_inflation}");
                let norm = |g: &[f64]| g.iter().map(|v| v * v).sum::<f64>().sqrt();
                let (nr, na) = (norm(&g_rec), norm(&g_adv));
                assert!(na > 1e-3, "{what}: adversarial gradient vanished");
                // The reconstruction NLL is smooth in μ: its norm matches in every case.
                assert!(
                    (weight.rec_norm as f64 - nr).abs() <= 1e-2 * nr,
                    "{what}: ‖∇L_rec‖ {} vs {nr}",
                    weight.rec_norm
                );
                if !zero_inflation {
                    let numeric = nr / (na + 1e-4);
                    assert!(
                        (weight.lambda as f64 - numeric).abs() <= 2e-2 * numeric,
                        "{what}: λ {} vs finite differences {numeric}",
                        weight.lambda
                    );
                    continue;
                }
                // Entrywise on the smooth entries, and λ is the ratio of the analytic norms.
                let mu = m.head.mean.forward(ht.clone()).unwrap().as_vec();
                let genes = testing::GENES;
                let near_kink = |j: usize| mu.iter().skip(j).step_by(genes).any(|v| v.abs() < 1e-2);
                let analytic = gradient_of(
                    m.generator_adversarial(ht.clone().retaped::<TrainTape>())
                        .unwrap(),
                    &m.head.mean.weight,
                )
                .unwrap();
                let mut checked = 0;
                for (i, (a, n)) in analytic.iter().zip(&g_adv).enumerate() {
                    if near_kink(i % genes) {
                        continue;
                    }
                    let a = *a as f64;
                    assert!(
                        (a - n).abs() <= 2e-2 * n.abs().max(a.abs()) + 1e-4,
                        "{what}: ∂L_adv/∂W[{i}] analytic {a} vs numeric {n}"
                    );
                    checked += 1;
                }
                assert!(
                    checked > analytic.len() / 2,
                    "{what}: too few smooth entries"
                );
                let a_norm = analytic.iter().map(|v| v * v).sum::<f32>().sqrt();
                assert!((weight.adv_norm - a_norm).abs() <= 1e-6 * a_norm.max(1.0));
                let ratio = weight.rec_norm / (weight.adv_norm + 1e-4);
                assert!((weight.lambda - ratio).abs() <= 1e-5 * ratio, "{what}");
            }
        }
    }

    #[test]
    fn zero_adversarial_weight_reproduces_vq_vae_bit_for_bit() {
        let ctx = testing::autoencoder_context(InputKind::Continuous).unwrap();
        let shared =
            "codebook_size = 16\ncode_dim = 2\ngroups = 3\nhidden = [32, 16]\nrestart_after = 5\n";
        let vq: Box<dyn AutoencoderConfig> =
            toml::from_str(&format!("type = \"vq_vae\"\n{shared}")).unwrap();
        let gan: Box<dyn AutoencoderConfig> = toml::from_str(&format!(
            "type = \"vq_gan\"\n{shared}adversarial_weight = 0.0\nadversarial_start = 3\n"
        ))
        .unwrap();
        // Each model gets its own (identically seeded) device: dropout draws from the device.
        let mut a = vq.build(&ctx).unwrap();
        let mut b = gan
            .build(&testing::autoencoder_context(InputKind::Continuous).unwrap())
            .unwrap();
        let train = testing::expression(64, 3, false);
        let val = testing::expression(16, 4, false);
        let ca =
            train_autoencoder(a.as_mut(), &train, &val, &train_cfg(30), 7, &mut Silent).unwrap();
        let cb =
            train_autoencoder(b.as_mut(), &train, &val, &train_cfg(30), 7, &mut Silent).unwrap();
        let (pa, pb) = (params(a.as_ref()), params(b.as_ref()));
        assert_eq!(pa.len(), pb.len());
        for ((na, va), (nb, vb)) in pa.iter().zip(&pb) {
            assert!(na == nb && va == vb, "{na} differs from {nb}");
        }
        assert!(ca == cb, "training curves differ");
    }

    #[test]
    fn critic_and_generator_updates_alternate_as_configured() {
        let cfg = tiny(|c| {
            c.adversarial_start = 4;
            c.critic_steps = 2;
            c.feature_matching_weight = 0.5;
        });
        let mut m = build(&cfg);
        let train = testing::expression(48, 5, false);
        let val = testing::expression(8, 6, false);
        let critic0 = params(&m.critic);
        // Before the start: no critic updates, no adversarial terms.
        let curves =
            train_autoencoder(&mut m, &train, &val, &train_cfg(4), 1, &mut Silent).unwrap();
        assert_eq!(m.critic_updates, 0);
        assert_eq!(params(&m.critic), critic0);
        assert!(!curves.iter().any(|c| c.name.contains("adversar")));
        // A fresh run of 10 steps with the start at 4: 6 active steps × 2 critic updates.
        let mut m = build(&cfg);
        let curves =
            train_autoencoder(&mut m, &train, &val, &train_cfg(10), 1, &mut Silent).unwrap();
        assert_eq!(m.critic_updates, 12);
        assert_ne!(params(&m.critic), critic0);
        let per_step = |name: &str| {
            let mut steps: Vec<u64> = curves
                .iter()
                .filter(|c| c.name == name)
                .map(|c| c.step)
                .collect();
            steps.dedup();
            steps
        };
        assert_eq!(per_step("train_adversarial"), (4..10).collect::<Vec<_>>());
        assert_eq!(
            per_step("train_adversary_loss"),
            (4..10).collect::<Vec<_>>()
        );
        assert_eq!(
            curves
                .iter()
                .filter(|c| c.name == "train_adversary_loss")
                .count(),
            12
        );
        assert!(curves.iter().any(|c| c.name == "train_feature_matching"));
        assert!(curves.iter().all(|c| c.value.is_finite()));
        // Codebook health is logged every step.
        assert_eq!(per_step("train_perplexity").len(), 10);
        assert_eq!(per_step("train_codes_used").len(), 10);
    }

    #[test]
    fn the_critic_learns_to_separate_real_from_reconstructed_cells() {
        let mut m = build(&tiny(|_| {}));
        let batch = testing::expression(32, 7, false);
        let first = m.adversary_loss(&batch, 0, &mut stream(0, "c")).unwrap();
        let mut opt = latentlab_framework::optim::AdamW::new(Default::default()).unwrap();
        for _ in 0..60 {
            let l = m.adversary_loss(&batch, 0, &mut stream(0, "c")).unwrap();
            let (_, g) =
                latentlab_framework::optim::NamedGradients::backward(l.total, &m.critic, "c")
                    .unwrap();
            opt.apply(&mut m.critic, "c", &g, 1e-2).unwrap();
        }
        let last = m.adversary_loss(&batch, 0, &mut stream(0, "c")).unwrap();
        assert!(
            last.total.array() < 0.5 * first.total.array(),
            "{} -> {}",
            first.total.array(),
            last.total.array()
        );
    }

    #[test]
    fn bad_configs_are_refused_with_one_line_errors() {
        let ctx = testing::autoencoder_context(InputKind::Continuous).unwrap();
        let bad = [
            tiny(|c| c.codebook_size = 0),
            tiny(|c| c.adversarial_weight = -1.0),
            tiny(|c| c.feature_matching_weight = -0.5),
            tiny(|c| c.commitment_weight = -0.25),
            tiny(|c| c.critic_steps = 0),
            tiny(|c| c.critic_hidden = vec![]),
            tiny(|c| c.max_adaptive_weight = 0.0),
        ];
        for cfg in bad {
            let e = cfg.build(&ctx).err().unwrap().to_string();
            assert!(e.starts_with(PLUGIN) && !e.contains('\n'), "{e}");
        }
        let cfg = tiny(|c| c.adversarial_start = 100);
        let e = cfg.check_training(&train_cfg(100)).unwrap_err().to_string();
        assert!(e.contains("adversarial_start") && !e.contains('\n'), "{e}");
        assert!(cfg.check_training(&train_cfg(101)).is_ok());
    }
}
