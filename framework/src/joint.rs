//! Joint fine-tuning, the optional phase after both stages: the autoencoder, denoiser and
//! conditioner train together on `autoencoder loss + w × stage-2 loss`. The stage-2 loss is taken
//! on the encoder's differentiable latent codes ([`AutoencoderLoss::latent`]), standardized with
//! the statistics fixed after stage 1, so its gradient reaches the encoder: the latent space moves
//! towards what the denoiser models well while the autoencoder loss keeps it decodable.
//!
//! Every sampler's training pair is affine in the clean latent (`z_t = a ⊙ z₀ + b`, target
//! `c ⊙ z₀ + d`, with `b`, `d` fixed by the noise and time); [`AffinePair`] reads the coefficients
//! off the sampler's own [`LatentSampler::training_pair`] and checks them on every batch, so
//! samplers need no differentiable variant and a non-affine out-of-tree sampler is refused.
//!
//! No EMA in this phase (an EMA started at the stage-2 weights would mostly average the weights
//! from before the encoder moved); the learning rate follows the configured schedule instead.
//!
//! [`AutoencoderLoss::latent`]: crate::plugin::AutoencoderLoss::latent

use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::Rng;

use crate::cells::{CellBatch, TrainingCells};
use crate::checkpoint::{collect, TensorMap};
use crate::config::TrainConfig;
use crate::device::{tensor2, Dev, Scalar, Tensor2, TrainTape};
use crate::nn::{fork, join, ParamMut, ParamRef, Parameters};
use crate::optim::NamedGradients;
use crate::pipeline::LatentStats;
use crate::plugin::{
    Autoencoder, ConditionEmbedding, ConditionTable, ExpressionBatch, LatentSampler, TrainingPair,
};
use crate::rng::fill_normal;
use crate::train::{
    adversary_steps, at_step, autoencoder_validation_loss, denoiser_validation_loss, due,
    restore_params, should_validate, stage_stream, Checkpoints, CurvePoint, LatentData, Progress,
    Stage2, StageState,
};
use crate::{LatentError, Result};

/// Stage name of the joint phase in curves, progress and snapshots.
pub const STAGE: &str = "joint";

/// Everything the joint phase trains, as one parameter tree (`autoencoder.*`, `denoiser.*`,
/// `conditioner.*`).
pub struct JointModels<'a> {
    /// Stage 1.
    pub autoencoder: &'a mut (dyn Autoencoder + 'static),
    /// Stage 2's network and condition encoder.
    pub stage: Stage2<'a>,
}

impl Parameters for JointModels<'_> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ParamRef<'_>)) {
        self.autoencoder.visit(&join(prefix, "autoencoder"), f);
        self.stage.visit(prefix, f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        self.autoencoder.visit_mut(&join(prefix, "autoencoder"), f);
        self.stage.visit_mut(prefix, f);
    }
}

/// Cells of one split with their conditions (row-aligned): the training cells as any
/// [`TrainingCells`] source, the validation cells in memory.
pub struct JointData<'a, C: ?Sized = ExpressionBatch> {
    /// Expression as the autoencoder consumes it.
    pub cells: &'a C,
    /// Conditions of the same rows.
    pub conditions: &'a ConditionTable,
}

impl<C: ?Sized> Clone for JointData<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C: ?Sized> Copy for JointData<'_, C> {}

/// A training pair written as an affine function of the clean latent: `noisy = noisy_scale ⊙ z₀
/// + noisy_offset`, `target = target_scale ⊙ z₀ + target_offset` (all `(n, dim)` row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct AffinePair {
    /// `a` in `z_t = a ⊙ z₀ + b`.
    pub noisy_scale: Vec<f32>,
    /// `b`: the noisy input of a zero latent.
    pub noisy_offset: Vec<f32>,
    /// `c` in `target = c ⊙ z₀ + d`.
    pub target_scale: Vec<f32>,
    /// `d`: the target of a zero latent.
    pub target_offset: Vec<f32>,
}

impl AffinePair {
    /// Reads the coefficients off `sampler` for this batch's noise and times (two probes: a zero
    /// latent with the noise, a unit latent without noise).
    ///
    /// # Errors
    /// The sampler's shape errors.
    pub fn probe(
        sampler: &dyn LatentSampler,
        noise: &[f32],
        t: &[f32],
        dim: usize,
    ) -> Result<Self> {
        let zeros = vec![0.0f32; noise.len()];
        let at_zero = sampler.training_pair(&zeros, noise, t, dim)?;
        let unit = sampler.training_pair(&vec![1.0f32; noise.len()], &zeros, t, dim)?;
        Ok(Self {
            noisy_scale: unit.noisy,
            noisy_offset: at_zero.noisy,
            target_scale: unit.target,
            target_offset: at_zero.target,
        })
    }

    /// Checks that `pair`, the sampler's pair for `z0` with the probed noise and times, is what
    /// the affine form predicts.
    ///
    /// # Errors
    /// [`LatentError::Incompatible`] when it is not (a sampler whose training pair is not affine
    /// in the clean latent cannot be fine-tuned jointly).
    pub fn check(&self, z0: &[f32], pair: &TrainingPair) -> Result<()> {
        let close = |scale: &[f32], offset: &[f32], actual: &[f32]| {
            actual.len() == z0.len()
                && (0..z0.len()).all(|k| {
                    let predicted = scale[k] * z0[k] + offset[k];
                    (predicted - actual[k]).abs() <= 1e-3 * (1.0 + actual[k].abs())
                })
        };
        if close(&self.noisy_scale, &self.noisy_offset, &pair.noisy)
            && close(&self.target_scale, &self.target_offset, &pair.target)
        {
            Ok(())
        } else {
            Err(LatentError::Incompatible(
                "joint fine-tuning needs a sampler whose training pair (noisy latent and target) \
                 is affine in the clean latent, and this sampler's is not; set train.joint_steps = 0"
                    .into(),
            ))
        }
    }
}

fn no_latent_code() -> LatentError {
    LatentError::Incompatible(
        "this autoencoder gives no differentiable latent code, so it cannot be fine-tuned \
         jointly; set train.joint_steps = 0"
            .into(),
    )
}

/// Checks, before any training, that `autoencoder` and `sampler` support joint fine-tuning: the
/// autoencoder's loss on a few of `cells` carries a taped latent code of its latent width, and
/// the sampler's training pair is affine in the clean latent. A run whose joint phase cannot run
/// thus fails before its stages train.
///
/// # Errors
/// [`LatentError::Incompatible`] naming what is missing; model errors.
pub fn check_supported(
    autoencoder: &mut dyn Autoencoder,
    sampler: &dyn LatentSampler,
    cells: &ExpressionBatch,
) -> Result<()> {
    let rows: Vec<usize> = (0..cells.n.min(2)).collect();
    let mut rng = crate::rng::stream(0, "joint.check");
    let loss = autoencoder.loss(&cells.select(&rows), 0, &mut rng)?;
    let dim = autoencoder.latent_dim();
    match loss.latent {
        Some(latent) if *latent.shape() == (rows.len(), dim) => {}
        _ => return Err(no_latent_code()),
    }
    let n = 4;
    let mut z0 = vec![0.0; n * dim];
    let mut noise = vec![0.0; n * dim];
    fill_normal(&mut rng, &mut z0);
    fill_normal(&mut rng, &mut noise);
    let t: Vec<f32> = (0..n).map(|_| sampler.sample_time(&mut rng)).collect();
    AffinePair::probe(sampler, &noise, &t, dim)?
        .check(&z0, &sampler.training_pair(&z0, &noise, &t, dim)?)
}

/// One evaluation of the joint objective.
pub struct JointLoss {
    /// `autoencoder + weight × denoiser`, differentiable in every parameter.
    pub total: Scalar<TrainTape>,
    /// The autoencoder's loss.
    pub autoencoder: f32,
    /// The stage-2 loss on the encoder's latents.
    pub denoiser: f32,
    /// The autoencoder's named components.
    pub components: Vec<(String, f32)>,
}

/// Settings of one joint-loss evaluation.
#[derive(Debug, Clone, Copy)]
pub struct JointLossSettings {
    /// Step passed to the autoencoder (after its own stage: warm-ups are complete).
    pub autoencoder_step: u64,
    /// Weight of the stage-2 loss.
    pub denoiser_weight: f32,
    /// Condition dropout probability (classifier-free guidance).
    pub drop_prob: f32,
}

/// The joint objective on `batch` (conditions row-aligned with it).
///
/// # Errors
/// [`LatentError::Incompatible`] when the autoencoder returns no taped latent code or the sampler's
/// training pair is not affine; shape and model errors.
#[allow(clippy::too_many_arguments)]
pub fn joint_loss(
    models: &mut JointModels<'_>,
    sampler: &dyn LatentSampler,
    stats: &LatentStats,
    batch: &ExpressionBatch,
    conditions: &ConditionTable,
    settings: JointLossSettings,
    rng: &mut StdRng,
    dev: &Dev,
) -> Result<JointLoss> {
    let loss = models
        .autoencoder
        .loss(batch, settings.autoencoder_step, rng)?;
    let Some(latent) = loss.latent else {
        return Err(no_latent_code());
    };
    let (n, dim) = (batch.n, stats.mean.len());
    if *latent.shape() != (n, dim) {
        return Err(LatentError::shape(
            "joint fine-tuning latent",
            format!("({n}, {dim})"),
            format!("{:?}", latent.shape()),
        ));
    }
    let per_row = |v: &[f32]| -> Vec<f32> { (0..n * dim).map(|k| v[k % dim]).collect() };
    let inv_std: Vec<f32> = stats.std.iter().map(|s| 1.0 / s).collect();
    let z = (latent - tensor2(dev, &per_row(&stats.mean), n, dim)?)
        * tensor2(dev, &per_row(&inv_std), n, dim)?;
    let z_values = z.as_vec();
    let mut noise = vec![0.0; n * dim];
    fill_normal(rng, &mut noise);
    let t: Vec<f32> = (0..n).map(|_| sampler.sample_time(rng)).collect();
    let pair = sampler.training_pair(&z_values, &noise, &t, dim)?;
    let affine = AffinePair::probe(sampler, &noise, &t, dim)?;
    affine.check(&z_values, &pair)?;
    let (z_noisy, z_target) = fork(z);
    let affine_of = |z: Tensor2<TrainTape>, scale: &[f32], offset: &[f32]| -> Result<_> {
        Ok(z * tensor2(dev, scale, n, dim)? + tensor2(dev, offset, n, dim)?)
    };
    let noisy = affine_of(z_noisy, &affine.noisy_scale, &affine.noisy_offset)?;
    let target = affine_of(z_target, &affine.target_scale, &affine.target_offset)?;
    let cond: Option<ConditionEmbedding<TrainTape>> = match &models.stage.conditioner {
        Some(c) => {
            let null: Vec<bool> = (0..n)
                .map(|_| rng.gen::<f32>() < settings.drop_prob)
                .collect();
            Some(c.embed_train(conditions, &null, rng)?)
        }
        None => None,
    };
    let out = models
        .stage
        .denoiser
        .forward_train(noisy, &pair.model_time, cond)?;
    let denoiser = (out - target).square().mean();
    let values = (loss.total.array(), denoiser.array());
    Ok(JointLoss {
        total: loss.total + denoiser * settings.denoiser_weight,
        autoencoder: values.0,
        denoiser: values.1,
        components: loss.components,
    })
}

/// Held-out joint objective: the autoencoder's validation loss plus `weight ×` the stage-2
/// validation loss on the validation cells' current (re-encoded, standardized) latents, each
/// with a fixed noise stream. Returns `(total, autoencoder, denoiser)`.
///
/// # Errors
/// Model errors.
#[allow(clippy::too_many_arguments)]
pub fn joint_validation_loss(
    models: &mut JointModels<'_>,
    sampler: &dyn LatentSampler,
    stats: &LatentStats,
    validation: JointData<'_>,
    (cfg, seed): (&TrainConfig, u64),
    dev: &Dev,
) -> Result<(f64, f64, f64)> {
    let cells = validation.cells;
    let autoencoder = autoencoder_validation_loss(models.autoencoder, cells, cfg.batch_size, seed)?;
    let mut z = cells.encode(models.autoencoder)?;
    stats.standardize(&mut z);
    let latents = LatentData {
        z,
        n: cells.n,
        dim: stats.mean.len(),
        conditions: validation.conditions.clone(),
    };
    let denoiser =
        denoiser_validation_loss(&models.stage, sampler, &latents, cfg.batch_size, seed, dev)?;
    Ok((
        autoencoder + f64::from(cfg.joint_denoiser_weight) * denoiser,
        autoencoder,
        denoiser,
    ))
}

fn joint_params(models: &mut JointModels<'_>) -> TensorMap {
    let mut params = collect(&[("", &*models)]);
    if let Some(adversary) = models.autoencoder.adversary_mut() {
        params.extend(collect(&[("adversary", &*adversary)]));
    }
    params
}

/// Runs `cfg.joint_steps` joint fine-tuning steps (nothing when 0) on `train`, validating on
/// `validation`, leaving snapshots in `checkpoints` and continuing from the latest one when
/// resuming. Each step: joint loss, backward, clip, AdamW over all parameters (a fresh optimizer
/// at `cfg.joint_lr`), [`Autoencoder::after_step`], then the adversary's updates (if any).
///
/// # Errors
/// As [`joint_loss`]; non-finite losses (with the step); snapshot I/O errors.
#[allow(clippy::too_many_arguments)]
pub fn train_jointly_with(
    models: &mut JointModels<'_>,
    sampler: &dyn LatentSampler,
    stats: &LatentStats,
    (train, validation): (JointData<'_, dyn TrainingCells + '_>, JointData<'_>),
    drop_prob: f32,
    (cfg, seed): (&TrainConfig, u64),
    dev: &Dev,
    progress: &mut dyn Progress,
    checkpoints: &mut dyn Checkpoints,
) -> Result<Vec<CurvePoint>> {
    let total = cfg.joint_steps;
    if total == 0 {
        return Ok(Vec::new());
    }
    let mut state = StageState::begin(STAGE, (cfg, true), checkpoints, &mut |snap| {
        restore_params(&snap.params, models, "")?;
        if let Some(adversary) = models.autoencoder.adversary_mut() {
            restore_params(&snap.params, adversary, "adversary")?;
        }
        Ok(())
    })?;
    let Some(start) = state.start else {
        return Ok(state.curves);
    };
    let mut batches = train
        .cells
        .batches(cfg.batch_size, stage_stream(seed, "joint.batches", start))?;
    let mut rng = stage_stream(seed, "joint.noise", start);
    let mut adversary_noise = stage_stream(seed, "joint.adversary", start);
    let mut stopped_at = total;
    let point = |step: u64, name: &str, value: f64| CurvePoint {
        stage: STAGE,
        step,
        name: name.into(),
        value,
    };
    for step in start..total {
        let CellBatch { rows, cells: batch } = batches.next_batch()?;
        let settings = JointLossSettings {
            autoencoder_step: cfg.autoencoder_steps + step,
            denoiser_weight: cfg.joint_denoiser_weight,
            drop_prob,
        };
        let conditions = train.conditions.select(&rows);
        let loss = joint_loss(
            models,
            sampler,
            stats,
            &batch,
            &conditions,
            settings,
            &mut rng,
            dev,
        )?;
        let (value, mut grads) = NamedGradients::backward(loss.total, &*models, "")
            .map_err(|e| at_step(e, STAGE, step))?;
        if cfg.grad_clip > 0.0 {
            grads.clip_global_norm(cfg.grad_clip);
        }
        let lr = cfg.lr_schedule.rate(cfg.joint_lr, step, total);
        state.optimizer.apply(&mut *models, "", &grads, lr)?;
        models.autoencoder.after_step(&batch, &mut rng)?;
        adversary_steps(
            models.autoencoder,
            &batch,
            (settings.autoencoder_step, lr),
            cfg,
            &mut state.adversary,
            &mut adversary_noise,
            (STAGE, step, &mut state.curves),
        )?;
        state
            .curves
            .push(point(step, "train_loss", f64::from(value)));
        state.curves.push(point(
            step,
            "train_autoencoder_loss",
            f64::from(loss.autoencoder),
        ));
        state
            .curves
            .push(point(step, "train_denoiser_loss", f64::from(loss.denoiser)));
        for (name, v) in &loss.components {
            state
                .curves
                .push(point(step, &format!("train_{name}"), f64::from(*v)));
        }
        progress.step(STAGE, step, total, value);
        if should_validate(cfg, step, total) && validation.cells.n > 0 {
            let (v, ae, den) =
                joint_validation_loss(models, sampler, stats, validation, (cfg, seed), dev)?;
            let stop = state.validated(step, v);
            state
                .curves
                .push(point(step, "validation_autoencoder_loss", ae));
            state
                .curves
                .push(point(step, "validation_denoiser_loss", den));
            if stop {
                stopped_at = step + 1;
                break;
            }
        }
        if step + 1 < total && due(checkpoints, step) {
            checkpoints.save(&state.snapshot((step + 1, false), joint_params(models)))?;
        }
    }
    checkpoints.save(&state.snapshot((stopped_at, true), joint_params(models)))?;
    Ok(state.curves)
}
