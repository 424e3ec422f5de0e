//! Transposed copies of the weights that one data-parallel training step's shards share
//! (decision 0027).
//!
//! The input gradient of a linear layer, `g Wᵀ`, reads the weight transposed. `gemm` gathers a
//! transposed view element by element into its packing buffer (up to a third of the product's
//! time at 64–128 rows); a contiguous transposed copy packs at copy speed and lets `gemm` 0.19's
//! AVX-512 kernels run the input gradient at the forward products' rate (where the linear kernel
//! does not send it to 0.18's kernels, which gather more cheaply). The copy is made by
//! the first shard whose backward pass reaches the layer and reused by the others: inside
//! [`with_shared_transposes`] the weights are borrowed by the step's graphs and cannot change, so
//! a copy keyed by the weight's tensor id stays valid for the scope. The product is the same
//! `gemm` call with the same sums in the same order, so the gradients keep their bits.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use dfdx::tensor::UniqueId;

/// The transposed weights of one training step, made once each and shared by its shards.
#[derive(Default)]
pub(crate) struct SharedTransposes {
    copies: Mutex<HashMap<UniqueId, Arc<OnceLock<Vec<f32>>>>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<SharedTransposes>>> = const { RefCell::new(None) };
}

/// Runs `f` with `shared` as this thread's store of transposed weights (each shard of a step
/// installs the step's store on the thread it runs on).
pub(crate) fn with_shared_transposes<R>(
    shared: &Arc<SharedTransposes>,
    f: impl FnOnce() -> R,
) -> R {
    super::thread_scope::with_replaced(&CURRENT, Some(Arc::clone(shared)), f).0
}

/// Calls `f` with the transpose `(cols, rows)` of the weight `id`, whose values are the
/// row-major `(rows, cols)` matrix `values`, when this thread runs inside
/// [`with_shared_transposes`] (transposing it there on first use), else with `None`.
pub(crate) fn with_transposed<R>(
    id: UniqueId,
    values: &[f32],
    (rows, cols): (usize, usize),
    f: impl FnOnce(Option<&[f32]>) -> R,
) -> R {
    let Some(shared) = CURRENT.with(|c| c.borrow().clone()) else {
        return f(None);
    };
    let copy = {
        let mut copies = shared
            .copies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(copies.entry(id).or_default())
    };
    let transposed = copy.get_or_init(|| super::transpose::transpose(values, rows, cols));
    f(Some(transposed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{device, tensor2};

    #[test]
    fn transposes_once_per_weight_inside_the_scope_and_never_outside() {
        let dev = device(0).unwrap();
        let w = tensor2(&dev, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3).unwrap();
        let values = w.as_vec();
        assert!(with_transposed(w.unique_id(), &values, (2, 3), |t| t.is_none()));
        let shared = Arc::new(SharedTransposes::default());
        let first = with_shared_transposes(&shared, || {
            with_transposed(w.unique_id(), &values, (2, 3), |t| {
                t.map(|t| t.as_ptr() as usize)
            })
        });
        // Another shard (another thread) gets the same copy, not a second transposition.
        let second = std::thread::scope(|s| {
            s.spawn(|| {
                with_shared_transposes(&shared, || {
                    with_transposed(w.unique_id(), &[0.0; 6], (2, 3), |t| {
                        assert_eq!(t, Some(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0][..]));
                        t.map(|t| t.as_ptr() as usize)
                    })
                })
            })
            .join()
            .unwrap()
        });
        assert_eq!(first, second);
        assert_eq!(shared.copies.lock().unwrap().len(), 1);
    }
}
