//! Testing kit: small synthetic inputs and build contexts for every plugin kind, used by the
//! registry conformance suite and available to out-of-tree plugin authors.

use rand::Rng;

use crate::device::{device, Dev};
use crate::plugin::{
    summarize, AutoencoderContext, CellSet, ConditionColumn, ConditionKind, ConditionTable,
    ConditionerContext, DenoiserContext, ExpressionBatch, Injection, InputKind,
};
use crate::rng::stream;

/// Genes in the synthetic data.
pub const GENES: usize = 12;
/// Latent width used for denoiser tests.
pub const LATENT: usize = 6;

/// The build's device, seeded for tests.
///
/// # Errors
/// When the (CUDA) device cannot be opened.
pub fn test_device() -> crate::Result<Dev> {
    device(0)
}

/// `n` deterministic values spread over `[-half_range, half_range)` (a multiplicative hash of the
/// index and `seed`), for kernel tests that compare two implementations on the same inputs.
pub fn spread_values(n: usize, seed: u32, half_range: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let k = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000;
            k as f32 / 1000.0 * 2.0 * half_range - half_range
        })
        .collect()
}

/// Non-negative, sparse-ish synthetic expression `(n, GENES)` with library sizes.
pub fn expression(n: usize, seed: u64, counts: bool) -> ExpressionBatch {
    let mut rng = stream(seed, "testing.expression");
    let x: Vec<f32> = (0..n * GENES)
        .map(|i| {
            let base = 1.0 + (i % GENES) as f32 * 0.3;
            if rng.gen::<f32>() < 0.3 {
                0.0
            } else if counts {
                (base * 3.0 + rng.gen_range(0.0..4.0)).round()
            } else {
                base + rng.gen::<f32>()
            }
        })
        .collect();
    let library_size = x
        .chunks(GENES)
        .map(|r| r.iter().sum::<f32>().max(1.0))
        .collect();
    ExpressionBatch { x, n, library_size }
}

/// Build context for an autoencoder on [`expression`] data.
///
/// # Errors
/// Device errors.
pub fn autoencoder_context(input: InputKind) -> crate::Result<AutoencoderContext> {
    Ok(AutoencoderContext {
        n_genes: GENES,
        input,
        seed: 1,
        dev: test_device()?,
    })
}

/// Build context for a denoiser.
///
/// # Errors
/// Device errors.
pub fn denoiser_context(condition: Option<(usize, Injection)>) -> crate::Result<DenoiserContext> {
    Ok(DenoiserContext {
        latent_dim: LATENT,
        condition,
        seed: 2,
        dev: test_device()?,
    })
}

/// A condition table with one column per declared source, `n` cells.
pub fn condition_table(sources: &[(String, ConditionKind)], n: usize, seed: u64) -> ConditionTable {
    let mut rng = stream(seed, "testing.conditions");
    let mut table = ConditionTable::default();
    for (key, kind) in sources {
        let column = match kind {
            ConditionKind::Categorical => ConditionColumn::Categorical {
                categories: vec!["a".into(), "b".into(), "c".into()],
                codes: (0..n).map(|_| rng.gen_range(0..3)).collect(),
            },
            ConditionKind::Set { separator } => ConditionColumn::Categorical {
                categories: vec![
                    "ctrl".into(),
                    "A".into(),
                    "B".into(),
                    format!("A{separator}B"),
                ],
                codes: (0..n).map(|_| rng.gen_range(0..4)).collect(),
            },
            ConditionKind::Continuous => {
                ConditionColumn::Continuous((0..n).map(|_| rng.gen_range(0.0..72.0)).collect())
            }
            ConditionKind::Vector | ConditionKind::Modality(_) => ConditionColumn::Vector {
                dim: 3,
                values: (0..n * 3).map(|_| rng.gen::<f32>()).collect(),
            },
        };
        table.columns.insert(key.clone(), column);
    }
    table
}

/// Build context for a conditioner from its declared sources.
///
/// # Errors
/// Device errors.
pub fn conditioner_context(
    sources: &[(String, ConditionKind)],
) -> crate::Result<ConditionerContext> {
    Ok(ConditionerContext {
        conditions: summarize(&condition_table(sources, 40, 3), sources),
        seed: 4,
        dev: test_device()?,
    })
}

/// A cell set with PCs filled by a fixed projection (first `k` genes).
pub fn cell_set(n: usize, seed: u64, shift: f32, k: usize) -> CellSet {
    let e = expression(n, seed, false);
    let x: Vec<f32> = e.x.iter().map(|v| v + shift).collect();
    let pcs = x.chunks(GENES).flat_map(|r| r[..k].to_vec()).collect();
    let labels = Some((0..n).map(|i| ["a", "b"][i % 2].to_string()).collect());
    CellSet {
        x,
        n,
        n_genes: GENES,
        labels,
        pcs,
    }
}
