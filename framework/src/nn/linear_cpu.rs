//! The CPU kernel of [`super::Linear`]: `y = x W + b` as one gemm call whose accumulator starts
//! at the broadcast bias, and a backward pass that writes the weight gradient `xᵀ g`, the bias
//! gradient (column sums of `g`) and — only when the input needs one — the input gradient
//! `g Wᵀ`. dfdx's composite `matmul + broadcast add` allocates the broadcast bias and the sum,
//! runs both elementwise ops single-threaded, and always computes the input gradient, which
//! for a layer fed with data (a VAE's first layer: 2,000 genes × 512) is a third of that
//! layer's backward work thrown away.

#![allow(unsafe_code)] // bounds-checked calls into the gemm crates and `cpuid` (decisions 0011, 0017)

use dfdx::prelude::*;

use super::deferred_weight_gradients::{defer_weight_product, WeightProduct};
pub(crate) use super::linear::LayerInput;
use super::row_groups::RowGroups;
use super::shared_transposes::with_transposed;
use super::sparse_rows::SparseRows;
use crate::device::{host_values, Dev, Taped, Tensor1, Tensor2};

/// A row-major or transposed view of a dense matrix for [`gemm`]: element `(i, j)` is at
/// `i * row_stride + j * col_stride`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> View<'a> {
    /// The row-major `(rows, cols)` matrix in `data`.
    fn rows(data: &'a [f32], cols: usize) -> Self {
        View {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }
    /// The transpose of the row-major `(rows, cols)` matrix in `data`: a `(cols, rows)` view.
    fn transposed(data: &'a [f32], cols: usize) -> Self {
        View {
            data,
            row_stride: 1,
            col_stride: cols,
        }
    }
}

/// `dst (m × n, row-major) = [dst +] a (m × k) · b (k × n)`, multi-threaded over rayon's current
/// pool (as dfdx's own matmul), or over a tile's share of it inside a tile (`super::run_tiles`);
/// `gemm` 0.19's kernels (AVX-512 where the CPU has it) except where [`avx2_kernel_wins`] says
/// 0.18's are faster.
fn gemm(dst: &mut [f32], accumulate: bool, dims: (usize, usize, usize), a: View, b: View) {
    gemm_with(uses_avx512(dims, &b), dst, accumulate, dims, a, b);
}

/// [`gemm`] into a new row-major `m × n` buffer, written without being zero-filled first.
fn gemm_new(dims: (usize, usize, usize), a: View, b: View) -> Vec<f32> {
    let (m, _, n) = dims;
    let mut dst = Vec::with_capacity(m * n);
    gemm_raw(
        uses_avx512(dims, &b),
        dst.spare_capacity_mut(),
        false,
        dims,
        a,
        b,
    );
    // SAFETY: without `accumulate` `gemm_raw` writes all `m · n` values (both gemm crates store
    // every element of `dst` when `read_dst` is false, zeros for `k = 0`, and never read it).
    unsafe { dst.set_len(m * n) };
    dst
}

/// `dst (inputs × outputs, row-major) = [dst +] xᵀ g`: the weight gradient of a linear layer
/// from its input `x (rows × inputs)` and output gradient `g (rows × outputs)`, both row-major.
pub(super) fn weight_gradient(
    dst: &mut [f32],
    accumulate: bool,
    x: &[f32],
    g: &[f32],
    (rows, inputs, outputs): (usize, usize, usize),
) {
    gemm(
        dst,
        accumulate,
        (inputs, rows, outputs),
        View::transposed(x, inputs),
        View::rows(g, outputs),
    );
}

/// Whether [`gemm`] takes `gemm` 0.19 (else 0.18) for a product `dims` with right operand `b`:
/// 0.18 only for a transposed `b` where [`avx2_kernel_wins`].
fn uses_avx512(dims: (usize, usize, usize), b: &View) -> bool {
    let transposed_b = b.row_stride == 1 && b.col_stride != 1;
    !(transposed_b && avx2_kernel_wins(dims))
}

/// [`weight_gradient`] into a new buffer (written, not zero-filled first).
pub(super) fn new_weight_gradient(
    x: &[f32],
    g: &[f32],
    (rows, inputs, outputs): (usize, usize, usize),
) -> Vec<f32> {
    gemm_new(
        (inputs, rows, outputs),
        View::transposed(x, inputs),
        View::rows(g, outputs),
    )
}

/// Whether `gemm` 0.18's AVX2 kernels beat 0.19's on a product `(m, k, n)` with a transposed
/// right operand (the input gradient `g Wᵀ`, `k` the layer's outputs): only on CPUs that halve
/// 512-bit instructions ([`halved_avx512`]), and there only for long sums over few rows
/// (`k ≥ 512`, `m ≤ 512`: 0.19 takes 1.08–2.1× as long at 128–512 rows of a 512- or 2,000-wide
/// layer), while 0.19 wins short sums and many rows (0.66–0.92× at `k ≤ 256` or 1,024–4,096
/// rows: the DiT's token rows, its 128-wide blocks). By shape alone, never by thread count; the
/// two versions compute the same bits (unit test below), so the choice never changes results.
fn avx2_kernel_wins((m, k, _): (usize, usize, usize)) -> bool {
    k >= 512 && m <= 512 && halved_avx512()
}

/// [`gemm`] through `gemm` 0.19 (`avx512`, its AVX-512 kernels where the CPU has them) or 0.18.
fn gemm_with(
    avx512: bool,
    dst: &mut [f32],
    accumulate: bool,
    dims: (usize, usize, usize),
    a: View,
    b: View,
) {
    // SAFETY: an initialised `f32` is a valid `MaybeUninit<f32>`, and `gemm_raw` stores only
    // `f32` values.
    let dst = unsafe { &mut *(dst as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) };
    gemm_raw(avx512, dst, accumulate, dims, a, b);
}

/// [`gemm_with`] on a destination that need not be initialised when `accumulate` is false (it is
/// then written, not read).
fn gemm_raw(
    avx512: bool,
    dst: &mut [std::mem::MaybeUninit<f32>],
    accumulate: bool,
    (m, k, n): (usize, usize, usize),
    a: View,
    b: View,
) {
    let fits = |v: &View, rows: usize, cols: usize| {
        rows == 0
            || cols == 0
            || (rows - 1) * v.row_stride + (cols - 1) * v.col_stride < v.data.len()
    };
    assert!(
        dst.len() >= m * n && fits(&a, m, k) && fits(&b, k, n),
        "gemm operands do not match their shapes"
    );
    if m == 0 || n == 0 {
        return;
    }
    let threads = super::kernel_threads();
    // SAFETY (both calls): the assertion above bounds every element gemm reads (`a`, `b`) and
    // writes (`dst`, row-major `m × n`); `dst` is a unique borrow, so nothing aliases it; gemm
    // reads `dst` only with `accumulate` (`read_dst`), where callers pass initialised values.
    macro_rules! call {
        ($krate:ident) => {
            unsafe {
                $krate::gemm(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr().cast::<f32>(),
                    1,
                    n as isize,
                    accumulate,
                    a.data.as_ptr(),
                    a.col_stride as isize,
                    a.row_stride as isize,
                    b.data.as_ptr(),
                    b.col_stride as isize,
                    b.row_stride as isize,
                    if accumulate { 1.0 } else { 0.0 },
                    1.0,
                    false,
                    false,
                    false,
                    if threads <= 1 {
                        $krate::Parallelism::None
                    } else {
                        $krate::Parallelism::Rayon(threads)
                    },
                )
            }
        };
    }
    if avx512 {
        call!(gemm_avx512);
    } else {
        call!(gemm);
    }
}

/// Whether this CPU runs 512-bit instructions in two 256-bit halves (AMD's Zen 4, taken as any
/// AMD processor with AVX-512), where `gemm` 0.19's AVX-512 kernels lose to 0.18's AVX2 kernels
/// on some products with a transposed right operand ([`avx2_kernel_wins`], decisions 0017 and
/// 0018) while winning the other products. Elsewhere (Intel's AVX-512 cores: 1.4–2.2× on every
/// product) and on CPUs without AVX-512 (0.19 runs its AVX2 kernels) every product goes to 0.19.
fn halved_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AMD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AMD.get_or_init(|| {
            // SAFETY: `cpuid` leaf 0 exists on every x86-64 processor (a safe function since
            // Rust 1.87's target-feature rules; the block keeps older compilers happy).
            #[allow(unused_unsafe)]
            let id = unsafe { std::arch::x86_64::__cpuid(0) };
            let vendor: Vec<u8> = [id.ebx, id.edx, id.ecx]
                .iter()
                .flat_map(|r| r.to_le_bytes())
                .collect();
            vendor == b"AuthenticAMD" && std::arch::is_x86_feature_detected!("avx512f")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x (batch, in) · weight (in, out) + bias (out,)`; the backward pass (when `T` records)
/// accumulates the gradients of `weight`, `bias` and, unless `input` is [`LayerInput::Data`]
/// or `x` is the pass's data input ([`super::data_input`]), of `x`. An input that gets no
/// gradient (data) and is mostly zeros (expression values) goes through [`SparseRows`]'
/// products instead of `gemm`, forward and for the weight gradient.
pub(crate) fn linear<T: Taped>(
    x: Tensor2<T>,
    weight: &Tensor2,
    bias: &Tensor1,
    input: LayerInput,
) -> Tensor2<T> {
    let (batch, inputs) = *x.shape();
    let outputs = weight.shape().1;
    let dev: Dev = x.device().clone();
    let input_gradient =
        input != LayerInput::Data && !super::data_input::is_data_input(x.unique_id());
    let (x, mut tape) = x.split_tape();
    let xv = host_values(&x);
    let groups = match input {
        LayerInput::RepeatedRows => RowGroups::of(&xv, inputs)
            .ok()
            .filter(RowGroups::worthwhile),
        _ => None,
    };
    // The rows the products run on: the distinct ones when grouped.
    let distinct = groups.as_ref().map(|g| g.select_values(&xv, inputs));
    let rows = groups.as_ref().map_or(batch, RowGroups::distinct);
    let mut y = Vec::with_capacity(rows * outputs);
    {
        let bv = host_values(bias);
        for _ in 0..rows {
            y.extend_from_slice(&bv);
        }
    }
    let sparse = if input_gradient || groups.is_some() {
        None
    } else {
        SparseRows::of(&xv, inputs)
    };
    match &sparse {
        Some(sparse) => sparse.product(&host_values(weight), outputs, &mut y),
        None => gemm(
            &mut y,
            true,
            (rows, inputs, outputs),
            View::rows(distinct.as_deref().unwrap_or(&xv), inputs),
            View::rows(&host_values(weight), outputs),
        ),
    }
    drop(xv);
    if let Some(groups) = &groups {
        y = groups.expand_values(&y, outputs);
    }
    let out = dev.tensor_from_vec(y, (batch, outputs));
    if T::OWNS_TAPE {
        // The weight gradient's left operand: the distinct rows when grouped, else `x` itself.
        let product_input = match distinct {
            Some(values) => dev.tensor_from_vec(values, (rows, inputs)),
            None => x.clone(),
        };
        let (weight, bias, result) = (weight.clone(), bias.clone(), out.clone());
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&bias)?;
            grads.try_alloc_for(&result)?;
            // Complete when this op runs and read by nothing afterwards: moved, not copied.
            let g: Vec<f32> = std::mem::take(&mut **grads.get_or_alloc_mut(&result)?);
            let gb = grads.get_or_alloc_mut(&bias)?;
            for row in g.chunks_exact(outputs) {
                for (s, v) in gb.iter_mut().zip(row) {
                    *s += v;
                }
            }
            if input_gradient {
                let w = host_values(&weight);
                let dims = (batch, outputs, inputs);
                let strided = View::transposed(&w, outputs);
                // The first gradient of `x` is written into a new buffer, later ones added.
                let mut product = |wt: View| {
                    if grads.contains(&x) {
                        gemm(
                            grads.get_or_alloc_mut(&x)?,
                            true,
                            dims,
                            View::rows(&g, outputs),
                            wt,
                        );
                    } else {
                        let new = gemm_new(dims, View::rows(&g, outputs), wt);
                        insert_new(grads, &x, new)?;
                    }
                    Ok::<(), dfdx::tensor::CpuError>(())
                };
                if avx2_kernel_wins(dims) {
                    // 0.18's kernels gather 16 rows at a time: no copy pays for itself here.
                    product(strided)?;
                } else {
                    with_transposed(weight.unique_id(), &w, (inputs, outputs), |wt| {
                        product(wt.map_or(strided, |wt| View::rows(wt, inputs)))
                    })?;
                }
            }
            let g = match &groups {
                Some(groups) => groups.sum_values(&g, outputs),
                None => g,
            };
            let product = WeightProduct::new(product_input, sparse, g, outputs);
            if let Some(product) = defer_weight_product(weight.unique_id(), product) {
                if grads.contains(&weight) {
                    product.apply(grads.get_or_alloc_mut(&weight)?, true);
                } else {
                    insert_new(grads, &weight, product.new_gradient())?;
                }
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// Makes `values` the gradient of `t`, which has none yet.
fn insert_new<T>(
    grads: &mut Gradients<f32, Dev>,
    t: &Tensor<(usize, usize), f32, Dev, T>,
    values: Vec<f32>,
) -> Result<(), dfdx::tensor::CpuError> {
    // Refused for a gradient that exists (then the values are added) or a length that differs
    // from `t`'s storage (an error, as `gemm`'s bounds check would have been).
    if let Err(values) = grads.insert_new(t, values) {
        let dst = grads.get_or_alloc_mut(t)?;
        if dst.len() != values.len() {
            return Err(dfdx::tensor::CpuError::WrongNumElements);
        }
        for (s, v) in dst.iter_mut().zip(values) {
            *s += v;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{device, tensor1, tensor2, TrainTape};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        crate::testing::spread_values(n, seed, 1.0)
    }

    /// [`LayerInput::Hidden`] with an input gradient, [`LayerInput::Data`] without.
    fn layer_input(input_gradient: bool) -> LayerInput {
        if input_gradient {
            LayerInput::Hidden
        } else {
            LayerInput::Data
        }
    }

    /// Both kernel sets compute the same products in all three layouts of a linear layer
    /// (forward `x W`, weight gradient `xᵀ g`, input gradient `g Wᵀ`), accumulating or not, and
    /// to the same bits (each sums its products in the same order), so which one runs a product
    /// does not change results; both match a naive reference.
    #[test]
    fn both_gemm_versions_agree_in_every_layout() {
        for shape in [(37, 70, 19), (300, 700, 45)] {
            both_gemm_versions_agree(shape);
        }
    }

    fn both_gemm_versions_agree((batch, inputs, outputs): (usize, usize, usize)) {
        let x = values(batch * inputs, 5);
        let w = values(inputs * outputs, 6);
        let g = values(batch * outputs, 7);
        let layouts: [((usize, usize, usize), View, View); 3] = [
            (
                (batch, inputs, outputs),
                View::rows(&x, inputs),
                View::rows(&w, outputs),
            ),
            (
                (inputs, batch, outputs),
                View::transposed(&x, inputs),
                View::rows(&g, outputs),
            ),
            (
                (batch, outputs, inputs),
                View::rows(&g, outputs),
                View::transposed(&w, outputs),
            ),
        ];
        for (dims, a, b) in layouts {
            for accumulate in [false, true] {
                let product = |avx512: bool| {
                    let mut dst = values(dims.0 * dims.2, 8);
                    gemm_with(avx512, &mut dst, accumulate, dims, a, b);
                    dst
                };
                let (new, old) = (product(true), product(false));
                assert!(new == old, "{dims:?}: gemm 0.19 and 0.18 round differently");
                let mut reference = values(dims.0 * dims.2, 8);
                for i in 0..dims.0 {
                    for j in 0..dims.2 {
                        let dot: f32 = (0..dims.1)
                            .map(|l| {
                                a.data[i * a.row_stride + l * a.col_stride]
                                    * b.data[l * b.row_stride + j * b.col_stride]
                            })
                            .sum();
                        let r = &mut reference[i * dims.2 + j];
                        *r = if accumulate { *r + dot } else { dot };
                    }
                }
                for (u, v) in new.iter().zip(&reference) {
                    assert!(
                        (u - v).abs() <= 1e-4 * (1.0 + v.abs()),
                        "{dims:?}: {u} vs {v}"
                    );
                }
            }
        }
    }

    /// A mostly-zero input that gets no gradient (a data input) goes through the sparse
    /// products: the same output and weight and bias gradients as `gemm` on the same values,
    /// up to rounding (another summation order).
    #[test]
    fn a_sparse_data_input_gives_the_dense_results() {
        let dev = device(0).unwrap();
        let (batch, inputs, outputs) = (40, 300, 70);
        let x: Vec<f32> = values(batch * inputs, 3)
            .into_iter()
            .enumerate()
            .map(|(k, v)| if k % 10 < 9 { 0.0 } else { v })
            .collect();
        assert!(SparseRows::of(&x, inputs).is_some());
        let w = tensor2(&dev, &values(inputs * outputs, 1), inputs, outputs).unwrap();
        let b = tensor1(&dev, &values(outputs, 2));
        let x = tensor2(&dev, &x, batch, inputs).unwrap();
        let r = tensor2(&dev, &values(batch * outputs, 4), batch, outputs).unwrap();
        let run = |input_gradient: bool| {
            let y = linear(
                x.clone().retaped::<TrainTape>(),
                &w,
                &b,
                layer_input(input_gradient),
            );
            let y_values = y.as_vec();
            let grads = (y * r.clone()).sum::<(), _>().backward();
            (y_values, grads.get(&w).as_vec(), grads.get(&b).as_vec())
        };
        // With an input gradient the dense path runs; without, the sparse one.
        let (dense, sparse) = (run(true), run(false));
        for (u, v) in [
            (&dense.0, &sparse.0),
            (&dense.1, &sparse.1),
            (&dense.2, &sparse.2),
        ] {
            assert_eq!(u.len(), v.len());
            for (p, q) in u.iter().zip(v.iter()) {
                assert!((p - q).abs() <= 1e-5 * (1.0 + p.abs()), "{p} vs {q}");
            }
        }
        assert_ne!(
            dense.1, sparse.1,
            "the sparse products sum in another order"
        );
    }

    /// The kernel's output and gradients equal dfdx's composite `matmul + broadcast add`.
    #[test]
    fn matches_the_composite_ops_forward_and_backward() {
        let dev = device(0).unwrap();
        let (batch, inputs, outputs) = (7, 13, 5);
        let w = tensor2(&dev, &values(inputs * outputs, 1), inputs, outputs).unwrap();
        let b = tensor1(&dev, &values(outputs, 2));
        let x = tensor2(&dev, &values(batch * inputs, 3), batch, inputs).unwrap();
        let r = tensor2(&dev, &values(batch * outputs, 4), batch, outputs).unwrap();
        let grads_of = |fused: bool, input_gradient: bool| {
            let xt = x.clone().retaped::<TrainTape>();
            let y = if fused {
                linear(xt, &w, &b, layer_input(input_gradient))
            } else {
                let y = xt.matmul(w.retaped::<TrainTape>());
                let bb = b
                    .retaped::<TrainTape>()
                    .broadcast_like::<_, Axis<0>>(y.shape());
                y + bb
            };
            let y_values = y.as_vec();
            let mut grads = (y * r.clone()).sum::<(), _>().backward();
            let gx = input_gradient.then(|| grads.get(&x).as_vec());
            grads.try_alloc_for(&w).unwrap();
            grads.try_alloc_for(&b).unwrap();
            (y_values, grads.get(&w).as_vec(), grads.get(&b).as_vec(), gx)
        };
        let (y0, gw0, gb0, gx0) = grads_of(false, true);
        let (y1, gw1, gb1, gx1) = grads_of(true, true);
        let close = |a: &[f32], b: &[f32]| {
            assert_eq!(a.len(), b.len());
            for (u, v) in a.iter().zip(b) {
                assert!((u - v).abs() < 1e-5, "{u} vs {v}");
            }
        };
        close(&y0, &y1);
        close(&gw0, &gw1);
        close(&gb0, &gb1);
        close(&gx0.unwrap(), &gx1.unwrap());
        // Without the input gradient the parameter gradients are unchanged.
        let (_, gw2, gb2, _) = grads_of(true, false);
        close(&gw0, &gw2);
        close(&gb0, &gb2);
        // Inference (no tape) gives the same values.
        close(&linear(x.clone(), &w, &b, LayerInput::Hidden).as_vec(), &y0);
    }

    /// Inside a training step's shared transposes the input gradient reads the weight's
    /// transposed copy: the same sums in the same order, so the same bits as the strided view
    /// (at a size where `gemm` blocks and packs, both kernel versions' shapes).
    #[test]
    fn a_shared_transposed_weight_gives_the_same_input_gradient_bits() {
        let dev = device(0).unwrap();
        for (batch, inputs, outputs) in [(64, 256, 256), (128, 300, 600), (9, 37, 70)] {
            let w = tensor2(&dev, &values(inputs * outputs, 1), inputs, outputs).unwrap();
            let b = tensor1(&dev, &values(outputs, 2));
            let x = tensor2(&dev, &values(batch * inputs, 3), batch, inputs).unwrap();
            let r = tensor2(&dev, &values(batch * outputs, 4), batch, outputs).unwrap();
            let input_gradient = || {
                let y = linear(x.clone().retaped::<TrainTape>(), &w, &b, LayerInput::Hidden);
                let grads = (y * r.clone()).sum::<(), _>().backward();
                grads.get(&x).as_vec()
            };
            let strided = input_gradient();
            let shared =
                std::sync::Arc::new(super::super::shared_transposes::SharedTransposes::default());
            let transposed =
                super::super::shared_transposes::with_shared_transposes(&shared, input_gradient);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&strided),
                bits(&transposed),
                "{batch} × {inputs} × {outputs}"
            );
        }
    }

    /// Repeated rows (a class embedding: 300 rows of 11 distinct values, at a size where `gemm`
    /// blocks) run the forward product and the weight gradient once per distinct row: the same
    /// output bits, the same input and bias gradient bits, and the weight gradient up to the
    /// order of its sums.
    #[test]
    fn repeated_rows_give_the_per_row_results() {
        let dev = device(0).unwrap();
        let (batch, inputs, outputs, classes) = (300, 96, 80, 11);
        let table = values(classes * inputs, 5);
        let x: Vec<f32> = (0..batch)
            .flat_map(|i| {
                let c = (i * 7 + i / 13) % classes;
                table[c * inputs..(c + 1) * inputs].to_vec()
            })
            .collect();
        let groups = RowGroups::of(&x, inputs).unwrap();
        assert_eq!(groups.distinct(), classes);
        let w = tensor2(&dev, &values(inputs * outputs, 1), inputs, outputs).unwrap();
        let b = tensor1(&dev, &values(outputs, 2));
        let x = tensor2(&dev, &x, batch, inputs).unwrap();
        let r = tensor2(&dev, &values(batch * outputs, 4), batch, outputs).unwrap();
        let run = |input: LayerInput| {
            let y = linear(x.clone().retaped::<TrainTape>(), &w, &b, input);
            let y_values = y.as_vec();
            let grads = (y * r.clone()).sum::<(), _>().backward();
            let of = |t: &Tensor2| grads.get(t).as_vec();
            (y_values, of(&x), grads.get(&b).as_vec(), of(&w))
        };
        let (per_row, grouped) = (run(LayerInput::Hidden), run(LayerInput::RepeatedRows));
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&per_row.0), bits(&grouped.0), "outputs");
        assert_eq!(bits(&per_row.1), bits(&grouped.1), "input gradient");
        assert_eq!(bits(&per_row.2), bits(&grouped.2), "bias gradient");
        assert_ne!(
            per_row.3, grouped.3,
            "the grouped weight gradient sums in another order"
        );
        for (p, q) in per_row.3.iter().zip(&grouped.3) {
            assert!((p - q).abs() <= 1e-4 * (1.0 + p.abs()), "{p} vs {q}");
        }
        // Without a tape the values are the same too; rows that do not repeat enough run per row.
        assert_eq!(
            bits(&linear(x.clone(), &w, &b, LayerInput::RepeatedRows).as_vec()),
            bits(&per_row.0)
        );
        let distinct = tensor2(&dev, &values(batch * inputs, 3), batch, inputs).unwrap();
        assert_eq!(
            bits(&linear(distinct.clone(), &w, &b, LayerInput::RepeatedRows).as_vec()),
            bits(&linear(distinct, &w, &b, LayerInput::Hidden).as_vec())
        );
    }

    /// An input read by two layers: the first backward pass writes its gradient into a new
    /// buffer, the second adds to it; the sum is dfdx's composite ops' (up to rounding).
    #[test]
    fn an_input_read_twice_sums_both_gradients() {
        let dev = device(0).unwrap();
        let (batch, inputs, outputs) = (33, 70, 90);
        let layer = |seed: u32| {
            (
                tensor2(&dev, &values(inputs * outputs, seed), inputs, outputs).unwrap(),
                tensor1(&dev, &values(outputs, seed + 1)),
            )
        };
        let ((w1, b1), (w2, b2)) = (layer(1), layer(3));
        let x = tensor2(&dev, &values(batch * inputs, 5), batch, inputs).unwrap();
        let r = tensor2(&dev, &values(batch * outputs, 6), batch, outputs).unwrap();
        let grads_of = |fused: bool| {
            let (x1, x2) = super::super::fan_out::fork(x.clone().retaped::<TrainTape>());
            let y = if fused {
                linear(x1, &w1, &b1, LayerInput::Hidden) + linear(x2, &w2, &b2, LayerInput::Hidden)
            } else {
                x1.matmul(w1.retaped::<TrainTape>()) + x2.matmul(w2.retaped::<TrainTape>())
            };
            let grads = (y * r.clone()).sum::<(), _>().backward();
            (grads.get(&x).as_vec(), grads.get(&w1).as_vec())
        };
        let (fused, composite) = (grads_of(true), grads_of(false));
        for (u, v) in [(&fused.0, &composite.0), (&fused.1, &composite.1)] {
            assert_eq!(u.len(), v.len());
            for (p, q) in u.iter().zip(v.iter()) {
                assert!((p - q).abs() <= 1e-4 * (1.0 + p.abs()), "{p} vs {q}");
            }
        }
    }
}
