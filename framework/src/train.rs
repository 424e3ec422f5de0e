//! Training loops for both stages. Each step computes named gradients, clips them, then applies
//! AdamW; stage 2 computes its gradients in data-parallel shards summed before the update.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

use crate::cells::TrainingCells;
use crate::checkpoint::{collect, restore, TensorMap};
use crate::config::TrainConfig;
use crate::device::{tensor2, Dev, Scalar, TrainTape};
use crate::nn::{ParamMut, ParamRef, Parameters};
use crate::optim::{AdamW, AdamWConfig, Ema, NamedGradients};
use crate::plugin::{Autoencoder, ConditionEmbedding};
use crate::plugin::{
    ConditionTable, Conditioner, Denoiser, ExpressionBatch, LatentSampler, TrainingPair,
};
use crate::rng::{fill_normal, stream};
use crate::{LatentError, Result};
use dfdx::prelude::*;

/// One logged value of a training curve.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePoint {
    /// `autoencoder` or `denoiser`.
    pub stage: &'static str,
    /// Optimizer step.
    pub step: u64,
    /// `train_loss`, `validation_loss`, or a loss component.
    pub name: String,
    /// Value.
    pub value: f64,
}

/// Receives progress while training (a progress bar in the CLI, nothing in tests). `Send`:
/// training runs on a pool worker thread (decision 0025).
pub trait Progress: Send {
    /// Called after each step with the current training loss.
    fn step(&mut self, stage: &str, step: u64, total: u64, loss: f32);
}

/// A [`Progress`] that ignores everything.
pub struct Silent;
impl Progress for Silent {
    fn step(&mut self, _: &str, _: u64, _: u64, _: f32) {}
}

/// The training state of one stage at a step boundary (what `train --resume` continues from).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `autoencoder` or `denoiser`.
    pub stage: &'static str,
    /// The next step to run.
    pub next_step: u64,
    /// True when the stage finished (all steps or early stopping; EMA weights already copied).
    pub complete: bool,
    /// This stage's curves so far.
    pub curves: Vec<CurvePoint>,
    /// Early stopping: best validation loss and validations without improvement.
    pub best: f64,
    /// Validations without improvement.
    pub bad: u64,
    /// Optimizer state: updates taken and moments.
    pub optimizer: (u64, TensorMap),
    /// The adversary's optimizer state (stage 1 with an adversary).
    pub adversary_optimizer: Option<(u64, TensorMap)>,
    /// EMA state (stage 2 with `ema_decay > 0`).
    pub ema: Option<(u64, TensorMap)>,
    /// The stage's parameters (the adversary's under `adversary.`).
    pub params: TensorMap,
}

/// The optimizers, early stopping and curves of one stage, fresh or continued from the stage's
/// latest snapshot; also builds the stage's snapshots.
pub(crate) struct StageState {
    stage: &'static str,
    /// The stage's optimizer.
    pub(crate) optimizer: AdamW,
    /// The autoencoder adversary's optimizer (kept in snapshots when `with_adversary`).
    pub(crate) adversary: AdamW,
    with_adversary: bool,
    stopper: EarlyStopping,
    /// The stage's curves so far.
    pub(crate) curves: Vec<CurvePoint>,
    /// The step to continue from (0 when fresh); `None` when the stage is already complete.
    pub(crate) start: Option<u64>,
}

impl StageState {
    /// Fresh state for `stage`, or the state of its latest snapshot in `checkpoints` (then
    /// `restore` copies the snapshot's weights, EMA, … into the models).
    ///
    /// # Errors
    /// Snapshot I/O or shape errors.
    pub(crate) fn begin(
        stage: &'static str,
        (cfg, with_adversary): (&TrainConfig, bool),
        checkpoints: &mut dyn Checkpoints,
        restore: &mut dyn FnMut(&Snapshot) -> Result<()>,
    ) -> Result<Self> {
        let new_optimizer = || {
            AdamW::new(AdamWConfig {
                weight_decay: cfg.weight_decay,
                ..Default::default()
            })
        };
        let mut state = Self {
            stage,
            optimizer: new_optimizer()?,
            adversary: new_optimizer()?,
            with_adversary,
            stopper: EarlyStopping {
                best: f64::INFINITY,
                bad: 0,
                patience: cfg.early_stopping_patience,
            },
            curves: Vec::new(),
            start: Some(0),
        };
        if let Some(snap) = checkpoints.resume(stage)? {
            restore(&snap)?;
            if let Some((n, m)) = &snap.adversary_optimizer {
                state.adversary.restore_state(*n, m)?;
            }
            state
                .optimizer
                .restore_state(snap.optimizer.0, &snap.optimizer.1)?;
            (state.stopper.best, state.stopper.bad) = (snap.best, snap.bad);
            state.start = (!snap.complete).then_some(snap.next_step);
            state.curves = snap.curves;
        }
        Ok(state)
    }

    /// Logs the validation loss `value` at `step`; true when early stopping ends the stage.
    pub(crate) fn validated(&mut self, step: u64, value: f64) -> bool {
        self.curves.push(CurvePoint {
            stage: self.stage,
            step,
            name: "validation_loss".into(),
            value,
        });
        self.stopper.should_stop(value)
    }

    /// The stage's snapshot before step `next_step` (`complete` at the end) holding `params`.
    pub(crate) fn snapshot(
        &self,
        (next_step, complete): (u64, bool),
        params: TensorMap,
    ) -> Snapshot {
        Snapshot {
            stage: self.stage,
            next_step,
            complete,
            curves: self.curves.clone(),
            best: self.stopper.best,
            bad: self.stopper.bad,
            optimizer: self.optimizer.state(),
            adversary_optimizer: self.with_adversary.then(|| self.adversary.state()),
            ema: None,
            params,
        }
    }
}

/// Where the training loops leave snapshots and find the one to resume from.
pub trait Checkpoints {
    /// Steps between mid-stage snapshots (0 = only at the end of a stage).
    fn every(&self) -> u64;
    /// Stores a snapshot.
    ///
    /// # Errors
    /// I/O errors.
    fn save(&mut self, snapshot: &Snapshot) -> Result<()>;
    /// The latest snapshot of `stage`, if the run is being resumed and one exists.
    ///
    /// # Errors
    /// Unreadable or inconsistent snapshot files.
    fn resume(&mut self, stage: &'static str) -> Result<Option<Snapshot>>;
}

/// [`Checkpoints`] that keeps nothing (tests, library use).
pub struct NoCheckpoints;
impl Checkpoints for NoCheckpoints {
    fn every(&self) -> u64 {
        0
    }
    fn save(&mut self, _: &Snapshot) -> Result<()> {
        Ok(())
    }
    fn resume(&mut self, _: &'static str) -> Result<Option<Snapshot>> {
        Ok(None)
    }
}

/// The random stream `name` of a stage started (or resumed) at `start`: resumed stages draw
/// fresh streams derived from the step, so a resumed run is statistically, not bitwise, the same
/// as an uninterrupted one.
pub(crate) fn stage_stream(seed: u64, name: &str, start: u64) -> rand::rngs::StdRng {
    if start == 0 {
        stream(seed, name)
    } else {
        stream(seed, &format!("{name}@{start}"))
    }
}

pub(crate) fn due(checkpoints: &dyn Checkpoints, step: u64) -> bool {
    let every = checkpoints.every();
    every > 0 && (step + 1).is_multiple_of(every)
}

/// Shuffled minibatches over `n` rows, reshuffled every epoch (seeded).
pub struct Minibatches {
    order: Vec<usize>,
    position: usize,
    batch: usize,
    rng: rand::rngs::StdRng,
}

impl Minibatches {
    /// Batches of `batch` rows (the last one of an epoch may be smaller, never empty).
    pub fn new(n: usize, batch: usize, rng: rand::rngs::StdRng) -> Self {
        let mut s = Self {
            order: (0..n).collect(),
            position: n,
            batch: batch.max(1),
            rng,
        };
        s.position = s.order.len();
        s
    }
    /// The next batch of row indices.
    pub fn next_batch(&mut self) -> Vec<usize> {
        if self.position >= self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.position = 0;
        }
        let end = (self.position + self.batch).min(self.order.len());
        let rows = self.order[self.position..end].to_vec();
        self.position = end;
        rows
    }
}

pub(crate) fn should_validate(cfg: &TrainConfig, step: u64, total: u64) -> bool {
    cfg.validate_every > 0 && ((step + 1).is_multiple_of(cfg.validate_every) || step + 1 == total)
}

/// Tracks the best validation loss for early stopping.
struct EarlyStopping {
    best: f64,
    bad: u64,
    patience: u64,
}
impl EarlyStopping {
    fn should_stop(&mut self, value: f64) -> bool {
        if value < self.best {
            self.best = value;
            self.bad = 0;
        } else {
            self.bad += 1;
        }
        self.patience > 0 && self.bad >= self.patience
    }
}

/// Trains a stage-1 model on `train` cells, validating on `validation` cells. Each step: loss,
/// backward, clip, AdamW, [`Autoencoder::after_step`], then the adversary's updates (if any).
///
/// # Errors
/// Non-finite losses (with the step), shape errors.
pub fn train_autoencoder(
    model: &mut dyn Autoencoder,
    train: &dyn TrainingCells,
    validation: &ExpressionBatch,
    cfg: &TrainConfig,
    seed: u64,
    progress: &mut dyn Progress,
) -> Result<Vec<CurvePoint>> {
    train_autoencoder_with(
        model,
        train,
        validation,
        cfg,
        seed,
        progress,
        &mut NoCheckpoints,
    )
}

fn autoencoder_params(model: &mut dyn Autoencoder) -> TensorMap {
    let mut params = collect(&[("autoencoder", &*model)]);
    if let Some(adversary) = model.adversary_mut() {
        params.extend(collect(&[("adversary", &*adversary)]));
    }
    params
}

/// [`train_autoencoder`] that leaves snapshots in `checkpoints` and continues from the latest
/// one when resuming (a finished stage is restored and not trained again).
///
/// # Errors
/// As [`train_autoencoder`]; snapshot I/O errors.
pub fn train_autoencoder_with(
    model: &mut dyn Autoencoder,
    train: &dyn TrainingCells,
    validation: &ExpressionBatch,
    cfg: &TrainConfig,
    seed: u64,
    progress: &mut dyn Progress,
    checkpoints: &mut dyn Checkpoints,
) -> Result<Vec<CurvePoint>> {
    let mut state = StageState::begin("autoencoder", (cfg, true), checkpoints, &mut |snap| {
        restore_params(&snap.params, &mut *model, "autoencoder")?;
        if let Some(adversary) = model.adversary_mut() {
            restore_params(&snap.params, adversary, "adversary")?;
        }
        Ok(())
    })?;
    let Some(start) = state.start else {
        return Ok(state.curves);
    };
    let mut batches = train.batches(
        cfg.batch_size,
        stage_stream(seed, "autoencoder.batches", start),
    )?;
    // The adversary (if any) has its own optimizer state and noise stream, so models without one
    // train exactly as before.
    let mut noise = stage_stream(seed, "autoencoder.noise", start);
    let mut adversary_noise = stage_stream(seed, "autoencoder.adversary", start);
    let total = cfg.autoencoder_steps;
    let mut stopped_at = total;
    for step in start..total {
        let batch = batches.next_batch()?.cells;
        let loss = model.loss(&batch, step, &mut noise)?;
        let (value, mut grads) = NamedGradients::backward(loss.total, &*model, "autoencoder")
            .map_err(|e| at_step(e, "autoencoder", step))?;
        if cfg.grad_clip > 0.0 {
            grads.clip_global_norm(cfg.grad_clip);
        }
        let lr = cfg.lr_schedule.rate(cfg.autoencoder_lr, step, total);
        state
            .optimizer
            .apply(&mut *model, "autoencoder", &grads, lr)?;
        model.after_step(&batch, &mut noise)?;
        adversary_steps(
            model,
            &batch,
            (step, lr),
            cfg,
            &mut state.adversary,
            &mut adversary_noise,
            ("autoencoder", step, &mut state.curves),
        )?;
        let point = |name: String, value: f32| CurvePoint {
            stage: "autoencoder",
            step,
            name,
            value: value as f64,
        };
        state.curves.push(point("train_loss".into(), value));
        for (name, v) in &loss.components {
            state.curves.push(point(format!("train_{name}"), *v));
        }
        progress.step("autoencoder", step, total, value);
        if should_validate(cfg, step, total) && validation.n > 0 {
            let v = autoencoder_validation_loss(model, validation, cfg.batch_size, seed)?;
            if state.validated(step, v) {
                stopped_at = step + 1;
                break;
            }
        }
        if step + 1 < total && due(checkpoints, step) {
            checkpoints.save(&state.snapshot((step + 1, false), autoencoder_params(model)))?;
        }
    }
    checkpoints.save(&state.snapshot((stopped_at, true), autoencoder_params(model)))?;
    Ok(state.curves)
}

/// Runs the autoencoder's adversary updates after autoencoder step `step` (none for models
/// without an adversary), logging their losses as `train_adversary_*` under `stage` at step
/// `log_step`.
///
/// # Errors
/// Non-finite losses (with the step), model errors.
pub(crate) fn adversary_steps(
    model: &mut dyn Autoencoder,
    batch: &ExpressionBatch,
    (step, lr): (u64, f32),
    cfg: &TrainConfig,
    optimizer: &mut AdamW,
    rng: &mut rand::rngs::StdRng,
    (stage, log_step, curves): (&'static str, u64, &mut Vec<CurvePoint>),
) -> Result<()> {
    for _ in 0..model.adversary_updates(step) {
        let adv = model.adversary_loss(batch, step, rng)?;
        let Some(params) = model.adversary_mut() else {
            return Err(LatentError::Incompatible(
                "the autoencoder asked for adversary updates but has no adversary".into(),
            ));
        };
        let (v, mut g) = NamedGradients::backward(adv.total, &*params, "adversary")
            .map_err(|e| at_step(e, "adversary", step))?;
        if cfg.grad_clip > 0.0 {
            g.clip_global_norm(cfg.grad_clip);
        }
        optimizer.apply(params, "adversary", &g, lr)?;
        curves.push(CurvePoint {
            stage,
            step: log_step,
            name: "train_adversary_loss".into(),
            value: v as f64,
        });
        for (name, v) in &adv.components {
            curves.push(CurvePoint {
                stage,
                step: log_step,
                name: format!("train_adversary_{name}"),
                value: *v as f64,
            });
        }
    }
    Ok(())
}

/// Copies a snapshot's parameters under `prefix` into `model` (errors name the snapshot).
pub(crate) fn restore_params(
    map: &TensorMap,
    model: &mut dyn Parameters,
    prefix: &str,
) -> Result<()> {
    restore(map, model, prefix, std::path::Path::new("resume snapshot"))
}

/// Mean loss over the validation cells (fixed noise stream so values are comparable).
///
/// # Errors
/// Propagates model errors.
pub fn autoencoder_validation_loss(
    model: &mut dyn Autoencoder,
    validation: &ExpressionBatch,
    batch: usize,
    seed: u64,
) -> Result<f64> {
    Ok(autoencoder_validation_terms(model, validation, batch, seed)?["total"])
}

/// Mean loss and mean of every named loss component (`reconstruction`: the held-out negative
/// log-likelihood per cell for likelihood models, `kl`, …) over the validation cells, with the
/// same fixed noise stream as [`autoencoder_validation_loss`]. Keys: `total` and the component
/// names.
///
/// # Errors
/// Propagates model errors.
pub fn autoencoder_validation_terms(
    model: &mut dyn Autoencoder,
    validation: &ExpressionBatch,
    batch: usize,
    seed: u64,
) -> Result<BTreeMap<String, f64>> {
    let mut rng = stream(seed, "autoencoder.validation");
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let mut count = 0usize;
    let rows: Vec<usize> = (0..validation.n).collect();
    for chunk in rows.chunks(batch.max(1)) {
        let b = validation.select(chunk);
        let loss = model.loss(&b, u64::MAX / 2, &mut rng)?;
        let w = chunk.len() as f64;
        *sums.entry("total".into()).or_default() += loss.total.array() as f64 * w;
        for (name, value) in &loss.components {
            *sums.entry(name.clone()).or_default() += f64::from(*value) * w;
        }
        count += chunk.len();
    }
    let n = count.max(1) as f64;
    sums.entry("total".into()).or_default();
    Ok(sums.into_iter().map(|(k, v)| (k, v / n)).collect())
}

/// Latents (standardized) with their conditions: what stage 2 trains on.
#[derive(Debug, Clone)]
pub struct LatentData {
    /// Row-major `(n, dim)`.
    pub z: Vec<f32>,
    /// Rows.
    pub n: usize,
    /// Latent width.
    pub dim: usize,
    /// Per-cell conditions.
    pub conditions: ConditionTable,
}

impl LatentData {
    fn rows(&self, rows: &[usize]) -> Vec<f32> {
        rows.iter()
            .flat_map(|&r| self.z[r * self.dim..(r + 1) * self.dim].iter().copied())
            .collect()
    }
}

/// The trainable parts of stage 2 seen as one parameter tree (`denoiser.*`, `conditioner.*`).
pub struct Stage2<'a> {
    /// The network.
    pub denoiser: &'a mut (dyn Denoiser + 'static),
    /// The condition encoder, if any.
    pub conditioner: Option<&'a mut (dyn Conditioner + 'static)>,
}

impl Parameters for Stage2<'_> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ParamRef<'_>)) {
        self.denoiser.visit(&crate::nn::join(prefix, "denoiser"), f);
        if let Some(c) = &self.conditioner {
            c.visit(&crate::nn::join(prefix, "conditioner"), f);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        self.denoiser
            .visit_mut(&crate::nn::join(prefix, "denoiser"), f);
        if let Some(c) = &mut self.conditioner {
            c.visit_mut(&crate::nn::join(prefix, "conditioner"), f);
        }
    }
}

/// One stage-2 batch with its randomness drawn: the sampler's noisy inputs and targets, the
/// model times, and which rows train the unconditional (dropped) embedding.
struct DenoiserBatch<'r> {
    rows: &'r [usize],
    pair: TrainingPair,
    null: Vec<bool>,
}

impl<'r> DenoiserBatch<'r> {
    /// Draws noise, times and (with a conditioner) condition dropout for `rows` of `data`.
    fn draw(
        stage: &Stage2<'_>,
        sampler: &dyn LatentSampler,
        data: &LatentData,
        rows: &'r [usize],
        drop_prob: f32,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let n = rows.len();
        let z0 = data.rows(rows);
        let mut noise = vec![0.0; z0.len()];
        fill_normal(rng, &mut noise);
        let t: Vec<f32> = (0..n).map(|_| sampler.sample_time(rng)).collect();
        let pair = sampler.training_pair(&z0, &noise, &t, data.dim)?;
        let null = match stage.conditioner {
            Some(_) => (0..n).map(|_| rng.gen::<f32>() < drop_prob).collect(),
            None => Vec::new(),
        };
        Ok(Self { rows, pair, null })
    }

    /// Mean squared error of the network on the batch rows `span`, times `weight`.
    fn loss(
        &self,
        stage: &Stage2<'_>,
        data: &LatentData,
        span: std::ops::Range<usize>,
        weight: f32,
        rng: &mut dyn rand::RngCore,
        dev: &Dev,
    ) -> Result<Scalar<TrainTape>> {
        let (n, dim) = (span.len(), data.dim);
        let values = span.start * dim..span.end * dim;
        let cond: Option<ConditionEmbedding<TrainTape>> = match &stage.conditioner {
            Some(c) => Some(c.embed_train(
                &data.conditions.select(&self.rows[span.clone()]),
                &self.null[span.clone()],
                rng,
            )?),
            None => None,
        };
        let input = tensor2(dev, &self.pair.noisy[values.clone()], n, dim)?;
        // The noisy inputs are data here (not in joint fine-tuning): no input gradient for them.
        let out = crate::nn::with_data_input(input.unique_id(), || {
            stage.denoiser.forward_train(
                input.retaped::<TrainTape>(),
                &self.pair.model_time[span.clone()],
                cond,
            )
        })?;
        let target = tensor2(dev, &self.pair.target[values], n, dim)?;
        let loss = crate::likelihood::mean_squared_error(out, target);
        Ok(if weight == 1.0 { loss } else { loss * weight })
    }
}

/// Stage-2 loss on one batch: MSE between the network output and the sampler's target.
///
/// # Errors
/// Shape errors.
pub fn denoiser_loss(
    stage: &Stage2<'_>,
    sampler: &dyn LatentSampler,
    data: &LatentData,
    rows: &[usize],
    drop_prob: f32,
    rng: &mut impl Rng,
    dev: &Dev,
) -> Result<Scalar<TrainTape>> {
    let batch = DenoiserBatch::draw(stage, sampler, data, rows, drop_prob, rng)?;
    batch.loss(stage, data, 0..rows.len(), 1.0, rng, dev)
}

/// The stage-2 loss of one batch and its gradients, computed data-parallel: the batch's
/// randomness is drawn first, then each of [`crate::nn::training_shards`] (`shards`: a fixed
/// count, or `None` for the default, which depends on the thread count only through one thread
/// or more and on the denoiser's rows per sample, decision 0029) runs forward and backward on
/// its rows (its loss weighted by its share
/// of the rows, its conditioner randomness and dropout masks from its own streams seeded in shard
/// order) on its own thread, and the shard gradients are summed in shard order (the linear
/// layers' weight gradients after all shards, decision 0020). A batch of one shard is exactly
/// [`denoiser_loss`] and its backward. Rows are independent in every denoiser and conditioner
/// (the registry conformance tests check it), so this is the gradient of the batch's mean loss;
/// for a given split the result does not depend on the thread count.
///
/// # Errors
/// Shape errors; [`LatentError::NonFinite`] when a shard's loss is not finite.
pub fn denoiser_gradients(
    stage: &Stage2<'_>,
    sampler: &dyn LatentSampler,
    data: &LatentData,
    (rows, shards): (&[usize], Option<usize>),
    drop_prob: f32,
    rng: &mut impl Rng,
    dev: &Dev,
) -> Result<(f32, NamedGradients)> {
    let batch = DenoiserBatch::draw(stage, sampler, data, rows, drop_prob, rng)?;
    let shards = crate::nn::training_shards(rows.len(), shards, stage.denoiser.rows_per_sample());
    if shards.len() <= 1 {
        let loss = batch.loss(stage, data, 0..rows.len(), 1.0, rng, dev)?;
        return NamedGradients::backward(loss, stage, "");
    }
    let seeds: Vec<u64> = shards.iter().map(|_| rng.next_u64()).collect();
    #[cfg(not(feature = "cuda"))]
    let transposes = std::sync::Arc::new(crate::nn::shared_transposes::SharedTransposes::default());
    let parts = crate::nn::run_tiles(shards.len(), |i| {
        let span = shards[i].clone();
        let weight = span.len() as f32 / rows.len() as f32;
        let mut shard_rng = rand::rngs::StdRng::seed_from_u64(seeds[i]);
        let masks = crate::rng::stream(seeds[i], "dropout");
        let shard = || {
            let loss = crate::nn::with_dropout_stream(masks, || {
                batch.loss(stage, data, span, weight, &mut shard_rng, dev)
            })?;
            NamedGradients::backward_shard(loss, stage, "")
        };
        #[cfg(not(feature = "cuda"))]
        return crate::nn::shared_transposes::with_shared_transposes(&transposes, shard);
        #[cfg(feature = "cuda")]
        shard()
    })?;
    let value = parts.iter().map(|(v, _)| v).sum();
    let grads = NamedGradients::sum_shards(parts.into_iter().map(|(_, g)| g).collect())?;
    Ok((value, grads))
}

/// Trains the denoiser (and conditioner) on standardized latents; returns curves and the EMA
/// weights (already copied into the models when `ema_decay > 0`).
///
/// # Errors
/// Non-finite losses (with the step), shape errors.
#[allow(clippy::too_many_arguments)]
pub fn train_denoiser(
    stage: &mut Stage2<'_>,
    sampler: &dyn LatentSampler,
    train: &LatentData,
    validation: &LatentData,
    drop_prob: f32,
    cfg: &TrainConfig,
    seed: u64,
    dev: &Dev,
    progress: &mut dyn Progress,
) -> Result<Vec<CurvePoint>> {
    train_denoiser_with(
        stage,
        sampler,
        train,
        validation,
        drop_prob,
        (cfg, seed),
        dev,
        progress,
        &mut NoCheckpoints,
    )
}

/// [`train_denoiser`] that leaves snapshots in `checkpoints` and continues from the latest one
/// when resuming.
///
/// # Errors
/// As [`train_denoiser`]; snapshot I/O errors.
#[allow(clippy::too_many_arguments)]
pub fn train_denoiser_with(
    stage: &mut Stage2<'_>,
    sampler: &dyn LatentSampler,
    train: &LatentData,
    validation: &LatentData,
    drop_prob: f32,
    (cfg, seed): (&TrainConfig, u64),
    dev: &Dev,
    progress: &mut dyn Progress,
    checkpoints: &mut dyn Checkpoints,
) -> Result<Vec<CurvePoint>> {
    let mut ema = (cfg.ema_decay > 0.0).then(|| Ema::new(stage, "", cfg.ema_decay));
    let mut state = StageState::begin("denoiser", (cfg, false), checkpoints, &mut |snap| {
        restore_params(&snap.params, stage, "")?;
        if let (Some(e), Some((n, m))) = (&mut ema, &snap.ema) {
            e.restore_state(*n, m);
        }
        Ok(())
    })?;
    let Some(start) = state.start else {
        return Ok(state.curves);
    };
    let mut batches = Minibatches::new(
        train.n,
        cfg.batch_size,
        stage_stream(seed, "denoiser.batches", start),
    );
    let mut rng = stage_stream(seed, "denoiser.noise", start);
    let total = cfg.denoiser_steps;
    let mut stopped_at = total;
    for step in start..total {
        let rows = batches.next_batch();
        let (value, mut grads) = denoiser_gradients(
            stage,
            sampler,
            train,
            (&rows, cfg.shards),
            drop_prob,
            &mut rng,
            dev,
        )
        .map_err(|e| at_step(e, "denoiser", step))?;
        if cfg.grad_clip > 0.0 {
            grads.clip_global_norm(cfg.grad_clip);
        }
        let lr = cfg.lr_schedule.rate(cfg.denoiser_lr, step, total);
        state.optimizer.apply(stage, "", &grads, lr)?;
        if let Some(e) = &mut ema {
            e.update(stage, "")?;
        }
        state.curves.push(CurvePoint {
            stage: "denoiser",
            step,
            name: "train_loss".into(),
            value: value as f64,
        });
        progress.step("denoiser", step, total, value);
        if should_validate(cfg, step, total) && validation.n > 0 {
            let v =
                denoiser_validation_loss(stage, sampler, validation, cfg.batch_size, seed, dev)?;
            if state.validated(step, v) {
                stopped_at = step + 1;
                break;
            }
        }
        if step + 1 < total && due(checkpoints, step) {
            checkpoints.save(&Snapshot {
                ema: ema.as_ref().map(Ema::state),
                ..state.snapshot((step + 1, false), collect(&[("", &*stage)]))
            })?;
        }
    }
    if let Some(e) = &ema {
        e.copy_to(stage, "")?;
    }
    checkpoints.save(&state.snapshot((stopped_at, true), collect(&[("", &*stage)])))?;
    Ok(state.curves)
}

/// Mean stage-2 loss over validation latents with a fixed noise stream.
///
/// # Errors
/// Propagates model errors.
pub fn denoiser_validation_loss(
    stage: &Stage2<'_>,
    sampler: &dyn LatentSampler,
    validation: &LatentData,
    batch: usize,
    seed: u64,
    dev: &Dev,
) -> Result<f64> {
    let mut rng = stream(seed, "denoiser.validation");
    let rows: Vec<usize> = (0..validation.n).collect();
    let (mut sum, mut count) = (0.0, 0usize);
    for chunk in rows.chunks(batch.max(1)) {
        let loss = denoiser_loss(stage, sampler, validation, chunk, 0.0, &mut rng, dev)?;
        sum += loss.array() as f64 * chunk.len() as f64;
        count += chunk.len();
    }
    Ok(sum / count.max(1) as f64)
}

pub(crate) fn at_step(e: LatentError, stage: &str, step: u64) -> LatentError {
    match e {
        LatentError::NonFinite(what) => {
            LatentError::NonFinite(format!("{what} at {stage} step {step}"))
        }
        other => other,
    }
}

/// Writes curves as CSV (`stage,step,name,value`).
pub fn curves_csv(curves: &[CurvePoint]) -> String {
    let mut out = String::from("stage,step,name,value\n");
    for c in curves {
        out.push_str(&format!("{},{},{},{}\n", c.stage, c.step, c.name, c.value));
    }
    out
}

#[cfg(test)]
#[cfg(not(feature = "cuda"))]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::device::Tensor2;
    use crate::nn::{Init, Linear};
    use crate::testing::{spread_values, test_device};

    /// A linear denoiser that records, for each training forward pass, whether its input is
    /// the data input the trainer named.
    struct Probe {
        layer: Linear,
        named: Mutex<Vec<bool>>,
    }
    crate::parameters!(Probe { layer });

    impl Denoiser for Probe {
        fn forward_train(
            &self,
            z: Tensor2<TrainTape>,
            _t: &[f32],
            _cond: Option<ConditionEmbedding<TrainTape>>,
        ) -> Result<Tensor2<TrainTape>> {
            let named = crate::nn::data_input::is_data_input(z.unique_id());
            self.named.lock().unwrap().push(named);
            self.layer.forward(z)
        }
        fn forward(
            &self,
            z: Tensor2,
            _t: &[f32],
            _cond: Option<ConditionEmbedding<NoneTape>>,
        ) -> Result<Tensor2> {
            self.layer.forward(z)
        }
    }

    /// Plain stage-2 training hands the denoiser its noisy inputs named as data (so that the
    /// linear kernel skips their gradient, decision 0021), and the name ends with the pass.
    #[test]
    fn stage_two_names_its_noisy_inputs_as_data() {
        let dev = test_device().unwrap();
        let (n, dim) = (4, 3);
        let mut probe = Probe {
            layer: Linear::new(
                &dev,
                dim,
                dim,
                Init::KaimingUniform,
                &mut stream(0, "probe"),
            )
            .unwrap(),
            named: Mutex::new(Vec::new()),
        };
        let data = LatentData {
            z: spread_values(n * dim, 1, 1.0),
            n,
            dim,
            conditions: ConditionTable::default(),
        };
        let rows: Vec<usize> = (0..n).collect();
        let batch = DenoiserBatch {
            rows: &rows,
            pair: TrainingPair {
                noisy: spread_values(n * dim, 2, 1.0),
                target: spread_values(n * dim, 3, 1.0),
                model_time: vec![0.5; n],
            },
            null: Vec::new(),
        };
        let stage = Stage2 {
            denoiser: &mut probe,
            conditioner: None,
        };
        let loss = batch
            .loss(&stage, &data, 0..n, 1.0, &mut stream(0, "rng"), &dev)
            .unwrap();
        assert!(loss.array().is_finite());
        assert_eq!(*probe.named.lock().unwrap(), vec![true]);
        let outside = tensor2(&dev, &data.z, n, dim).unwrap();
        assert!(!crate::nn::data_input::is_data_input(outside.unique_id()));
    }
}
