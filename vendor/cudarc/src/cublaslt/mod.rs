pub mod result;
pub mod safe;
#[allow(warnings)]
pub mod sys;

pub use safe::*;
