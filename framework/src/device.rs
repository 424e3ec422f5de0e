//! The one concrete device of a build: CPU by default, CUDA with `--features cuda`.

use dfdx::prelude::*;

/// The device every latentlab tensor lives on (chosen at compile time by feature).
#[cfg(not(feature = "cuda"))]
pub type Dev = Cpu;
/// The device every latentlab tensor lives on (chosen at compile time by feature).
#[cfg(feature = "cuda")]
pub type Dev = Cuda;

/// A runtime-shaped matrix `(rows, cols)` with tape `T`.
pub type Tensor2<T = NoneTape> = Tensor<(usize, usize), f32, Dev, T>;
/// A runtime-shaped vector `(len,)` with tape `T`.
pub type Tensor1<T = NoneTape> = Tensor<(usize,), f32, Dev, T>;
/// A scalar with tape `T` (losses).
pub type Scalar<T = NoneTape> = Tensor<(), f32, Dev, T>;
/// The tape type used while training (records operations for backward).
pub type TrainTape = OwnedTape<f32, Dev>;

/// A tape that can flow through every layer: either recording ([`TrainTape`]) or not ([`NoneTape`]).
pub trait Taped: Tape<f32, Dev> + Merge<Self> + Merge<NoneTape> + std::fmt::Debug {}
impl<T: Tape<f32, Dev> + Merge<T> + Merge<NoneTape> + std::fmt::Debug> Taped for T {}

/// Host copy of a tensor whose storage is dense and row-major — parameters, their gradients,
/// fresh op results: one memory copy, where dfdx's `as_vec` walks an index iterator element by
/// element. Not for broadcast or permuted views (their storage differs from their values).
pub fn dense_values<S: Shape, T>(t: &Tensor<S, f32, Dev, T>) -> Vec<f32> {
    #[cfg(not(feature = "cuda"))]
    if let Some(values) = t.dense_slice() {
        return values.to_vec();
    }
    let mut values = vec![0.0; t.shape().num_elements()];
    t.copy_into(&mut values);
    values
}

/// The values of any tensor, row-major, on the host: on the CPU build the tensor's own storage
/// when it is dense (no copy; vendored dfdx's `dense_slice`, decision 0013), otherwise a copy
/// (strided views, and every CUDA tensor).
pub fn host_values<S: Shape, T>(t: &Tensor<S, f32, Dev, T>) -> std::borrow::Cow<'_, [f32]> {
    #[cfg(not(feature = "cuda"))]
    if let Some(values) = t.dense_slice() {
        return std::borrow::Cow::Borrowed(values);
    }
    std::borrow::Cow::Owned(t.as_vec())
}

/// Builds the device, seeded so that any device-side randomness is reproducible.
///
/// # Errors
/// Returns [`crate::LatentError::Incompatible`] when the CUDA device cannot be opened.
pub fn device(seed: u64) -> crate::Result<Dev> {
    #[cfg(not(feature = "cuda"))]
    {
        Ok(Cpu::seed_from_u64(seed))
    }
    #[cfg(feature = "cuda")]
    {
        Cuda::try_seed_from_u64(seed).map_err(|e| {
            crate::LatentError::Incompatible(format!("cannot open CUDA device 0: {e:?}"))
        })
    }
}

/// Copies a row-major host slice `(rows, cols)` into a device tensor.
///
/// # Errors
/// [`crate::LatentError::Shape`] when `data.len() != rows * cols`.
pub fn tensor2(dev: &Dev, data: &[f32], rows: usize, cols: usize) -> crate::Result<Tensor2> {
    if data.len() != rows * cols {
        return Err(crate::LatentError::shape(
            "tensor2",
            format!("{rows}x{cols} = {} values", rows * cols),
            data.len(),
        ));
    }
    let mut t: Tensor2 = dev.zeros_like(&(rows, cols));
    t.copy_from(data);
    Ok(t)
}

/// Copies a host slice into a device vector.
pub fn tensor1(dev: &Dev, data: &[f32]) -> Tensor1 {
    let mut t: Tensor1 = dev.zeros_like(&(data.len(),));
    t.copy_from(data);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dense tensors are borrowed; broadcast and permuted views, whose storage is not their
    /// row-major values, are copied through dfdx's index iterator — either way the values are
    /// the tensor's own.
    #[test]
    fn host_values_borrow_dense_storage_and_copy_views() {
        let dev = device(0).unwrap();
        let m = tensor2(&dev, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3).unwrap();
        let dense = host_values(&m);
        assert_eq!(&*dense, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        #[cfg(not(feature = "cuda"))]
        assert!(matches!(dense, std::borrow::Cow::Borrowed(_)));
        let transposed = m.clone().permute::<_, Axes2<1, 0>>();
        assert_eq!(&*host_values(&transposed), &transposed.as_vec()[..]);
        assert_eq!(&*host_values(&transposed), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let row = tensor1(&dev, &[7.0, 8.0]);
        let broadcast = row.broadcast_like::<_, Axis<0>>(&(3, 2));
        assert!(matches!(
            host_values(&broadcast),
            std::borrow::Cow::Owned(_)
        ));
        assert_eq!(&*host_values(&broadcast), &[7.0, 8.0, 7.0, 8.0, 7.0, 8.0]);
        assert_eq!(dense_values(&m), m.as_vec());
    }
}
