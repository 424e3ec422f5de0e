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
