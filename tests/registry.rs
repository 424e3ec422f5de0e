//! Registry conformance: every registered plugin, found through the catalog (no hand-written
//! list), parses from its example config, round-trips through JSON and TOML, builds, and behaves:
//! shapes, finiteness, determinism for a fixed seed, and a checkpoint round trip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use latentlab::framework::checkpoint;
use latentlab::framework::dfdx::prelude::*;
use latentlab::framework::joint::AffinePair;
use latentlab::framework::nn::Parameters;
use latentlab::framework::plugin::{
    AutoencoderConfig, ConditionKind, ConditionerConfig, DenoiserConfig, EvalContext,
    EvaluatorConfig, InputKind, LatentSampler, SamplerConfig,
};
use latentlab::framework::registry::{catalog, of_kind, PluginKind};
use latentlab::framework::rng::stream;
use latentlab::framework::testing::{self, GENES, LATENT};
use latentlab::framework::train::{denoiser_gradients, denoiser_loss, LatentData, Stage2};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn parse<B: DeserializeOwned + Serialize>(example: &str, name: &str) -> B {
    let parsed: B = toml::from_str(example)
        .unwrap_or_else(|e| panic!("{name}: example does not parse: {e}\n{example}"));
    let json = serde_json::to_string(&parsed).unwrap();
    let back: B = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("{name}: JSON round trip failed: {e}"));
    assert_eq!(
        serde_json::to_string(&back).unwrap(),
        json,
        "{name}: JSON round trip changed the config"
    );
    let toml_text = toml::to_string(&back).unwrap();
    let again: B = toml::from_str(&toml_text)
        .unwrap_or_else(|e| panic!("{name}: TOML round trip failed: {e}\n{toml_text}"));
    assert_eq!(
        serde_json::to_string(&again).unwrap(),
        json,
        "{name}: TOML round trip changed the config"
    );
    back
}

/// Rows computed within a batch (`in_batch`) equal the same rows computed alone (`alone`), up to
/// float rounding: sampling runs the networks over row tiles.
fn same_rows(in_batch: &[f32], alone: &[f32]) -> bool {
    in_batch.len() == alone.len()
        && in_batch
            .iter()
            .zip(alone)
            .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + a.abs()))
}

#[test]
fn every_kind_is_populated_and_names_are_unique() {
    latentlab::plugins::link();
    for kind in PluginKind::ALL {
        let names: Vec<_> = of_kind(kind).iter().map(|e| e.name).collect();
        assert!(!names.is_empty(), "no {kind:?} plugin registered");
        let mut sorted = names.clone();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            names.len(),
            "duplicate {kind:?} names: {names:?}"
        );
        for e in of_kind(kind) {
            assert!(
                !e.summary.is_empty() && e.example.contains(&format!("type = \"{}\"", e.name)),
                "{}: example must set its type",
                e.name
            );
        }
    }
}

#[test]
fn autoencoders_conform() {
    latentlab::plugins::link();
    for entry in of_kind(PluginKind::Autoencoder) {
        let cfg = parse::<Box<dyn AutoencoderConfig>>(entry.example, entry.name);
        let input = if entry.name.contains("nb") {
            InputKind::Counts
        } else {
            InputKind::Continuous
        };
        let batch = testing::expression(16, 1, input == InputKind::Counts);
        let mut a = cfg
            .build(&testing::autoencoder_context(input).unwrap())
            .unwrap();
        let b = cfg
            .build(&testing::autoencoder_context(input).unwrap())
            .unwrap();
        let za = a.encode(&batch).unwrap();
        assert_eq!(
            za,
            b.encode(&batch).unwrap(),
            "{}: same seed must give the same model",
            entry.name
        );
        let dim = a.latent_dim();
        assert_eq!(za.len(), 16 * dim, "{}: encode shape", entry.name);
        let x = a.decode_mean(&za, 16, &batch.library_size).unwrap();
        assert_eq!(x.len(), 16 * GENES, "{}: decode shape", entry.name);
        let tail = a
            .decode_mean(&za[10 * dim..], 6, &batch.library_size[10..])
            .unwrap();
        assert!(
            same_rows(&x[10 * GENES..], &tail),
            "{}: rows must be decoded independently (decoding runs over row tiles)",
            entry.name
        );
        assert!(
            x.iter().all(|v| v.is_finite()),
            "{}: decode finite",
            entry.name
        );
        if a.num_params() > 0 {
            let loss = a.loss(&batch, 0, &mut stream(0, "t")).unwrap();
            assert!(
                loss.total.array().is_finite(),
                "{}: loss finite",
                entry.name
            );
        } else {
            assert!(
                a.loss(&batch, 0, &mut stream(0, "t")).is_err(),
                "{}: a parameterless model must refuse training",
                entry.name
            );
        }
        // Checkpoint round trip into a differently seeded model gives identical outputs.
        let tensors = checkpoint::collect(&[("autoencoder", a.as_ref() as &dyn Parameters)]);
        let mut ctx = testing::autoencoder_context(input).unwrap();
        ctx.seed = 99;
        let mut c = cfg.build(&ctx).unwrap();
        checkpoint::restore(
            &tensors,
            c.as_mut(),
            "autoencoder",
            std::path::Path::new("mem"),
        )
        .unwrap();
        assert_eq!(
            c.encode(&batch).unwrap(),
            za,
            "{}: checkpoint round trip",
            entry.name
        );
        // A checkpoint for another gene list does not load.
        let mut other = testing::autoencoder_context(input).unwrap();
        other.n_genes = GENES + 3;
        let mut d = cfg.build(&other).unwrap();
        if a.num_params() > 0 {
            assert!(
                checkpoint::restore(
                    &tensors,
                    d.as_mut(),
                    "autoencoder",
                    std::path::Path::new("mem")
                )
                .is_err(),
                "{}: a checkpoint for {GENES} genes must not load into a {}-gene model",
                entry.name,
                GENES + 3
            );
        }
        // The loss decreases over a few optimizer steps (same noise stream for each evaluation).
        if a.num_params() > 0 {
            let eval = |m: &mut Box<dyn latentlab::framework::plugin::Autoencoder>| {
                m.loss(&batch, 0, &mut stream(5, "eval"))
                    .unwrap()
                    .total
                    .array()
            };
            let before = eval(&mut a);
            let mut opt = latentlab::framework::optim::AdamW::new(Default::default()).unwrap();
            let mut rng = stream(6, "steps");
            for step in 0..40 {
                let loss = a.loss(&batch, step, &mut rng).unwrap();
                let (_, grads) = latentlab::framework::optim::NamedGradients::backward(
                    loss.total,
                    a.as_ref(),
                    "autoencoder",
                )
                .unwrap();
                opt.apply(a.as_mut(), "autoencoder", &grads, 1e-2).unwrap();
            }
            let after = eval(&mut a);
            assert!(
                after.is_finite() && after < before,
                "{}: loss did not decrease over 40 steps: {before} -> {after}",
                entry.name
            );
        }
        if a.num_params() > 0 {
            latent_gradient_reaches_the_encoder_only(cfg.as_ref(), input, &batch, entry.name);
        }
        // A wrong input width is an error, not a panic.
        let mut wrong = testing::expression(4, 2, false);
        wrong.x.truncate(4 * (GENES - 1));
        assert!(
            a.encode(&wrong).is_err(),
            "{}: wrong width must be an error",
            entry.name
        );
    }
}

/// The loss's taped latent code (joint fine-tuning) has the latent shape, and a loss on it moves
/// the encoder's gradients but not the decoder's: two identically seeded models, one backward of
/// the autoencoder loss alone, one with `Σ latent²` added.
fn latent_gradient_reaches_the_encoder_only(
    cfg: &dyn AutoencoderConfig,
    input: InputKind,
    batch: &latentlab::framework::plugin::ExpressionBatch,
    name: &str,
) {
    use latentlab::framework::optim::NamedGradients;
    let gradients = |with_latent: bool| {
        let mut model = cfg
            .build(&testing::autoencoder_context(input).unwrap())
            .unwrap();
        let loss = model.loss(batch, 0, &mut stream(8, "latent")).unwrap();
        let latent = loss
            .latent
            .unwrap_or_else(|| panic!("{name}: a trainable autoencoder must return its latent"));
        assert_eq!(
            *latent.shape(),
            (batch.n, model.latent_dim()),
            "{name}: latent shape"
        );
        let total = if with_latent {
            loss.total + latent.square().sum()
        } else {
            loss.total
        };
        NamedGradients::backward(total, model.as_ref(), "")
            .unwrap()
            .1
    };
    let (plain, with_latent) = (gradients(false), gradients(true));
    let moved: Vec<&String> = plain
        .by_name
        .iter()
        .filter(|(k, g)| {
            g.as_vec()
                .iter()
                .zip(&with_latent.by_name[*k].as_vec())
                .any(|(a, b)| (a - b).abs() > 1e-6 * (1.0 + a.abs()))
        })
        .map(|(k, _)| k)
        .collect();
    assert!(
        moved.iter().any(|k| k.contains("encoder")),
        "{name}: the latent's gradient must reach the encoder (moved: {moved:?})"
    );
    assert!(
        moved.iter().all(|k| !k.contains("decoder")),
        "{name}: the latent's gradient must not reach the decoder (moved: {moved:?})"
    );
}

#[test]
fn denoisers_conform_for_every_supported_injection() {
    latentlab::plugins::link();
    let dev = testing::test_device().unwrap();
    for entry in of_kind(PluginKind::Denoiser) {
        let cfg = parse::<Box<dyn DenoiserConfig>>(entry.example, entry.name);
        let mut conditions: Vec<Option<_>> = vec![None];
        conditions.extend(cfg.supported_injections().into_iter().map(|i| Some((8, i))));
        for condition in conditions {
            let d = cfg
                .build(&testing::denoiser_context(condition).unwrap())
                .unwrap();
            let zv = testing::spread_values(5 * LATENT, 3, 1.0);
            let cv = testing::spread_values(5 * 8, 4, 0.5);
            let times = [0.1, 0.3, 0.5, 0.7, 0.9];
            // Sampling runs the network over row tiles: rows must not interact.
            let forward_rows = |rows: std::ops::Range<usize>| {
                let m = rows.len();
                let z = latentlab::framework::device::tensor2(
                    &dev,
                    &zv[rows.start * LATENT..rows.end * LATENT],
                    m,
                    LATENT,
                )
                .unwrap();
                let cond = condition.map(|_| latentlab::framework::plugin::ConditionEmbedding {
                    vector: latentlab::framework::device::tensor2(
                        &dev,
                        &cv[rows.start * 8..rows.end * 8],
                        m,
                        8,
                    )
                    .unwrap(),
                });
                d.forward(z, &times[rows], cond).unwrap().as_vec()
            };
            let v = forward_rows(0..5);
            let tail = forward_rows(2..5);
            assert!(
                same_rows(&v[2 * LATENT..], &tail),
                "{} {condition:?}: rows must be independent at inference",
                entry.name
            );
            assert_eq!(
                v.len(),
                5 * LATENT,
                "{} {condition:?}: output shape",
                entry.name
            );
            assert!(
                v.iter().all(|x| x.is_finite()),
                "{} {condition:?}: finite",
                entry.name
            );
        }
    }
}

/// The registry's rectified-flow sampler, for the stage-2 training tests.
fn flow_sampler() -> Box<dyn LatentSampler> {
    let flow = of_kind(PluginKind::Sampler)
        .into_iter()
        .find(|e| e.name == "rectified_flow")
        .unwrap();
    parse::<Box<dyn SamplerConfig>>(flow.example, flow.name)
        .build()
        .unwrap()
}

/// Rows of latent codes: enough for two training shards and a few more, with `sources`'
/// conditions.
fn shard_rows(sources: &[(String, ConditionKind)]) -> LatentData {
    let n = 2 * latentlab::framework::nn::TRAINING_SHARD_ROWS + 3;
    LatentData {
        z: testing::spread_values(n * LATENT, 7, 1.0),
        n,
        dim: LATENT,
        conditions: testing::condition_table(sources, n, 8),
    }
}

/// The loss and the flattened gradients of one data-parallel step (`train::denoiser_gradients`)
/// on `rows` of `data` in `shards` shards (`None`: the default for the thread count), computed in
/// a pool of `threads` threads, randomness from `stream(seed, name)`.
fn sharded_gradients(
    (threads, shards): (usize, Option<usize>),
    stage: &Stage2<'_>,
    sampler: &dyn LatentSampler,
    (data, rows): (&LatentData, &[usize]),
    drop_prob: f32,
    (seed, name): (u64, &str),
) -> (f32, Vec<f32>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let dev = testing::test_device().unwrap();
        let mut rng = stream(seed, name);
        let (v, g) = denoiser_gradients(
            stage,
            sampler,
            data,
            (rows, shards),
            drop_prob,
            &mut rng,
            &dev,
        )
        .unwrap();
        (v, g.by_name.values().flat_map(|t| t.as_vec()).collect())
    })
}

/// Stage-2 training splits each batch into data-parallel shards (`nn::training_shards`) and
/// sums their gradients: for every denoiser, alone and with every conditioner it can take, the
/// gradients of a fixed split are bit-identical at 1, 2 and 3 threads and equal the whole batch's
/// (without a conditioner, whose shards draw their own randomness); the default split is that
/// one at two and three threads, and at one thread the whole batch (to the bit) or, for long
/// products, that split again.
#[test]
fn sharded_training_gradients_match_the_batch_at_any_thread_count() {
    use latentlab::framework::optim::NamedGradients;
    latentlab::plugins::link();
    let dev = testing::test_device().unwrap();
    let sampler = flow_sampler();
    let conditioners: Vec<(&str, Box<dyn ConditionerConfig>)> = of_kind(PluginKind::Conditioner)
        .into_iter()
        .map(|e| {
            (
                e.name,
                parse::<Box<dyn ConditionerConfig>>(e.example, e.name),
            )
        })
        .collect();
    for entry in of_kind(PluginKind::Denoiser) {
        let cfg = parse::<Box<dyn DenoiserConfig>>(entry.example, entry.name);
        let mut pairings: Vec<Option<&(&str, Box<dyn ConditionerConfig>)>> = vec![None];
        pairings.extend(conditioners.iter().map(Some));
        for pairing in pairings {
            let sources = pairing.map_or_else(Vec::new, |(_, c)| c.sources());
            let mut conditioner = pairing.map(|(_, c)| {
                c.build(&testing::conditioner_context(&sources).unwrap())
                    .unwrap()
            });
            let condition = conditioner.as_ref().map(|c| (c.dim(), c.injection()));
            if condition.is_some_and(|(_, i)| !cfg.supported_injections().contains(&i)) {
                continue;
            }
            let mut denoiser = cfg
                .build(&testing::denoiser_context(condition).unwrap())
                .unwrap();
            let data = shard_rows(&sources);
            let rows: Vec<usize> = (0..data.n).rev().collect();
            let stage = Stage2 {
                denoiser: denoiser.as_mut(),
                conditioner: conditioner.as_mut().map(|c| c.as_mut() as _),
            };
            let what = format!("{} with {:?}", entry.name, pairing.map(|(name, _)| name));
            let sharded = |threads: usize, shards: Option<usize>| {
                sharded_gradients(
                    (threads, shards),
                    &stage,
                    sampler.as_ref(),
                    (&data, &rows),
                    0.2,
                    (9, "shards"),
                )
            };
            let one = sharded(1, Some(2));
            assert!(
                one.0.is_finite() && one.1.iter().all(|g| g.is_finite()),
                "{what}"
            );
            // Bit-identical on the CPU; CUDA's reductions (atomic adds) may round differently
            // from one run to the next.
            let same = |a: &(f32, Vec<f32>), b: &(f32, Vec<f32>)| {
                if cfg!(feature = "cuda") {
                    let scale = b.1.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                    (a.0 - b.0).abs() <= 1e-5 * b.0.abs()
                        && a.1
                            .iter()
                            .zip(&b.1)
                            .all(|(x, y)| (x - y).abs() <= 1e-4 * scale)
                } else {
                    a == b
                }
            };
            for threads in [2, 3] {
                assert!(
                    same(&sharded(threads, Some(2)), &one),
                    "{what}: {threads} threads changed the result"
                );
            }
            if !cfg!(feature = "cuda") {
                assert!(
                    sharded(3, None) == one,
                    "{what}: the default split at three threads is not the two shards"
                );
            }
            let mut rng = stream(9, "shards");
            let loss =
                denoiser_loss(&stage, sampler.as_ref(), &data, &rows, 0.2, &mut rng, &dev).unwrap();
            let (v, g) = NamedGradients::backward(loss, &stage, "").unwrap();
            let whole = (v, g.by_name.values().flat_map(|t| t.as_vec()).collect());
            // One thread keeps short products in one shard, long ones in the split.
            let one_shard = rows.len() * stage.denoiser.rows_per_sample()
                <= latentlab::framework::nn::ONE_THREAD_SHARD_ROWS;
            assert!(
                same(&sharded(1, None), if one_shard { &whole } else { &one }),
                "{what}: the default split at one thread is not {}",
                if one_shard {
                    "the whole batch"
                } else {
                    "the two shards"
                }
            );
            if pairing.is_none() {
                let scale = whole.1.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                assert!(
                    (v - one.0).abs() <= 1e-5 * v.abs(),
                    "{what}: loss {v} vs {}",
                    one.0
                );
                assert!(
                    whole
                        .1
                        .iter()
                        .zip(&one.1)
                        .all(|(a, b)| (a - b).abs() <= 1e-4 * scale),
                    "{what}: sharded gradients differ from the whole batch's"
                );
            }
        }
    }
}

/// Dropout inside data-parallel shards draws its masks from each shard's own stream: a
/// denoiser with dropout trains (in a fixed split of two shards) to the same bits at 1, 2 and 3
/// threads and in repeated runs
/// (with the device's shared generator, concurrent shards drew their masks in the order the
/// threads reached it).
#[test]
fn sharded_dropout_does_not_depend_on_the_thread_count() {
    latentlab::plugins::link();
    let sampler = flow_sampler();
    let mut tested = 0;
    for entry in of_kind(PluginKind::Denoiser) {
        let text = format!("{}\ndropout = 0.2\n", entry.example);
        let Ok(cfg) = toml::from_str::<Box<dyn DenoiserConfig>>(&text) else {
            continue;
        };
        let mut denoiser = cfg
            .build(&testing::denoiser_context(None).unwrap())
            .unwrap();
        let data = shard_rows(&[]);
        let rows: Vec<usize> = (0..data.n).collect();
        let stage = Stage2 {
            denoiser: denoiser.as_mut(),
            conditioner: None,
        };
        let run = |threads: usize| {
            sharded_gradients(
                (threads, Some(2)),
                &stage,
                sampler.as_ref(),
                (&data, &rows),
                0.0,
                (3, "dropout shards"),
            )
        };
        let one = run(1);
        assert!(one.0.is_finite(), "{}", entry.name);
        for threads in [2, 2, 3, 3] {
            assert!(
                run(threads) == one,
                "{} with dropout: {threads} threads changed the result",
                entry.name
            );
        }
        tested += 1;
    }
    assert!(tested > 0, "no denoiser takes a dropout rate");
}

#[test]
fn samplers_conform() {
    latentlab::plugins::link();
    for entry in of_kind(PluginKind::Sampler) {
        let cfg = parse::<Box<dyn SamplerConfig>>(entry.example, entry.name);
        let s = cfg.build().unwrap();
        let grid = s.time_grid(cfg.default_steps()).unwrap();
        assert!(
            grid.windows(2).all(|w| w[1] < w[0]),
            "{}: grid must decrease",
            entry.name
        );
        assert!(
            *grid.first().unwrap() <= 1.0 && *grid.last().unwrap() == 0.0,
            "{}: grid in [0, 1] ending at 0",
            entry.name
        );
        let mut rng = stream(0, entry.name);
        let t: Vec<f32> = (0..4).map(|_| s.sample_time(&mut rng)).collect();
        assert!(
            t.iter().all(|t| (0.0..=1.0).contains(t)),
            "{}: times in [0, 1]",
            entry.name
        );
        let z0 = vec![0.3; 4 * 3];
        let noise = vec![-0.2; 4 * 3];
        let pair = s.training_pair(&z0, &noise, &t, 3).unwrap();
        assert_eq!(
            (pair.noisy.len(), pair.target.len()),
            (12, 12),
            "{}: pair shapes",
            entry.name
        );
        assert!(
            s.training_pair(&z0, &noise, &t[..3], 3).is_err(),
            "{}: mismatched rows must be an error",
            entry.name
        );
        // Joint fine-tuning relies on the pair being affine in the clean latent.
        let mut z_random = vec![0.0; 4 * 3];
        latentlab::framework::rng::fill_normal(&mut rng, &mut z_random);
        let affine = AffinePair::probe(s.as_ref(), &noise, &t, 3).unwrap();
        affine
            .check(
                &z_random,
                &s.training_pair(&z_random, &noise, &t, 3).unwrap(),
            )
            .unwrap_or_else(|e| panic!("{}: training pair not affine: {e}", entry.name));
        let mut model = |z: &[f32], _t: f32| Ok(z.iter().map(|v| v * 0.1).collect());
        let next = s.step(&mut model, &z0, grid[0], grid[1], &mut rng).unwrap();
        assert_eq!(next.len(), 12);
        assert!(
            s.time_grid(0).is_err(),
            "{}: zero steps must be an error",
            entry.name
        );
    }
}

#[test]
fn conditioners_conform() {
    latentlab::plugins::link();
    for entry in of_kind(PluginKind::Conditioner) {
        let cfg = parse::<Box<dyn ConditionerConfig>>(entry.example, entry.name);
        let sources = cfg.sources();
        let c = cfg
            .build(&testing::conditioner_context(&sources).unwrap())
            .unwrap();
        let table = testing::condition_table(&sources, 7, 9);
        let null = [false, true, false, false, true, false, false];
        let e = c.embed(&table, &null).unwrap().vector.as_vec();
        assert_eq!(e.len(), 7 * c.dim(), "{}: embedding shape", entry.name);
        assert!(e.iter().all(|v| v.is_finite()));
        let all_null = c.embed(&table, &[true; 7]).unwrap().vector.as_vec();
        let d = c.dim();
        assert_eq!(
            &all_null[0..d],
            &all_null[d..2 * d],
            "{}: null embedding must not depend on the condition",
            entry.name
        );
        let rows = [2, 3, 4, 5, 6];
        let part = c
            .embed(&table.select(&rows), &null[2..])
            .unwrap()
            .vector
            .as_vec();
        assert!(
            same_rows(&e[2 * d..], &part),
            "{}: rows must be embedded independently (sampling embeds row tiles)",
            entry.name
        );
        assert!(
            c.embed(&table, &[false; 3]).is_err(),
            "{}: mismatched rows must be an error",
            entry.name
        );
    }
}

#[test]
fn evaluators_conform() {
    latentlab::plugins::link();
    let train = testing::cell_set(60, 1, 0.0, 4);
    let reference = testing::cell_set(30, 2, 0.0, 4);
    let candidate = testing::cell_set(30, 3, 0.5, 4);
    let control = testing::cell_set(30, 4, -0.3, 4);
    let names: Vec<String> = (0..GENES)
        .map(|g| {
            if g == 0 {
                "MT-CO1".into()
            } else {
                format!("G{g}")
            }
        })
        .collect();
    let ctx = EvalContext {
        train: &train,
        pca_components: 4,
        gene_names: &names,
        seed: 0,
        control: Some(&control),
        paired: Some(1),
    };
    for entry in of_kind(PluginKind::Evaluator) {
        let cfg = parse::<Box<dyn EvaluatorConfig>>(entry.example, entry.name);
        let e = cfg.build().unwrap();
        let metrics = e.evaluate(&reference, &candidate, &ctx).unwrap();
        assert!(!metrics.is_empty(), "{}: no metrics", entry.name);
        for m in metrics {
            assert!(
                !m.protocol.is_empty(),
                "{}: metric {} has no protocol",
                entry.name,
                m.name
            );
        }
    }
}

#[test]
fn catalog_json_is_machine_readable() {
    latentlab::plugins::link();
    let json = serde_json::to_value(catalog()).unwrap();
    assert!(json.as_array().unwrap().len() >= 10);
}
