//! Stage-2 generative processes.

mod ddim;
mod ddpm;
mod rectified_flow;
