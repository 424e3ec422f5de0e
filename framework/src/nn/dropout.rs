//! Dropout that is active only while training.

use std::cell::RefCell;

use dfdx::tensor::RandomU64;
use rand::rngs::StdRng;
use rand::RngCore;

use crate::device::{Taped, Tensor2};

thread_local! {
    /// The stream dropout masks are seeded from on this thread instead of the device's generator
    /// (inside [`with_dropout_stream`]).
    static STREAM: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Zeroes each element with probability `p` during training and rescales by `1 / (1 - p)`.
/// The mask's seed comes from the seeded device, or inside [`with_dropout_stream`] from that
/// stream, so runs are reproducible; on the CPU the mask is a hash of the seed and each element's
/// position (decision 0026), on CUDA dfdx's kernel draws it.
///
/// # Panics
/// On the CUDA build, when `p` is not a probability; the layers validate their rates when they
/// are built.
pub fn dropout<T: Taped>(x: Tensor2<T>, p: f32, train: bool) -> Tensor2<T> {
    if !train || p <= 0.0 {
        return x;
    }
    let seed = STREAM
        .with(|s| s.borrow_mut().as_mut().map(RngCore::next_u64))
        .unwrap_or_else(|| x.device().random_u64());
    #[cfg(not(feature = "cuda"))]
    {
        super::dropout_cpu::dropout(x, p, seed)
    }
    #[cfg(feature = "cuda")]
    {
        x.try_dropout_seeded(p, seed)
            .expect("dropout rates are validated when layers are built")
    }
}

/// Runs `f` with the dropout masks drawn on this thread seeded from `stream`. Data-parallel
/// training shards run concurrently: drawing from the shared device generator would make the
/// masks, and so the result, depend on the order the threads reach it.
pub fn with_dropout_stream<R>(stream: StdRng, f: impl FnOnce() -> R) -> R {
    super::thread_scope::with_replaced(&STREAM, Some(stream), f).0
}
