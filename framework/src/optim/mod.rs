//! Optimization: named gradients, AdamW, global-norm clipping, LR schedules, EMA.

mod adamw;
mod ema;
mod gradients;
mod schedule;
mod state_buffer;

pub use adamw::{AdamW, AdamWConfig};
pub use ema::Ema;
pub use gradients::{NamedGradients, ShardGradients};
pub use schedule::LrSchedule;

/// Elements per parallel work item of the CPU's in-place updates (AdamW's step, the EMA's fold):
/// fixed, so the split never depends on the thread count.
#[cfg(not(feature = "cuda"))]
const UPDATE_CHUNK: usize = 16 * 1024;
