//! The generation loop, written out step by step:
//! noise → (sampler steps calling the denoiser, with classifier-free guidance) → latents →
//! un-standardize → decode with the autoencoder.

use rand::Rng;

use crate::device::{tensor2, Dev};
use crate::nn::{append_tiles, map_tiles, row_blocks, row_tiles};
use crate::plugin::{Autoencoder, ConditionTable, Conditioner, Denoiser, LatentSampler};
use crate::rng::fill_normal;
use crate::{LatentError, Result};

/// Per-dimension mean and standard deviation of the training latents; stage 2 works on
/// standardized latents.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatentStats {
    /// Mean per latent dimension.
    pub mean: Vec<f32>,
    /// Standard deviation per latent dimension (floored at 1e-6).
    pub std: Vec<f32>,
}

impl LatentStats {
    /// Mean 0 and standard deviation 1 in each of `dim` dimensions (standardizing is a no-op).
    pub fn identity(dim: usize) -> Self {
        Self {
            mean: vec![0.0; dim],
            std: vec![1.0; dim],
        }
    }
    /// Computes the statistics of row-major `(n, dim)` latents.
    pub fn fit(z: &[f32], n: usize, dim: usize) -> Self {
        let mut mean = vec![0.0f64; dim];
        let mut sq = vec![0.0f64; dim];
        for row in z.chunks_exact(dim) {
            for j in 0..dim {
                mean[j] += row[j] as f64;
                sq[j] += (row[j] as f64) * (row[j] as f64);
            }
        }
        let n = n.max(1) as f64;
        let mean: Vec<f64> = mean.iter().map(|m| m / n).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| ((s / n - m * m).max(0.0).sqrt()).max(1e-6) as f32)
            .collect();
        Self {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }
    /// `(z - mean) / std` in place.
    pub fn standardize(&self, z: &mut [f32]) {
        let d = self.mean.len();
        for (i, v) in z.iter_mut().enumerate() {
            *v = (*v - self.mean[i % d]) / self.std[i % d];
        }
    }
    /// `z * std + mean` in place.
    pub fn unstandardize(&self, z: &mut [f32]) {
        let d = self.mean.len();
        for (i, v) in z.iter_mut().enumerate() {
            *v = *v * self.std[i % d] + self.mean[i % d];
        }
    }
}

/// How to run the reverse process.
#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    /// Number of sampler steps.
    pub steps: usize,
    /// Classifier-free guidance scale `s`: `out = uncond + s (cond − uncond)`; 1 disables the
    /// unconditional pass.
    pub guidance: f32,
    /// Cells generated together (noise drawn per chunk); on the CPU each chunk's network calls
    /// run in tiles ([`crate::nn::row_tiles`]), on CUDA one call per chunk.
    pub chunk_size: usize,
    /// Per-attribute guidance scales `s₁ … s_k`, one per [`Conditioner::attributes`] entry
    /// (empty: the single `guidance` scale). Composed in the attributes' order:
    /// `out = e₀ + Σᵢ sᵢ (eᵢ − eᵢ₋₁)` where `eᵢ` is the prediction with the first `i` attributes
    /// present and the rest null (k + 1 network calls per step). Equal scales `s` give exactly
    /// ordinary guidance with scale `s` (the sum telescopes).
    pub attribute_scales: Vec<f32>,
}

/// Generates standardized latents for every row of `conditions` (or `n` unconditional rows),
/// starting from fresh Gaussian noise.
///
/// # Errors
/// Model errors, or guidance requested without a conditioner.
#[allow(clippy::too_many_arguments)]
pub fn generate_latents(
    denoiser: &dyn Denoiser,
    conditioner: Option<&dyn Conditioner>,
    sampler: &dyn LatentSampler,
    conditions: &ConditionTable,
    n: usize,
    dim: usize,
    options: GenerateOptions,
    rng: &mut impl Rng,
    dev: &Dev,
) -> Result<Vec<f32>> {
    let parts = Parts {
        denoiser,
        conditioner,
        dim,
        dev,
    };
    parts.generate(sampler, conditions, n, options, None, rng)
}

/// Like [`generate_latents`] but starting from the given noise-end latents `start` (`(n, dim)`,
/// e.g. from [`invert_latents`]) instead of fresh noise.
///
/// # Errors
/// As [`generate_latents`], and a shape error when `start` is not `n · dim` long.
#[allow(clippy::too_many_arguments)]
pub fn generate_latents_from(
    denoiser: &dyn Denoiser,
    conditioner: Option<&dyn Conditioner>,
    sampler: &dyn LatentSampler,
    conditions: &ConditionTable,
    start: &[f32],
    dim: usize,
    options: GenerateOptions,
    rng: &mut impl Rng,
    dev: &Dev,
) -> Result<Vec<f32>> {
    let n = start.len() / dim.max(1);
    if start.len() != n * dim {
        return Err(LatentError::shape("start latents", n * dim, start.len()));
    }
    let parts = Parts {
        denoiser,
        conditioner,
        dim,
        dev,
    };
    parts.generate(sampler, conditions, n, options, Some(start), rng)
}

/// Maps standardized data latents `z0 (n, dim)` back to the noise end (t = 1) by running the
/// sampler's deterministic process forwards under each row's `conditions` (conditional model,
/// no guidance: guidance makes inversion drift). Together with [`generate_latents_from`] under a
/// new condition this gives a per-cell counterfactual.
///
/// # Errors
/// [`LatentError::Incompatible`] when the sampler cannot invert (stochastic samplers), model
/// errors, non-finite results.
#[allow(clippy::too_many_arguments)]
pub fn invert_latents(
    denoiser: &dyn Denoiser,
    conditioner: Option<&dyn Conditioner>,
    sampler: &dyn LatentSampler,
    conditions: &ConditionTable,
    z0: &[f32],
    dim: usize,
    options: GenerateOptions,
    dev: &Dev,
) -> Result<Vec<f32>> {
    let n = z0.len() / dim.max(1);
    if conditioner.is_some() && conditions.len() != n {
        return Err(LatentError::shape(
            "invert_latents conditions",
            n,
            conditions.len(),
        ));
    }
    let parts = Parts {
        denoiser,
        conditioner,
        dim,
        dev,
    };
    let mut grid = sampler.time_grid(options.steps)?;
    grid.reverse();
    let unguided = GenerateOptions {
        guidance: 1.0,
        ..options.clone()
    };
    let mut out = Vec::with_capacity(z0.len());
    let rows: Vec<usize> = (0..n).collect();
    for chunk in rows.chunks(options.chunk_size.max(1)) {
        let table = conditions.select(if conditioner.is_some() { chunk } else { &[] });
        let mut model = parts.model(&table, chunk.len(), &unguided);
        let mut z = z0[chunk[0] * dim..(chunk[0] + chunk.len()) * dim].to_vec();
        for w in grid.windows(2) {
            z = sampler.invert_step(&mut model, &z, w[0], w[1]).ok_or_else(|| {
                LatentError::Incompatible(
                    "--invert needs a deterministic sampler (rectified_flow, or ddim with eta = 0); pass --sampler ddim or train with rectified_flow".into(),
                )
            })??;
        }
        out.extend_from_slice(&z);
    }
    if out.iter().any(|v| !v.is_finite()) {
        return Err(LatentError::NonFinite(
            "inverted latents; try more --steps".into(),
        ));
    }
    Ok(out)
}

/// The networks one generation pass calls.
struct Parts<'a> {
    denoiser: &'a dyn Denoiser,
    conditioner: Option<&'a dyn Conditioner>,
    dim: usize,
    dev: &'a Dev,
}

impl<'a> Parts<'a> {
    /// The model function for `m` rows with conditions `table`: [`Parts::predict`] over the
    /// rows' tiles ([`row_tiles`]), in parallel.
    fn model<'b>(
        &'b self,
        table: &ConditionTable,
        m: usize,
        options: &'b GenerateOptions,
    ) -> impl FnMut(&[f32], f32) -> Result<Vec<f32>> + 'b {
        let tiles = row_tiles(m);
        let tables: Vec<ConditionTable> = match self.conditioner {
            Some(_) => tiles
                .iter()
                .map(|rows| table.select(&rows.clone().collect::<Vec<_>>()))
                .collect(),
            None => Vec::new(),
        };
        let dim = self.dim;
        move |z: &[f32], t: f32| -> Result<Vec<f32>> {
            map_tiles(&tiles, |i| {
                let rows = &tiles[i];
                let z = &z[rows.start * dim..rows.end * dim];
                self.predict(tables.get(i), z, rows.len(), t, options)
            })
        }
    }

    /// The model's prediction for the `m` rows `z` at time `t` under conditions `table`, with
    /// classifier-free guidance `out = uncond + s (cond − uncond)` (one pass when `s = 1`), or
    /// per-attribute guidance (see [`GenerateOptions::attribute_scales`]).
    fn predict(
        &self,
        table: Option<&ConditionTable>,
        z: &[f32],
        m: usize,
        t: f32,
        options: &GenerateOptions,
    ) -> Result<Vec<f32>> {
        let times = vec![t; m];
        let input = tensor2(self.dev, z, m, self.dim)?;
        let (Some(c), Some(table)) = (self.conditioner, table) else {
            return Ok(self.denoiser.forward(input, &times, None)?.as_vec());
        };
        let scales = &options.attribute_scales;
        if !scales.is_empty() {
            let k = scales.len();
            let predict = |present: usize| -> Result<Vec<f32>> {
                let flags: Vec<bool> = (0..k).map(|j| j < present).collect();
                let e = c.embed_attributes(table, &flags)?;
                Ok(self
                    .denoiser
                    .forward(input.clone(), &times, Some(e))?
                    .as_vec())
            };
            let mut previous = predict(0)?;
            let mut out = previous.clone();
            for (i, s) in scales.iter().enumerate() {
                let current = predict(i + 1)?;
                for ((o, c), p) in out.iter_mut().zip(&current).zip(&previous) {
                    *o += s * (c - p);
                }
                previous = current;
            }
            return Ok(out);
        }
        let cond = c.embed(table, &vec![false; m])?;
        let conditional = self
            .denoiser
            .forward(input.clone(), &times, Some(cond))?
            .as_vec();
        if options.guidance == 1.0 {
            return Ok(conditional);
        }
        let null = c.embed(table, &vec![true; m])?;
        let unconditional = self.denoiser.forward(input, &times, Some(null))?.as_vec();
        Ok(unconditional
            .iter()
            .zip(&conditional)
            .map(|(u, c)| u + options.guidance * (c - u))
            .collect())
    }

    fn generate(
        &self,
        sampler: &dyn LatentSampler,
        conditions: &ConditionTable,
        n: usize,
        options: GenerateOptions,
        start: Option<&[f32]>,
        rng: &mut impl Rng,
    ) -> Result<Vec<f32>> {
        let dim = self.dim;
        if self.conditioner.is_some() && conditions.len() != n {
            return Err(LatentError::shape(
                "generate_latents conditions",
                n,
                conditions.len(),
            ));
        }
        if self.conditioner.is_none() && options.guidance != 1.0 {
            return Err(LatentError::Incompatible(
                "classifier-free guidance needs a conditioner; remove --cfg or train with one"
                    .into(),
            ));
        }
        let attributes = self.conditioner.map_or(0, |c| c.attributes().len());
        if !options.attribute_scales.is_empty() && options.attribute_scales.len() != attributes {
            return Err(LatentError::Incompatible(format!(
                "{} per-attribute guidance scales for a conditioner with {attributes} separately \
                 guided attributes (a `combined` conditioner trained with part_drop_prob > 0 has \
                 one per part)",
                options.attribute_scales.len()
            )));
        }
        let grid = sampler.time_grid(options.steps)?;
        let mut out = Vec::with_capacity(n * dim);
        let rows: Vec<usize> = (0..n).collect();
        for chunk in rows.chunks(options.chunk_size.max(1)) {
            let m = chunk.len();
            // 1. Start from pure noise at t = 1 (or the given noise-end latents).
            let mut z = match start {
                Some(s) => s[chunk[0] * dim..(chunk[0] + m) * dim].to_vec(),
                None => {
                    let mut z = vec![0.0f32; m * dim];
                    fill_normal(rng, &mut z);
                    z
                }
            };
            // 2. Embed the conditions per call (and the null condition for guidance).
            let table = conditions.select(if self.conditioner.is_some() {
                chunk
            } else {
                &[]
            });
            let mut model = self.model(&table, m, &options);
            // 3. Integrate the reverse process along the sampler's time grid.
            for w in grid.windows(2) {
                z = sampler.step(&mut model, &z, w[0], w[1], rng)?;
            }
            out.extend_from_slice(&z);
        }
        if out.iter().any(|v| !v.is_finite()) {
            return Err(LatentError::NonFinite(
                "generated latents; try fewer guidance, more steps or a smaller learning rate"
                    .into(),
            ));
        }
        Ok(out)
    }
}

/// Rows per parallel decoding call (and per observation-noise stream) on the CPU.
pub const DECODE_BLOCK_ROWS: usize = 256;

/// Decodes standardized latents to expression: un-standardize, then the autoencoder's mean (or a
/// draw from its observation model when `sample_observation`), `chunk_size` rows at a time, each
/// chunk in blocks of [`DECODE_BLOCK_ROWS`] decoded in parallel. Observation noise comes from one
/// stream per block, seeded in block order from `sample_observation`, so it does not depend on
/// the thread count. [`ChunkedDecoder`] gives the same rows a chunk at a time.
///
/// # Errors
/// Model errors.
pub fn decode_latents<'a>(
    autoencoder: &'a dyn Autoencoder,
    stats: &LatentStats,
    z: Vec<f32>,
    n: usize,
    library_size: &'a [f32],
    sample_observation: Option<&'a mut dyn rand::RngCore>,
    chunk_size: usize,
) -> Result<Vec<f32>> {
    let mut decoder = ChunkedDecoder::new(
        autoencoder,
        stats,
        z,
        n,
        library_size,
        sample_observation,
        chunk_size,
    );
    let mut out = Vec::with_capacity(n * autoencoder.n_genes());
    while decoder.decode_next(&mut out)? {}
    Ok(out)
}

/// [`decode_latents`] one chunk of rows at a time, for output written as it is decoded
/// (generated cells streamed into a file): the chunks concatenated are `decode_latents`' rows,
/// bit for bit.
pub struct ChunkedDecoder<'a> {
    autoencoder: &'a dyn Autoencoder,
    /// Un-standardized latents, `n × latent_dim`.
    z: Vec<f32>,
    n: usize,
    library_size: &'a [f32],
    sample_observation: Option<&'a mut dyn rand::RngCore>,
    chunk_size: usize,
    /// The first row not yet decoded.
    next: usize,
}

impl<'a> ChunkedDecoder<'a> {
    /// A decoder of the `n` standardized latents `z` (`n × latent_dim`), with the arguments of
    /// [`decode_latents`].
    pub fn new(
        autoencoder: &'a dyn Autoencoder,
        stats: &LatentStats,
        mut z: Vec<f32>,
        n: usize,
        library_size: &'a [f32],
        sample_observation: Option<&'a mut dyn rand::RngCore>,
        chunk_size: usize,
    ) -> Self {
        stats.unstandardize(&mut z);
        Self {
            autoencoder,
            z,
            n,
            library_size,
            sample_observation,
            chunk_size: chunk_size.max(1),
            next: 0,
        }
    }

    /// Appends the next chunk's rows (`rows × n_genes`, row-major) to `out`; `false` (and
    /// nothing appended) once every row is decoded.
    ///
    /// # Errors
    /// Model errors.
    pub fn decode_next(&mut self, out: &mut Vec<f32>) -> Result<bool> {
        use rand::SeedableRng;
        if self.next >= self.n {
            return Ok(false);
        }
        let (start, end) = (self.next, (self.next + self.chunk_size).min(self.n));
        let dim = self.autoencoder.latent_dim();
        let tiles = row_blocks(end - start, DECODE_BLOCK_ROWS);
        let seeds: Option<Vec<u64>> = self
            .sample_observation
            .as_deref_mut()
            .map(|rng| tiles.iter().map(|_| rng.next_u64()).collect());
        let (autoencoder, z, library_size) = (self.autoencoder, &self.z, self.library_size);
        append_tiles(&tiles, out, |i| {
            let rows = start + tiles[i].start..start + tiles[i].end;
            let zc = &z[rows.start * dim..rows.end * dim];
            let lib = &library_size[rows.clone()];
            match &seeds {
                Some(seeds) => autoencoder.decode_sample(
                    zc,
                    rows.len(),
                    lib,
                    &mut rand::rngs::StdRng::seed_from_u64(seeds[i]),
                ),
                None => autoencoder.decode_mean(zc, rows.len(), lib),
            }
        })?;
        self.next = end;
        Ok(true)
    }
}

#[cfg(all(test, not(feature = "cuda")))]
mod tests {
    use dfdx::prelude::NoneTape;

    use super::*;
    use crate::device::{Tensor2, TrainTape};
    use crate::nn::{Activation, Mlp};
    use crate::plugin::ConditionEmbedding;

    /// A denoiser ignoring time and conditions: an MLP with LayerNorm over the latent.
    struct PlainMlp {
        mlp: Mlp,
    }
    crate::parameters!(PlainMlp { mlp });

    impl Denoiser for PlainMlp {
        fn forward_train(
            &self,
            z: Tensor2<TrainTape>,
            _t: &[f32],
            _cond: Option<ConditionEmbedding<TrainTape>>,
        ) -> Result<Tensor2<TrainTape>> {
            self.mlp.forward(z, true)
        }
        fn forward(
            &self,
            z: Tensor2,
            _t: &[f32],
            _cond: Option<ConditionEmbedding<NoneTape>>,
        ) -> Result<Tensor2> {
            self.mlp.forward(z, false)
        }
    }

    #[test]
    fn tiled_model_calls_match_one_call_bit_for_bit_at_any_thread_count() {
        let dev = crate::testing::test_device().unwrap();
        let (dim, m) = (16, 3000);
        let mut rng = crate::rng::stream(0, "tiles");
        let denoiser = PlainMlp {
            mlp: Mlp::new(
                &dev,
                dim,
                &[256, 512, dim],
                Activation::Silu,
                true,
                0.0,
                &mut rng,
            )
            .unwrap(),
        };
        let parts = Parts {
            denoiser: &denoiser,
            conditioner: None,
            dim,
            dev: &dev,
        };
        let mut z = vec![0.0; m * dim];
        fill_normal(&mut rng, &mut z);
        let options = GenerateOptions {
            steps: 1,
            guidance: 1.0,
            chunk_size: m,
            attribute_scales: Vec::new(),
        };
        let table = ConditionTable::default();
        let whole = parts.predict(None, &z, m, 0.5, &options).unwrap();
        for threads in [1, 2, 4, 7] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let tiled = pool.install(|| parts.model(&table, m, &options)(&z, 0.5).unwrap());
            assert!(
                tiled == whole,
                "{threads} threads: tiles differ from one call"
            );
        }
    }
}
