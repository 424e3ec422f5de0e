//! Using one taped tensor in several places.

use dfdx::prelude::*;

use crate::device::{Dev, Taped, Tensor2};

/// Returns `n` handles to `x` for separate uses. The first carries `x`'s recorded history (so
/// backward reaches everything that produced it exactly once); the others start empty tapes.
/// Gradients from every use accumulate on `x` because all handles share its identity.
pub fn fan_out<T: Taped>(x: Tensor2<T>, n: usize) -> Vec<Tensor2<T>> {
    let (plain, tape) = x.split_tape();
    let mut out = Vec::with_capacity(n);
    let mut tape = Some(tape);
    for _ in 0..n {
        out.push(plain.clone().put_tape(tape.take().unwrap_or_default()));
    }
    out
}

/// A tensor of any shape on the build's device with tape `T`.
pub type AnyTensor<S, T> = Tensor<S, f32, Dev, T>;

/// Two handles to `x` of any shape; the first carries the recorded history (see [`fan_out`]).
pub fn fork<S: Shape, T: Taped>(x: AnyTensor<S, T>) -> (AnyTensor<S, T>, AnyTensor<S, T>) {
    let (plain, tape) = x.split_tape();
    (plain.clone().put_tape(tape), plain.put_tape(T::default()))
}
